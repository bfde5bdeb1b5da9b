/**
 * pinned-incoherence (warning): a pinned MR and the process no longer see the same page:
 * the CPU maps another frame at an address the MR's device entry translates (after a
 * COW break following fork, a write to a page pinned read-only such as the zero page,
 * munmap then mmap and touch, MADV_DONTNEED then touch).
 *
 * Observed: the device entries of MRs bound with a pinning strategy, compared with the
 * CPU's PTE whenever the CPU maps something at one of their addresses: after a page fault
 * or a CPU store there, when an invalidation covering them ends, and at device accesses.
 *
 * Why a warning: this is pinning's documented hazard (rdma H1, kernel H3, H8), not a
 * memory-safety bug: the pin keeps the device's frame alive, so nothing is corrupted; the
 * device and the process just stop sharing data. An application that relies on the
 * sharing (the ODP test suite's madvise-then-traffic loop) is broken by it.
 *
 * Not flagged: an address the CPU maps nothing at (the process sees no page there, so
 * nothing it sees differs yet), addresses inside an open invalidation window, and MRs
 * that follow the CPU (stale-translation covers those).
 */
import { PAGE_SIZE, pteFrame, ptePresent, type Kernel } from '../kernel-model/index.ts';
import type { Checker, LiveBinding, SanitizerContext } from './context.ts';
import type { TrailEntry } from './violation.ts';
import { hex, violation } from './violation.ts';

export function createPinnedIncoherence(ctx: SanitizerContext): Checker {
  const id = 'pinned-incoherence';
  const reported = new Set<string>();

  function checkPage(b: LiveBinding, k: Kernel, va: number, steps: (TrailEntry | null)[], deviceFrame?: number): void {
    const mr = b.nicObj?.mrByKey(b.key);
    if (!mr || b.mmId === null || va + PAGE_SIZE <= b.addr || va >= b.addr + b.length) return;
    va = Math.max(va, b.addr);
    const index = ctx.indexOfVa(b, mr, va);
    const frame = deviceFrame ?? mr.pageTable.frameOf(index);
    if (frame < 0) return;
    if (ctx.inWindow(k, b.mmId, va)) return;
    const pte = ctx.cpuPte(k, b.mmId, va);
    if (!ptePresent(pte) || pteFrame(pte) === frame) return;
    const cpuFrame = pteFrame(pte);
    const dedupe = `${b.nic}:${b.key}:${index}:${frame}:${cpuFrame}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const page = Math.floor(va / PAGE_SIZE) * PAGE_SIZE;
    const message = `pinned MR ${b.nic} key ${hex(b.key)} translates ${hex(page)} of mm${b.mmId} to frame ${frame}, ` +
      `but the process now maps frame ${cpuFrame} there: device and process no longer share that page`;
    const inst = ctx.install(b.nic, mr.pageTable.generationOf(index));
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [ctx.trailInstall(inst, b, mr), ...steps]));
  }

  function pinnedCovering(k: Kernel, mm: number, start: number, end: number): LiveBinding[] {
    return ctx.bindingsOfMm(k, mm).filter((b) => b.kind === 'pinned' && b.addr < end && start < b.addr + b.length);
  }

  ctx.onRecords(['fault', 'cpu-store'], id, (r) => {
    if (r.type === 'fault') {
      if (r.ret < 0) return;
      for (const k of ctx.kernelsForMm(r.mm)) {
        for (const b of pinnedCovering(k, r.mm, r.addr, r.addr + PAGE_SIZE)) {
          const s = ctx.syscallOf(r.task);
          checkPage(b, k, r.addr, [ctx.trailSyscall(s), {
            time: r.t, kind: 'fault', task: r.task,
            text: `${r.write ? 'write' : 'read'} fault (${r.kind}) at ${hex(r.addr)} of mm${r.mm} [${ctx.taskName(r.task)}]`,
          }]);
        }
      }
    } else if (r.type === 'cpu-store') {
      const k = ctx.kernelByNode(r.node);
      if (!k) return;
      for (const b of pinnedCovering(k, r.mm, r.addr, r.addr + r.length)) {
        checkPage(b, k, r.addr, [{ time: r.t, kind: 'cpu-store', task: r.task, text: `CPU store of ${r.length} bytes at ${hex(r.addr)} of mm${r.mm} into frame ${r.frame} [${ctx.taskName(r.task)}]` }]);
      }
    }
  });

  ctx.on(ctx.invalidation$, id, ({ phase, inv }) => {
    if (phase !== 'end') return;
    for (const b of pinnedCovering(inv.kernel, inv.mm.id, inv.start, inv.end)) {
      const mr = b.nicObj?.mrByKey(b.key);
      if (!mr) continue;
      const start = Math.max(inv.start, b.addr);
      const end = Math.min(inv.end, b.addr + b.length);
      const steps = ctx.trailInvalidation(inv, true);
      const first = Math.max(0, ctx.indexOfVa(b, mr, start));
      const last = Math.min(mr.pages - 1, ctx.indexOfVa(b, mr, end - 1));
      const visit = (index: number) => {
        const va = ctx.vaOfIndex(b, mr, index);
        if (va + PAGE_SIZE > start && va < end) checkPage(b, inv.kernel, Math.max(va, b.addr), steps);
      };
      if (last - first + 1 <= mr.pageTable.presentPages * 4) {
        for (let i = first; i <= last; i++) if (mr.pageTable.frameOf(i) >= 0) visit(i);
      } else {
        mr.pageTable.forEachPresent((index) => { if (index >= first && index <= last) visit(index); });
      }
    }
  });

  ctx.on(ctx.access$, id, (e) => {
    const b = e.binding;
    if (!b || b.kind !== 'pinned' || !e.kernel || e.va === undefined) return;
    checkPage(b, e.kernel, e.va, [ctx.trailAccess(e)], e.access.frame);
  });

  return { id };
}
