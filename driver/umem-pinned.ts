import {
  EFAULT, EINVAL, EPERM, PAGE_SIZE, FOLL_FORCE, FOLL_LONGTERM, FOLL_WRITE,
  accountPinnedVm, getUserPagesFast, pinUserPagesFast, putUserPagesDirty, unaccountPinnedVm, unpinUserPagesDirtyLock,
  type Co, type Kernel, type MmStruct,
} from '../kernel-model/index.ts';
import { accessWritable, type MemoryRegion } from '../device/index.ts';
import type { IbUcontext } from './ib-ucontext.ts';
import { newUmemCounters, type IbUmem, type RegMrRequest, type UmemCounters, type UmemStrategy } from './umem.ts';

/**
 * Pages pinned per GUP call: ib_umem_get pins through a one-page array of page pointers
 * (PAGE_SIZE / sizeof(struct page *)).
 */
const PIN_CHUNK_PAGES = PAGE_SIZE / 8;

/**
 * A pinned registration (`struct ib_umem` from ib_umem_get, behind a plain mlx5 MR): the
 * frames it holds and how it took them. Exposed for tests and demos; an application
 * cannot see any of it.
 */
export interface PinnedUmem extends IbUmem {
  readonly strategy: string;
  readonly pinsPages: true;
  /** The frame of each page of the span, in order, as GUP returned it. */
  readonly frames: readonly number[];
  /** The page-aligned span [start, start + npages pages) that is pinned and charged. */
  readonly start: number;
  readonly npages: number;
  /** ib_access_writable (rdma A6): pinned for write, mapped read-write, dirtied at release. */
  readonly writable: boolean;
  /** The GUP flags the pages were taken with (they differ by profile, see pinnedStrategy). */
  readonly gupFlags: number;
  /** FOLL_PIN (pin_user_pages) or, before 5.6, FOLL_GET (get_user_pages). */
  readonly how: 'pin' | 'get';
  /** Deregistered: the device MR is gone and the pages were released. */
  released: boolean;
}

/**
 * The GUP flags ib_umem_get passes for an MR (kernel rules 54, 58, 60, 61):
 * - 6.2 onward: FOLL_LONGTERM, plus FOLL_WRITE for a writable MR. A read-only pin of a
 *   page the process cannot yet write (zero page, COW-shared) is unshared by GUP itself
 *   (rule 61), so FOLL_FORCE is no longer needed.
 * - before 6.2 (`umemForceWrite`): FOLL_WRITE always, plus FOLL_FORCE for a read-only MR,
 *   so even a read-only registration breaks COW and never pins the zero page (the fix of
 *   its day for "the device reads a page the process no longer writes"). The price: a
 *   read-only MR of a read-only shared mapping fails with -EFAULT (rule 58).
 * - before 5.6 (no FOLL_PIN): the same FOLL_WRITE | FOLL_FORCE logic through
 *   get_user_pages with FOLL_LONGTERM (get_user_pages_longterm, 4.15).
 */
export function umemGupFlags(kernel: Kernel, writable: boolean): number {
  const { profile } = kernel;
  if (!profile.follPin || profile.umemForceWrite) return FOLL_LONGTERM | FOLL_WRITE | (writable ? 0 : FOLL_FORCE);
  return FOLL_LONGTERM | (writable ? FOLL_WRITE : 0);
}

/**
 * How `ib_umem_get` takes its pages and how `ib_umem_release` gives them back: the seam a
 * driver author (or a deliberately broken variant) replaces. The reference, `IB_UMEM_GUP`:
 * FOLL_PIN where the profile has it (FOLL_GET before 5.6), the flags of `umemGupFlags`,
 * and a release that dirties exactly when asked.
 */
export interface UmemGup {
  how(kernel: Kernel): 'pin' | 'get';
  flags(kernel: Kernel, writable: boolean): number;
  release(kernel: Kernel, how: 'pin' | 'get', frames: readonly number[], dirty: boolean): void;
}

export const IB_UMEM_GUP: UmemGup = {
  how: (kernel) => (kernel.profile.follPin ? 'pin' : 'get'),
  flags: umemGupFlags,
  release: releasePages,
};

/**
 * The reference pinned strategy: `ib_umem_get` plus a plain (non-ODP) mlx5 MR.
 *
 * Registration charges the span to `pinned_vm` against RLIMIT_MEMLOCK, pins every page
 * (FOLL_PIN with FOLL_LONGTERM, or FOLL_GET before 5.6), creates the device MR and
 * programs each page's frame once. There is no notifier: after registration the MR
 * ignores the CPU's view of the range (rdma H1). A munmap, MADV_DONTNEED or COW leaves
 * the NIC on the pinned frames while the process moves to others; a pin keeps those
 * frames from being freed (rule 65), so this is incoherence, never use-after-free.
 *
 * Deregistration destroys the device MR and fences the device first (no DMA can use the
 * frames afterwards), then releases the pages, dirtying them when the MR was writable
 * (the NIC's writes set no dirty bit, so this is the only way the kernel learns of them,
 * rule 63), and finally uncharges `pinned_vm`. `gup` is the page-taking seam (default
 * `IB_UMEM_GUP`); `name` the strategy's name in bindings and reports (default 'pinned').
 *
 * @example
 *   const node = createRdmaNode(sim, fabric, { name: 'a', device: { nonOdp: pinnedStrategy() } });
 *   const mr = yield* ctx.regMr(pd, buf, 65536, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
 */
export function pinnedStrategy(gup: UmemGup = IB_UMEM_GUP, opts: { name?: string } = {}): UmemStrategy {
  const name = opts.name ?? 'pinned';
  return {
    name,
    regMr: (ctx, req) => ibUmemGet(ctx, req, gup, name),
  };
}

function* ibUmemGet(ctx: IbUcontext, req: RegMrRequest, gup: UmemGup, strategy: string): Co<PinnedUmem | number> {
  const { kernel, nic } = ctx.device;
  const mm = ctx.mm;
  // ib_uverbs_reg_mr: the start and the iova must share their offset within a page, so
  // the device pages line up with the CPU pages.
  if (req.addr % PAGE_SIZE !== req.iova % PAGE_SIZE) return -EINVAL;
  // can_do_mlock: RLIMIT_MEMLOCK of 0 without CAP_IPC_LOCK may not pin at all.
  if (mm.memlockLimitPages <= 0) return -EPERM;
  const writable = accessWritable(req.access);
  const start = Math.floor(req.addr / PAGE_SIZE) * PAGE_SIZE;
  const npages = Math.ceil((req.addr + req.length) / PAGE_SIZE) - start / PAGE_SIZE;
  if (npages <= 0) return -EINVAL;
  const acct = accountPinnedVm(mm, npages);
  if (acct < 0) return acct;
  mm.mmgrab(); // umem->owning_mm
  const gupFlags = gup.flags(kernel, writable);
  const how = gup.how(kernel);
  const frames: number[] = [];
  const fail = (err: number): number => {
    // __ib_umem_release(umem, dirty = 0), then give the charge back.
    gup.release(kernel, how, frames, false);
    unaccountPinnedVm(mm, npages);
    mm.mmdrop();
    return err;
  };
  // The kernel loop: a short count is not an error by itself; the next call starts where
  // the last one stopped and reports why it cannot go on (rule 64).
  while (frames.length < npages) {
    const want = Math.min(npages - frames.length, PIN_CHUNK_PAGES);
    const at = start + frames.length * PAGE_SIZE;
    const n = how === 'pin'
      ? yield* pinUserPagesFast(mm, at, want, gupFlags, frames)
      : yield* getUserPagesFast(mm, at, want, gupFlags, frames);
    if (n < 0) return fail(n);
    if (n === 0) return fail(-EFAULT);
  }
  // mlx5_ib_reg_user_mr: an mkey over the umem, its MTT filled with every page.
  const mr = nic.createMr({ pd: req.pd, iova: req.iova, length: req.length, access: req.access, onDemand: false });
  if (typeof mr === 'number') return fail(mr);
  if (mr.pages !== npages) {
    nic.destroyMr(mr);
    return fail(-EINVAL);
  }
  const r = yield* nic.updateEntries(mr, 0, frames, writable);
  if (r < 0) {
    nic.destroyMr(mr);
    return fail(r);
  }
  kernel.sim.emit({
    type: 'note',
    text: `pinned MR lkey 0x${mr.lkey.toString(16)}: ${npages} pages at 0x${start.toString(16)} ${how === 'pin' ? 'pinned' : 'referenced'} (gup_flags 0x${gupFlags.toString(16)}), pinned_vm ${mm.pinnedVm}`,
  });
  return new PinnedUmemImpl(ctx, mr, req, frames, start, npages, writable, gupFlags, how, gup, strategy);
}

function releasePages(kernel: Kernel, how: 'pin' | 'get', frames: readonly number[], dirty: boolean): void {
  if (how === 'pin') unpinUserPagesDirtyLock(kernel, frames, dirty);
  else putUserPagesDirty(kernel, frames, dirty);
}

class PinnedUmemImpl implements PinnedUmem {
  readonly pinsPages = true as const;
  readonly addr: number;
  readonly length: number;
  readonly access: number;
  readonly counters: UmemCounters = newUmemCounters();
  released = false;
  private readonly mm: MmStruct;

  constructor(
    readonly ctx: IbUcontext,
    readonly mr: MemoryRegion,
    req: RegMrRequest,
    readonly frames: readonly number[],
    readonly start: number,
    readonly npages: number,
    readonly writable: boolean,
    readonly gupFlags: number,
    readonly how: 'pin' | 'get',
    private readonly gup: UmemGup,
    readonly strategy: string,
  ) {
    this.addr = req.addr;
    this.length = req.length;
    this.access = req.access;
    this.mm = ctx.mm;
  }

  /**
   * mlx5_ib_dereg_mr then ib_umem_release: the mkey goes first and the device is fenced
   * (accesses already translated finish before the sync completes), so no DMA reaches a
   * frame after it is released; then unpin (dirtying when writable) and uncharge.
   */
  *dereg(): Co<number> {
    if (this.released) return -EINVAL;
    this.released = true;
    const { kernel, nic } = this.ctx.device;
    nic.destroyMr(this.mr);
    yield* nic.sync();
    this.gup.release(kernel, this.how, this.frames, this.writable);
    // ib_umem_release -> unpin_user_pages_dirty_lock, per page (cpu-costs.ts unpinPerPageNs).
    yield* kernel.sim.cpu(this.frames.length * kernel.cpuCosts.unpinPerPageNs);
    unaccountPinnedVm(this.mm, this.npages);
    this.mm.mmdrop();
    return 0;
  }
}
