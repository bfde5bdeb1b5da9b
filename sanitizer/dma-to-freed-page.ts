/**
 * dma-to-freed-page (error): a DMA access to a frame that was freed, or freed and handed
 * out again, since the translation the access used was installed.
 *
 * Observed: each page access names its frame and its translation's generation; the
 * command stream tells which allocation of that frame (the frame's allocation generation)
 * the translation was installed for; the kernel's frame table says whether the frame is
 * allocated now and which allocation it is in.
 *
 * Why it is a bug: memory safety. A freed frame belongs to nobody, and a reallocated one
 * belongs to someone else (another process, the page cache, a page table): the device
 * corrupts or leaks it. This is kept apart from the notifier contract: a device write
 * into a page the driver still holds a reference to is not a use-after-free (it can still
 * be use-after-invalidate).
 *
 * Not flagged: the zero page (never freed), and accesses through translations whose
 * install the sanitizer did not see (attached late), unless the frame is free right now.
 */
import { ZERO_PFN } from '../kernel-model/index.ts';
import type { Checker, SanitizerContext, TraceOf } from './context.ts';
import type { TrailEntry } from './violation.ts';
import { hex, violation } from './violation.ts';

export function createDmaToFreedPage(ctx: SanitizerContext): Checker {
  const id = 'dma-to-freed-page';
  const reported = new Set<string>();
  /** Last page-free per node and frame number. */
  const lastFree = new Map<string, { r: TraceOf<'page-free'>; syscall: string | null }>();

  ctx.onRecords(['page-free'], id, (r) => {
    if (r.type !== 'page-free') return;
    const s = ctx.syscallOf(r.task);
    lastFree.set(`${r.node}:${r.frame}`, { r, syscall: s ? `${s.name}(${s.args})` : null });
  });

  ctx.on(ctx.access$, id, (e) => {
    const a = e.access;
    const k = e.kernel;
    if (!k || a.frame === ZERO_PFN || a.frame < 0 || a.frame >= k.phys.frames) return;
    const inst = ctx.install(a.nic, a.generation);
    let what: string | null = null;
    if (!k.phys.isAllocated(a.frame)) what = 'is free';
    else if (inst && k.phys.generation[a.frame] !== inst.frameGeneration) what = 'was freed and reallocated';
    if (!what) return;
    const dedupe = `${a.nic}:${a.generation}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const free = lastFree.get(`${k.node}:${a.frame}`);
    // The last free of the frame, also when it came before the install (issue 19): a
    // translation installed for a page already freed is the cause, not a detail.
    const freeStep: TrailEntry | null = free
      ? { time: free.r.t, kind: 'page-free', task: free.r.task, text: `frame ${a.frame} freed${free.syscall ? ` during ${free.syscall}` : ''}${free.r.t < a.installedAt ? ' (before the translation was installed)' : ''} [${ctx.taskName(free.r.task)}]` }
      : null;
    const where = e.va !== undefined ? ` (va ${hex(e.va)})` : '';
    const message = `${a.nic} ${a.write ? 'wrote' : 'read'} ${a.length} bytes of frame ${a.frame} at iova ${hex(a.iova)}${where}, ` +
      `which ${what} since the translation (generation ${a.generation}) was installed`;
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [...ctx.trailMr(e.binding, e.va, e.mr), ctx.trailInstall(inst, e.binding, e.mr), freeStep, ctx.trailAccess(e)]));
  });

  return { id };
}
