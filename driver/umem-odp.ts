import {
  EAGAIN, EBUSY, EFAULT, EINVAL, ENOENT, EPERM, PAGE_SIZE, PAGE_SHIFT, PMD_SIZE, isVmHugetlbPage, PG_DIRTY, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_VALID,
  HMM_PFN_WRITE, HMM_RANGE_DEFAULT_TIMEOUT_NS, MmuIntervalNotifier, MmuNotifyEvent, Mutex, WaitQueue, folioMarkDirty, hmmRangeFault,
  hmmRangeInit, mmput, mmuIntervalNotifierInsert, mmuIntervalNotifierRemove, mmuIntervalReadBegin, mmuIntervalReadRetry,
  mmuIntervalSetSeq, mmuNotifierRangeBlockable, fsReclaimAcquire, fsReclaimRelease, GFP_KERNEL, type Co, type HmmRange, type MmStruct, type MmuIntervalNotifierOps, type MmuNotifierRange, type Simulation,
} from '../kernel-model/index.ts';
import { IBV_ACCESS_HUGETLB, accessWritable, type DeviceFault, type MemoryRegion } from '../device/index.ts';
import type { SyncBatcher } from './batching/index.ts';
import type { IbUcontext } from './ib-ucontext.ts';
import { newUmemCounters, type IbUmem, type RegMrRequest, type UmemCounters } from './umem.ts';
import {
  IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE,
  IBV_ADVISE_MR_FLAG_FLUSH,
} from './verbs.ts';
import { PageMirror } from './page-mirror.ts';
import { odpIntervalGupMap } from './odp-gup-fault.ts';

/** HPAGE_SHIFT on x86-64: the page_shift of an IB_ACCESS_HUGETLB ODP umem (ib_umem_odp_get). */
export const HPAGE_SHIFT = 21;
const HPAGE_SIZE = PMD_SIZE;

/** mlx5 zaps MTTs in runs that may only end at an 8-entry (64-byte) boundary (rdma C4). */
export const MLX5_UMR_MTT_NUM_ENTRIES_ALIGNMENT = 8;

/**
 * How a mapping request treats the CPU page table: `fault` pages in (with write intent
 * when `write`), or only snapshots what is present (registration, PREFETCH_NO_FAULT).
 */
export interface OdpMapMode {
  fault: boolean;
  write: boolean;
}

/** The flags `hmm_range_fault` is asked for under a mapping mode (REQ_FAULT, REQ_WRITE). */
export function odpRangeFlags(mode: OdpMapMode): number {
  return mode.fault ? HMM_PFN_REQ_FAULT | (mode.write ? HMM_PFN_REQ_WRITE : 0) : 0;
}

/**
 * One pass through `UmemOdp.map`'s retry loop, as its steps see it: the mm and the
 * reference held on it, the page-aligned span [start, end) clipped to the umem, the
 * sequence read by mmu_interval_read_begin and the hmm_range built for it.
 */
export interface OdpMapAttempt {
  readonly mm: MmStruct;
  readonly mode: OdpMapMode;
  readonly start: number;
  readonly end: number;
  seq: number;
  range: HmmRange;
  /** The mm reference taken at entry is still held (`putMm` drops it once). */
  mmHeld: boolean;
}

/** The part of an invalidation a umem covers: user addresses [start, end), umem pages [first, last]. */
export interface OdpSpan {
  start: number;
  end: number;
  first: number;
  last: number;
}

/** What a UmemOdp needs from the MR it serves (an explicit MR, or an implicit parent). */
export interface OdpOwner {
  readonly ctx: IbUcontext;
  readonly mr: MemoryRegion;
  readonly counters: UmemCounters;
  /** ib_access_writable (rdma A6). */
  readonly writable: boolean;
  readonly batcher: SyncBatcher;
  /** The IbUmem that MR events name. */
  readonly umem: IbUmem;
  /** An invalidation left `odp` with nothing mapped (implicit children are reaped, E3). */
  emptied?(odp: UmemOdp): void;
}

/**
 * The runs mlx5_ib_invalidate_range zaps (rdma C4), as [first, count] pairs of umem page
 * indices. `present` lists the mapped pages of the clamped range in ascending order and
 * `last` is that range's last page. A run of present pages goes on across absent ones and
 * closes only at an absent page on an 8-entry boundary (zapping absent neighbours is
 * harmless and saves a UMR); the last run also takes the absent tail of the range.
 *
 * @example
 *   odpZapRuns([0, 1, 3], 7);  // [[0, 8]]: P,P,A,P in one group is one zap
 *   odpZapRuns([7, 9], 15);    // [[7, 1], [9, 7]]: the absent page 8 is aligned and closes the run
 */
export function odpZapRuns(present: readonly number[], last: number): [number, number][] {
  const runs: [number, number][] = [];
  const align = MLX5_UMR_MTT_NUM_ENTRIES_ALIGNMENT;
  let start = -1;
  let prev = -1;
  for (const q of present) {
    if (start < 0) start = q;
    else {
      const boundary = Math.ceil((prev + 1) / align) * align;
      if (boundary < q) {
        runs.push([start, boundary - start]);
        start = q;
      }
    }
    prev = q;
  }
  if (start >= 0) {
    const boundary = Math.ceil((prev + 1) / align) * align;
    runs.push([start, (boundary <= last ? boundary : last + 1) - start]);
  }
  return runs;
}

/**
 * A use count that teardown can wait on (mlx5's mkey usecount with
 * mlx5r_deref_wait_odp_mkey): faults and prefetches hold it while they work on an MR.
 */
export class UsageCount {
  count = 0;
  private wq: WaitQueue | null = null;

  /** `named`: what the count belongs to; its name is read only if a waiter has to sleep. */
  constructor(private readonly sim: Simulation, private readonly named: { readonly name: string }) {}

  get(): void {
    this.count++;
  }

  put(): void {
    if (--this.count === 0) this.wq?.wakeUpAll();
  }

  *waitIdle(): Co {
    if (this.count === 0) return;
    this.wq ??= new WaitQueue(this.sim, `${this.named.name}.usecount`);
    yield* this.wq.waitEvent(() => this.count === 0);
  }
}

/**
 * The notifier of a UmemOdp knows its umem, so that one ops object serves them all: an
 * implicit MR has a child, and so a notifier, per 1 GiB slot touched (70k for 100k pages
 * scattered over 128 TiB), and a closure and ops object each would cost some 400 bytes.
 * For the same reason its name is its umem's, built when printed. Its tree keys are the
 * umem's span from the start: ib_umem_start/ib_umem_end read them
 * (`notifier.interval_tree.start`, `.last + 1`), and insert sets the same values.
 */
class UmemOdpNotifier extends MmuIntervalNotifier {
  constructor(readonly umem: UmemOdp, start: number, end: number) {
    super();
    this.start = start;
    this.last = end - 1;
  }

  override get name(): string {
    return this.umem.name;
  }
}

const UMEM_ODP_OPS: MmuIntervalNotifierOps = {
  invalidate: (sub, range, curSeq) => (sub as UmemOdpNotifier).umem.invalidate(range, curSeq),
};

/**
 * The umem mutex, named after its umem. A umem given a name (an explicit MR) names its
 * mutex once, so each lock reuses the lock site; an implicit child, which has none, builds
 * the mutex's name when printed (and the lock site at each lock), as above.
 */
class UmemMutex extends Mutex {
  constructor(sim: Simulation, private readonly umem: UmemOdp, umemLabel: string) {
    super(sim, umemLabel && `${umemLabel}.umem_mutex`, 'umem_odp.umem_mutex');
  }

  override get name(): string {
    return super.name || `${this.umem.name}.umem_mutex`;
  }
}

/**
 * `struct ib_umem_odp`: one interval notifier over a page-aligned span, the umem mutex
 * that is both the notifier's declared lock and the lock under which the device page
 * table is programmed, and the driver's mirror of what the device was given (the pfn
 * list). An explicit MR has one; an implicit MR has one per 1 GiB child (rdma C1).
 *
 * The mirror is a map (page index -> frame * 2 + writable; a PageMirror, which keeps a few
 * entries in a small array), so a 1 GiB child that holds a few pages costs a few entries,
 * not a 262144-entry array. It holds no page references:
 * the notifier is what keeps it honest (kernel rule 49), which is the point of ODP.
 */
export class UmemOdp {
  readonly notifier: UmemOdpNotifier;
  readonly mutex: Mutex;
  readonly pages = new PageMirror();
  /** Mapping requests (faults, prefetches) working on this umem; teardown waits for none. */
  readonly users: UsageCount;
  inserted = false;
  /**
   * umem_odp->page_shift: PAGE_SHIFT, or HPAGE_SHIFT (21) for an IB_ACCESS_HUGETLB MR
   * (ib_umem_odp_get), set before `insert`. With 2 MiB pages the mirror holds one entry per
   * 2 MiB page (keyed by the page index of its first 4 KiB page), the device gets one huge
   * entry for it, and an invalidation of any part of it drops all of it.
   */
  pageShift = PAGE_SHIFT;

  /** 4 KiB pages per umem page (1, or 512 for 2 MiB pages). */
  get unitPages(): number {
    return 2 ** (this.pageShift - PAGE_SHIFT);
  }

  /**
   * `start`/`end`: the page-aligned user span; `firstDevicePage`: the MR page index that
   * maps `start` (0 for an explicit MR, the child's offset in an implicit one).
   */
  constructor(readonly owner: OdpOwner, start: number, end: number, readonly firstDevicePage: number, private readonly label: string) {
    const { sim } = owner.ctx.device.kernel;
    this.notifier = new UmemOdpNotifier(this, start, end);
    this.mutex = new UmemMutex(sim, this, label);
    this.users = new UsageCount(sim, this);
  }

  /** ib_umem_start: the first byte of the span (the notifier's tree key, as in the kernel). */
  get start(): number {
    return this.notifier.start;
  }

  /** ib_umem_end: one past the span's last byte. */
  get end(): number {
    return this.notifier.last + 1;
  }

  /** The name in traces and reports; an implicit child builds its own when asked. */
  get name(): string {
    return this.label;
  }

  /**
   * ib_init_umem_odp: subscribe to [start, end) with the umem mutex as the declared lock (A5, C1).
   * First, as ib_init_umem_odp does since 2025 (3f5f6321, "IB/core: Annotate umem_mutex
   * acquisition under fs_reclaim for lockdep"), teach lockdep that reclaim takes the umem
   * mutex (reclaim invalidates, the invalidate takes it): an allocation that may reclaim
   * under this mutex is then reported at once, not only when reclaim happens to hit the MR.
   * The mutex is new and free, so the kernel's mutex_lock/unlock pair is a trylock here.
   */
  *insert(): Co<number> {
    const { sim } = this.owner.ctx.device.kernel;
    if (sim.current) {
      fsReclaimAcquire(sim, GFP_KERNEL);
      if (this.mutex.trylock()) this.mutex.unlock();
      fsReclaimRelease(sim, GFP_KERNEL);
    }
    const ret = yield* mmuIntervalNotifierInsert(this.notifier, this.owner.ctx.mm, this.start, this.end - this.start, UMEM_ODP_OPS, { lock: this.mutex });
    this.inserted = ret === 0;
    return ret;
  }

  /**
   * ib_umem_odp_map_dma_and_lock plus the device update (rdma B2, B3, C7; kernel rule 31)
   * for the user range [va, end) clipped to this umem: mmget_not_zero; read_begin; under
   * the mmap lock, hmm_range_fault; -EBUSY restarts until HMM_RANGE_DEFAULT_TIMEOUT after
   * entry, then fails; take the umem mutex; a moved sequence drops it and restarts with no
   * time bound; otherwise program the device page table before dropping the mutex. mmput
   * comes last, after the mutex is dropped: the last mm reference runs exit_mmap, whose
   * invalidation takes this same mutex (rdma C10, CVE-2022-48675).
   * Returns the pages programmed, or -errno.
   *
   * This is the retry loop itself; a driver author changes one of its steps instead:
   * `buildRange` (what to ask of the CPU page table), `fault` (hmm_range_fault),
   * `commit` (the read_retry check and the device update under the umem lock), `program`
   * (the device update itself) and `putMm` (the mm reference).
   */
  *map(va: number, end: number, mode: OdpMapMode): Co<number> {
    const { sim } = this.owner.ctx.device.kernel;
    const mm = this.owner.ctx.mm;
    // ib_umem_odp_map_dma_and_lock: the range is widened to whole umem pages (page_shift).
    const unit = 2 ** this.pageShift;
    const start = Math.max(this.start, Math.floor(va / unit) * unit);
    const stop = Math.min(this.end, Math.ceil(end / unit) * unit);
    if (stop <= start) return 0;
    // Before 5.10 (36f30e486dce) ODP faulted with get_user_pages_remote (odp-gup-fault.ts).
    if (this.owner.ctx.device.kernel.profile.odpFault === 'gup') return yield* odpIntervalGupMap(this, va, end, mode);
    // mm gone (the owner exited): rdma B4 says EINVAL.
    if (!mm.mmgetNotZero()) return -EINVAL;
    const a: OdpMapAttempt = { mm, mode, start, end: stop, seq: 0, range: null as unknown as HmmRange, mmHeld: true };
    const timeout = sim.now() + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    let ret: number;
    for (;;) {
      a.seq = yield* mmuIntervalReadBegin(this.notifier);
      a.range = this.buildRange(a);
      ret = yield* this.fault(a);
      if (ret === -EBUSY && sim.now() <= timeout) continue;
      if (ret < 0) break;
      const r = yield* this.commit(a);
      if (r === null) continue;
      ret = r;
      break;
    }
    yield* this.putMm(a);
    return ret;
  }

  /**
   * Step 1 of a fault: the hmm_range to fill, for the span [a.start, a.end) the request
   * covers (already clipped to this umem) and the sequence just read. The reference asks
   * for exactly that span, with REQ_FAULT (and REQ_WRITE for write intent) when the
   * request faults, and nothing (a snapshot) when it does not.
   *
   * @example
   *   // Fault four neighbouring pages in on each side (clipped to the umem):
   *   protected override buildRange(a: OdpMapAttempt): HmmRange {
   *     const start = Math.max(this.start, a.start - 4 * PAGE_SIZE);
   *     const end = Math.min(this.end, a.end + 4 * PAGE_SIZE);
   *     return hmmRangeInit(this.notifier, start, end, a.seq, odpRangeFlags(a.mode));
   *   }
   */
  protected buildRange(a: OdpMapAttempt): HmmRange {
    return hmmRangeInit(this.notifier, a.start, a.end, a.seq, odpRangeFlags(a.mode));
  }

  /**
   * Step 2: hmm_range_fault under the mmap read lock (kernel rule 31). Returns 0, -EBUSY
   * (an invalidation ran: `map` starts over) or another -errno (the request fails).
   *
   * @example
   *   // Count the CPU faults this driver causes:
   *   protected override *fault(a: OdpMapAttempt): Co<number> {
   *     this.walks++;
   *     return yield* super.fault(a);
   *   }
   */
  protected *fault(a: OdpMapAttempt): Co<number> {
    const { mm } = a;
    yield* mm.mmapLock.downRead();
    const ret = yield* hmmRangeFault(a.range);
    // hmm_range_fault's walk, per page asked for (cpu-costs.ts hmmRangeFaultPerPageNs),
    // charged here on the caller's side, under the mmap lock where the walk runs.
    yield* mm.kernel.sim.cpu(a.range.pfns.length * mm.kernel.cpuCosts.hmmRangeFaultPerPageNs);
    mm.mmapLock.upRead();
    return ret;
  }

  /**
   * Step 3: under the umem mutex (the lock declared to the notifier), check
   * mmu_interval_read_retry and, if no invalidation ran since `a.seq`, program the device
   * before the mutex is dropped (kernel rule 28). Returns null to start over, or what
   * `program` returned.
   *
   * @example
   *   // Count the faults that lost the race with an invalidation and start over:
   *   protected override *commit(a: OdpMapAttempt): Co<number | null> {
   *     const r = yield* super.commit(a);
   *     if (r === null) this.collisions++;
   *     return r;
   *   }
   */
  protected *commit(a: OdpMapAttempt): Co<number | null> {
    yield* this.mutex.lock();
    try {
      if (mmuIntervalReadRetry(this.notifier, a.seq)) return null;
      return yield* this.program(a.range, a.mode);
    } finally {
      this.mutex.unlock();
    }
  }

  /**
   * Last step of `map`: drop the mm reference taken at entry, once (`a.mmHeld`). The
   * reference does it after the umem mutex is dropped (rdma C10): the last reference runs
   * exit_mmap, whose invalidation takes that mutex.
   *
   * @example
   *   // Say when this request held the last reference (the process exited meanwhile):
   *   protected override *putMm(a: OdpMapAttempt): Co {
   *     if (a.mmHeld && a.mm.users === 1) this.owner.ctx.device.kernel.sim.emit({ type: 'note', text: 'last mm reference' });
   *     yield* super.putMm(a);
   *   }
   */
  protected *putMm(a: OdpMapAttempt): Co {
    if (!a.mmHeld) return;
    a.mmHeld = false;
    yield* mmput(a.mm);
  }

  /**
   * Under the umem mutex, after a clean read_retry: install the snapshot in the device
   * page table, one update command per run of valid pages. A fault grants write exactly
   * when it asked for it and the CPU PTE grants it (the pages it asked write for always
   * do; a neighbour the range only snapshotted may not); a downgrade maps read-only (D2),
   * replacing a writable entry as mlx5 does. A snapshot grants what the CPU PTE grants
   * (A4), and an entry the device already has writable for the same frame stays writable:
   * nothing invalidated it. Returns the pages
   * programmed, or the device's -errno.
   *
   * @example
   *   // Map everything read-only, whatever the request wanted (a read-mostly device):
   *   protected override *program(range: HmmRange, mode: OdpMapMode): Co<number> {
   *     return yield* super.program(range, { fault: mode.fault, write: false });
   *   }
   */
  protected *program(range: HmmRange, mode: OdpMapMode): Co<number> {
    if (this.unitPages > 1) return yield* this.programHuge(range, mode);
    const { mr, writable } = this.owner;
    const nic = this.owner.ctx.device.nic;
    const first = (range.start - this.start) / PAGE_SIZE;
    const n = range.pfns.length;
    let mapped = 0;
    for (let i = 0; i < n;) {
      if (!((range.flags[i] as number) & HMM_PFN_VALID)) {
        i++;
        continue;
      }
      let j = i;
      const frames: number[] = [];
      const writes: boolean[] = [];
      for (; j < n && (range.flags[j] as number) & HMM_PFN_VALID; j++) {
        const frame = range.pfns[j] as number;
        const old = this.pages.get(first + j);
        const cpuWrite = ((range.flags[j] as number) & HMM_PFN_WRITE) !== 0;
        // A downgrade (a fault without write) writes a read-only entry even over a writable
        // one (mlx5_odp_populate_xlt with MLX5_IB_UPD_XLT_DOWNGRADE).
        const w = writable && (mode.fault ? mode.write && cpuWrite : cpuWrite || old === frame * 2 + 1);
        frames.push(frame);
        writes.push(w);
      }
      // ib_umem_odp_map_dma_single_page per page (cpu-costs.ts odpDmaMapPerPageNs), then the UMR.
      const { kernel } = this.owner.ctx.device;
      yield* kernel.sim.cpu(frames.length * kernel.cpuCosts.odpDmaMapPerPageNs);
      const r = yield* nic.updateEntries(mr, this.firstDevicePage + first + i, frames, writes);
      if (r < 0) return r;
      for (let k = 0; k < frames.length; k++) this.pages.set(first + i + k, (frames[k] as number) * 2 + (writes[k] ? 1 : 0));
      mapped += frames.length;
      i = j;
    }
    return mapped;
  }

  /**
   * `program` for 2 MiB umem pages (page_shift 21): one huge device entry per 2 MiB page
   * whose first page is valid, after ib_umem_odp_map_dma_and_lock's check that the CPU maps
   * it at least that large (hmm_pfn_to_map_order(pfn) + PAGE_SHIFT >= page_shift, else
   * -EINVAL: a THP split under a HUGETLB MR, or 4 KiB pages, cannot be mapped). Runs of
   * consecutive 2 MiB pages go in one update command.
   */
  protected *programHuge(range: HmmRange, mode: OdpMapMode): Co<number> {
    const { mr, writable } = this.owner;
    const nic = this.owner.ctx.device.nic;
    const u = this.unitPages;
    const first = (range.start - this.start) / PAGE_SIZE;
    const n = range.pfns.length;
    let mapped = 0;
    let runStart = -1;
    let frames: number[] = [];
    let writes: boolean[] = [];
    const flush = function* (this: UmemOdp): Co<number> {
      if (frames.length === 0) return 0;
      // ib_umem_odp_map_dma_single_page once per umem page, here a 2 MiB one
      // (ib_umem_odp_map_dma_and_lock steps by 1 << (page_shift - PAGE_SHIFT)): one DMA
      // mapping each (cpu-costs.ts odpDmaMapPerPageNs).
      const { kernel } = this.owner.ctx.device;
      yield* kernel.sim.cpu(frames.length * kernel.cpuCosts.odpDmaMapPerPageNs);
      const r = yield* nic.updateEntries(mr, this.firstDevicePage + first + runStart, frames, writes, this.pageShift - PAGE_SHIFT);
      if (r < 0) return r;
      for (let k = 0; k < frames.length; k++) this.pages.set(first + runStart + k * u, (frames[k] as number) * 2 + (writes[k] ? 1 : 0));
      mapped += frames.length * u;
      frames = [];
      writes = [];
      return 0;
    }.bind(this);
    for (let i = 0; i < n; i += u) {
      const f = range.flags[i] as number;
      if (!(f & HMM_PFN_VALID)) {
        const r = yield* flush();
        if (r < 0) return r;
        continue;
      }
      if ((range.order[i] as number) + PAGE_SHIFT < this.pageShift) {
        this.owner.ctx.device.kernel.sim.emit({ type: 'note', text: `ib_umem_odp_map_dma_and_lock: un-expected hmm_order ${range.order[i]}, page_shift ${this.pageShift}` });
        return -EINVAL;
      }
      if (frames.length === 0) runStart = i;
      const frame = range.pfns[i] as number;
      const old = this.pages.get(first + i);
      const cpuWrite = (f & HMM_PFN_WRITE) !== 0;
      frames.push(frame);
      writes.push(writable && (mode.fault ? mode.write && cpuWrite : cpuWrite || old === frame * 2 + 1));
    }
    const r = yield* flush();
    return r < 0 ? r : mapped;
  }

  /** Mapped pages with index in [first, last], ascending, without walking a huge empty span. */
  protected presentIn(first: number, last: number): number[] {
    const out: number[] = [];
    if (this.pages.size < last - first + 1) {
      for (const idx of this.pages.keys()) if (idx >= first && idx <= last) out.push(idx);
      out.sort((a, b) => a - b);
    } else {
      for (let idx = first; idx <= last; idx++) if (this.pages.has(idx)) out.push(idx);
    }
    return out;
  }

  /**
   * mlx5_ib_invalidate_range (rdma C2 to C8). A non-blockable range (the OOM reaper) gets
   * false at once with nothing touched. Otherwise, under the umem mutex: set_seq (always,
   * rule 26), stop if nothing is mapped, clamp the range to the umem (it is not clipped for
   * us, kernel rule 13), zap present entries in C4 runs, fence them: wait until a device
   * sync covers the zaps (C5: the pages may be freed the moment this returns), mark pages
   * that were mapped writable dirty (C8), count, and report. The event type is not looked
   * at (C6) except to hand it to the batching policy.
   *
   * The steps a driver author changes: `mayBlock`, `setSeq`, `affects`, `clamp`, `zap`,
   * `fence` and `unmapPages`.
   */
  *invalidate(range: MmuNotifierRange, curSeq: number): Co<boolean> {
    if (!this.mayBlock(range)) return false;
    yield* this.mutex.lock();
    try {
      this.setSeq(curSeq);
      if (!this.affects(range) || this.pages.size === 0) return true;
      const span = this.clamp(range);
      if (!span) return true;
      const present = this.presentIn(span.first, span.last);
      if (present.length === 0) return true;
      yield* this.zap(present, span.last);
      yield* this.fence(range.event);
      this.unmapPages(present);
      const { counters } = this.owner;
      counters.invalidations++;
      counters.invalidationPages += present.length * this.unitPages;
      this.owner.ctx.mrEvents.next({ type: 'invalidated', umem: this.owner.umem, start: span.start, end: span.end });
      if (this.pages.size === 0) this.owner.emptied?.(this);
      return true;
    } finally {
      this.mutex.unlock();
    }
  }

  /**
   * Invalidation step 0: may this callback sleep? Everything after it does (the mutex, the
   * zap, the fence), so the reference answers mmu_notifier_range_blockable (rdma C2): the
   * OOM reaper's range gets false and is retried later.
   *
   * @example
   *   // A driver with nothing to sleep for (no device entries yet) could accept anyway:
   *   protected override mayBlock(range: MmuNotifierRange): boolean {
   *     return this.pages.size === 0 || super.mayBlock(range);
   *   }
   */
  protected mayBlock(range: MmuNotifierRange): boolean {
    return mmuNotifierRangeBlockable(range);
  }

  /**
   * Invalidation step 1, under the mutex: publish the invalidation's sequence with
   * mmu_interval_set_seq, unconditionally (kernel rule 26), so a fault that read the old
   * sequence retries.
   *
   * @example
   *   // Trace every sequence this notifier publishes:
   *   protected override setSeq(curSeq: number): void {
   *     this.seqs.push(curSeq);
   *     super.setSeq(curSeq);
   *   }
   */
  protected setSeq(curSeq: number): void {
    mmuIntervalSetSeq(this.notifier, curSeq);
  }

  /**
   * Invalidation step 2: does this event concern the device at all? The reference says yes
   * to every event but a MIGRATE whose owner is its own device (mlx5 and rxe look at no
   * event, rdma C6, and never start one); kernel rule 22 allows skipping only MIGRATE (or
   * EXCLUSIVE) events whose owner is the driver's own.
   *
   * @example
   *   // Skip the migrations this driver started itself (rule 22):
   *   protected override affects(range: MmuNotifierRange): boolean {
   *     return !(range.event === MmuNotifyEvent.MIGRATE && range.owner === this.owner.ctx.device);
   *   }
   */
  protected affects(range: MmuNotifierRange): boolean {
    // Rule 22's only allowed skip (lib/test_hmm.c dmirror_interval_invalidate): a MIGRATE
    // this device started itself (migrate_vma_setup with its pgmap_owner). An RDMA NIC
    // has no device-private memory, so in practice none arrives; a MIGRATE of any other
    // owner (a GPU moving the MR's pages to its memory) is honoured like any event.
    return !(range.event === MmuNotifyEvent.MIGRATE && range.owner !== null && range.owner === this.pgmapOwner);
  }

  /** The pgmap owner this driver's own device migrations would carry: its ib_device. */
  protected get pgmapOwner(): unknown {
    return this.owner.ctx.device;
  }

  /**
   * Invalidation step 3: the part of the range this umem covers, as user addresses and
   * umem page indices, or null when they do not meet. Interval subscribers get the whole
   * operation's range (kernel rule 13): the clamp is the driver's job.
   *
   * @example
   *   // Invalidate whole 2 MiB groups (a device with huge entries only):
   *   protected override clamp(range: MmuNotifierRange): OdpSpan | null {
   *     const HUGE = 512 * PAGE_SIZE;
   *     const r = { ...range, start: Math.floor(range.start / HUGE) * HUGE, end: Math.ceil(range.end / HUGE) * HUGE };
   *     return super.clamp(r);
   *   }
   */
  protected clamp(range: MmuNotifierRange): OdpSpan | null {
    const start = Math.max(range.start, this.start);
    const end = Math.min(range.end, this.end);
    return start < end ? this.spanOf(start, end) : null;
  }

  /** The umem pages [first, last] that the user range [start, end) touches (no clamping). */
  protected spanOf(start: number, end: number): OdpSpan {
    // With 2 MiB umem pages the first index is that of the 2 MiB page holding `start`
    // (mlx5_ib_invalidate_range: idx = (addr - ib_umem_start) >> page_shift).
    const u = this.unitPages;
    return { start, end, first: Math.floor((start - this.start) / PAGE_SIZE / u) * u, last: Math.ceil((end - this.start) / PAGE_SIZE) - 1 };
  }

  /**
   * Invalidation step 4, under the mutex: clear the device entries of the mapped pages
   * `present` (ascending umem page indices up to `last`), in the C4 runs mlx5 issues. A
   * destroyed MR was revoked and fenced by deregistration: the device cannot use it.
   *
   * @example
   *   // One zap per page (simpler, more UMRs):
   *   protected override *zap(present: readonly number[], _last: number): Co {
   *     for (const i of present) yield* this.owner.ctx.device.nic.zapEntries(this.owner.mr, this.firstDevicePage + i, 1);
   *   }
   */
  protected *zap(present: readonly number[], last: number): Co {
    const { mr } = this.owner;
    if (mr.state === 'destroyed') return;
    const nic = this.owner.ctx.device.nic;
    const u = this.unitPages;
    if (u > 1) {
      // 2 MiB umem pages: the runs are in MTT entries (one per 2 MiB), zapped as huge entries.
      const units = present.map((i) => i / u);
      for (const [first, count] of odpZapRuns(units, Math.floor(last / u))) yield* nic.zapEntries(mr, this.firstDevicePage + first * u, count * u, this.pageShift - PAGE_SHIFT);
      return;
    }
    for (const [first, count] of odpZapRuns(present, last)) yield* nic.zapEntries(mr, this.firstDevicePage + first, count);
  }

  /**
   * Invalidation step 5, under the mutex: wait until a device sync covers the zaps, so no
   * access in flight or cached translation survives the callback's return (rdma C5, kernel
   * rule 11). The reference asks the batcher, whose policy may wait for a shared sync.
   *
   * @example
   *   // Always a sync of one's own, whatever the batching policy:
   *   protected override *fence(_event: number): Co {
   *     if (this.owner.mr.state !== 'destroyed') yield* this.owner.ctx.device.nic.sync();
   *   }
   */
  protected *fence(event: number): Co {
    if (this.owner.mr.state === 'destroyed') return;
    yield* this.owner.batcher.syncAfterZap(event);
  }

  /**
   * Invalidation step 6: ib_umem_odp_unmap_dma_pages: forget the pages, dirtying those the
   * device could write (C8): its writes set no dirty bit the kernel sees.
   *
   * @example
   *   // Count what is dropped, then do what the reference does:
   *   protected override unmapPages(indices: Iterable<number>): void {
   *     const list = [...indices];
   *     this.dropped += list.length;
   *     super.unmapPages(list);
   *   }
   */
  protected unmapPages(indices: Iterable<number>): void {
    const { kernel } = this.owner.ctx.device;
    const { phys } = kernel;
    for (const idx of indices) {
      const v = this.pages.get(idx);
      if (v === undefined) continue;
      this.pages.delete(idx);
      const frame = Math.floor(v / 2);
      if (!(v & 1) || !phys.isAllocated(frame)) continue;
      if (phys.mappingFile[frame]! >= 0) folioMarkDirty(kernel, frame, 'ib_umem_odp_unmap_dma_pages');
      else phys.set(frame, PG_DIRTY);
    }
  }

  /**
   * ib_umem_odp_release: under the mutex, drop every mapping (dirtying written pages; with
   * `zap`, also clear and fence what the device still holds), then remove the notifier,
   * which waits for any invalidation still running (rdma C9).
   */
  *release(zap: boolean): Co {
    yield* this.mutex.lock();
    if (zap && this.pages.size > 0) {
      const present = [...this.pages.keys()].sort((a, b) => a - b);
      yield* this.zap(present, (this.end - this.start) / PAGE_SIZE - 1);
      yield* this.fence(MmuNotifyEvent.UNMAP);
    }
    this.unmapPages([...this.pages.keys()]);
    this.mutex.unlock();
    if (this.inserted) {
      this.inserted = false;
      yield* mmuIntervalNotifierRemove(this.notifier);
    }
  }
}

/**
 * Builds the UmemOdp of an explicit MR (the seam for a driver author's subclass that
 * replaces one of its steps; the default is UmemOdp itself).
 */
export type UmemOdpFactory = (owner: OdpOwner, start: number, end: number, firstDevicePage: number, name: string) => UmemOdp;

/** A subclass of UmemOdp, which `odpStrategy` accepts in place of a factory. */
export type UmemOdpClass = new (owner: OdpOwner, start: number, end: number, firstDevicePage: number, name: string) => UmemOdp;

export const defaultUmemOdp: UmemOdpFactory = (owner, start, end, first, name) => new UmemOdp(owner, start, end, first, name);

/** A factory for either form `odpStrategy` accepts. */
export function umemOdpFactory(core: UmemOdpFactory | UmemOdpClass): UmemOdpFactory {
  if (core === UmemOdp || core.prototype instanceof UmemOdp) {
    const cls = core as UmemOdpClass;
    return (owner, start, end, first, name) => new cls(owner, start, end, first, name);
  }
  return core as UmemOdpFactory;
}

/**
 * End a NIC fault (rdma B6): resume without error when the pages are mapped, and also
 * after a lost race (-EAGAIN: the hardware retries and may fault again); with the error
 * bit otherwise, which fails the work request (B4).
 */
export function resumeAfter(owner: OdpOwner, fault: DeviceFault, ret: number): void {
  const nic = owner.ctx.device.nic;
  const ok = ret >= 0 || ret === -EAGAIN;
  if (ret > 0) owner.counters.faultPages += ret;
  if (ok) owner.counters.faultsHandled++;
  nic.resumeFault(fault.id, { error: !ok });
}

/**
 * The synchronous part of mlx5_ib_advise_mr_prefetch (rdma D1 to D4): the advice as a
 * mapping mode, or -errno. PREFETCH is a downgrade (read-only even in a writable MR),
 * PREFETCH_WRITE needs a writable MR (EPERM), NO_FAULT only snapshots.
 */
export function adviceMode(owner: OdpOwner, advice: number): OdpMapMode | number {
  switch (advice) {
    case IBV_ADVISE_MR_ADVICE_PREFETCH: return { fault: true, write: false };
    case IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE: return owner.writable ? { fault: true, write: true } : -EPERM;
    case IBV_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT: return { fault: false, write: false };
    default: return -EINVAL;
  }
}

/**
 * Run an advice: with FLUSH in the caller's context, returning the mapping's error (D3);
 * without it on a worker, errors dropped, returning 0 at once. `users` keeps the MR alive
 * for the worker (mlx5 takes the mkey's usecount before queueing the work).
 */
export function* runAdvice(owner: OdpOwner, flags: number, users: UsageCount, prefetch: () => Co<number>): Co<number> {
  users.get();
  if (flags & IBV_ADVISE_MR_FLAG_FLUSH) {
    try {
      const r = yield* prefetch();
      if (r > 0) owner.counters.prefetches += r;
      return r < 0 ? r : 0;
    } finally {
      users.put();
    }
  }
  const { kernel } = owner.ctx.device;
  kernel.sim.spawn(`${owner.ctx.device.name}/prefetch`, function* () {
    try {
      const r = yield* prefetch();
      if (r > 0) owner.counters.prefetches += r;
    } finally {
      users.put();
    }
  }, { kind: 'worker' });
  return 0;
}

/**
 * An explicit ODP MR (ib_umem_odp_get + mlx5's ODP MR): a faultable device MR over the
 * registered range and one UmemOdp over its page-aligned span. Registration neither pins
 * nor faults (A4); every page the device needs later comes through `handleFault`.
 */
export class IbUmemOdp implements IbUmem, OdpOwner {
  readonly counters = newUmemCounters();
  readonly writable: boolean;
  readonly odp: UmemOdp;
  /** Deregistration has begun: new faults and advice are refused. */
  dead = false;

  private constructor(
    readonly ctx: IbUcontext, readonly mr: MemoryRegion, readonly batcher: SyncBatcher,
    readonly addr: number, readonly length: number, readonly access: number, private readonly iova: number,
    core: UmemOdpFactory, readonly strategy: string,
  ) {
    this.writable = accessWritable(access);
    // ib_umem_start / ib_umem_end: the span in whole umem pages (2 MiB ones for HUGETLB).
    const huge = (access & IBV_ACCESS_HUGETLB) !== 0 && ctx.device.kernel.profile.odpFault === 'hmm';
    const unit = huge ? HPAGE_SIZE : PAGE_SIZE;
    const start = Math.floor(addr / unit) * unit;
    const end = Math.ceil((addr + length) / unit) * unit;
    // A driver author's strategy is named in trails and traces by its own name.
    this.odp = core(this, start, end, 0, `${ctx.device.name}/${strategy === 'odp' ? 'umem_odp' : strategy}(${mr.lkey.toString(16)})`);
    if (huge) this.odp.pageShift = HPAGE_SHIFT;
  }

  get umem(): IbUmem {
    return this;
  }

  /**
   * ib_umem_odp_get + mlx5_ib_init_odp_mr: the device MR (faultable), the notifier over
   * the page-aligned span (A5), then a non-faulting snapshot so pages already present
   * become device-visible with their CPU permissions (A4). An iova whose page offset
   * differs from addr's is refused with EINVAL (modelling choice: one device page per CPU
   * page).
   *
   * IB_ACCESS_HUGETLB (ib_umem_odp_get): the umem's page_shift becomes 21, so the device maps
   * each 2 MiB page with one entry. From 5.10 (36f30e486dce) that is HPAGE_SHIFT for any
   * memory, and a page the CPU does not map at least 2 MiB large fails the mapping with
   * EINVAL (the hmm_order check); before, the start had to lie in a hugetlb VMA (EINVAL
   * otherwise) whose huge page size became the page_shift (`profile.odpHugetlb`). Modelling
   * choice: addr must be 2 MiB aligned and iova congruent to it modulo 2 MiB (EINVAL),
   * so that device huge entries line up with the CPU's. On the GUP-fault kernels (before
   * 5.10) the hugetlb VMA is checked but the device is given 4 KiB entries (assumed: the
   * model does not give those paths a page_shift).
   */
  static *reg(ctx: IbUcontext, req: RegMrRequest, batcher: SyncBatcher, core: UmemOdpFactory = defaultUmemOdp, strategy = 'odp'): Co<IbUmem | number> {
    const { nic } = ctx.device;
    if (req.access & IBV_ACCESS_HUGETLB) {
      if (req.addr % HPAGE_SIZE !== 0 || (req.iova - req.addr) % HPAGE_SIZE !== 0) return -EINVAL;
      if (ctx.device.kernel.profile.odpHugetlb === 'hugetlb-vma') {
        const mm = ctx.mm;
        yield* mm.mmapLock.downRead();
        const vma = mm.findVma(req.addr);
        mm.mmapLock.upRead();
        if (!vma || !isVmHugetlbPage(vma)) return -EINVAL;
      }
    }
    if ((req.iova - req.addr) % PAGE_SIZE !== 0) return -EINVAL;
    if (ctx.mm.users <= 0) return -EINVAL;
    const mr = nic.createMr({ pd: req.pd, iova: req.iova, length: req.length, access: req.access, onDemand: true });
    if (typeof mr === 'number') return mr;
    const umem = new IbUmemOdp(ctx, mr, batcher, req.addr, req.length, req.access, req.iova, core, strategy);
    let ret = yield* umem.odp.insert();
    if (ret === 0) ret = Math.min(0, yield* umem.odp.map(umem.odp.start, umem.odp.end, { fault: false, write: false }));
    if (ret < 0) {
      nic.destroyMr(mr);
      yield* umem.odp.release(false);
      return ret;
    }
    return umem;
  }

  /** pagefault_real_mr's bounds: the user range behind [iova, iova + length), or -EFAULT (B4). */
  private userRange(iova: number, length: number): [number, number] | number {
    if (iova < this.iova || iova + length > this.iova + this.length || length < 0) return -EFAULT;
    const va = this.addr + (iova - this.iova);
    return [va, va + length];
  }

  /**
   * A NIC fault (rdma B2 to B6): map [iova, iova + length) with write intent when the MR
   * is writable (A6: even for a read, as mlx5 does), then resume.
   */
  *handleFault(fault: DeviceFault): Co<void> {
    if (this.dead) {
      this.ctx.device.nic.resumeFault(fault.id, { error: true });
      return;
    }
    this.odp.users.get();
    try {
      const r = this.userRange(fault.iova, Math.max(1, fault.length));
      const ret = typeof r === 'number' ? r : yield* this.odp.map(r[0], r[1], { fault: true, write: this.writable });
      resumeAfter(this, fault, ret);
    } finally {
      this.odp.users.put();
    }
  }

  /** ibv_advise_mr on [addr, addr + length) of this MR (addr is an iova), rdma D1 to D4. */
  *advise(advice: number, flags: number, addr: number, length: number): Co<number> {
    if (this.dead) return -ENOENT;
    const mode = adviceMode(this, advice);
    if (typeof mode === 'number') return mode;
    const r = this.userRange(addr, length);
    if (typeof r === 'number' && flags & IBV_ADVISE_MR_FLAG_FLUSH) return r;
    const odp = this.odp;
    return yield* runAdvice(this, flags, odp.users, function* () {
      return typeof r === 'number' ? r : yield* odp.map(r[0], r[1], mode);
    });
  }

  /**
   * Deregistration (rdma C9): stop the hardware first (revoke the key, and a sync so no
   * access in flight or cached survives), let faults and prefetches on it finish (they
   * now fail), destroy the key, then drop the mirror under the mutex and remove the
   * notifier, which waits for a running invalidation.
   */
  *dereg(): Co<number> {
    if (this.dead) return -EINVAL;
    this.dead = true;
    const { nic } = this.ctx.device;
    nic.revokeMr(this.mr);
    yield* nic.sync();
    yield* this.odp.users.waitIdle();
    nic.destroyMr(this.mr);
    yield* this.odp.release(false);
    return 0;
  }
}
