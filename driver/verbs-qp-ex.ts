import {
  IBV_QPT_RC, IBV_QPT_UD, IBV_QPT_XRC_SEND, IBV_WR_ATOMIC_CMP_AND_SWP, IBV_WR_ATOMIC_FETCH_AND_ADD,
  IBV_WR_ATOMIC_WRITE, IBV_WR_FLUSH, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, IBV_WR_SEND, IB_UVERBS_DEVICE_ATOMIC_WRITE,
  IB_UVERBS_DEVICE_FLUSH_GLOBAL, IB_UVERBS_DEVICE_FLUSH_PERSISTENT, hasDeviceCap,
  type AddressHandle, type NicCapabilities, type QueuePair, type SendWr, type Sge, type WrOpcode,
} from '../device/index.ts';
import { EINVAL, ENOMEM, EOPNOTSUPP, type Co } from '../kernel-model/index.ts';

/** `enum ibv_qp_create_send_ops_flags` (ibv_create_qp_ex(3)). */
export const IBV_QP_EX_WITH_RDMA_WRITE = 1 << 0;
export const IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM = 1 << 1;
export const IBV_QP_EX_WITH_SEND = 1 << 2;
export const IBV_QP_EX_WITH_SEND_WITH_IMM = 1 << 3;
export const IBV_QP_EX_WITH_RDMA_READ = 1 << 4;
export const IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP = 1 << 5;
export const IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD = 1 << 6;
export const IBV_QP_EX_WITH_LOCAL_INV = 1 << 7;
export const IBV_QP_EX_WITH_BIND_MW = 1 << 8;
export const IBV_QP_EX_WITH_SEND_WITH_INV = 1 << 9;
export const IBV_QP_EX_WITH_TSO = 1 << 10;
export const IBV_QP_EX_WITH_FLUSH = 1 << 11;
export const IBV_QP_EX_WITH_ATOMIC_WRITE = 1 << 12;

const OP_FLAG: Readonly<Record<number, number>> = {
  [IBV_WR_RDMA_WRITE]: IBV_QP_EX_WITH_RDMA_WRITE,
  [IBV_WR_SEND]: IBV_QP_EX_WITH_SEND,
  [IBV_WR_RDMA_READ]: IBV_QP_EX_WITH_RDMA_READ,
  [IBV_WR_ATOMIC_CMP_AND_SWP]: IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP,
  [IBV_WR_ATOMIC_FETCH_AND_ADD]: IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD,
  [IBV_WR_FLUSH]: IBV_QP_EX_WITH_FLUSH,
  [IBV_WR_ATOMIC_WRITE]: IBV_QP_EX_WITH_ATOMIC_WRITE,
};

/**
 * The send ops a QP type carries on this device (the table of ibv_wr_post(3): SEND on every
 * type; RDMA, atomics, FLUSH and ATOMIC_WRITE on RC and XRC_SEND), FLUSH and ATOMIC_WRITE
 * only where the device has their `device_cap_flags_ex` bits. The *_WITH_IMM, memory-window,
 * LOCAL_INV and TSO ops are not modelled.
 */
export function supportedSendOps(qpType: number, caps: NicCapabilities): number {
  if (qpType === IBV_QPT_UD) return IBV_QP_EX_WITH_SEND;
  if (qpType !== IBV_QPT_RC && qpType !== IBV_QPT_XRC_SEND) return 0;
  let ops = IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_RDMA_READ
    | IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP | IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD;
  if (hasDeviceCap(caps, IB_UVERBS_DEVICE_FLUSH_GLOBAL) || hasDeviceCap(caps, IB_UVERBS_DEVICE_FLUSH_PERSISTENT)) ops |= IBV_QP_EX_WITH_FLUSH;
  if (hasDeviceCap(caps, IB_UVERBS_DEVICE_ATOMIC_WRITE)) ops |= IBV_QP_EX_WITH_ATOMIC_WRITE;
  return ops;
}

/** What the extended QP needs of the verbs context: the provider's preparation and the NIC. */
export interface QpExPoster {
  checkSendWr(qp: QueuePair, wr: SendWr): number;
  sendQueueRoom(qp: QueuePair): number;
  post(qp: QueuePair, wr: SendWr): Co<number>;
}

/**
 * `struct ibv_qp_ex` and the `ibv_wr_*` API (ibv_wr_post(3)): inside `wrStart` ..
 * `wrComplete`/`wrAbort`, each builder starts a work request with the current `wrId` and
 * `wrFlags`, and the setters attach its data. The builders report nothing; as the man page
 * says, a failure (a builder outside the critical region, an op the QP was not created
 * for, a setter the op does not take, bad arguments the device refuses, too little room in
 * the send queue) makes `wrComplete` return the error and abort the whole batch: nothing is
 * posted. Errors are -errno, as everywhere in this API.
 *
 * @example
 *   qpx.wrStart();
 *   qpx.wrId = 7; qpx.wrFlags = IBV_SEND_SIGNALED;
 *   qpx.wrFlush(mr.rkey, addr, 4096, IBV_FLUSH_GLOBAL, IBV_FLUSH_RANGE);
 *   const r = yield* qpx.wrComplete();
 */
export class IbvQpEx {
  wrId = 0;
  wrFlags = 0;
  private open = false;
  private err = 0;
  private batch: SendWr[] = [];

  constructor(readonly qp: QueuePair, readonly sendOpsFlags: number, private readonly poster: QpExPoster) {}

  get qpNum(): number {
    return this.qp.qpNum;
  }

  wrStart(): void {
    this.open = true;
    this.err = 0;
    this.batch = [];
  }

  /** Discard everything built since `wrStart`. */
  wrAbort(): void {
    this.open = false;
    this.err = 0;
    this.batch = [];
  }

  /** Post the batch, or nothing: 0, or the first error (-EINVAL, -EOPNOTSUPP, -ENOMEM). */
  *wrComplete(): Co<number> {
    const batch = this.batch;
    const err = this.open ? this.err : EINVAL;
    this.wrAbort();
    if (err) return -err;
    for (const wr of batch) {
      const bad = this.poster.checkSendWr(this.qp, wr);
      if (bad < 0) return bad;
    }
    if (this.poster.sendQueueRoom(this.qp) < batch.length) return -ENOMEM;
    for (const wr of batch) {
      const r = yield* this.poster.post(this.qp, wr);
      if (r < 0) return r;
    }
    return 0;
  }

  wrSend(): void {
    this.begin(IBV_WR_SEND, {});
  }

  wrRdmaWrite(rkey: number, remoteAddr: number): void {
    this.begin(IBV_WR_RDMA_WRITE, { rdma: { rkey, remoteAddr } });
  }

  wrRdmaRead(rkey: number, remoteAddr: number): void {
    this.begin(IBV_WR_RDMA_READ, { rdma: { rkey, remoteAddr } });
  }

  wrAtomicCmpSwp(rkey: number, remoteAddr: number, compare: bigint, swap: bigint): void {
    this.begin(IBV_WR_ATOMIC_CMP_AND_SWP, { atomic: { rkey, remoteAddr, compareAdd: compare, swap } });
  }

  wrAtomicFetchAdd(rkey: number, remoteAddr: number, add: bigint): void {
    this.begin(IBV_WR_ATOMIC_FETCH_AND_ADD, { atomic: { rkey, remoteAddr, compareAdd: add, swap: 0n } });
  }

  /** ibv_wr_flush(qp, rkey, remote_addr, len, type, level). */
  wrFlush(rkey: number, remoteAddr: number, length: number, type: number, level: number): void {
    this.begin(IBV_WR_FLUSH, { rdma: { rkey, remoteAddr }, flush: { type, level, length } });
  }

  /** ibv_wr_atomic_write(qp, rkey, remote_addr, atomic_wr): 8 bytes, copied now. */
  wrAtomicWrite(rkey: number, remoteAddr: number, value: Uint8Array): void {
    if (value.length !== 8) this.fail(EINVAL);
    this.begin(IBV_WR_ATOMIC_WRITE, { rdma: { rkey, remoteAddr }, atomicWrite: value.slice(0, 8) });
  }

  wrSetSge(lkey: number, addr: number, length: number): void {
    this.setData([{ lkey, addr, length }]);
  }

  wrSetSgeList(sgList: readonly Sge[]): void {
    this.setData(sgList.map((s) => ({ ...s })));
  }

  wrSetInlineData(data: Uint8Array): void {
    const wr = this.last();
    if (!wr) return;
    if (wr.opcode !== IBV_WR_SEND && wr.opcode !== IBV_WR_RDMA_WRITE) return this.fail(EINVAL);
    wr.inlineData = data.slice();
    wr.sgList = [];
  }

  wrSetUdAddr(ah: AddressHandle, remoteQpn: number, remoteQkey: number): void {
    const wr = this.last();
    if (wr) wr.ud = { ah, remoteQpn, remoteQkey };
  }

  wrSetXrcSrqn(remoteSrqn: number): void {
    const wr = this.last();
    if (wr) wr.xrc = { remoteSrqn };
  }

  private begin(opcode: WrOpcode, rest: Partial<SendWr>): void {
    if (!this.open) {
      this.err ||= EINVAL;
      return;
    }
    const flag = OP_FLAG[opcode] ?? 0;
    if (!(this.sendOpsFlags & flag)) this.fail(EOPNOTSUPP);
    this.batch.push({ wrId: this.wrId, opcode, sgList: [], sendFlags: this.wrFlags, ...rest });
  }

  /** Data setters: only ops that gather local memory take an SGE list (READ and atomics scatter into it). */
  private setData(sgList: Sge[]): void {
    const wr = this.last();
    if (!wr) return;
    if (wr.opcode === IBV_WR_FLUSH || wr.opcode === IBV_WR_ATOMIC_WRITE) return this.fail(EINVAL);
    wr.sgList = sgList;
  }

  private last(): SendWr | undefined {
    const wr = this.batch[this.batch.length - 1];
    if (!wr) this.fail(EINVAL);
    return wr;
  }

  private fail(errno: number): void {
    this.err ||= errno;
  }
}
