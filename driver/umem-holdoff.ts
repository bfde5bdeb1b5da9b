import {
  EBUSY, EFAULT, EINVAL, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_WRITE, HMM_RANGE_DEFAULT_TIMEOUT_NS, Mutex,
  MmuIntervalNotifier, PAGE_SIZE, ZERO_PFN, folioMarkDirty, hmmRangeFault, hmmRangeInit, mmput,
  mmuIntervalNotifierInsert, mmuIntervalNotifierRemove, mmuIntervalReadBegin, mmuIntervalReadRetry, mmuIntervalSetSeq,
  mmuNotifierRangeBlockable, type Co, type HmmRange, type MmuNotifierRange,
} from '../kernel-model/index.ts';
import { IBV_QPS_ERR, accessWritable, type MemoryRegion, type Nic } from '../device/index.ts';
import { SyncBatcher, type BatchPolicy } from './batching/sync-batcher.ts';
import { noBatching } from './batching/none.ts';
import type { IbUcontext } from './ib-ucontext.ts';
import { newUmemCounters, type IbUmem, type RegMrRequest, type UmemCounters, type UmemStrategy } from './umem.ts';

/**
 * Fixed cost of the remap system call the userspace provider makes when the validity word
 * says a range it is about to post was invalidated: entry, argument checks and exit. The
 * fault loop and the device command it runs are charged on top. Assumed (a few µs for a
 * simple ioctl round trip; no published figure for such a call exists, it is this design's).
 */
export const DEFAULT_REMAP_SYSCALL_NS = 2_000;

export interface HoldoffOptions {
  /** The strategy's name, which its MRs carry into bindings, violations and reports (default 'holdoff'). */
  name?: string;
  /**
   * How long an invalidation waits for DMA touching its range before it gives up, fences
   * the device and revokes the MR (virtual ns; Infinity waits for ever).
   */
  holdoffTimeoutNs: number;
  /** Map invalidated ranges again as soon as each invalidation ends, so rkey access keeps working. */
  eagerRemap?: boolean;
  /** How zaps are turned into syncs (default `noBatching()`: one sync per invalidation, as mlx5). */
  batching?: BatchPolicy;
  /** The policy's name in the batcher's statistics. */
  batchingName?: string;
  /** Fixed cost of the remap system call (default DEFAULT_REMAP_SYSCALL_NS, assumed). */
  remapSyscallNs?: number;
}

/** What the holdoff design costs and how often it had to give up (per MR, and summed per strategy). */
export interface HoldoffStats {
  /** Blockable invalidations that reached a live MR. */
  invalidations: number;
  /** Non-blockable invalidations refused (rdma C2). */
  refusedNonBlockable: number;
  /** Invalidations that found DMA on their range and waited for it. */
  heldOff: number;
  /** Virtual ns spent waiting for DMA, in total and at most once. */
  holdoffNs: number;
  maxHoldoffNs: number;
  /** Waits that hit the holdoff timeout (each revokes its MR). */
  timeouts: number;
  revocations: number;
  /** Syncs requested through the batcher. */
  syncRequests: number;
  /** Remap system calls made by the provider, the failed ones, and the ns they took. */
  remaps: number;
  remapFailures: number;
  remapNs: number;
  /** Ranges the eager-remap worker mapped again, and those it could not (unmapped memory). */
  eagerRemaps: number;
  eagerRemapFailures: number;
}

/** All counters at zero. */
export function newHoldoffStats(): HoldoffStats {
  return {
    invalidations: 0, refusedNonBlockable: 0, heldOff: 0, holdoffNs: 0, maxHoldoffNs: 0, timeouts: 0, revocations: 0,
    syncRequests: 0, remaps: 0, remapFailures: 0, remapNs: 0, eagerRemaps: 0, eagerRemapFailures: 0,
  };
}

/** Remap system calls the provider makes for one post before it rings the doorbell anyway. */
const MAX_REMAP_ATTEMPTS = 8;

/** One of the MTT-alignment groups of rdma C4: a run of zapped entries closes only at a multiple of 8. */
const ZAP_ALIGNMENT = 8;

/**
 * The zap commands of one invalidation, as mlx5_ib_invalidate_range issues them (rdma C4):
 * runs of present pages merge; a run ends only at an absent page whose index is a multiple
 * of 8, so absent pages inside an aligned group are zapped with their neighbours; a run open
 * at the end is zapped through `last`. Returns [firstPage, count] pairs.
 */
export function zapRuns(present: ArrayLike<number>, first: number, last: number): [number, number][] {
  const runs: [number, number][] = [];
  let start = -1;
  for (let i = first; i <= last; i++) {
    if (present[i]) {
      if (start < 0) start = i;
    } else if (start >= 0 && i % ZAP_ALIGNMENT === 0) {
      runs.push([start, i - start]);
      start = -1;
    }
  }
  if (start >= 0) runs.push([start, last - start + 1]);
  return runs;
}

/** What every MR of a holdoff strategy shares (from `HoldoffOptions`, defaults applied). */
export type HoldoffUmemOptions = Required<Pick<HoldoffOptions, 'holdoffTimeoutNs' | 'eagerRemap' | 'remapSyscallNs'>> & { name?: string };

/**
 * A holdoff MR: user memory a NIC that cannot fault reaches without pinning it.
 *
 * Registration faults every page in (the rule-31 loop with REQ_FAULT, plus REQ_WRITE for
 * a writable MR), takes no page references, and programs a non-ODP device MR; an interval
 * notifier with the per-MR mutex tracks the CPU page table. An invalidation first marks
 * the range invalid in the validity word and stores its sequence (so neither the provider
 * nor a remap starts new work there), then waits until DMA actively touching the range has
 * finished, bounded by the holdoff timeout, then zaps (C4), syncs through the batcher,
 * marks written pages dirty and returns true. On timeout it still returns only once the
 * device is fenced: the QPs with work on the MR go to ERROR, the MR is revoked, zapped and
 * synced. Posting is done by userspace, so the provider checks `validity` before it rings
 * the doorbell and makes a remap system call for an invalid range (`prepareLocalAccess`);
 * an rkey access cannot wait and fails on the zapped entries, unless eager remap mapped
 * the range again.
 */
export class HoldoffUmem implements IbUmem {
  readonly strategy: string;
  readonly counters: UmemCounters = newUmemCounters();
  readonly stats: HoldoffStats = newHoldoffStats();
  readonly addr: number;
  readonly length: number;
  readonly access: number;
  /** Page-aligned start of the registered span and its page count (rdma A5). */
  readonly start: number;
  readonly pages: number;
  /**
   * The validity word shared with the userspace provider: 1 for each page whose device
   * entry may be used, 0 once an invalidation began on it (until a remap).
   */
  readonly validity: Uint8Array;
  /** Device entry installed and not zapped; installed read-write; the frame it names. */
  private readonly mapped: Uint8Array;
  private readonly writable: Uint8Array;
  private readonly frames: Float64Array;
  readonly mutex: Mutex;
  readonly notifier: MmuIntervalNotifier;
  revoked = false;
  private dead = false;
  private readonly writableMr: boolean;
  private readonly nic: Nic;

  constructor(
    readonly ctx: IbUcontext,
    readonly mr: MemoryRegion,
    req: RegMrRequest,
    private readonly opts: HoldoffUmemOptions,
    private readonly batcher: SyncBatcher,
    private readonly total: HoldoffStats,
  ) {
    this.strategy = opts.name ?? 'holdoff';
    this.addr = req.addr;
    this.length = req.length;
    this.access = req.access;
    this.start = Math.floor(req.addr / PAGE_SIZE) * PAGE_SIZE;
    this.pages = Math.ceil((req.addr + req.length) / PAGE_SIZE) - this.start / PAGE_SIZE;
    this.validity = new Uint8Array(this.pages);
    this.mapped = new Uint8Array(this.pages);
    this.writable = new Uint8Array(this.pages);
    this.frames = new Float64Array(this.pages);
    this.writableMr = accessWritable(req.access);
    this.nic = ctx.device.nic;
    const name = `${this.strategy}-mr-${mr.lkey.toString(16)}`;
    this.mutex = new Mutex(ctx.device.kernel.sim, `${name}.mutex`, 'umem.mutex');
    this.notifier = new MmuIntervalNotifier(name);
  }

  private get sim() {
    return this.ctx.device.kernel.sim;
  }

  private count(key: Exclude<keyof HoldoffStats, 'maxHoldoffNs'>, n = 1): void {
    this.stats[key] += n;
    this.total[key] += n;
  }

  /** The pages [first, last] of the span that [start, end) touches, or null when none. */
  private pagesOf(start: number, end: number): [number, number] | null {
    const s = Math.max(start, this.start);
    const e = Math.min(end, this.start + this.pages * PAGE_SIZE);
    if (s >= e) return null;
    return [Math.floor((s - this.start) / PAGE_SIZE), Math.ceil((e - this.start) / PAGE_SIZE) - 1];
  }

  /** The device iova of span page `i` (the MR's page i: iova and addr share their page offset). */
  private iovaOfPage(i: number): number {
    return this.mr.pageIova(i);
  }

  // ---- the notifier --------------------------------------------------------------------

  /** Insert the interval notifier over the span (rdma C1) and fault everything in. */
  *register(): Co<number> {
    const ret = yield* mmuIntervalNotifierInsert(this.notifier, this.ctx.mm, this.start, this.pages * PAGE_SIZE, {
      invalidate: (sub, range, curSeq) => this.invalidate(sub, range, curSeq),
    }, { lock: this.mutex });
    if (ret < 0) return ret;
    const r = yield* this.mapPages(0, this.pages - 1);
    if (r < 0) {
      this.dead = true;
      yield* mmuIntervalNotifierRemove(this.notifier);
      return r;
    }
    return 0;
  }

  /**
   * The invalidate callback. Its steps, each of which a driver author may change: refuse a
   * non-blockable range (C2); under the lock, set_seq (rule 26) and `clamp`; clear the
   * validity word; `holdOff` (wait for DMA on the range, bounded); under the lock again,
   * `zap` with `fence` as its sync, or `revoke` when the wait timed out.
   */
  protected *invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): Co<boolean> {
    // rdma C2: a non-blockable range (the OOM reaper) cannot wait for DMA: touch nothing.
    if (!mmuNotifierRangeBlockable(range)) {
      this.count('refusedNonBlockable');
      return false;
    }
    const sim = this.sim;
    const pages = this.clamp(range);
    // Phase 1, under the lock: store the sequence (rule 26) and clear the validity word, so
    // that neither the provider nor a remap starts new work on the range (a remap now
    // waits in mmu_interval_read_begin until the invalidation ends).
    yield* this.mutex.lock();
    mmuIntervalSetSeq(sub, curSeq);
    if (this.dead || this.revoked || !pages) {
      this.mutex.unlock();
      return true;
    }
    const [first, last] = pages;
    this.validity.fill(0, first, last + 1);
    this.mutex.unlock();
    this.count('invalidations');
    this.counters.invalidations++;
    const idle = yield* this.holdOff(first, last);
    // Phase 2, under the lock: zap, sync, dirty; or, on timeout, fence and revoke.
    yield* this.mutex.lock();
    if (this.dead || this.revoked) {
      this.mutex.unlock();
      return true;
    }
    if (!idle) {
      this.count('timeouts');
      yield* this.revoke();
      this.mutex.unlock();
      this.ctx.mrEvents.next({ type: 'revoked', umem: this, start: this.start, end: this.start + this.pages * PAGE_SIZE });
      return true;
    }
    const cleared = yield* this.zap(first, last, () => this.fence(range.event));
    this.mutex.unlock();
    this.counters.invalidationPages += cleared;
    const start = Math.max(range.start, this.start);
    this.ctx.mrEvents.next({ type: 'invalidated', umem: this, start, end: Math.min(range.end, this.start + this.pages * PAGE_SIZE) });
    if (this.opts.eagerRemap) {
      sim.spawn(`${this.notifier.name}/eager-remap`, () => this.eagerRemap(first, last), { kind: 'worker' });
    }
    return true;
  }

  /**
   * Invalidation step: the span pages [first, last] of the range, clamped to this MR
   * (interval subscribers get the whole operation's range, kernel rule 13), or null.
   *
   * @example
   *   // Invalidate the whole MR on any overlap (simple, costly):
   *   protected override clamp(range: MmuNotifierRange): [number, number] | null {
   *     return super.clamp(range) ? [0, this.pages - 1] : null;
   *   }
   */
  protected clamp(range: MmuNotifierRange): [number, number] | null {
    return this.pagesOf(range.start, range.end);
  }

  /**
   * Invalidation step, without the lock: wait until no DMA actively touches span pages
   * [first, last] (idle receives do not count), bounded by the holdoff timeout. True when
   * the range went idle, false on timeout (the caller then revokes the MR).
   *
   * @example
   *   // Never wait: fence at once (every in-flight transfer on the range then fails):
   *   protected override *holdOff(_first: number, _last: number): Co<boolean> {
   *     return true;
   *   }
   */
  protected *holdOff(first: number, last: number): Co<boolean> {
    const sim = this.sim;
    const t0 = sim.now();
    const iova = this.iovaOfPage(first);
    const idle = yield* this.nic.dmaActivity.waitIdle(this.mr, iova, (last - first + 1) * PAGE_SIZE, t0 + this.opts.holdoffTimeoutNs);
    const waited = sim.now() - t0;
    if (waited > 0) {
      this.count('heldOff');
      this.count('holdoffNs', waited);
      this.stats.maxHoldoffNs = Math.max(this.stats.maxHoldoffNs, waited);
      this.total.maxHoldoffNs = Math.max(this.total.maxHoldoffNs, waited);
    }
    return idle;
  }

  /**
   * Invalidation step, under the lock, after the zap: wait until a device sync covers it
   * (rdma C5, kernel rule 11), through the batcher, whose policy may share one sync among
   * several invalidations.
   *
   * @example
   *   // A sync of one's own every time, whatever the policy:
   *   protected override *fence(_event: number): Co {
   *     yield* this.ctx.device.nic.sync();
   *   }
   */
  protected *fence(event: number): Co {
    this.count('syncRequests');
    yield* this.batcher.syncAfterZap(event);
  }

  /**
   * Invalidation step, under the lock: zap the entries present in [first, last] in C4
   * runs, fence them with `sync` (skipped when nothing was present: mlx5 stops when no
   * page is mapped), then mark the pages the device could write dirty (C8). Returns the
   * entries cleared.
   *
   * @example
   *   // Log each zap, then do what the reference does:
   *   protected override *zap(first: number, last: number, sync: () => Co): Co<number> {
   *     this.zapped.push([first, last]);
   *     return yield* super.zap(first, last, sync);
   *   }
   */
  protected *zap(first: number, last: number, sync: () => Co): Co<number> {
    const runs = zapRuns(this.mapped, first, last);
    if (runs.length === 0) return 0;
    let cleared = 0;
    for (const [f, n] of runs) {
      const r = yield* this.nic.zapEntries(this.mr, f, n);
      if (r > 0) cleared += r;
    }
    const dirty: number[] = [];
    for (let i = first; i <= last; i++) {
      if (!this.mapped[i]) continue;
      if (this.writable[i]) dirty.push(this.frames[i] as number);
      this.mapped[i] = 0;
      this.writable[i] = 0;
    }
    yield* sync();
    const { kernel } = this.ctx.device;
    for (const f of dirty) if (f !== ZERO_PFN) folioMarkDirty(kernel, f, 'ib_umem_holdoff_unmap');
    return cleared;
  }

  /**
   * The holdoff timed out: the invalidation may still not return before the device is
   * fenced. Move every QP with work on this MR to ERROR (its WQEs flush), revoke the MR (no
   * access through its keys any more, rdma G6), zap everything and sync. Mutex held.
   */
  protected *revoke(): Co {
    const nic = this.nic;
    const qpNums = new Set(nic.dmaActivity.active(this.mr).map((op) => op.qpNum));
    for (const n of qpNums) {
      const qp = nic.qpByNum(n);
      if (qp) nic.modifyQp(qp, { qpState: IBV_QPS_ERR });
    }
    nic.revokeMr(this.mr);
    this.revoked = true;
    this.count('revocations');
    this.validity.fill(0);
    const cleared = yield* this.zap(0, this.pages - 1, () => this.syncNow());
    this.counters.invalidationPages += cleared;
  }

  private *syncNow(): Co {
    yield* this.nic.sync();
  }

  // ---- mapping: registration, remap, eager remap -------------------------------------------

  /**
   * Map span pages [first, last] with the canonical collision-retry loop (kernel rule 31):
   * read_begin, `buildRange`, `fault` (hmm_range_fault with REQ_FAULT, +REQ_WRITE, under
   * the mmap read lock), then `commit` (under the mutex, read_retry and the device update
   * before unlocking). Bounded by HMM_RANGE_DEFAULT_TIMEOUT. Returns 0 or -errno (-EFAULT
   * for unmapped memory).
   */
  private *mapPages(first: number, last: number): Co<number> {
    const sim = this.sim;
    const mm = this.ctx.mm;
    if (!mm.mmgetNotZero()) return -EFAULT;
    const deadline = sim.now() + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    let ret = 0;
    for (;;) {
      if (sim.now() > deadline) {
        ret = -EBUSY;
        break;
      }
      const seq = yield* mmuIntervalReadBegin(this.notifier);
      const range = this.buildRange(first, last, seq);
      ret = yield* this.fault(range);
      if (ret === -EBUSY) continue;
      if (ret < 0) break;
      const r = yield* this.commit(range, first, last);
      if (r === null) continue;
      ret = r;
      break;
    }
    // Never with the mutex held: the last mmput can run exit_mmap and our invalidate (rdma C10).
    yield* mmput(mm);
    return ret;
  }

  /**
   * Mapping step: the hmm_range for span pages [first, last] at sequence `seq`, asking to
   * fault every page in (with write for a writable MR): a NIC that cannot fault needs all.
   *
   * @example
   *   // Map only what is present; the rest fails on the device (a lazier design):
   *   protected override buildRange(first: number, last: number, seq: number): HmmRange {
   *     const r = super.buildRange(first, last, seq);
   *     r.defaultFlags = 0;
   *     return r;
   *   }
   */
  protected buildRange(first: number, last: number, seq: number): HmmRange {
    const req = HMM_PFN_REQ_FAULT | (this.writableMr ? HMM_PFN_REQ_WRITE : 0);
    return hmmRangeInit(this.notifier, this.start + first * PAGE_SIZE, this.start + (last + 1) * PAGE_SIZE, seq, req);
  }

  /**
   * Mapping step: hmm_range_fault under the mmap read lock. 0, -EBUSY (start over) or -errno.
   *
   * @example
   *   protected override *fault(range: HmmRange): Co<number> {
   *     this.walks++;
   *     return yield* super.fault(range);
   *   }
   */
  protected *fault(range: HmmRange): Co<number> {
    const mm = this.ctx.mm;
    yield* mm.mmapLock.downRead();
    const ret = yield* hmmRangeFault(range);
    mm.mmapLock.upRead();
    return ret;
  }

  /**
   * Mapping step, under the mutex: if mmu_interval_read_retry says no invalidation ran
   * since the range's sequence, program the device entries of [first, last] and mark them
   * valid before unlocking (kernel rule 28). null to start over; 0 or -errno otherwise
   * (-EINVAL once the MR is revoked or deregistered).
   *
   * @example
   *   // Count the collisions with an invalidation:
   *   protected override *commit(range: HmmRange, first: number, last: number): Co<number | null> {
   *     const r = yield* super.commit(range, first, last);
   *     if (r === null) this.collisions++;
   *     return r;
   *   }
   */
  protected *commit(range: HmmRange, first: number, last: number): Co<number | null> {
    yield* this.mutex.lock();
    try {
      if (mmuIntervalReadRetry(this.notifier, range.notifierSeq)) return null;
      if (this.dead || this.revoked) return -EINVAL;
      const n = last - first + 1;
      const w: boolean[] = new Array<boolean>(n);
      for (let i = 0; i < n; i++) w[i] = this.writableMr && ((range.flags[i] as number) & HMM_PFN_WRITE) !== 0;
      const ret = yield* this.nic.updateEntries(this.mr, first, range.pfns, w);
      if (ret === 0) {
        for (let i = 0; i < n; i++) {
          this.frames[first + i] = range.pfns[i] as number;
          this.mapped[first + i] = 1;
          this.writable[first + i] = w[i] ? 1 : 0;
          this.validity[first + i] = 1;
        }
      }
      return ret;
    } finally {
      this.mutex.unlock();
    }
  }

  /**
   * The provider, before ringing the doorbell: if the validity word says part of
   * [addr, addr + length) was invalidated, make the remap system call (a fixed cost, then
   * the rule-31 loop and the device command). A range that cannot be mapped (munmapped
   * memory) stays invalid and the NIC reports the work request as a local protection
   * error (rdma F1), as it would on real hardware; so this always returns 0.
   *
   * Invalidations may land while the system call sleeps (a kswapd round reclaims page after
   * page of the range): the provider reads the word again after each remap and rings the
   * doorbell only once it is all valid. That last read and the doorbell are one step here
   * (nothing runs between them), and from the doorbell on the work is active DMA that a
   * new invalidation waits for. Bounded: after MAX_REMAP_ATTEMPTS remaps it posts anyway.
   */
  *prepareLocalAccess(addr: number, length: number, _write: boolean): Co<number> {
    if (length <= 0 || this.dead || this.revoked) return 0;
    const pages = this.pagesOf(addr, addr + length);
    if (!pages) return 0;
    const sim = this.sim;
    for (let attempt = 0; attempt < MAX_REMAP_ATTEMPTS && !this.dead && !this.revoked; attempt++) {
      let first = -1;
      let last = -1;
      for (let i = pages[0]; i <= pages[1]; i++) {
        if (this.validity[i]) continue;
        if (first < 0) first = i;
        last = i;
      }
      if (first < 0) return 0; // one load of the shared word: no system call
      const t0 = sim.now();
      this.count('remaps');
      yield* sim.sleep(this.opts.remapSyscallNs);
      const r = yield* this.mapPages(first, last);
      this.count('remapNs', sim.now() - t0);
      if (r < 0) {
        this.count('remapFailures');
        return 0;
      }
    }
    return 0;
  }

  /**
   * Eager remap: interval notifiers have no end callback, so a worker sleeps in
   * mmu_interval_read_begin (inside the rule-31 loop) until the invalidation has ended and
   * maps the range again, faulting it in. A range that was unmapped stays invalid. Note the
   * price: memory a process gave back with MADV_DONTNEED is faulted in again at once.
   */
  private *eagerRemap(first: number, last: number): Co {
    const r = yield* this.mapPages(first, last);
    this.count(r === 0 ? 'eagerRemaps' : 'eagerRemapFailures');
  }

  // ---- deregistration ------------------------------------------------------------------------

  /**
   * ib_dereg_mr (rdma C9): stop the device first (revoke, zap, sync), mark written pages
   * dirty, destroy the device MR, then remove the notifier (which waits for a running
   * invalidation).
   */
  *dereg(): Co<number> {
    yield* this.mutex.lock();
    this.dead = true;
    if (!this.revoked) this.nic.revokeMr(this.mr);
    this.validity.fill(0);
    yield* this.zap(0, this.pages - 1, () => this.syncNow());
    this.mutex.unlock();
    this.nic.destroyMr(this.mr);
    if (this.notifier.inserted) yield* mmuIntervalNotifierRemove(this.notifier);
    return 0;
  }
}

/** The class a holdoff strategy builds its MRs with (the seam for a driver author's subclass). */
export type HoldoffUmemClass = new (...args: ConstructorParameters<typeof HoldoffUmem>) => HoldoffUmem;

/** The holdoff strategy as `IbDevice` sees it, plus what tests and sweeps read. */
export interface HoldoffStrategy extends UmemStrategy {
  readonly options: Readonly<HoldoffOptions>;
  /** Summed over every MR this strategy registered. */
  readonly stats: HoldoffStats;
  /** The sync batcher of a NIC (one per NIC, created at its first registration). */
  batcherOf(nic: Nic): SyncBatcher | undefined;
}

/**
 * The **holdoff** registration strategy, for NICs that cannot fault. A DESIGN UNDER STUDY:
 * no mainline RDMA driver does this (rdma H3, open question 8); it is the proposal of the
 * 2018 linux-mm thread (seed 000: "holding off the unmapping [in] the mmu notifier callback
 * until any pending operation is complete and then invalidate the mapping so that future
 * operations require a remapping"). See `HoldoffUmem` for the behaviour.
 *
 * @example
 *   const node = createRdmaNode(sim, fabric, {
 *     name: 'a', nic: { caps: { odp: NO_ODP_CAPS } },
 *     device: { nonOdp: holdoffStrategy({ holdoffTimeoutNs: 1_000_000, batching: windowBatching(20_000, sim.scheduler) }) },
 *   });
 */
export function holdoffStrategy(opts: HoldoffOptions, umemClass: HoldoffUmemClass = HoldoffUmem): HoldoffStrategy {
  if (!(opts.holdoffTimeoutNs >= 0)) throw new RangeError(`holdoffTimeoutNs must be >= 0 ns, got ${opts.holdoffTimeoutNs}`);
  const remapSyscallNs = opts.remapSyscallNs ?? DEFAULT_REMAP_SYSCALL_NS;
  if (!(remapSyscallNs >= 0)) throw new RangeError(`remapSyscallNs must be >= 0 ns, got ${remapSyscallNs}`);
  const name = opts.name ?? 'holdoff';
  const umemOpts: HoldoffUmemOptions = { holdoffTimeoutNs: opts.holdoffTimeoutNs, eagerRemap: opts.eagerRemap ?? false, remapSyscallNs, name };
  const policy = opts.batching ?? noBatching();
  const policyName = opts.batchingName ?? (opts.batching ? 'custom' : 'none');
  const batchers = new WeakMap<Nic, SyncBatcher>();
  const stats = newHoldoffStats();
  return {
    name,
    options: opts,
    stats,
    batcherOf: (nic) => batchers.get(nic),
    *regMr(ctx: IbUcontext, req: RegMrRequest): Co<IbUmem | number> {
      const { nic, kernel } = ctx.device;
      // The MR's page i must be the span's page i.
      if (req.iova % PAGE_SIZE !== req.addr % PAGE_SIZE) return -EINVAL;
      const mr = nic.createMr({ pd: req.pd, iova: req.iova, length: req.length, access: req.access, onDemand: false });
      if (typeof mr === 'number') return mr;
      let batcher = batchers.get(nic);
      if (!batcher) batchers.set(nic, (batcher = new SyncBatcher(kernel.sim, nic, policyName, policy)));
      const umem = new umemClass(ctx, mr, req, umemOpts, batcher, stats);
      const r = yield* umem.register();
      if (r < 0) {
        nic.destroyMr(mr);
        return r;
      }
      return umem;
    },
  };
}
