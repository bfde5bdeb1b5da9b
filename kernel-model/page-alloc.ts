/**
 * The page allocator's entry point with allocation contexts (GFP flags), direct reclaim,
 * and the `fs_reclaim` lockdep pseudo-lock.
 *
 * `PhysicalMemory.allocPage` is the free list alone (get_page_from_freelist with no
 * watermark); `allocPages` is `alloc_pages(gfp, 0)`: below the min watermark an
 * allocation that may sleep reclaims memory itself (`__alloc_pages_slowpath` ->
 * `__alloc_pages_direct_reclaim` -> `__perform_reclaim`), in the allocating task, with
 * `fs_reclaim` held and PF_MEMALLOC set, so every notifier callback reclaim triggers runs
 * inside whatever the allocating task holds. Lockdep learns that order from every
 * allocation that could reclaim (`might_alloc` -> `fs_reclaim_acquire`), whether or not
 * this one did: a driver that allocates with GFP_KERNEL while holding the lock its
 * invalidate callback takes gets a lock-order report the first time, as upstream found in
 * mlx5 (3f5f6321, "IB/core: Annotate umem_mutex acquisition under fs_reclaim for lockdep",
 * and 2ed25aa7, "IB/mlx5: Fix potential deadlock in MR deregistration", 2025).
 *
 * [read] `mm/page_alloc.c (__need_reclaim, fs_reclaim_acquire, fs_reclaim_release,
 * __perform_reclaim)`, `include/linux/sched/mm.h (might_alloc, current_gfp_context,
 * memalloc_noreclaim_save, memalloc_nofs_save)`, `include/linux/gfp_types.h`.
 */
import type { Co, Simulation, Task } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import { ENOMEM } from './errno.ts';
import { INVALIDATE_RANGE_START_MAP } from './mmu-notifier.ts';
import { newReclaimStats, shrinkLru } from './vmscan.ts';

// ---- GFP flags (include/linux/gfp_types.h; the bits the model needs, own values) ------------

/** May use emergency reserves (below the min watermark, ALLOC_MIN_RESERVE). */
export const __GFP_HIGH = 1 << 0;
/** May start physical I/O (swap-out). */
export const __GFP_IO = 1 << 1;
/** May call into the filesystem (and so takes `fs_reclaim` for lockdep). */
export const __GFP_FS = 1 << 2;
/** May enter direct reclaim: the caller can sleep. */
export const __GFP_DIRECT_RECLAIM = 1 << 3;
/** May wake kswapd. */
export const __GFP_KSWAPD_RECLAIM = 1 << 4;
export const __GFP_NOWARN = 1 << 5;
/** Leave lockdep out of it (`__need_reclaim` returns false). */
export const __GFP_NOLOCKDEP = 1 << 6;
export const __GFP_MOVABLE = 1 << 7;
export const __GFP_HARDWALL = 1 << 8;
export const __GFP_HIGHMEM = 1 << 9;

export const __GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM;
/** Interrupt and atomic context: never sleeps, may dip into the reserves. */
export const GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM;
export const GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS;
/** Never sleeps and never uses the reserves: fails under pressure. */
export const GFP_NOWAIT = __GFP_KSWAPD_RECLAIM | __GFP_NOWARN;
export const GFP_NOIO = __GFP_RECLAIM;
export const GFP_NOFS = __GFP_RECLAIM | __GFP_IO;
export const GFP_USER = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL;
/** Anonymous and page-cache pages of user mappings (page faults). */
export const GFP_HIGHUSER_MOVABLE = GFP_USER | __GFP_HIGHMEM | __GFP_MOVABLE;

const GFP_NAMES: [number, string][] = [
  [GFP_HIGHUSER_MOVABLE, 'GFP_HIGHUSER_MOVABLE'], [GFP_USER, 'GFP_USER'], [GFP_KERNEL, 'GFP_KERNEL'], [GFP_NOFS, 'GFP_NOFS'],
  [GFP_NOIO, 'GFP_NOIO'], [GFP_ATOMIC, 'GFP_ATOMIC'], [GFP_NOWAIT, 'GFP_NOWAIT'],
];

/** The usual name of a mask, or its hex value. */
export function gfpName(gfp: number): string {
  return GFP_NAMES.find(([m]) => m === gfp)?.[1] ?? `gfp 0x${gfp.toString(16)}`;
}

export function gfpflagsAllowBlocking(gfp: number): boolean {
  return (gfp & __GFP_DIRECT_RECLAIM) !== 0;
}

// ---- per-task allocation scope (PF_MEMALLOC, PF_MEMALLOC_NOFS, PF_MEMALLOC_NOIO) --------------

export const PF_MEMALLOC = 1 << 0;
export const PF_MEMALLOC_NOFS = 1 << 1;
export const PF_MEMALLOC_NOIO = 1 << 2;

const taskFlags = new WeakMap<Task, number>();

function flagsOf(task: Task | null): number {
  return task ? (taskFlags.get(task) ?? 0) : 0;
}

function saveFlags(sim: Simulation, set: number): number {
  const task = sim.current;
  if (!task) return 0;
  const old = flagsOf(task);
  taskFlags.set(task, old | set);
  return old & set;
}

function restoreFlags(sim: Simulation, set: number, saved: number): void {
  const task = sim.current;
  if (!task) return;
  taskFlags.set(task, (flagsOf(task) & ~set) | saved);
}

/** `memalloc_noreclaim_save`: PF_MEMALLOC, so nothing this task allocates enters reclaim. */
export function memallocNoreclaimSave(sim: Simulation): number {
  return saveFlags(sim, PF_MEMALLOC);
}

export function memallocNoreclaimRestore(sim: Simulation, saved: number): void {
  restoreFlags(sim, PF_MEMALLOC, saved);
}

/** `memalloc_nofs_save`: every allocation of this task behaves as GFP_NOFS until restore. */
export function memallocNofsSave(sim: Simulation): number {
  return saveFlags(sim, PF_MEMALLOC_NOFS);
}

export function memallocNofsRestore(sim: Simulation, saved: number): void {
  restoreFlags(sim, PF_MEMALLOC_NOFS, saved);
}

/** `memalloc_noio_save`: every allocation of this task behaves as GFP_NOIO until restore. */
export function memallocNoioSave(sim: Simulation): number {
  return saveFlags(sim, PF_MEMALLOC_NOIO);
}

export function memallocNoioRestore(sim: Simulation, saved: number): void {
  restoreFlags(sim, PF_MEMALLOC_NOIO, saved);
}

/** Whether the current task is reclaiming (direct reclaim or kswapd): PF_MEMALLOC. */
export function inReclaim(sim: Simulation): boolean {
  return (flagsOf(sim.current) & PF_MEMALLOC) !== 0;
}

/** `current_gfp_context`: the task's NOIO/NOFS scope narrows the mask. */
export function currentGfpContext(sim: Simulation, gfp: number): number {
  const f = flagsOf(sim.current);
  if (f & PF_MEMALLOC_NOIO) return gfp & ~(__GFP_IO | __GFP_FS);
  if (f & PF_MEMALLOC_NOFS) return gfp & ~__GFP_FS;
  return gfp;
}

// ---- fs_reclaim ----------------------------------------------------------------------------

/** lockdep's `__fs_reclaim_map`. */
export const FS_RECLAIM_MAP = 'fs_reclaim';

/** `__need_reclaim`: only an allocation that may sleep, outside reclaim, counts. */
function needReclaim(sim: Simulation, gfp: number): boolean {
  if (!(gfp & __GFP_DIRECT_RECLAIM)) return false;
  if (inReclaim(sim)) return false;
  if (gfp & __GFP_NOLOCKDEP) return false;
  return true;
}

/**
 * `fs_reclaim_acquire`: for an allocation that could reclaim, take `fs_reclaim` (only with
 * __GFP_FS) and touch the notifier's `invalidate_range_start` map inside it, because
 * reclaim may invalidate any mm (since 5.10, "mm: Track mmu notifiers in
 * fs_reclaim_acquire/release"). So GFP_NOFS does not escape the notifier's order: a
 * driver lock held across a GFP_NOFS allocation still orders before the callbacks.
 *
 * @example
 *   fsReclaimAcquire(k.sim, GFP_KERNEL); yield* lock.lock(); lock.unlock(); fsReclaimRelease(k.sim, GFP_KERNEL);
 */
export function fsReclaimAcquire(sim: Simulation, gfp: number): void {
  const task = sim.current;
  if (!task) return;
  const mask = currentGfpContext(sim, gfp);
  if (!needReclaim(sim, mask)) return;
  if (mask & __GFP_FS) sim.lockdep.acquire(task, FS_RECLAIM_MAP);
  sim.lockdep.touch(task, INVALIDATE_RANGE_START_MAP);
}

/** `fs_reclaim_release`, the pair of `fsReclaimAcquire` with the same mask. */
export function fsReclaimRelease(sim: Simulation, gfp: number): void {
  const task = sim.current;
  if (!task) return;
  const mask = currentGfpContext(sim, gfp);
  if (!needReclaim(sim, mask)) return;
  if (mask & __GFP_FS) sim.lockdep.release(task, FS_RECLAIM_MAP);
}

/**
 * `might_alloc`: tell lockdep this allocation could reclaim, and record a blocking
 * allocation in atomic context (`might_sleep_if(gfpflags_allow_blocking(gfp))`).
 * Every `allocPages` calls it, whether or not memory is short.
 */
export function mightAlloc(sim: Simulation, gfp: number): void {
  fsReclaimAcquire(sim, gfp);
  fsReclaimRelease(sim, gfp);
  if (gfpflagsAllowBlocking(gfp)) sim.mightSleep(`alloc_pages(${gfpName(gfp)})`);
}

// ---- watermarks and the allocation itself --------------------------------------------------

/** `SWAP_CLUSTER_MAX`: how many pages one direct-reclaim pass aims to free. */
export const SWAP_CLUSTER_MAX = 32;
/** `MAX_RECLAIM_RETRIES`: passes without reaching the watermark before giving up. */
export const MAX_RECLAIM_RETRIES = 16;

/**
 * The min watermark in frames: below it only __GFP_HIGH allocations (down to half of it)
 * and tasks in reclaim (no watermark) take a frame without reclaiming first. Assumed:
 * 1/64 of memory, at least 4 frames (the kernel derives it from min_free_kbytes, about
 * sqrt(16 * memory in KiB)); `kernel.watermarkMin` overrides it.
 */
export function minWatermark(kernel: Kernel): number {
  return kernel.watermarkMin ?? Math.max(4, Math.floor(kernel.phys.frames / 64));
}

function watermarkOk(kernel: Kernel, gfp: number): boolean {
  const min = minWatermark(kernel);
  const mark = gfp & __GFP_HIGH ? Math.floor(min / 2) : min;
  return kernel.phys.freeFrames > mark;
}

/**
 * `__perform_reclaim`: reclaim in the allocating task, with `fs_reclaim` held and
 * PF_MEMALLOC set (so reclaim's own allocations neither recurse into reclaim nor wait on
 * the watermark). Returns the pages freed.
 */
function* performReclaim(kernel: Kernel, gfp: number): Co<number> {
  const { sim } = kernel;
  yield* sim.preemptPoint('cond_resched');
  fsReclaimAcquire(sim, gfp);
  const saved = memallocNoreclaimSave(sim);
  let reclaimed = 0;
  try {
    const stats = yield* shrinkLru(kernel, SWAP_CLUSTER_MAX, newReclaimStats());
    reclaimed = stats.reclaimed;
  } finally {
    memallocNoreclaimRestore(sim, saved);
    fsReclaimRelease(sim, gfp);
  }
  sim.emit({ type: 'note', text: `direct reclaim (${gfpName(gfp)}) on ${kernel.node}: ${reclaimed} pages freed, ${kernel.phys.freeFrames} free` });
  return reclaimed;
}

/**
 * `alloc_pages(gfp, 0)`: a frame with refcount 1, or -ENOMEM. Above the min watermark it
 * comes straight off the free list. Below it, an allocation that may sleep reclaims
 * (SWAP_CLUSTER_MAX pages a pass, up to MAX_RECLAIM_RETRIES passes while they make
 * progress) until the watermark is met; GFP_NOWAIT fails at once and GFP_ATOMIC takes a
 * frame from the reserves. When reclaim cannot reach the watermark the kernel would call
 * the OOM killer and retry; the model (assumed) takes whatever frame is left instead, and
 * fails with -ENOMEM only when there is none.
 *
 * @example
 *   const f = yield* allocPages(k, GFP_KERNEL); // may reclaim, may sleep
 *   if (f < 0) return f;
 */
export function* allocPages(kernel: Kernel, gfp: number): Co<number> {
  const { sim, phys } = kernel;
  const mask = currentGfpContext(sim, gfp);
  mightAlloc(sim, mask);
  if (watermarkOk(kernel, mask) || inReclaim(sim)) return phys.allocPage();
  if (!(mask & __GFP_DIRECT_RECLAIM)) return mask & __GFP_HIGH ? phys.allocPage() : -ENOMEM;
  for (let pass = 0; pass < MAX_RECLAIM_RETRIES; pass++) {
    const progress = yield* performReclaim(kernel, mask);
    if (watermarkOk(kernel, mask)) break;
    if (progress === 0) break;
  }
  return phys.allocPage();
}

/** `__free_pages` for an order-0 page from `allocPages`. */
export function freePages(kernel: Kernel, frame: number): void {
  kernel.phys.put(frame);
}
