import {
  EAGAIN, EBUSY, EFAULT, EINVAL, EOPNOTSUPP, IntervalTree, IntervalTreeNode, MmuNotifier, Mutex, PAGE_SIZE, PG_DIRTY, RwSemaphore, folioMarkDirty, mmput,
  mmuNotifierRegister, mmuNotifierUnregister, isVmHugetlbPage, type Co, type MmuNotifierOps, type MmuNotifierRange, type Simulation,
} from '../kernel-model/index.ts';
import { IBV_ACCESS_HUGETLB, accessWritable, type DeviceFault, type MemoryRegion } from '../device/index.ts';
import type { SyncBatcher } from './batching/index.ts';
import { SIZE_MAX } from './ib-device.ts';
import type { IbUcontext } from './ib-ucontext.ts';
import { odpGupMapPages } from './odp-gup-fault.ts';
import { PageMirror } from './page-mirror.ts';
import { newUmemCounters, type IbUmem, type RegMrRequest } from './umem.ts';
import { odpZapRuns, resumeAfter, type OdpOwner } from './umem-odp.ts';

/**
 * ODP as it was from 3.19 to 5.4 (drivers/infiniband/core/umem_odp.c before 5.5's
 * f25a546e6529 "RDMA/odp: Use mmu_interval_notifier_insert()", with mlx5's odp.c of the
 * same years; the linux-4.18 profile picks it). One classic mmu notifier per ucontext
 * (`context->mn`, registered by the first ODP MR and unregistered by the last) with the
 * context's own interval tree of umems (`context->umem_tree`) under `context->umem_rwsem`.
 * `invalidate_range_start` walks the tree: for each umem it raises the umem's
 * `notifiers_count` and zaps; `invalidate_range_end` walks it again and bumps
 * `notifiers_seq`, completing `notifier_completion` when the count falls to zero. The
 * fault path samples `notifiers_seq`, faults with get_user_pages_remote (put_page at once),
 * and maps only if `ib_umem_mmu_notifier_retry` sees no count and the same sequence.
 */

/** MMU_NOTIFIER_TIMEOUT in mlx5's odp.c: how long a fault waits for a running invalidation. */
export const MMU_NOTIFIER_TIMEOUT_NS = 1_000_000_000;

/** `struct completion` with wait_for_completion_timeout, in virtual time. */
class Completion {
  done = true;
  private waiters: (() => void)[] = [];

  constructor(private readonly sim: Simulation) {}

  reinit(): void {
    this.done = false;
  }

  completeAll(): void {
    this.done = true;
    const w = this.waiters;
    this.waiters = [];
    for (const wake of w) wake();
  }

  /** True when completed, false when `ns` passed first. */
  *waitTimeout(ns: number): Co<boolean> {
    if (this.done) return true;
    const { sim } = this;
    sim.mightSleep('wait_for_completion_timeout');
    let settled = false;
    return yield* sim.park<boolean>((wake) => {
      const settle = (v: boolean) => {
        if (settled) return;
        settled = true;
        wake(v);
      };
      this.waiters.push(() => settle(true));
      sim.spawn('completion-timeout', function* () {
        yield* sim.sleep(ns);
        settle(false);
      }, { kind: 'worker' });
    });
  }
}

/** A umem's place in its context's `umem_tree` (the kernel embeds the node in ib_umem_odp). */
class UmemTreeNode extends IntervalTreeNode {
  constructor(readonly umem: UmemOdpUcontext) {
    super(umem.start, umem.end - 1);
  }
}

/** The per-ucontext part: `context->mn`, `umem_tree`, `umem_rwsem`, the counts. */
class UcontextOdp {
  readonly umemRwsem: RwSemaphore;
  readonly tree = new IntervalTree<UmemTreeNode>();
  odpMrsCount = 0;
  /** `context->notifier_count`: invalidations running on this context. */
  notifierCount = 0;
  /** Umems registered while an invalidation ran: no private counters yet. */
  readonly noPrivateCounters = new Set<UmemOdpUcontext>();
  mn: MmuNotifier | null = null;

  constructor(readonly ctx: IbUcontext) {
    const { sim } = ctx.device.kernel;
    this.umemRwsem = new RwSemaphore(sim, `${ctx.device.name}/ucontext.umem_rwsem`, 'ib_ucontext.umem_rwsem');
  }

  /** ib_ucontext_notifier_start_account. */
  startAccount(): void {
    this.notifierCount++;
  }

  /**
   * ib_ucontext_notifier_end_account: the last running invalidation gives the umems that
   * were registered meanwhile their private counters.
   */
  endAccount(): void {
    if (--this.notifierCount > 0) return;
    for (const u of this.noPrivateCounters) {
      u.mnCountersActive = true;
      u.notifierCompletion.completeAll();
    }
    this.noPrivateCounters.clear();
  }

  umemsIn(start: number, end: number): UmemOdpUcontext[] {
    return end > start ? this.tree.overlapping(start, end - 1).map((n) => n.umem) : [];
  }

  /** `ib_umem_notifiers`: start, end and release walk the tree under umem_rwsem (read). */
  ops(): MmuNotifierOps {
    const self = this;
    return {
      *invalidateRangeStart(_sub: MmuNotifier, range: MmuNotifierRange): Co<number> {
        self.startAccount();
        yield* self.umemRwsem.downRead();
        try {
          for (const u of self.umemsIn(range.start, range.end)) {
            yield* u.startAccount();
            yield* u.invalidateRange(range.start, range.end);
          }
        } finally {
          self.umemRwsem.upRead();
        }
        return 0;
      },
      *invalidateRangeEnd(_sub: MmuNotifier, range: MmuNotifierRange): Co {
        yield* self.umemRwsem.downRead();
        try {
          for (const u of self.umemsIn(range.start, range.end)) yield* u.endAccount();
        } finally {
          self.umemRwsem.upRead();
        }
        self.endAccount();
      },
      *release(): Co {
        // ib_umem_notifier_release: every umem is dying; its count stays raised for good.
        self.startAccount();
        yield* self.umemRwsem.downRead();
        try {
          for (const { umem: u } of self.tree.values()) {
            yield* u.startAccount();
            u.dying = true;
            u.notifierCompletion.completeAll();
            yield* u.invalidateRange(u.start, u.end);
          }
        } finally {
          self.umemRwsem.upRead();
        }
      },
    };
  }
}

const contexts = new WeakMap<IbUcontext, UcontextOdp>();

function ucontextOdp(ctx: IbUcontext): UcontextOdp {
  let c = contexts.get(ctx);
  if (!c) contexts.set(ctx, (c = new UcontextOdp(ctx)));
  return c;
}

/**
 * lockdep_off()/lockdep_on() around `body`: ib_umem_odp_get registered the notifier (which
 * takes mmap_sem for write) still holding umem_rwsem for read after downgrade_write, and
 * turned lockdep off because "Lock-dep detects a false positive for mmap_sem vs.
 * umem_rwsem, due to not grasping downgrade_write correctly". The model's lockdep is told
 * the same: nothing acquired inside is recorded against what the task holds.
 */
function* lockdepOff<T>(sim: Simulation, body: () => Co<T>): Co<T> {
  const task = sim.current;
  const held = task ? task.held.splice(0) : [];
  try {
    return yield* body();
  } finally {
    if (task) task.held.unshift(...held);
  }
}

/**
 * One ODP MR of the 3.19-to-5.4 protocol: `struct ib_umem_odp` (the dma_list as a page
 * mirror, umem_mutex, notifiers_seq, notifiers_count, notifier_completion,
 * mn_counters_active, dying) with the mlx5 MR it feeds.
 */
export class UmemOdpUcontext implements IbUmem, OdpOwner {
  readonly strategy = 'odp';
  readonly counters = newUmemCounters();
  readonly writable: boolean;
  readonly start: number;
  readonly end: number;
  readonly firstDevicePage = 0;
  readonly pages = new PageMirror();
  readonly mutex: Mutex;
  notifiersSeq = 0;
  notifiersCount = 0;
  mnCountersActive = false;
  dying = false;
  readonly notifierCompletion: Completion;
  /** `mr->live`: cleared at deregistration so new faults fail. */
  live = true;
  /** `odp_data->private`: the MR, set once it exists (an earlier invalidation skips us). */
  private mrReady = false;
  private mrValue: MemoryRegion | null = null;
  private readonly treeNode: UmemTreeNode;

  private constructor(
    readonly ctx: IbUcontext, readonly uc: UcontextOdp, readonly batcher: SyncBatcher,
    readonly addr: number, readonly length: number, readonly access: number, private readonly iova: number,
  ) {
    const { sim } = ctx.device.kernel;
    this.writable = accessWritable(access);
    this.start = Math.floor(addr / PAGE_SIZE) * PAGE_SIZE;
    this.end = Math.ceil((addr + length) / PAGE_SIZE) * PAGE_SIZE;
    this.treeNode = new UmemTreeNode(this);
    this.mutex = new Mutex(sim, `${ctx.device.name}/umem_odp.umem_mutex`, 'ib_umem_odp.umem_mutex');
    this.notifierCompletion = new Completion(sim);
  }

  get mr(): MemoryRegion {
    return this.mrValue as MemoryRegion;
  }

  get umem(): IbUmem {
    return this;
  }

  /** The MR this umem serves is itself (OdpOwner for the GUP fault path). */
  get owner(): OdpOwner {
    return this;
  }

  /**
   * ib_umem_odp_get (4.18) then mlx5_ib_reg_user_mr: under umem_rwsem (write) count the MR,
   * insert the umem in the context's tree, give it private counters unless an invalidation
   * is running; the first ODP MR of the context registers `context->mn` (lockdep off, still
   * holding umem_rwsem for read, as the kernel did after downgrade_write). Then the mkey;
   * registration maps nothing (the MTTs start zapped).
   */
  static *reg(ctx: IbUcontext, req: RegMrRequest, batcher: SyncBatcher): Co<IbUmem | number> {
    const { kernel, nic } = ctx.device;
    if (req.addr === 0 && req.length === SIZE_MAX) {
      kernel.sim.emit({ type: 'note', text: 'implicit ODP under the 3.19-5.4 ODP protocol is not modelled' });
      return -EOPNOTSUPP;
    }
    if ((req.iova - req.addr) % PAGE_SIZE !== 0) return -EINVAL;
    const mm = ctx.mm;
    if (!mm.mmgetNotZero()) return -EINVAL;
    const uc = ucontextOdp(ctx);
    const umem = new UmemOdpUcontext(ctx, uc, batcher, req.addr, req.length, req.access, req.iova);
    let ret = 0;
    try {
      yield* uc.umemRwsem.downWrite();
      uc.odpMrsCount++;
      uc.tree.insert(umem.treeNode);
      if (uc.notifierCount === 0 || uc.odpMrsCount === 1) umem.mnCountersActive = true;
      else uc.noPrivateCounters.add(umem);
      // downgrade_write: the model's rwsem has none; write then read, nobody in between
      // can take it for write first (FIFO hand-off).
      uc.umemRwsem.upWrite();
      yield* uc.umemRwsem.downRead();
      if (uc.odpMrsCount === 1) {
        uc.notifierCount = 0;
        uc.mn = new MmuNotifier(`${ctx.device.name}/ib_ucontext.mn`, uc.ops());
        const r = yield* lockdepOff(kernel.sim, () => mmuNotifierRegister(uc.mn as MmuNotifier, mm));
        if (r < 0) ret = -EBUSY;
      }
      uc.umemRwsem.upRead();
    } finally {
      // "doing an mmput can cause a notifier for the relevant mm": after the semaphore.
      yield* mmput(mm);
    }
    if (ret < 0) {
      yield* umem.odpRelease();
      return ret;
    }
    const mr = nic.createMr({ pd: req.pd, iova: req.iova, length: req.length, access: req.access, onDemand: true });
    if (typeof mr === 'number') {
      yield* umem.odpRelease();
      return mr;
    }
    umem.mrValue = mr;
    umem.mrReady = true;
    return umem;
  }

  /** ib_umem_notifier_start_account. */
  *startAccount(): Co {
    yield* this.mutex.lock();
    if (this.mnCountersActive && this.notifiersCount++ === 0) this.notifierCompletion.reinit();
    this.mutex.unlock();
  }

  /** ib_umem_notifier_end_account: "notify the QP page fault that the page ... could have been freed". */
  *endAccount(): Co {
    yield* this.mutex.lock();
    if (this.mnCountersActive) {
      this.notifiersSeq++;
      if (--this.notifiersCount === 0) this.notifierCompletion.completeAll();
    }
    this.mutex.unlock();
  }

  /** ib_umem_mmu_notifier_retry, called with the umem mutex held. */
  mmuNotifierRetry(seq: number): boolean {
    return this.notifiersCount > 0 || this.notifiersSeq !== seq;
  }

  /**
   * mlx5_ib_invalidate_range (4.18): clamp to the umem; zap the MTTs of mapped pages in
   * runs that end at an aligned absent entry, each zap a UMR the driver waits for
   * (mlx5_ib_update_xlt with MLX5_IB_UPD_XLT_ZAP posts and waits: the zap is its own
   * fence); the notifiers_count raised by start_account keeps faults off meanwhile, so the
   * zap runs without the umem mutex. Then ib_umem_odp_unmap_dma_pages under the mutex,
   * dirtying pages that were mapped writable.
   */
  *invalidateRange(start: number, end: number): Co {
    if (!this.mrReady) return;
    const s = Math.max(start, this.start);
    const e = Math.min(end, this.end);
    if (s >= e) return;
    const first = (s - this.start) / PAGE_SIZE;
    const last = Math.ceil((e - this.start) / PAGE_SIZE) - 1;
    const present: number[] = [];
    for (const idx of this.pages.keys()) if (idx >= first && idx <= last) present.push(idx);
    if (present.length === 0) return;
    present.sort((a, b) => a - b);
    const { nic } = this.ctx.device;
    if (this.mr.state !== 'destroyed') {
      for (const [f, count] of odpZapRuns(present, last)) yield* nic.zapEntries(this.mr, f, count);
      yield* nic.sync();
    }
    yield* this.mutex.lock();
    this.unmapPages(present);
    this.mutex.unlock();
    this.counters.invalidations++;
    this.counters.invalidationPages += present.length;
    this.ctx.mrEvents.next({ type: 'invalidated', umem: this, start: s, end: e });
  }

  private unmapPages(indices: readonly number[]): void {
    const { kernel } = this.ctx.device;
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
   * mlx5 pagefault_mr (4.18): sample notifiers_seq; ib_umem_odp_map_dma_pages
   * (get_user_pages_remote, put_page), mapping only while ib_umem_mmu_notifier_retry says
   * nothing ran; on -EAGAIN wait for the umem's notifier_completion (at most
   * MMU_NOTIFIER_TIMEOUT), or fail with -EFAULT once the umem is dying. The QP is resumed
   * without error after -EAGAIN: the hardware retries the access.
   */
  *handleFault(fault: DeviceFault): Co<void> {
    const ret = yield* this.pagefault(fault);
    resumeAfter(this, fault, ret);
  }

  private *pagefault(fault: DeviceFault): Co<number> {
    if (!this.live || this.dying) return -EFAULT;
    const length = Math.max(1, fault.length);
    if (fault.iova < this.iova || fault.iova + length > this.iova + this.length) return -EFAULT;
    const va = this.addr + (fault.iova - this.iova);
    const mm = this.ctx.mm;
    // ib_umem_odp_map_dma_pages: the owning process's mm, if it still has users.
    if (!mm.mmgetNotZero()) return -EINVAL;
    let ret: number;
    try {
      const seq = this.notifiersSeq;
      ret = yield* odpGupMapPages(this, va, va + length, { fault: true, write: this.writable }, () => this.mmuNotifierRetry(seq));
    } finally {
      yield* mmput(mm);
    }
    if (ret === -EAGAIN) {
      if (this.dying) return -EFAULT;
      const done = yield* this.notifierCompletion.waitTimeout(MMU_NOTIFIER_TIMEOUT_NS);
      if (!done) {
        this.ctx.device.kernel.sim.emit({
          type: 'note',
          text: `mlx5_ib: timeout waiting for mmu notifier. notifiers_count=${this.notifiersCount}`,
        });
      }
    }
    return ret;
  }

  /**
   * ib_umem_odp_release (4.18): unmap everything; under umem_rwsem (write) take the umem
   * out of the tree and the count; the last ODP MR of the context unregisters
   * `context->mn` (which calls its release on a tree that no longer has us) holding
   * umem_rwsem for read, as the kernel did after downgrade_write.
   */
  private *odpRelease(): Co {
    const uc = this.uc;
    yield* this.mutex.lock();
    this.unmapPages([...this.pages.keys()]);
    this.mutex.unlock();
    yield* uc.umemRwsem.downWrite();
    uc.tree.remove(this.treeNode);
    uc.odpMrsCount--;
    if (!this.mnCountersActive) {
      uc.noPrivateCounters.delete(this);
      this.notifierCompletion.completeAll();
    }
    uc.umemRwsem.upWrite();
    yield* uc.umemRwsem.downRead();
    if (uc.odpMrsCount === 0 && uc.mn) {
      const mn = uc.mn;
      uc.mn = null;
      const mm = this.ctx.mm;
      if (mn.hooked && mm.mmgetNotZero()) {
        yield* mmuNotifierUnregister(mn, mm);
        yield* mmput(mm);
      }
    }
    uc.umemRwsem.upRead();
  }

  /**
   * mlx5 dereg_mr for an ODP MR (4.18): `mr->live = 0` so new faults fail, wait for
   * running faults (synchronize_srcu on mr_srcu; here, a device sync after revoking the
   * key), zap the whole umem, release the umem, then destroy the mkey.
   */
  *dereg(): Co<number> {
    if (!this.live) return -EINVAL;
    this.live = false;
    const { nic } = this.ctx.device;
    nic.revokeMr(this.mr);
    yield* nic.sync();
    yield* this.invalidateRange(this.start, this.end);
    yield* this.odpRelease();
    nic.destroyMr(this.mr);
    return 0;
  }
}


/** The 3.19-to-5.4 ODP registration (the linux-4.18 profile's ODP). */
export function* regUcontextOdpMr(ctx: IbUcontext, req: RegMrRequest, batcher: SyncBatcher): Co<IbUmem | number> {
  if (req.access & IBV_ACCESS_HUGETLB) {
    // ib_umem_odp_get before 5.10: the start must lie in a hugetlb VMA (EINVAL otherwise);
    // the model then maps it with 4 KiB device entries (no page_shift on this path).
    yield* ctx.mm.mmapLock.downRead();
    const vma = ctx.mm.findVma(req.addr);
    ctx.mm.mmapLock.upRead();
    if (!vma || !isVmHugetlbPage(vma)) return -EINVAL;
  }
  return yield* UmemOdpUcontext.reg(ctx, req, batcher);
}
