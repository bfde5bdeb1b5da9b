import { EventEmitter } from 'node:events';
import type TypedEmitter from 'typed-emitter';
import type { Subscription } from 'rxjs';
import {
  EAGAIN, EINVAL, ENOENT, EOPNOTSUPP, EPERM, MADV_DOFORK, MADV_DONTFORK, PAGE_SIZE, type Co, type DmaBuf,
} from '../kernel-model/index.ts';
import {
  IBV_ACCESS_ON_DEMAND, IBV_QPT_XRC_RECV, IBV_SRQT_BASIC, IBV_WR_ATOMIC_WRITE, IBV_WR_FLUSH,
  type CompletionQueue, type QpAttr, type QpInitAttr, type QueuePair, type RecvWr, type SendWr,
  type SharedReceiveQueue, type Sge, type SrqType, type WorkCompletion, type NicAsyncEventType, type XrcDomain,
} from '../device/index.ts';
import type { IbDevice } from './ib-device.ts';
import { IbvQpEx, supportedSendOps } from './verbs-qp-ex.ts';
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
  /** QP events. */
  qpNum?: number;
  /** IBV_EVENT_SRQ_LIMIT_REACHED. */
  srqNum?: number;
}

/** `struct ibv_odp_caps` and the rest of `struct ibv_device_attr_ex` this model fills in. */
export interface IbvDeviceAttrEx {
  odpCaps: {
    generalCaps: number;
    perTransportCaps: { rcOdpCaps: number; ucOdpCaps: number; udOdpCaps: number };
  };
  xrcOdpCaps: number;
  /** `device_cap_flags_ex` (IBV_DEVICE_XRC, IB_UVERBS_DEVICE_FLUSH_*, IB_UVERBS_DEVICE_ATOMIC_WRITE, ...). */
  deviceCapFlagsEx: bigint;
  maxMrSize: number;
  maxQpWr: number;
  maxSge: number;
  maxCqe: number;
  maxQpRdAtom: number;
  maxSrq: number;
  maxSrqWr: number;
  maxSrqSge: number;
  /** The port's active MTU in bytes (ibv_query_port `active_mtu`). */
  activeMtu: number;
}

/** `enum ibv_mr_init_attr_mask` (ibv_reg_mr(3), ibv_reg_mr_ex). */
export const IBV_REG_MR_MASK_IOVA = 1;
export const IBV_REG_MR_MASK_ADDR = 2;
export const IBV_REG_MR_MASK_FD = 4;
export const IBV_REG_MR_MASK_FD_OFFSET = 8;
export const IBV_REG_MR_MASK_DMAH = 16;

/** `struct ibv_mr_init_attr`. The dma-buf object stands for `fd`. */
export interface IbvMrInitAttr {
  compMask: number;
  length: number;
  access: number;
  addr?: number;
  iova?: number;
  fd?: DmaBuf;
  fdOffset?: number;
}

/** `enum ibv_xrcd_init_attr_mask` and the two open(2) flags ibv_open_xrcd(3) reads. */
export const IBV_XRCD_INIT_ATTR_FD = 1;
export const IBV_XRCD_INIT_ATTR_OFLAGS = 2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;

/** `struct ibv_xrcd`, shared by every open of the same file on the same device. */
export interface IbvXrcd {
  readonly xrcd: XrcDomain;
}

/** `enum ibv_qp_init_attr_mask` bits ibv_create_qp_ex reads here. */
export const IBV_QP_INIT_ATTR_PD = 1;
export const IBV_QP_INIT_ATTR_XRCD = 2;
export const IBV_QP_INIT_ATTR_SEND_OPS_FLAGS = 1 << 6;

/** `struct ibv_qp_init_attr_ex`, the fields this model uses. */
export interface IbvQpInitAttrEx extends Omit<QpInitAttr, 'xrcd'> {
  compMask: number;
  xrcd?: IbvXrcd;
  sendOpsFlags?: number;
}

/** XRC domains by file, per device: what `ib_uverbs_open_xrcd` finds with `find_xrcd(inode)`. */
const xrcdTables = new WeakMap<IbDevice, Map<number, { xrcd: IbvXrcd; users: number }>>();

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
  private readonly srqs = new Set<SharedReceiveQueue>();
  private readonly xrcds = new Map<IbvXrcd, { fd: number }>();

  constructor(readonly ucontext: IbUcontext) {
    super();
    const { nic } = ucontext.device;
    this.subs.push(nic.asyncEvent$.subscribe((ev) => {
      if (ev.qpNum !== undefined && [...ucontext.qps].some((q) => q.qpNum === ev.qpNum)) this.emit('async', { type: ev.type, qpNum: ev.qpNum });
      else if (ev.srqNum !== undefined && [...this.srqs].some((q) => q.srqNum === ev.srqNum)) this.emit('async', { type: ev.type, srqNum: ev.srqNum });
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
    // Unknown flag bits fail in the uverbs layer (uverbs_get_flags32: -EINVAL); an unknown
    // advice reaches the driver, which refuses it with -EOPNOTSUPP (mlx5_ib_advise_mr,
    // drivers/infiniband/hw/mlx5/mr.c; rxe_ib_advise_mr likewise).
    if (flags & ~IBV_ADVISE_MR_FLAG_FLUSH || sgl.length === 0) return -EINVAL;
    if (advice !== IBV_ADVISE_MR_ADVICE_PREFETCH && advice !== IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE
      && advice !== IBV_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT) return -EOPNOTSUPP;
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
    // struct ibv_send_wr has no fields for FLUSH or ATOMIC_WRITE: those are posted only with
    // ibv_wr_flush / ibv_wr_atomic_write (ibv_wr_post(3)); providers refuse the opcode.
    if (wr.opcode === IBV_WR_FLUSH || wr.opcode === IBV_WR_ATOMIC_WRITE) return -EINVAL;
    return yield* this.postOne(qp, wr);
  }

  private *postOne(qp: QueuePair, wr: SendWr): Co<number> {
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

  // ---- ibv_query_device_ex, ibv_reg_mr_ex ------------------------------------------------

  /**
   * ibv_query_device_ex (rdma A3): the NIC's ODP masks per transport, its XRC mask and its
   * `device_cap_flags_ex`. A driver without an ODP strategy reports no ODP at all, since it
   * would refuse every ON_DEMAND registration (mlx5 fills the ODP caps only when built with
   * CONFIG_INFINIBAND_ON_DEMAND_PAGING).
   */
  queryDeviceEx(): IbvDeviceAttrEx {
    const dev = this.ucontext.device;
    const caps = dev.nic.caps;
    const odp = dev.opts.odp ? caps.odp : { generalCaps: 0, rcOdpCaps: 0, ucOdpCaps: 0, udOdpCaps: 0, xrcOdpCaps: 0 };
    return {
      odpCaps: { generalCaps: odp.generalCaps, perTransportCaps: { rcOdpCaps: odp.rcOdpCaps, ucOdpCaps: odp.ucOdpCaps, udOdpCaps: odp.udOdpCaps } },
      xrcOdpCaps: odp.xrcOdpCaps,
      deviceCapFlagsEx: caps.deviceCapFlags,
      maxMrSize: caps.maxMrSize, maxQpWr: caps.maxQpWr, maxSge: caps.maxSge, maxCqe: caps.maxCqe,
      maxQpRdAtom: caps.maxQpRdAtom, maxSrq: caps.maxSrq, maxSrqWr: caps.maxSrqWr, maxSrqSge: caps.maxSrqSge,
      activeMtu: caps.mtu,
    };
  }

  /**
   * ibv_reg_mr_ex (rdma-core libibverbs/verbs.c): a process-memory MR (IBV_REG_MR_MASK_ADDR,
   * optional IOVA) goes the ibv_reg_mr_iova2 way, fork bookkeeping included; a dma-buf MR
   * (FD with FD_OFFSET, and IOVA) goes the ibv_reg_dmabuf_mr way. -EINVAL for unknown mask
   * bits, for both or neither of ADDR and FD, for FD without FD_OFFSET or IOVA (model choice:
   * the dma-buf has no address of its own); -EOPNOTSUPP for DMAH (no DMA handles modelled).
   */
  *regMrEx(pd: number, attr: IbvMrInitAttr): Co<IbvMr | number> {
    const m = attr.compMask;
    if (m & ~(IBV_REG_MR_MASK_IOVA | IBV_REG_MR_MASK_ADDR | IBV_REG_MR_MASK_FD | IBV_REG_MR_MASK_FD_OFFSET | IBV_REG_MR_MASK_DMAH)) return -EINVAL;
    if (m & IBV_REG_MR_MASK_DMAH) return -EOPNOTSUPP;
    const byAddr = (m & IBV_REG_MR_MASK_ADDR) !== 0;
    const byFd = (m & IBV_REG_MR_MASK_FD) !== 0;
    if (byAddr === byFd) return -EINVAL;
    if (byAddr) {
      if (attr.addr === undefined) return -EINVAL;
      const iova = m & IBV_REG_MR_MASK_IOVA ? attr.iova : attr.addr;
      if (iova === undefined) return -EINVAL;
      return yield* this.regMr(pd, attr.addr, attr.length, attr.access, iova);
    }
    if (!(m & IBV_REG_MR_MASK_FD_OFFSET) || !(m & IBV_REG_MR_MASK_IOVA) || !attr.fd || attr.fdOffset === undefined || attr.iova === undefined) return -EINVAL;
    return yield* this.regDmabufMr(pd, attr.fdOffset, attr.length, attr.iova, attr.fd, attr.access);
  }

  // ---- XRC domains and shared receive queues ---------------------------------------------

  /**
   * ibv_open_xrcd (ibv_open_xrcd(3); kernel `ib_uverbs_open_xrcd`). `fd` -1: a new domain
   * tied to no file. Otherwise the number stands for the file's inode: the first open with
   * O_CREAT creates the domain, later opens of the same file on the same device (from any
   * process) share it. Errors: -EINVAL for a mask without FD and OFLAGS, or O_EXCL on a file
   * that already has a domain; -EAGAIN for a file without a domain and no O_CREAT (the
   * kernel's "Need CREATE flag"); -EOPNOTSUPP on a device without XRC.
   */
  openXrcd(attr: { compMask: number; fd: number; oflags: number }): IbvXrcd | number {
    if ((attr.compMask & (IBV_XRCD_INIT_ATTR_FD | IBV_XRCD_INIT_ATTR_OFLAGS)) !== (IBV_XRCD_INIT_ATTR_FD | IBV_XRCD_INIT_ATTR_OFLAGS)) return -EINVAL;
    const dev = this.ucontext.device;
    let table = xrcdTables.get(dev);
    if (!table) xrcdTables.set(dev, (table = new Map()));
    if (attr.fd !== -1) {
      const found = table.get(attr.fd);
      if (!found && !(attr.oflags & O_CREAT)) return -EAGAIN;
      if (found && attr.oflags & O_EXCL) return -EINVAL;
      if (found) {
        found.users++;
        this.xrcds.set(found.xrcd, { fd: attr.fd });
        return found.xrcd;
      }
    }
    const xrcd = dev.nic.allocXrcd();
    if (typeof xrcd === 'number') return xrcd;
    const handle: IbvXrcd = { xrcd };
    if (attr.fd !== -1) table.set(attr.fd, { xrcd: handle, users: 1 });
    this.xrcds.set(handle, { fd: attr.fd });
    return handle;
  }

  /** ibv_close_xrcd: the last close of a domain frees it (-EBUSY while its SRQs or target QPs live). */
  closeXrcd(x: IbvXrcd): number {
    const mine = this.xrcds.get(x);
    if (!mine) return -EINVAL;
    const dev = this.ucontext.device;
    const entry = mine.fd === -1 ? undefined : xrcdTables.get(dev)?.get(mine.fd);
    if (entry && entry.users > 1) {
      entry.users--;
      this.xrcds.delete(x);
      return 0;
    }
    const r = dev.nic.deallocXrcd(x.xrcd);
    if (r < 0) return r;
    if (entry) xrcdTables.get(dev)?.delete(mine.fd);
    this.xrcds.delete(x);
    return 0;
  }

  /** ibv_create_srq: a basic SRQ on one of this context's PDs (see Nic.createSrq for the errors). */
  createSrq(pd: number, attr: { maxWr: number; maxSge: number; srqLimit?: number }): SharedReceiveQueue | number {
    return this.createSrqEx({ pd, srqType: IBV_SRQT_BASIC, ...attr });
  }

  /** ibv_create_srq_ex: a basic or XRC SRQ (an XRC one needs a domain and a CQ). */
  createSrqEx(attr: { pd: number; srqType: SrqType; maxWr: number; maxSge: number; srqLimit?: number; xrcd?: IbvXrcd; cq?: CompletionQueue }): SharedReceiveQueue | number {
    if (!this.ucontext.pds.has(attr.pd)) return -EINVAL;
    if (attr.xrcd && !this.xrcds.has(attr.xrcd)) return -EINVAL;
    const { xrcd, ...rest } = attr;
    const srq = this.ucontext.device.nic.createSrq({ ...rest, ...(xrcd ? { xrcd: xrcd.xrcd } : {}) });
    if (typeof srq !== 'number') this.srqs.add(srq);
    return srq;
  }

  /** ibv_modify_srq (mask IBV_SRQ_MAX_WR, IBV_SRQ_LIMIT). */
  modifySrq(srq: SharedReceiveQueue, attr: { maxWr?: number; srqLimit?: number }, mask: number): number {
    if (!this.srqs.has(srq)) return -EINVAL;
    return this.ucontext.device.nic.modifySrq(srq, attr, mask);
  }

  destroySrq(srq: SharedReceiveQueue): number {
    if (!this.srqs.has(srq)) return -EINVAL;
    const r = this.ucontext.device.nic.destroySrq(srq);
    if (r === 0) this.srqs.delete(srq);
    return r;
  }

  /** ibv_post_srq_recv, with the provider's preparation of the receive buffers. */
  *postSrqRecv(srq: SharedReceiveQueue, wr: RecvWr): Co<number> {
    if (!this.srqs.has(srq)) return -EINVAL;
    const r = yield* this.prepareSges(wr.sgList, true);
    if (r < 0) return r;
    return this.ucontext.device.nic.postSrqRecv(srq, wr);
  }

  // ---- the extended QP -------------------------------------------------------------------

  /**
   * ibv_create_qp_ex. With IBV_QP_INIT_ATTR_SEND_OPS_FLAGS the QP gets the `ibv_wr_*` API;
   * asking for an op the QP type or the device does not do fails with -EOPNOTSUPP ("If the QP
   * does not support all requested work request types then QP creation will fail",
   * ibv_create_qp_ex(3)). An XRC target QP needs IBV_QP_INIT_ATTR_XRCD, every other type
   * IBV_QP_INIT_ATTR_PD (-EINVAL otherwise).
   */
  createQpEx(attr: IbvQpInitAttrEx): IbvQpEx | number {
    const { compMask, xrcd, sendOpsFlags, ...init } = attr;
    if (compMask & ~(IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_XRCD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS)) return -EINVAL;
    const nic = this.ucontext.device.nic;
    let ops = 0;
    if (compMask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) {
      ops = sendOpsFlags ?? 0;
      if (ops & ~supportedSendOps(init.qpType, nic.caps)) return -EOPNOTSUPP;
    }
    let qp: QueuePair | number;
    if (init.qpType === IBV_QPT_XRC_RECV) {
      if (!(compMask & IBV_QP_INIT_ATTR_XRCD) || !xrcd || !this.xrcds.has(xrcd)) return -EINVAL;
      qp = nic.createQp({ ...init, xrcd: xrcd.xrcd });
      if (typeof qp !== 'number') this.ucontext.qps.add(qp);
    } else {
      if (!(compMask & IBV_QP_INIT_ATTR_PD)) return -EINVAL;
      if (init.srq && !this.srqs.has(init.srq)) return -EINVAL;
      qp = this.createQp(init);
    }
    if (typeof qp === 'number') return qp;
    return new IbvQpEx(qp, ops, {
      checkSendWr: (q, wr) => nic.checkSendWr(q, wr),
      sendQueueRoom: (q) => nic.sendQueueRoom(q),
      post: (q, wr) => this.postOne(q, wr),
    });
  }

  /** ibv_poll_cq. */
  pollCq(cq: CompletionQueue, max = 1): WorkCompletion[] {
    return cq.poll(max);
  }

  /** ibv_close_device: destroys what is left (QPs, MRs) and drops the mm reference. */
  *close(): Co {
    for (const s of this.subs) s.unsubscribe();
    const nic = this.ucontext.device.nic;
    for (const qp of this.ucontext.qps) nic.destroyQp(qp);
    this.ucontext.qps.clear();
    for (const srq of this.srqs) nic.destroySrq(srq);
    this.srqs.clear();
    for (const x of [...this.xrcds.keys()]) this.closeXrcd(x);
    this.mrs.clear();
    yield* this.ucontext.close();
  }
}

/** An RDMA READ or an atomic scatters into local memory; a SEND or WRITE only gathers from it. */
function isLocalWrite(wr: SendWr): boolean {
  return wr.opcode === 4 || wr.opcode === 5 || wr.opcode === 6;
}

/** ibv_open_device for a process on a device. */
export function openDevice(device: import('./ib-device.ts').IbDevice, process: import('../kernel-model/index.ts').Process): IbvContext {
  return new IbvContext(device.open(process));
}
