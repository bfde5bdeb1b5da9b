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
 * Invalidations a user task sends outside a syscall come from a page fault: wp_page_copy's
 * one-page CLEAR (mm/memory.c do_wp_page, for a write or for FAULT_FLAG_UNSHARE, the unshare
 * a FOLL_PIN read of a page that is not exclusive asks for: mm/gup.c, gup_must_unshare),
 * do_numa_page's migration, or reclaim from the fault's allocation. Their pages are checked
 * at the task's fault record, which follows the invalidation's end: the trail then names the
 * fault, and, when the fault replaced the MR's own frame, what that frame was. A write fault
 * (do_wp_page, not FAULT_FLAG_UNSHARE) replacing an anonymous page that was not exclusive
 * (fork's copy_present_pte cleared PageAnonExclusive because no FOLL_PIN pin kept it
 * exclusive; not a KSM page) is named a COW break after fork: the hazard a FOLL_GET
 * reference leaves (kernel rules 57, 67) and a FOLL_PIN one does not.
 *
 * Not flagged: an address the CPU maps nothing at (the process sees no page there, so
 * nothing it sees differs yet), addresses inside an open invalidation window, and MRs
 * that follow the CPU (stale-translation covers those).
 */
import { PAGE_SIZE, PG_ANON, PG_ANON_EXCLUSIVE, PG_KSM, pteFrame, ptePresent, type Kernel } from '../kernel-model/index.ts';
import type { Checker, InvalidationInfo, LiveBinding, SanitizerContext } from './context.ts';
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

  /** What the CPU mapped at a pinned page when a fault's invalidation started. */
  interface Before { frame: number; notExclusiveAnon: boolean }
  /** Per invalidation sent by a fault: `${nic}:${key}:${va}` -> the CPU's page at its start. */
  const before = new Map<number, Map<string, Before>>();
  /** Per task: pages a fault's invalidation ended on, checked at the task's fault record. */
  const pending = new Map<number, { b: LiveBinding; k: Kernel; va: number; steps: TrailEntry[]; was: Before | undefined }[]>();
  /** Pages of a fault's invalidation worth remembering at most (faults send one-page CLEARs). */
  const MAX_FAULT_RANGE_PAGES = 16;

  function fromFault(inv: InvalidationInfo): boolean {
    return inv.syscall === null && ctx.taskInfo(inv.task)?.kind === 'user';
  }

  function pinnedPages(inv: InvalidationInfo, visit: (b: LiveBinding, va: number) => void): void {
    for (const b of pinnedCovering(inv.kernel, inv.mm.id, inv.start, inv.end)) {
      const mr = b.nicObj?.mrByKey(b.key);
      if (!mr) continue;
      const start = Math.max(inv.start, b.addr);
      const end = Math.min(inv.end, b.addr + b.length);
      const first = Math.max(0, ctx.indexOfVa(b, mr, start));
      const last = Math.min(mr.pages - 1, ctx.indexOfVa(b, mr, end - 1));
      const each = (index: number) => {
        const va = ctx.vaOfIndex(b, mr, index);
        if (va + PAGE_SIZE > start && va < end) visit(b, Math.max(va, b.addr));
      };
      if (last - first + 1 <= mr.pageTable.presentPages * 4) {
        for (let i = first; i <= last; i++) if (mr.pageTable.frameOf(i) >= 0) each(i);
      } else {
        mr.pageTable.forEachPresent((index) => { if (index >= first && index <= last) each(index); });
      }
    }
  }

  function pinnedCovering(k: Kernel, mm: number, start: number, end: number): LiveBinding[] {
    return ctx.bindingsOfMm(k, mm).filter((b) => b.kind === 'pinned' && b.addr < end && start < b.addr + b.length);
  }

  ctx.onRecords(['fault', 'cpu-store'], id, (r) => {
    if (r.type === 'fault') {
      flush(r.task, { t: r.t, write: r.write, kind: r.kind, addr: r.addr, mm: r.mm });
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
      flush(r.task);
      const k = ctx.kernelByNode(r.node);
      if (!k) return;
      for (const b of pinnedCovering(k, r.mm, r.addr, r.addr + r.length)) {
        checkPage(b, k, r.addr, [{ time: r.t, kind: 'cpu-store', task: r.task, text: `CPU store of ${r.length} bytes at ${hex(r.addr)} of mm${r.mm} into frame ${r.frame} [${ctx.taskName(r.task)}]` }]);
      }
    }
  });

  ctx.on(ctx.invalidation$, id, ({ phase, inv }) => {
    const faulting = fromFault(inv);
    if (phase === 'start') {
      if (!faulting || inv.end - inv.start > MAX_FAULT_RANGE_PAGES * PAGE_SIZE) return;
      const seen = new Map<string, Before>();
      pinnedPages(inv, (b, va) => {
        const pte = ctx.cpuPte(inv.kernel, inv.mm.id, va);
        if (!ptePresent(pte)) return;
        const f = pteFrame(pte);
        const phys = inv.kernel.phys;
        seen.set(`${b.nic}:${b.key}:${va}`, { frame: f, notExclusiveAnon: phys.has(f, PG_ANON) && !phys.has(f, PG_ANON_EXCLUSIVE) && !phys.has(f, PG_KSM) });
      });
      if (seen.size > 0) before.set(inv.id, seen);
      return;
    }
    const seen = before.get(inv.id);
    before.delete(inv.id);
    if (phase !== 'end') return;
    const steps = ctx.trailInvalidation(inv, true);
    if (faulting && inv.task !== null) {
      // Checked at the fault record that follows (it names the fault).
      const list = pending.get(inv.task) ?? [];
      pinnedPages(inv, (b, va) => list.push({ b, k: inv.kernel, va, steps, was: seen?.get(`${b.nic}:${b.key}:${va}`) }));
      if (list.length > 0) pending.set(inv.task, list);
      return;
    }
    pinnedPages(inv, (b, va) => checkPage(b, inv.kernel, va, steps));
  });

  /** Check the pages a task's fault invalidated, the fault's record joining their trail. */
  function flush(task: number | null, fault?: { t: number; write: boolean; kind: string; addr: number; mm: number }): void {
    if (task === null) return;
    const list = pending.get(task);
    if (!list) return;
    pending.delete(task);
    for (const p of list) {
      const steps = [...p.steps];
      if (fault) {
        steps.push({ time: fault.t, kind: 'fault', task, text: `${fault.write ? 'write' : 'read'} fault (${fault.kind}) at ${hex(fault.addr)} of mm${fault.mm} [${ctx.taskName(task)}]` });
        const mr = p.b.nicObj?.mrByKey(p.b.key);
        const deviceFrame = mr ? mr.pageTable.frameOf(ctx.indexOfVa(p.b, mr, p.va)) : -1;
        if (p.was && p.was.frame === deviceFrame) {
          // do_wp_page for a write (not FAULT_FLAG_UNSHARE) copies an anonymous page that is
          // not exclusive (wp_can_reuse_anon_folio): after fork, unless a FOLL_PIN pin made
          // fork copy it for the child (rules 57, 67).
          const cow = fault.write && fault.kind === 'wp' && p.was.notExclusiveAnon;
          steps.push({
            time: fault.t, kind: 'fault', task,
            text: cow
              ? `frame ${deviceFrame}, the MR's, replaced by a COW break: the write copied an anonymous page not exclusive to the process (shared since fork)`
              : `frame ${deviceFrame}, the MR's, replaced by the ${fault.write ? 'write' : 'read'} fault (${fault.kind})`,
          });
        }
      }
      checkPage(p.b, p.k, p.va, steps);
    }
  }

  ctx.on(ctx.access$, id, (e) => {
    const b = e.binding;
    if (!b || b.kind !== 'pinned' || !e.kernel || e.va === undefined) return;
    checkPage(b, e.kernel, e.va, [ctx.trailAccess(e)], e.access.frame);
  });

  return {
    id,
    finish() {
      for (const task of [...pending.keys()]) flush(task);
    },
  };
}
