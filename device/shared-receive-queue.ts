import type { CompletionQueue } from './completion-queue.ts';
import type { XrcDomain } from './xrc-domain.ts';
import type { RecvWr } from './work-request.ts';

/** `enum ibv_srq_type` (ibv_create_srq_ex(3)). */
export const IBV_SRQT_BASIC = 0;
export const IBV_SRQT_XRC = 1;
export type SrqType = typeof IBV_SRQT_BASIC | typeof IBV_SRQT_XRC;

/** `enum ibv_srq_attr_mask` (ibv_modify_srq(3)). */
export const IBV_SRQ_MAX_WR = 1;
export const IBV_SRQ_LIMIT = 2;

/** `struct ibv_srq_init_attr_ex`, the fields this NIC uses. */
export interface SrqInitAttr {
  pd: number;
  maxWr: number;
  maxSge: number;
  /** Ignored at creation, as ibv_create_srq(3) says; arm the limit with `modifySrq`. */
  srqLimit?: number;
  srqType?: SrqType;
  /** XRC SRQs: the XRC domain whose target QPs may deliver into it. */
  xrcd?: XrcDomain;
  /** XRC SRQs: where receive completions go (a basic SRQ's go to the receiving QP's CQ). */
  cq?: CompletionQueue;
}

/**
 * A shared receive queue: receive WQEs that any QP attached to it (or, for an XRC SRQ, any
 * XRC target QP of its domain, named by SRQ number in the packet) consumes in order. It has
 * a limit: armed by `modifySrq` with a non-zero `srqLimit`, it fires once, the first time a
 * WQE taken from the queue leaves fewer than `srqLimit` WQEs, raising
 * IBV_EVENT_SRQ_LIMIT_REACHED and disarming itself (rxe `get_srq_wqe`; ibv_modify_srq(3)).
 * Created and driven by its Nic; read its fields, do not write them.
 */
export class SharedReceiveQueue {
  readonly type: SrqType;
  readonly pd: number;
  readonly xrcd: XrcDomain | null;
  readonly cq: CompletionQueue | null;
  maxWr: number;
  readonly maxSge: number;
  /** The armed limit; 0 when disarmed. */
  limit = 0;
  destroyed = false;
  /** QPs attached to it (ib_destroy_srq refuses while any remain: EBUSY). */
  users = 0;
  /** Times the limit event fired. */
  limitEvents = 0;
  private wqes: RecvWr[] = [];
  private head = 0;

  constructor(readonly srqNum: number, init: SrqInitAttr) {
    this.type = init.srqType ?? IBV_SRQT_BASIC;
    this.pd = init.pd;
    this.xrcd = init.xrcd ?? null;
    this.cq = init.cq ?? null;
    this.maxWr = init.maxWr;
    this.maxSge = init.maxSge;
  }

  /** Receive WQEs posted and not yet taken. */
  get depth(): number {
    return this.wqes.length - this.head;
  }

  /** Device side: append a posted WQE (the caller checked for room). */
  push(wr: RecvWr): void {
    this.wqes.push(wr);
  }

  /** Device side: the next WQE, or undefined. */
  take(): RecvWr | undefined {
    const wr = this.wqes[this.head];
    if (!wr) return undefined;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.wqes.length) {
      this.wqes = this.wqes.slice(this.head);
      this.head = 0;
    }
    return wr;
  }

  /** Device side: put back a WQE taken for a message that was then dropped (UD). */
  giveBack(wr: RecvWr): void {
    if (this.head > 0) this.wqes[--this.head] = wr;
    else this.wqes.unshift(wr);
  }
}
