import { EAGAIN, EFAULT, EINVAL, ENOENT, type Co, type Task } from '../kernel-model/index.ts';
import { accessWritable, type DeviceFault, type MemoryRegion } from '../device/index.ts';
import type { SyncBatcher } from './batching/index.ts';
import type { IbUcontext } from './ib-ucontext.ts';
import { newUmemCounters, type IbUmem, type RegMrRequest } from './umem.ts';
import { IBV_ADVISE_MR_FLAG_FLUSH } from './verbs.ts';
import { UmemOdp, UsageCount, adviceMode, resumeAfter, runAdvice, type OdpMapMode, type OdpOwner } from './umem-odp.ts';

/** One implicit child covers 1 GiB (MLX5_IMR_MTT_BITS = 30 - PAGE_SHIFT, rdma E1). */
export const IMPLICIT_CHILD_SIZE = 2 ** 30;
/**
 * Slots of the parent's indirect table: mlx5_imr_ksm_entries, TASK_SIZE rounded up to a
 * power of two (2^47) in 1 GiB slots. An access beyond the last slot is EFAULT (B4).
 */
export const IMPLICIT_SLOTS = 2 ** 47 / IMPLICIT_CHILD_SIZE;

/**
 * ib_umem_odp_alloc_implicit + mlx5_ib_alloc_implicit_mr (rdma A7): one faultable device
 * MR with `implicit` set, covering [0, 2^47) with an empty (sparse) page table. The
 * parent has no notifier (C1): children get theirs when they are created.
 */
export function* regImplicitOdpMr(ctx: IbUcontext, req: RegMrRequest, batcher: SyncBatcher, strategy = 'odp'): Co<IbUmem | number> {
  if (ctx.mm.users <= 0) return -EINVAL;
  const mr = ctx.device.nic.createMr({ pd: req.pd, iova: 0, length: req.length, access: req.access, onDemand: true, implicit: true });
  if (typeof mr === 'number') return mr;
  return new ImplicitOdpUmem(ctx, mr, batcher, req.length, req.access, strategy);
}

/**
 * One 1 GiB child of an implicit MR (mlx5's child mkey, E1). There is one per slot the
 * device touched, tens of thousands when pages are scattered, so it keeps no name of its
 * own: it is built from the parent's and the slot when printed.
 */
class ImplicitChild extends UmemOdp {
  constructor(parent: ImplicitOdpUmem, readonly slot: number) {
    const start = slot * IMPLICIT_CHILD_SIZE;
    super(parent, start, start + IMPLICIT_CHILD_SIZE, parent.mr.pageIndexOf(start), '');
  }

  override get name(): string {
    return `${(this.owner as ImplicitOdpUmem).name}/child(${this.slot})`;
  }
}

/**
 * An implicit ODP MR (rdma A7, C1, E1 to E3). The device MR is one key over the whole
 * address space; behind it the driver keeps 1 GiB children, each a UmemOdp with its own
 * notifier and mutex, created on the first fault in its slot and reaped when an
 * invalidation leaves it empty. Both tables are sparse: `children` holds only slots that
 * were touched, each child's mirror only its mapped pages, and the device page table
 * only chunks with entries, so 100k pages scattered over 128 TiB cost per page, not per
 * slot.
 *
 * On mlx5 each child is its own mkey and the parent's KSM slot points at it; here the
 * children program the parent's page table directly at their offset, so "resetting the
 * slot" on reaping means zapping whatever a racing fault refilled before the child goes.
 */
export class ImplicitOdpUmem implements IbUmem, OdpOwner {
  readonly counters = newUmemCounters();
  readonly writable: boolean;
  readonly addr = 0;
  /** Slot -> live child. */
  readonly children = new Map<number, UmemOdp>();
  /** Slot -> the worker destroying a reaped child; the slot gets no new child until it ends. */
  readonly dying = new Map<number, Task>();
  /** Children created and reaped so far, and creations lost to a racing fault (for tests and demos). */
  created = 0;
  reaped = 0;
  createRaces = 0;
  dead = false;
  /** Faults and prefetches in flight on the parent. */
  readonly users: UsageCount;
  readonly name: string;

  constructor(
    readonly ctx: IbUcontext, readonly mr: MemoryRegion, readonly batcher: SyncBatcher, readonly length: number, readonly access: number,
    readonly strategy = 'odp',
  ) {
    this.writable = accessWritable(access);
    this.name = `${ctx.device.name}/implicit(${mr.lkey.toString(16)})`;
    this.users = new UsageCount(ctx.device.kernel.sim, this);
  }

  get umem(): IbUmem {
    return this;
  }

  /**
   * implicit_get_child_mr: the slot's child, created on first use with its own notifier
   * (C1, E2). Inserting may sleep, so two faults may race to create it; the second to
   * finish drops its copy and takes the winner's (mlx5 settles it with xa_cmpxchg).
   * While a reaped child of this slot is still being destroyed a fault gets -EAGAIN (the
   * hardware is resumed and faults again, as mlx5 resolves a fault that meets a changing
   * slot); a prefetch, which has no hardware to retry it, waits for the destruction.
   */
  private *child(slot: number, isFault: boolean): Co<UmemOdp | number> {
    for (;;) {
      const live = this.children.get(slot);
      if (live) return live;
      const dying = this.dying.get(slot);
      if (!dying) break;
      if (isFault) return -EAGAIN;
      yield* this.ctx.device.kernel.sim.join(dying);
    }
    // The owner has exited: no new subscription on a dead mm (rdma B4: EINVAL).
    if (this.ctx.mm.users <= 0) return -EINVAL;
    const odp = new ImplicitChild(this, slot);
    const ret = yield* odp.insert();
    if (ret < 0) return ret;
    const winner = this.children.get(slot);
    if (winner || this.dead || this.dying.has(slot)) {
      this.createRaces++;
      yield* odp.release(false);
      return winner ?? (this.dead ? -ENOENT : -EAGAIN);
    }
    this.children.set(slot, odp);
    this.created++;
    return odp;
  }

  /**
   * pagefault_implicit_mr: split [iova, iova + length) at slot boundaries and map each
   * part through its child. Past the last slot: EFAULT (B4).
   */
  private *mapRange(iova: number, length: number, mode: OdpMapMode, isFault: boolean): Co<number> {
    const end = iova + length;
    if (iova < 0 || end > IMPLICIT_SLOTS * IMPLICIT_CHILD_SIZE) return -EFAULT;
    let total = 0;
    for (let slot = Math.floor(iova / IMPLICIT_CHILD_SIZE); slot * IMPLICIT_CHILD_SIZE < end; slot++) {
      const odp = yield* this.child(slot, isFault);
      if (typeof odp === 'number') return odp;
      odp.users.get();
      try {
        const r = yield* odp.map(Math.max(iova, odp.start), Math.min(end, odp.end), mode);
        if (r < 0) return r;
        total += r;
      } finally {
        odp.users.put();
      }
    }
    return total;
  }

  *handleFault(fault: DeviceFault): Co<void> {
    if (this.dead) {
      this.ctx.device.nic.resumeFault(fault.id, { error: true });
      return;
    }
    this.users.get();
    try {
      const ret = yield* this.mapRange(fault.iova, Math.max(1, fault.length), { fault: true, write: this.writable }, true);
      resumeAfter(this, fault, ret);
    } finally {
      this.users.put();
    }
  }

  /** ibv_advise_mr on an implicit MR: as for an explicit one, child by child. */
  *advise(advice: number, flags: number, addr: number, length: number): Co<number> {
    if (this.dead) return -ENOENT;
    const mode = adviceMode(this, advice);
    if (typeof mode === 'number') return mode;
    if ((addr < 0 || addr + length > IMPLICIT_SLOTS * IMPLICIT_CHILD_SIZE) && flags & IBV_ADVISE_MR_FLAG_FLUSH) return -EFAULT;
    return yield* runAdvice(this, flags, this.users, () => this.mapRange(addr, length, mode, false));
  }

  /**
   * destroy_unused_implicit_child_mr (E3), from the child's invalidate callback with its
   * mutex held: take the child out of its slot now, destroy it on a worker (destroying
   * sleeps). The worker waits for faults still holding the child (one may refill it
   * first, which the design accepts), zaps and fences what they refilled, and removes the
   * notifier.
   */
  emptied(odp: UmemOdp): void {
    const slot = Math.floor(odp.start / IMPLICIT_CHILD_SIZE);
    if (this.dead || this.children.get(slot) !== odp) return;
    this.children.delete(slot);
    this.reaped++;
    const { sim } = this.ctx.device.kernel;
    const task = sim.spawn(`${this.ctx.device.name}/free_implicit_child_mr`, function* (this: ImplicitOdpUmem) {
      yield* odp.users.waitIdle();
      yield* odp.release(true);
      this.dying.delete(slot);
    }.bind(this), { kind: 'worker' });
    this.dying.set(slot, task);
  }

  /**
   * Deregistration (C9): stop the hardware (revoke, sync), let faults and prefetches
   * finish, destroy the key, then tear down every child (children go with the parent),
   * after any reaping still in progress.
   */
  *dereg(): Co<number> {
    if (this.dead) return -EINVAL;
    this.dead = true;
    const { nic, kernel } = this.ctx.device;
    nic.revokeMr(this.mr);
    yield* nic.sync();
    yield* this.users.waitIdle();
    nic.destroyMr(this.mr);
    for (const task of [...this.dying.values()]) yield* kernel.sim.join(task);
    for (const odp of [...this.children.values()]) {
      yield* odp.users.waitIdle();
      yield* odp.release(false);
    }
    this.children.clear();
    return 0;
  }
}
