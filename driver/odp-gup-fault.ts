import {
  EAGAIN, EFAULT, EINVAL, FOLL_WRITE, PAGE_SIZE, getUserPagesRemote, mmput, mmuIntervalReadBegin, mmuIntervalReadRetry, putUserPages,
  type Co, type MmuIntervalNotifier, type Mutex,
} from '../kernel-model/index.ts';
import type { OdpMapMode, OdpOwner } from './umem-odp.ts';
import type { PageMirror } from './page-mirror.ts';

/**
 * How many pages one get_user_pages_remote call asks for in ib_umem_odp_map_dma_pages:
 * one page of `struct page *` pointers (PAGE_SIZE / sizeof(struct page *)).
 */
export const ODP_GUP_CHUNK_PAGES = PAGE_SIZE / 8;

/** What the GUP-era fault path works on: one ODP umem's span, mirror and mutex. */
export interface OdpGupTarget {
  readonly owner: OdpOwner;
  /** The page-aligned user span of the umem. */
  readonly start: number;
  readonly end: number;
  /** MR page index that maps `start`. */
  readonly firstDevicePage: number;
  /** umem page index -> frame * 2 + writable (the dma_list of that era). */
  readonly pages: PageMirror;
  /** The umem mutex: map_dma_single_page and the device update run under it. */
  readonly mutex: Mutex;
}

/**
 * ib_umem_odp_map_dma_pages as it was from 3.19 to 5.9 (drivers/infiniband/core/umem_odp.c;
 * 5.10's 36f30e486dce replaced it with hmm_range_fault): fault [va, end) of the umem in
 * chunks with get_user_pages_remote (FOLL_WRITE when the request may write; no FOLL_FORCE),
 * under the mmap lock for read; then, under the umem mutex, for each page
 * (ib_umem_odp_map_dma_single_page): if `retry()` says an invalidation ran or is running
 * since the caller sampled its sequence, stop with -EAGAIN; otherwise record the page (a
 * different page where one was already mapped is -EFAULT, as the kernel's pr_err path) and
 * drop the GUP reference at once (put_page: "On Demand Paging - avoid pinning the page").
 *
 * The device update the driver did next (mlx5 pagefault_mr: take the umem mutex, check
 * the sequence again, mlx5_ib_update_xlt) is done here under the same hold of the mutex,
 * after the same check: the outcome is the one the kernel reached.
 *
 * The GUP-era path could only fault: a request with `fault: false` (a snapshot) maps
 * nothing and returns 0 (assumed: no-fault mapping came with the hmm_range_fault
 * conversion). The caller holds an mm reference (mmget_not_zero). Returns the pages mapped
 * or -errno (-EAGAIN when an invalidation got in the way).
 */
export function* odpGupMapPages(t: OdpGupTarget, va: number, end: number, mode: OdpMapMode, retry: () => boolean): Co<number> {
  const { owner } = t;
  const { kernel, nic } = owner.ctx.device;
  const mm = owner.ctx.mm;
  const start = Math.max(t.start, Math.floor(va / PAGE_SIZE) * PAGE_SIZE);
  const stop = Math.min(t.end, Math.ceil(end / PAGE_SIZE) * PAGE_SIZE);
  if (stop <= start || !mode.fault) return 0;
  const write = mode.write && owner.writable;
  let mapped = 0;
  for (let addr = start; addr < stop;) {
    const n = Math.min(ODP_GUP_CHUNK_PAGES, (stop - addr) / PAGE_SIZE);
    const frames: number[] = [];
    yield* mm.mmapLock.downRead();
    const got = yield* getUserPagesRemote(mm, addr, n, write ? FOLL_WRITE : 0, frames);
    mm.mmapLock.upRead();
    if (got < 0) return mapped > 0 ? mapped : got;
    yield* t.mutex.lock();
    let ret = 0;
    try {
      const first = (addr - t.start) / PAGE_SIZE;
      const run: number[] = [];
      const writes: boolean[] = [];
      for (let j = 0; j < frames.length; j++) {
        if (retry()) {
          ret = -EAGAIN;
          break;
        }
        const frame = frames[j] as number;
        const old = t.pages.get(first + j);
        if (old !== undefined && Math.floor(old / 2) !== frame) {
          ret = -EFAULT;
          break;
        }
        const w = write || old === frame * 2 + 1;
        run.push(frame);
        writes.push(w);
      }
      if (run.length > 0) {
        const r = yield* nic.updateEntries(owner.mr, t.firstDevicePage + first, run, writes);
        if (r < 0) ret = r;
        else {
          for (let k = 0; k < run.length; k++) t.pages.set(first + k, (run[k] as number) * 2 + (writes[k] ? 1 : 0));
          mapped += run.length;
        }
      }
    } finally {
      t.mutex.unlock();
      putUserPages(kernel, frames);
    }
    if (ret < 0) return ret;
    addr += frames.length * PAGE_SIZE;
    if (frames.length < n) break;
  }
  return mapped;
}


/**
 * The 5.5-to-5.9 ODP fault (interval notifier, GUP fault): mmget_not_zero; sample the
 * notifier's sequence with mmu_interval_read_begin; fault and map through
 * odpGupMapPages, whose per-page check is mmu_interval_read_retry under the umem mutex;
 * mmput last, after the mutex is dropped. -EAGAIN is left to the caller (the hardware
 * retries the access and faults again).
 */
export function* odpIntervalGupMap(t: OdpGupTarget & { readonly notifier: MmuIntervalNotifier }, va: number, end: number, mode: OdpMapMode): Co<number> {
  const mm = t.owner.ctx.mm;
  if (!mm.mmgetNotZero()) return -EINVAL;
  try {
    const seq = yield* mmuIntervalReadBegin(t.notifier);
    return yield* odpGupMapPages(t, va, end, mode, () => mmuIntervalReadRetry(t.notifier, seq));
  } finally {
    yield* mmput(mm);
  }
}
