/**
 * BROKEN ON PURPOSE: the 2011 "take a page reference, zap later" design (seed 004).
 *
 * In November 2011 Sagi Grimberg prototyped pageable memory for an InfiniBand HCA with a
 * classic mmu notifier, before ODP existed (it landed in 3.19). Notifier callbacks then ran
 * under RCU and could not sleep, but updating the HCA's translations and syncing its cache
 * is a command that sleeps ("rather expensive", "up to 10s of milliseconds"). So:
 *
 *   "Upon an invalidation callback (invalidate_page) I need to update the HW about this
 *    change. This is a sleeping procedure. [...] I take the page's refcount and execute a
 *    worker context to do this task (and release the page refcount afterwards)."
 *
 * This strategy is that driver: the callback takes a reference on every page the device
 * maps in the range (get_page), forgets them in its mirror, queues the range and returns
 * at once; a worker waits a batching window (so that one expensive sync covers many
 * invalidations), zaps the entries, syncs once, marks written pages dirty (Andrea's advice:
 * "SetPageDirty before you do put_page") and drops the references. Faults (on an ODP NIC)
 * are resolved with get_user_pages, programmed, and the pages released again: the mirror
 * holds no references of its own, only those the callback takes.
 *
 * The real-world bug (Sagi's own worry later in the thread): the reference keeps the page
 * from being freed, but not from being *replaced*. After munmap and an mmap at the same
 * address (MAP_FIXED), "the device is still referencing the old page while the user thinks
 * he is referencing a new page": until the worker runs, the NIC reads and writes a page the
 * process can no longer see, and what it wrote is lost when the worker drops the reference.
 * Migration (NUMA, compaction) fails too: the reference taken in the callback makes the
 * page's refcount differ from what migration expects (kernel rule 73, hazard H11).
 *
 * Checkers expected to catch it:
 * - `use-after-invalidate` (error): a NIC access through a translation whose invalidate
 *   callback had already returned (kernel rule 11, rdma C5);
 * - `stale-translation` (error): when the munmap's invalidation ends, the device still maps
 *   a frame the CPU page table no longer does;
 * - `blocked-migration` (warning): a migration that failed because of the reference the
 *   callback took while the device still translated the page.
 *
 * The fix came from the kernel side: callbacks may sleep since 3.7 (SRCU), so the driver
 * zaps and syncs *inside* the callback and batches by making the kernel wait for the batch
 * (driver/umem-odp.ts with a batching policy: see scenarios/deferred-invalidation-reuse.ts).
 *
 * Works on every profile (classic notifiers exist everywhere; the callbacks read neither
 * the event type nor the blockable flag, which 3.0 lacks), on a faultable NIC (ON_DEMAND
 * registrations, mapped by NIC faults) or a non-faultable one (mapped at registration).
 */
import {
  EBUSY, EFAULT, EINVAL, FOLL_WRITE, MmuNotifier, PAGE_SIZE, PG_DIRTY, WaitQueue, folioMarkDirty, getUserPagesFast,
  mmuNotifierRegister, mmuNotifierUnregister, putUserPages, type Co, type Kernel, type MmStruct, type MmuNotifierRange,
} from '../../kernel-model/index.ts';
import { accessWritable, type DeviceFault, type MemoryRegion, type Nic } from '../../device/index.ts';
import type { IbUcontext } from '../ib-ucontext.ts';
import { newUmemCounters, type IbUmem, type RegMrRequest, type UmemCounters, type UmemStrategy } from '../umem.ts';

export interface DeferredInvalidationOptions {
  /**
   * How long the worker waits after the first deferred invalidation before it zaps and
   * syncs everything queued so far (virtual ns): the batching that motivated deferring.
   */
  batchWindowNs: number;
}

/** What the strategy did, summed over its MRs (for scenarios and tests). */
export interface DeferredInvalidationStats {
  /** Callbacks that found mapped pages and deferred them. */
  deferred: number;
  /** Page references taken in callbacks (get_page). */
  referencesTaken: number;
  /** Worker batches, each one sync. */
  batches: number;
  syncs: number;
  /** Virtual ns between a callback's return and the sync that fenced its range, at most. */
  maxExposureNs: number;
}

/** A range the callback handed to the worker, with the references that keep its pages. */
interface DeferredWork {
  umem: DeferredUmem;
  /** MR page indices that were mapped, and the frames (referenced) they named. */
  indices: number[];
  frames: number[];
  /** Frames the device could write: dirtied before the reference is dropped. */
  dirty: number[];
  queuedAt: number;
}

/**
 * The driver's deferred-work queue on one NIC: one worker at a time, which waits the
 * batching window, zaps every queued range, syncs once and drops the references.
 */
class DeferredQueue {
  private readonly pending: DeferredWork[] = [];
  private inProgress: DeferredWork[] = [];
  private workerRunning = false;
  private readonly wq: WaitQueue;

  constructor(private readonly kernel: Kernel, private readonly nic: Nic, private readonly opts: DeferredInvalidationOptions,
    private readonly stats: DeferredInvalidationStats) {
    this.wq = new WaitQueue(kernel.sim, `${nic.name}/deferred-invalidation`);
  }

  /** queue_work: callable from atomic context (it does not sleep). */
  queue(work: DeferredWork): void {
    this.pending.push(work);
    if (this.workerRunning) return;
    this.workerRunning = true;
    this.kernel.sim.spawn(`${this.nic.name}/deferred-invalidation`, () => this.worker(), { kind: 'worker' });
  }

  private *worker(): Co {
    const { sim } = this.kernel;
    while (this.pending.length > 0) {
      yield* sim.sleep(this.opts.batchWindowNs);
      this.inProgress = this.pending.splice(0);
      for (const w of this.inProgress) {
        if (w.umem.mr.state === 'destroyed') continue;
        for (const [first, count] of runsOf(w.indices)) yield* this.nic.zapEntries(w.umem.mr, first, count);
      }
      yield* this.nic.sync();
      this.stats.batches++;
      this.stats.syncs++;
      const { phys } = this.kernel;
      for (const w of this.inProgress) {
        this.stats.maxExposureNs = Math.max(this.stats.maxExposureNs, sim.now() - w.queuedAt);
        // "You've to mark the page dirty after releasing it if you write to it" (Andrea).
        for (const f of w.dirty) {
          if (phys.mappingFile[f]! >= 0) folioMarkDirty(this.kernel, f, 'deferred_invalidation_worker');
          else phys.set(f, PG_DIRTY);
        }
        for (const f of w.frames) phys.put(f);
        w.umem.counters.invalidationPages += w.indices.length;
      }
      this.inProgress = [];
      this.wq.wakeUpAll();
    }
    this.workerRunning = false;
  }

  /** Wait until no queued or running work concerns `umem` (deregistration). */
  *flush(umem: DeferredUmem): Co {
    yield* this.wq.waitEvent(() => !this.pending.some((w) => w.umem === umem) && !this.inProgress.some((w) => w.umem === umem));
  }
}

/** Ascending page indices as [first, count] runs. */
function runsOf(indices: readonly number[]): [number, number][] {
  const sorted = [...indices].sort((a, b) => a - b);
  const runs: [number, number][] = [];
  for (const i of sorted) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  }
  return runs;
}

/** One MR: a classic notifier of its own, a mirror of what the device was given, no references. */
class DeferredUmem implements IbUmem {
  readonly strategy = 'deferred-invalidation';
  readonly counters: UmemCounters = newUmemCounters();
  readonly addr: number;
  readonly length: number;
  readonly access: number;
  /** Page-aligned start of the span and its page count. */
  readonly start: number;
  readonly pages: number;
  /** MR page index -> frame * 2 + writable: what the device was given. */
  readonly mirror = new Map<number, number>();
  /** Bumped by every invalidation that reaches this MR: a fault that saw it move retries. */
  seq = 0;
  readonly notifier: MmuNotifier;
  private dead = false;
  private readonly writable: boolean;
  private readonly mm: MmStruct;

  constructor(readonly ctx: IbUcontext, readonly mr: MemoryRegion, req: RegMrRequest, private readonly queue: DeferredQueue,
    private readonly stats: DeferredInvalidationStats) {
    this.addr = req.addr;
    this.length = req.length;
    this.access = req.access;
    this.start = Math.floor(req.addr / PAGE_SIZE) * PAGE_SIZE;
    this.pages = Math.ceil((req.addr + req.length) / PAGE_SIZE) - this.start / PAGE_SIZE;
    this.writable = accessWritable(req.access);
    this.mm = ctx.mm;
    // Classic callbacks get every invalidation of the mm (kernel rule 13): clamp each one.
    this.notifier = new MmuNotifier(`deferred-mr-${mr.lkey.toString(16)}`, {
      invalidateRangeStart: (_sub, range: MmuNotifierRange) => {
        this.defer(range.start, range.end);
        return 0;
      },
      invalidatePage: (_sub, _mm, addr: number) => {
        this.defer(addr, addr + PAGE_SIZE);
      },
      release: () => {
        this.defer(this.start, this.start + this.pages * PAGE_SIZE);
      },
    });
  }

  private get kernel(): Kernel {
    return this.ctx.device.kernel;
  }

  /**
   * The callback (atomic under linux-3.0: RCU). It cannot zap or sync, since both wait for
   * the device, so it pins the pages with a plain reference and leaves the device mapping
   * them. THE BUG: it returns while the NIC can still use these translations.
   */
  private defer(start: number, end: number): void {
    const s = Math.max(start, this.start);
    const e = Math.min(end, this.start + this.pages * PAGE_SIZE);
    if (s >= e) return;
    this.seq++;
    if (this.dead) {
      this.mirror.clear();
      return;
    }
    const first = Math.floor((s - this.start) / PAGE_SIZE);
    const last = Math.ceil((e - this.start) / PAGE_SIZE) - 1;
    const work: DeferredWork = { umem: this, indices: [], frames: [], dirty: [], queuedAt: this.kernel.sim.now() };
    const { phys } = this.kernel;
    for (let i = first; i <= last; i++) {
      const v = this.mirror.get(i);
      if (v === undefined) continue;
      const frame = Math.floor(v / 2);
      phys.get(frame); // get_page: the frame cannot be freed before the worker has synced
      work.indices.push(i);
      work.frames.push(frame);
      if (v & 1) work.dirty.push(frame);
      this.mirror.delete(i);
    }
    if (work.indices.length === 0) return;
    this.counters.invalidations++;
    this.stats.deferred++;
    this.stats.referencesTaken += work.frames.length;
    this.queue.queue(work);
  }

  /** Register the classic notifier; on a NIC that cannot fault, map everything now. */
  *register(): Co<number> {
    const r = yield* mmuNotifierRegister(this.notifier, this.mm);
    if (r < 0) return r;
    if (!this.mr.onDemand) {
      const m = yield* this.mapRange(0, this.pages - 1);
      if (m < 0) {
        this.dead = true;
        yield* mmuNotifierUnregister(this.notifier, this.mm);
        return m;
      }
    }
    return 0;
  }

  /**
   * Map MR pages [first, last]: get_user_pages (plain references, as in 2011), program the
   * device, then release the pages: from here on only the notifier keeps the mirror honest.
   * An invalidation of this MR during the walk or the device update (seq moved) undoes the
   * update synchronously (this is process context: it may sleep) and retries.
   */
  private *mapRange(first: number, last: number): Co<number> {
    const { kernel } = this;
    const nic = this.ctx.device.nic;
    const count = last - first + 1;
    for (let attempt = 0; attempt < 64; attempt++) {
      if (this.mm.users <= 0) return -EFAULT;
      const seq = this.seq;
      const frames: number[] = [];
      const n = yield* getUserPagesFast(this.mm, this.start + first * PAGE_SIZE, count, this.writable ? FOLL_WRITE : 0, frames);
      if (n < count) {
        putUserPages(kernel, frames);
        return n < 0 ? n : -EFAULT;
      }
      if (this.seq !== seq) {
        putUserPages(kernel, frames);
        continue;
      }
      const r = yield* nic.updateEntries(this.mr, first, frames, this.writable);
      if (r < 0) {
        putUserPages(kernel, frames);
        return r;
      }
      if (this.seq !== seq) {
        // The callback ran while the device was being updated and did not see these entries.
        yield* nic.zapEntries(this.mr, first, count);
        yield* nic.sync();
        putUserPages(kernel, frames);
        continue;
      }
      for (let i = 0; i < count; i++) this.mirror.set(first + i, (frames[i] as number) * 2 + (this.writable ? 1 : 0));
      putUserPages(kernel, frames);
      return count;
    }
    return -EBUSY;
  }

  /** A NIC fault: map from the faulting page to the end of the demand, then resume. */
  *handleFault(fault: DeviceFault): Co<void> {
    const nic = this.ctx.device.nic;
    const length = Math.max(1, fault.length);
    if (this.dead || fault.iova < this.mr.iova || fault.iova + length > this.mr.iova + this.length) {
      nic.resumeFault(fault.id, { error: true });
      return;
    }
    const first = this.mr.pageIndexOf(fault.iova);
    const last = this.mr.pageIndexOf(fault.iova + length - 1);
    const r = yield* this.mapRange(first, last);
    if (r > 0) {
      this.counters.faultPages += r;
      this.counters.faultsHandled++;
    }
    nic.resumeFault(fault.id, { error: r < 0 });
  }

  /**
   * ib_dereg_mr: revoke the key and sync (the device stops), unregister the notifier, wait
   * for the worker to have dropped this MR's references, destroy the key.
   */
  *dereg(): Co<number> {
    if (this.dead) return -EINVAL;
    this.dead = true;
    const nic = this.ctx.device.nic;
    nic.revokeMr(this.mr);
    yield* nic.sync();
    yield* mmuNotifierUnregister(this.notifier, this.mm);
    this.mirror.clear();
    yield* this.queue.flush(this);
    nic.destroyMr(this.mr);
    return 0;
  }
}

/** The strategy as `IbDevice` sees it, plus its statistics. */
export interface DeferredInvalidationStrategy extends UmemStrategy {
  readonly name: 'deferred-invalidation';
  readonly stats: DeferredInvalidationStats;
}

/**
 * The 2011 deferred-invalidation driver (BROKEN ON PURPOSE, see the file comment). Use it
 * as the device's `odp` strategy on a faultable NIC (ON_DEMAND registrations, as the 2011
 * prototype was) or as `nonOdp` on a NIC that cannot fault.
 *
 * @example
 *   const node = ctx.node('host', { caps: { odp: MLX5_ODP_CAPS },
 *     device: { nonOdp: pinnedStrategy(), odp: deferredInvalidationStrategy({ batchWindowNs: 100_000 }) } });
 */
export function deferredInvalidationStrategy(opts: DeferredInvalidationOptions): DeferredInvalidationStrategy {
  if (!(opts.batchWindowNs >= 0)) throw new RangeError(`batchWindowNs must be >= 0 ns, got ${opts.batchWindowNs}`);
  const stats: DeferredInvalidationStats = { deferred: 0, referencesTaken: 0, batches: 0, syncs: 0, maxExposureNs: 0 };
  const queues = new WeakMap<Nic, DeferredQueue>();
  return {
    name: 'deferred-invalidation',
    stats,
    *regMr(ctx: IbUcontext, req: RegMrRequest): Co<IbUmem | number> {
      const { nic, kernel } = ctx.device;
      if (req.iova % PAGE_SIZE !== req.addr % PAGE_SIZE) return -EINVAL;
      if (ctx.mm.users <= 0) return -EINVAL;
      const mr = nic.createMr({ pd: req.pd, iova: req.iova, length: req.length, access: req.access, onDemand: nic.faultable });
      if (typeof mr === 'number') return mr;
      let queue = queues.get(nic);
      if (!queue) queues.set(nic, (queue = new DeferredQueue(kernel, nic, opts, stats)));
      const umem = new DeferredUmem(ctx, mr, req, queue, stats);
      const r = yield* umem.register();
      if (r < 0) {
        nic.destroyMr(mr);
        return r;
      }
      return umem;
    },
  };
}
