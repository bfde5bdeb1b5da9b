import { EventEmitter } from 'node:events';
import type TypedEmitter from 'typed-emitter';
import type { Subscription } from 'rxjs';
import { EINVAL, ENOENT, EPERM, MADV_DOFORK, MADV_DONTFORK, PAGE_SIZE, type Co, type DmaBuf } from '../kernel-model/index.ts';
import {
  IBV_ACCESS_ON_DEMAND, type CompletionQueue, type QpAttr, type QpInitAttr, type QueuePair, type RecvWr, type SendWr,
  type Sge, type WorkCompletion, type NicAsyncEventType,
} from '../device/index.ts';
import type { IbUcontext } from './ib-ucontext.ts';
import type { IbUmem } from './umem.ts';
import { IBV_DMABUF_ACCESS_MASK, regDmabufUmem } from './umem-dmabuf.ts';

/** `struct ibv_mr` as an application holds it. */
export interface IbvMr {
  readonly lkey: number;
  readonly rkey: number;
  readonly addr: number;
  readonly length: number;
  /** The driver's side, for tests and demos (a real application cannot see it). */
  readonly umem: IbUmem;
}

export interface IbvAsyncEvent {
  type: NicAsyncEventType;
  qpNum: number;
}

/**
 * Events an application can listen to. `async` is ibv_get_async_event (QP and device
 * events only). `mr:invalidated` and `mr:revoked` are an EXTENSION of this emulator, off
 * until `enableMrEvents()`: real libibverbs has no MR-level event (rdma F4), so by default
 * an application learns of revocation only from error completions, as on real hardware.
 */
export type IbvEvents = {
  async: (ev: IbvAsyncEvent) => void;
  'mr:invalidated': (mr: IbvMr, start: number, end: number) => void;
  'mr:revoked': (mr: IbvMr) => void;
};

export const IBV_ADVISE_MR_ADVICE_PREFETCH = 0;
export const IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE = 1;
export const IBV_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT = 2;
export const IBV_ADVISE_MR_FLAG_FLUSH = 1;

export const IBV_FORK_DISABLED = 0;
export const IBV_FORK_ENABLED = 1;
export const IBV_FORK_UNNEEDED = 2;

/**
 * The userspace verbs API (libibverbs plus the provider) for one process and one
 * device. Calls return what rdma-core documents: an object, 0, or -errno; they never
 * throw for bad input. Calls that enter the kernel are coroutines (they take virtual
 * time and may sleep).
 *
 * @example
 *   const ctx = openDevice(dev, proc);
 *   const pd = ctx.allocPd();
 *   const mr = yield* ctx.regMr(pd, buf, 65536, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND);
 */
export class IbvContext extends (EventEmitter as new () => TypedEmitter<IbvEvents>) {
  private readonly mrs = new Map<IbUmem, IbvMr>();
  private mrEventsOn = false;
  private forkInitialized = false;
  /** rdma-core's `too_late`: a non-ODP registration happened before ibv_fork_init. */
  private forkTooLate = false;
  /** rdma-core's range tree: MRs covering each page marked MADV_DONTFORK (page -> count). */
  private readonly dontforkRefs = new Map<number, number>();
  /** MRs whose range regMr passed to ibv_dontfork_range (deregMr undoes it). */
  private readonly dontforkMrs = new Set<IbUmem>();
  private readonly subs: Subscription[] = [];

  constructor(readonly ucontext: IbUcontext) {
    super();
    const { nic } = ucontext.device;
    this.subs.push(nic.asyncEvent$.subscribe((ev) => {
      if (ev.qpNum !== undefined && [...ucontext.qps].some((q) => q.qpNum === ev.qpNum)) this.emit('async', { type: ev.type, qpNum: ev.qpNum });
    }));
    this.subs.push(ucontext.mrEvents.subscribe((ev) => {
      const mr = this.mrs.get(ev.umem);
      if (!this.mrEventsOn || !mr) return;
      if (ev.type === 'revoked') this.emit('mr:revoked', mr);
      else this.emit('mr:invalidated', mr, ev.start, ev.end);
    }));
  }

  /** Opt in to the emulator's MR events (an extension; see IbvEvents). */
  enableMrEvents(): void {
    this.mrEventsOn = true;
  }

  allocPd(): number {
    const pd = this.ucontext.device.nic.allocPd();
    this.ucontext.pds.add(pd);
    return pd;
  }

  /**
   * ibv_fork_init (rdma A8, H2): after it, every non-ODP registration marks its range
   * MADV_DONTFORK (and deregistration MADV_DOFORK, counted per page as rdma-core's range
   * tree does). As in rdma-core `libibverbs/memory.c`: a second call returns 0; on a
   * kernel that copies pinned pages at fork it returns 0 and enables nothing, unless
   * `useMadvise` (the RDMAV_USE_MADVISE environment variable) asks for it anyway; after a
   * non-ODP registration it fails with -EINVAL.
   */
  forkInit(opts: { useMadvise?: boolean } = {}): number {
    if (this.forkInitialized) return 0;
    if (!opts.useMadvise && this.isForkInitialized() === IBV_FORK_UNNEEDED) return 0;
    if (this.forkTooLate) return -EINVAL;
    this.forkInitialized = true;
    return 0;
  }

  /** ibv_is_fork_initialized: UNNEEDED when the kernel copies pinned pages at fork. */
  isForkInitialized(): number {
    if (this.ucontext.device.kernel.profile.forkCopiesPinned) return IBV_FORK_UNNEEDED;
    return this.forkInitialized ? IBV_FORK_ENABLED : IBV_FORK_DISABLED;
  }

  /** ibv_reg_mr / ibv_reg_mr_iova. */
  *regMr(pd: number, addr: number, length: number, access: number, iova = addr): Co<IbvMr | number> {
    const dev = this.ucontext.device;
    // ibv_reg_mr_iova2: ibv_dontfork_range before the kernel call, except for ODP MRs;
    // ibv_dofork_range if the registration then fails.
    const dontfork = !(access & IBV_ACCESS_ON_DEMAND);
    if (dontfork) {
      const r = yield* this.forkRange(addr, length, 1);
      if (r < 0) return r;
    }
    const umem = yield* dev.regMr(this.ucontext, { pd, addr, length, iova, access });
    if (typeof umem === 'number') {
      if (dontfork) yield* this.forkRange(addr, length, -1);
      return umem;
    }
    if (dontfork) this.dontforkMrs.add(umem);
    return this.track(umem);
  }

  /**
   * ibv_dontfork_range (inc 1) / ibv_dofork_range (inc -1): without fork support only
   * note that fork_init is now too late; with it, madvise the pages whose count leaves 0.
   */
  private *forkRange(addr: number, length: number, inc: 1 | -1): Co<number> {
    if (!this.forkInitialized) {
      this.forkTooLate = true;
      return 0;
    }
    if (length <= 0 || addr <= 0) return 0;
    const first = Math.floor(addr / PAGE_SIZE);
    const end = Math.ceil((addr + length) / PAGE_SIZE);
    // Runs of pages whose count leaves 0 (DONTFORK) or drops to 0 (DOFORK).
    const runs: [number, number][] = [];
    for (let page = first; page < end; page++) {
      const refs = this.dontforkRefs.get(page) ?? 0;
      if (inc > 0 ? refs !== 0 : refs !== 1) continue;
      const last = runs[runs.length - 1];
      if (last && last[1] === page) last[1] = page + 1;
      else runs.push([page, page + 1]);
    }
    const process = this.ucontext.process;
    for (let i = 0; i < runs.length; i++) {
      const [s, e] = runs[i]!;
      const r = yield* process.madvise(s * PAGE_SIZE, (e - s) * PAGE_SIZE, inc > 0 ? MADV_DONTFORK : MADV_DOFORK);
      if (r < 0 && inc > 0) {
        // Roll back what this call marked, as rdma-core's ibv_madvise_range does.
        for (const [s2, e2] of runs.slice(0, i)) yield* process.madvise(s2 * PAGE_SIZE, (e2 - s2) * PAGE_SIZE, MADV_DOFORK);
        return r;
      }
    }
    for (let page = first; page < end; page++) {
      const refs = (this.dontforkRefs.get(page) ?? 0) + inc;
      if (refs > 0) this.dontforkRefs.set(page, refs);
      else this.dontforkRefs.delete(page);
    }
    return 0;
  }

  /**
   * ibv_reg_dmabuf_mr (rdma G1): register [offset, offset + length) of a dma-buf at
   * `iova`. -EINVAL for an access bit outside LOCAL_WRITE, REMOTE_WRITE, REMOTE_READ,
   * REMOTE_ATOMIC and RELAXED_ORDERING (so ON_DEMAND is refused), or when iova and offset
   * differ in page offset; then the driver's checks and importer (driver/umem-dmabuf.ts).
   * The buffer object stands for the file descriptor.
   */
  *regDmabufMr(pd: number, offset: number, length: number, iova: number, dmabuf: DmaBuf, access: number): Co<IbvMr | number> {
    if (access & ~IBV_DMABUF_ACCESS_MASK) return -EINVAL;
    if (offset % PAGE_SIZE !== iova % PAGE_SIZE) return -EINVAL;
    const umem = yield* regDmabufUmem(this.ucontext, { pd, addr: iova, length, iova, access }, dmabuf, offset);
    if (typeof umem === 'number') return umem;
    return this.track(umem);
  }

  /** Wrap a driver-side umem (also used by the dma-buf registration). */
  track(umem: IbUmem): IbvMr {
    const mr: IbvMr = { lkey: umem.mr.lkey, rkey: umem.mr.rkey, addr: umem.addr, length: umem.length, umem };
    this.mrs.set(umem, mr);
    return mr;
  }

  /** ibv_dereg_mr. */
  *deregMr(mr: IbvMr): Co<number> {
    if (!this.mrs.has(mr.umem)) return -EINVAL;
    this.mrs.delete(mr.umem);
    const r = yield* this.ucontext.device.deregMr(mr.umem);
    // ibv_dereg_mr: ibv_dofork_range after a successful deregistration of an MR whose
    // range ibv_reg_mr marked (not ODP, not dma-buf).
    if (r === 0 && this.dontforkMrs.delete(mr.umem)) yield* this.forkRange(mr.addr, mr.length, -1);
    return r;
  }

  /**
   * ibv_advise_mr (rdma D1 to D4): every lkey must name an ODP MR of this PD; with FLUSH
   * the mapping is done before returning, otherwise it is queued and errors are dropped.
   * `umem.advise` returns only the errors the caller sees (without FLUSH, those of its
   * synchronous checks, such as EPERM for PREFETCH_WRITE on a read-only MR).
   */
  *adviseMr(pd: number, advice: number, flags: number, sgl: readonly Sge[]): Co<number> {
    if (advice < 0 || advice > 2 || flags & ~IBV_ADVISE_MR_FLAG_FLUSH || sgl.length === 0) return -EINVAL;
    const dev = this.ucontext.device;
    for (const sge of sgl) {
      const umem = dev.umemByKey.get(sge.lkey);
      if (!umem || !this.ucontext.umems.has(umem)) return -ENOENT;
      if (!umem.advise) return -EINVAL;
      if (umem.mr.pd !== pd) return -EPERM;
    }
    for (const sge of sgl) {
      const umem = dev.umemByKey.get(sge.lkey) as IbUmem;
      const r = yield* (umem.advise as NonNullable<IbUmem['advise']>)(advice, flags, sge.addr, sge.length);
      if (r < 0) return r;
    }
    return 0;
  }

  createCq(cqe: number): CompletionQueue | number {
    const cq = this.ucontext.device.nic.createCq(cqe);
    if (typeof cq !== 'number') this.ucontext.cqs.add(cq);
    return cq;
  }

  createQp(init: QpInitAttr): QueuePair | number {
    if (!this.ucontext.pds.has(init.pd)) return -EINVAL;
    const qp = this.ucontext.device.nic.createQp(init);
    if (typeof qp !== 'number') this.ucontext.qps.add(qp);
    return qp;
  }

  modifyQp(qp: QueuePair, attr: QpAttr): number {
    if (!this.ucontext.qps.has(qp)) return -EINVAL;
    return this.ucontext.device.nic.modifyQp(qp, attr);
  }

  destroyQp(qp: QueuePair): number {
    if (!this.ucontext.qps.delete(qp)) return -EINVAL;
    return this.ucontext.device.nic.destroyQp(qp);
  }

  /**
   * ibv_post_send. Posting bypasses the kernel; the provider first lets each local MR
   * prepare the range it will touch (a holdoff MR remaps an invalidated range with a
   * system call here), then rings the doorbell.
   */
  *postSend(qp: QueuePair, wr: SendWr): Co<number> {
    if (!this.ucontext.qps.has(qp)) return -EINVAL;
    const r = yield* this.prepareSges(wr.sgList, isLocalWrite(wr));
    if (r < 0) return r;
    return this.ucontext.device.nic.postSend(qp, wr);
  }

  /** ibv_post_recv, with the same provider preparation of the receive buffers. */
  *postRecv(qp: QueuePair, wr: RecvWr): Co<number> {
    if (!this.ucontext.qps.has(qp)) return -EINVAL;
    const r = yield* this.prepareSges(wr.sgList, true);
    if (r < 0) return r;
    return this.ucontext.device.nic.postRecv(qp, wr);
  }

  private *prepareSges(sgl: readonly Sge[], write: boolean): Co<number> {
    const dev = this.ucontext.device;
    for (const sge of sgl) {
      const umem = dev.umemByKey.get(sge.lkey);
      // Only this process's own MRs: another process's key is not the provider's to touch.
      if (!umem?.prepareLocalAccess || !this.ucontext.umems.has(umem)) continue;
      const r = yield* umem.prepareLocalAccess(sge.addr, sge.length, write);
      if (r < 0) return r;
    }
    return 0;
  }

  /** ibv_poll_cq. */
  pollCq(cq: CompletionQueue, max = 1): WorkCompletion[] {
    return cq.poll(max);
  }

  /** ibv_close_device: destroys what is left (QPs, MRs) and drops the mm reference. */
  *close(): Co {
    for (const s of this.subs) s.unsubscribe();
    this.mrs.clear();
    yield* this.ucontext.close();
  }
}

/** An RDMA READ scatters into local memory; a SEND or WRITE only gathers from it. */
function isLocalWrite(wr: SendWr): boolean {
  return wr.opcode === 4 || wr.opcode === 5 || wr.opcode === 6;
}

/** ibv_open_device for a process on a device. */
export function openDevice(device: import('./ib-device.ts').IbDevice, process: import('../kernel-model/index.ts').Process): IbvContext {
  return new IbvContext(device.open(process));
}
