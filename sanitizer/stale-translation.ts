/**
 * stale-translation (error): a device translation of a mirrored MR (ODP, implicit ODP,
 * holdoff) that points at another frame than the CPU's page table, or grants more than it,
 * outside any invalidation window of that address.
 *
 * Observed, and checked:
 * - at every device access (the frame used, and write rights if it wrote);
 * - at every install of entries (update command);
 * - whenever the CPU page table changed: when an invalidation ends, for every present
 *   entry of the MRs bound to that mm inside its range (the change is complete then; the
 *   changes that send no notification only populate or upgrade, rule 18, which cannot make
 *   a device entry illegal);
 * - when a binding appears (entries installed during registration).
 *
 * Why it is a bug: a secondary MMU may lag behind the CPU only by being absent or weaker
 * (a read-only entry under a read-write PTE is legal, rule 18; absent entries refault);
 * another frame is data the process no longer sees (and maybe a freed page), more rights
 * let the device write where the CPU cannot (H6 ignored events, H16 the zero page).
 *
 * Not flagged: anything inside an open invalidation window of the address (the CPU is
 * changing it; nested windows are counted, each start needs its end; a window closed by
 * -EAGAIN gets no end, and nothing changed under it); fenced accesses; pinned and dma-buf
 * MRs (pinned-incoherence covers pinned ones).
 */
import type { Kernel } from '../kernel-model/index.ts';
import { PTE_READ_WRITE, type MemoryRegion } from '../device/index.ts';
import type { Checker, InstallInfo, InvalidationInfo, LiveBinding, SanitizerContext } from './context.ts';
import type { TrailEntry } from './violation.ts';
import { hex, violation } from './violation.ts';

export function createStaleTranslation(ctx: SanitizerContext): Checker {
  const id = 'stale-translation';
  const reported = new Set<string>();

  function report(b: LiveBinding, mr: MemoryRegion, index: number, generation: number, why: string, how: string, steps: (TrailEntry | null)[]): void {
    const dedupe = `${b.nic}:${b.key}:${index}:${generation}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const va = ctx.vaOfIndex(b, mr, index);
    const message = `${b.nic} key ${hex(b.key)} (${b.strategy}) page ${index} at ${hex(va)} of mm${b.mmId}: ${how}, but ${why}`;
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [...ctx.trailMr(b, va, mr), ...steps]));
  }

  /** Check the present entries of `b` over [start, end) of its mm (outside open windows). */
  function checkRange(b: LiveBinding, start: number, end: number, steps: TrailEntry[], except?: InvalidationInfo): void {
    const k = b.kernel;
    const mr = b.nicObj?.mrByKey(b.key);
    if (!k || !mr || b.mmId === null) return;
    const first = Math.max(0, ctx.indexOfVa(b, mr, Math.max(start, b.addr)));
    const lastVa = Math.min(end, b.addr + b.length) - 1;
    if (lastVa < start) return;
    const last = Math.min(mr.pages - 1, ctx.indexOfVa(b, mr, lastVa));
    if (last < first) return;
    const visit = (index: number, frame: number, perm: number, generation: number) => {
      const va = ctx.vaOfIndex(b, mr, index);
      if (ctx.inWindow(k, b.mmId as number, va, except)) return;
      const why = ctx.compareWithCpu(k, b.mmId as number, va, frame, perm === PTE_READ_WRITE);
      if (!why) return;
      const inst = ctx.install(b.nic, generation);
      report(b, mr, index, generation, why, `the device maps frame ${frame} ${perm === PTE_READ_WRITE ? 'read-write' : 'read-only'}`,
        [ctx.trailInstall(inst, b, mr), ...steps]);
    };
    if (last - first + 1 <= mr.pageTable.presentPages * 4) {
      for (let i = first; i <= last; i++) {
        const frame = mr.pageTable.frameOf(i);
        if (frame >= 0) visit(i, frame, mr.pageTable.perm(i), mr.pageTable.generationOf(i));
      }
    } else {
      mr.pageTable.forEachPresent((i, frame, perm, generation) => {
        if (i >= first && i <= last) visit(i, frame, perm, generation);
      });
    }
  }

  ctx.on(ctx.invalidation$, id, ({ phase, inv }) => {
    if (phase !== 'end') return;
    const steps = ctx.trailInvalidation(inv, true, inv.callbacks);
    for (const b of ctx.bindingsOfMm(inv.kernel, inv.mm.id)) {
      if (b.kind === 'mirrored') checkRange(b, inv.start, inv.end, steps, inv);
    }
  });

  ctx.on(ctx.binding$, id, ({ event, binding: b }) => {
    if (event !== 'reg' || b.kind !== 'mirrored') return;
    checkRange(b, b.addr, b.addr + b.length, [{ time: ctx.sim.now(), kind: 'reg', text: `${b.nic} key ${hex(b.key)} registered over [${hex(b.addr)}, ${hex(b.addr + b.length)}) of mm${b.mmId} (${b.strategy})` }]);
  });

  ctx.on(ctx.command$, id, (e) => {
    const b = e.binding;
    if (!b || b.kind !== 'mirrored' || !e.kernel || !e.mr || b.mmId === null) return;
    const k: Kernel = e.kernel;
    for (const inst of e.installs as InstallInfo[]) {
      const va = ctx.vaOfIndex(b, e.mr, inst.index);
      if (ctx.inWindow(k, b.mmId, va)) continue;
      const why = ctx.compareWithCpu(k, b.mmId, va, inst.frame, inst.writable);
      if (why) report(b, e.mr, inst.index, inst.generation, why, `the device was given frame ${inst.frame} ${inst.writable ? 'read-write' : 'read-only'}`, [ctx.trailInstall(inst, b, e.mr)]);
    }
  });

  ctx.on(ctx.access$, id, (e) => {
    const b = e.binding;
    const a = e.access;
    if (!b || b.kind !== 'mirrored' || !e.kernel || !e.mr || e.va === undefined || b.mmId === null || a.fenced) return;
    if (ctx.inWindow(e.kernel, b.mmId, e.va)) return;
    const why = ctx.compareWithCpu(e.kernel, b.mmId, e.va, a.frame, a.write);
    if (!why) return;
    const index = ctx.indexOfVa(b, e.mr, e.va);
    report(b, e.mr, index, a.generation, why, `the device ${a.write ? 'wrote' : 'read'} frame ${a.frame}`,
      [ctx.trailInstall(ctx.install(a.nic, a.generation), b, e.mr), ctx.trailAccess(e)]);
  });

  return { id };
}
