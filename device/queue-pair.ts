import type { SimEvent } from '../kernel-model/sim/index.ts';
import type { CompletionQueue } from './completion-queue.ts';
import { newTranslation, type Translation } from './device-page-table.ts';
import type { ActiveDma } from './dma-activity.ts';
import type { AccessContext } from './dma-engine.ts';
import type { Packet } from './packet.ts';
import type { DeviceFault } from './page-fault.ts';
import type { Transport } from './capabilities.ts';
import type { SharedReceiveQueue } from './shared-receive-queue.ts';
import type { XrcDomain } from './xrc-domain.ts';
import type { AddressHandle, RecvWr, SendWr } from './work-request.ts';

/** `enum ibv_qp_type`: RC, UD, and the two halves of XRC (initiator and target). */
export const IBV_QPT_RC = 2;
export const IBV_QPT_UD = 4;
export const IBV_QPT_XRC_SEND = 9;
export const IBV_QPT_XRC_RECV = 10;
export type QpType = typeof IBV_QPT_RC | typeof IBV_QPT_UD | typeof IBV_QPT_XRC_SEND | typeof IBV_QPT_XRC_RECV;

/** `enum ibv_qp_state`. */
export const IBV_QPS_RESET = 0;
export const IBV_QPS_INIT = 1;
export const IBV_QPS_RTR = 2;
export const IBV_QPS_RTS = 3;
export const IBV_QPS_SQD = 4;
export const IBV_QPS_SQE = 5;
export const IBV_QPS_ERR = 6;
export type QpState = 0 | 1 | 2 | 3 | 4 | 5 | 6;

const STATE_NAMES = ['IBV_QPS_RESET', 'IBV_QPS_INIT', 'IBV_QPS_RTR', 'IBV_QPS_RTS', 'IBV_QPS_SQD', 'IBV_QPS_SQE', 'IBV_QPS_ERR'];

export function qpStateName(s: number): string {
  return STATE_NAMES[s] ?? `IBV_QPS_${s}`;
}

/**
 * Legal `ibv_modify_qp` state transitions (IB spec QP state diagram, simplified): any state
 * may go to RESET or ERR; otherwise RESET->INIT, INIT->INIT|RTR, RTR->RTS, RTS->RTS|SQD,
 * SQD->SQD|RTS, SQE->RTS.
 */
export function qpTransitionAllowed(from: QpState, to: QpState): boolean {
  if (to === IBV_QPS_RESET || to === IBV_QPS_ERR) return true;
  switch (from) {
    case IBV_QPS_RESET: return to === IBV_QPS_INIT;
    case IBV_QPS_INIT: return to === IBV_QPS_INIT || to === IBV_QPS_RTR;
    case IBV_QPS_RTR: return to === IBV_QPS_RTS;
    case IBV_QPS_RTS: return to === IBV_QPS_RTS || to === IBV_QPS_SQD;
    case IBV_QPS_SQD: return to === IBV_QPS_SQD || to === IBV_QPS_RTS;
    case IBV_QPS_SQE: return to === IBV_QPS_RTS;
    default: return false;
  }
}

export interface QpCap {
  maxSendWr: number;
  maxRecvWr: number;
  maxSendSge: number;
  maxRecvSge: number;
}

/**
 * `struct ibv_qp_init_attr_ex`, the fields this NIC uses. An XRC target QP (XRC_RECV) takes
 * only `xrcd` (no PD, no CQs, no queues: it delivers into the XRC SRQ each packet names); an
 * XRC initiator (XRC_SEND) has a send queue only.
 */
export interface QpInitAttr {
  qpType: QpType;
  pd: number;
  sendCq?: CompletionQueue;
  recvCq?: CompletionQueue;
  /** Take receive WQEs from this SRQ instead of a receive queue of its own. */
  srq?: SharedReceiveQueue;
  /** XRC_RECV: its XRC domain. */
  xrcd?: XrcDomain;
  cap?: Partial<QpCap>;
  /** Every send WR generates a CQE, not only those with IBV_SEND_SIGNALED. Default false, as in rdma-core. */
  sqSigAll?: boolean;
}

/**
 * `struct ibv_qp_attr`, the fields this NIC uses. Unset fields keep their value; a new QP
 * starts with every field zero, as a memset attr would leave it: timeout 0 (never time out),
 * retry_cnt 0, rnr_retry 0, min_rnr_timer 0 (655.36 ms).
 */
export interface QpAttr {
  qpState?: QpState;
  qpAccessFlags?: number;
  qkey?: number;
  destQpNum?: number;
  ahAttr?: AddressHandle;
  /** Local ACK timeout code: 4.096 µs * 2^timeout; 0 = infinite. */
  timeout?: number;
  /** Transport retries after a local ACK timeout (0..7). */
  retryCnt?: number;
  /** Retries after an RNR NAK (0..7; 7 = forever). */
  rnrRetry?: number;
  /** The RNR NAK timer code this QP, as responder, puts in its RNR NAKs (IB Table 45). */
  minRnrTimer?: number;
  /** Outstanding RDMA READ/atomic requests as requester (0 behaves as 1, mlx5's log2 encoding). */
  maxRdAtomic?: number;
  maxDestRdAtomic?: number;
  sqPsn?: number;
  rqPsn?: number;
  /** Path MTU, `enum ibv_mtu` (IBV_MTU_256 = 1 .. IBV_MTU_4096 = 5); at most the port's active MTU. */
  pathMtu?: number;
}

/** A QP's path MTU before `modifyQp` sets one: the IB maximum message size, so one packet per message. */
export const UNSET_PATH_MTU = 2 ** 31;

/** `enum ibv_mtu`. */
export const IBV_MTU_256 = 1;
export const IBV_MTU_512 = 2;
export const IBV_MTU_1024 = 3;
export const IBV_MTU_2048 = 4;
export const IBV_MTU_4096 = 5;

/** Bytes of an `enum ibv_mtu` value (0 if invalid). */
export function mtuBytes(mtu: number): number {
  return Number.isInteger(mtu) && mtu >= IBV_MTU_256 && mtu <= IBV_MTU_4096 ? 128 << mtu : 0;
}

/** A posted send work request and its progress on the requester. */
export interface SendWqe {
  readonly wr: SendWr;
  readonly psn: number;
  readonly signaled: boolean;
  /** Total bytes of the message (READ: bytes requested). */
  readonly length: number;
  /** READ/atomic: the response has arrived (the request is no longer outstanding). */
  responded: boolean;
  /** When the NIC has fetched the WQE (post time + doorbellNs). */
  readonly visibleAt: number;
  /** Its local buffers as active DMA, from the doorbell until it completes (see DmaActivity). */
  dma: ActiveDma | null;
  /** Multi-packet SEND/WRITE: the segment a (re)transmission starts from (an RNR NAK names it). */
  resumeSeg: number;
  /** Multi-packet READ: the next response segment expected (a re-issued READ asks from here). */
  respSeg: number;
  /** Bumped by every go-back, so a transmission in progress knows its send point moved. */
  goBacks: number;
}

export interface QpStats {
  /** Faults raised by this QP (either side). */
  faults: number;
  /** Virtual ns this QP spent stalled on faults. */
  faultStallNs: number;
  rnrNaksSent: number;
  rnrNaksReceived: number;
  /** Requests sent again (go-back-N after a timeout, RNR NAK or lost response). */
  retransmits: number;
  timeouts: number;
  /** Incoming packets dropped (out of sequence, wrong state, responder fault on READ/atomic, UD without a receive). */
  dropped: number;
}

/**
 * A queue pair: its verbs attributes and state machine (RESET, INIT, RTR, RTS, SQD, SQE,
 * ERR), its send and receive queues, and the per-side transport state the DMA engine keeps
 * (send sequence, outstanding window, ACK timer and retry counters on the requester;
 * expected sequence, pending fault and atomic replay on the responder). Created and driven
 * by its Nic; the fields are the device's, read them, do not write them.
 */
export class QueuePair {
  readonly type: QpType;
  readonly transport: Transport;
  /** RC and both XRC halves: acknowledged, in-order, with retries. */
  readonly reliable: boolean;
  readonly pd: number;
  /** Undefined only on an XRC target QP, which completes nothing itself. */
  readonly sendCq: CompletionQueue;
  readonly recvCq: CompletionQueue;
  readonly srq: SharedReceiveQueue | null;
  readonly xrcd: XrcDomain | null;
  readonly sqSigAll: boolean;
  readonly cap: QpCap;
  state: QpState = IBV_QPS_RESET;
  /** Bumped by RESET and destroy: an engine path that slept compares it to know its work was cancelled. */
  epoch = 0;
  destroyed = false;

  // attributes
  qpAccessFlags = 0;
  qkey = 0;
  destQpNum = 0;
  dlid = 0;
  timeout = 0;
  retryCnt = 0;
  rnrRetry = 0;
  minRnrTimer = 0;
  maxRdAtomic = 0;
  maxDestRdAtomic = 0;
  /**
   * Path MTU in bytes. Until `modifyQp` sets `pathMtu`, 2^31 (the largest IB message): one
   * packet per message, as this model had before issue 18. rdma-core requires IBV_QP_PATH_MTU
   * at RTR for connected QPs; the model does not, so that code written before it keeps its
   * figures (model choice).
   */
  pathMtu = UNSET_PATH_MTU;

  // send queue (requester)
  sq: SendWqe[] = [];
  /** psn of sq[0]. */
  sqBasePsn = 0;
  /** First WQE not completed. */
  sqHead = 0;
  /** Next WQE to transmit (go-back-N moves it back). */
  sqNext = 0;
  /** A pending wake-up of the transmit side for a WQE whose doorbell has not yet been seen. */
  doorbellEvent: SimEvent | null = null;
  /** One past the highest WQE ever transmitted. */
  sqHighSent = 0;
  nextPsn = 0;
  /** Departure time of the last packet each side sent (packets of one side leave in order). */
  sqDepartAt = 0;
  rqDepartAt = 0;
  readonly responses: Packet[] = [];
  timerExpired = false;
  timerEvent: SimEvent | null = null;
  rnrEvent: SimEvent | null = null;
  lastActivity = 0;
  retryLeft = 0;
  rnrRetryLeft = 0;
  rnrUntil = 0;
  rdAtomicOutstanding = 0;
  /** A WQE that failed locally before transmission; it completes in error when it reaches the head. */
  localError: { wqe: SendWqe; status: number } | null = null;
  /** PSN of the READ/atomic whose lost response started the current implied-NAK retry, or -1. */
  impliedRetryPsn = -1;
  /** The completion side is stalled on a fault (scattering a response): the transmit side waits too. */
  completerStalled = false;
  requesterWake: (() => void) | null = null;
  completerWake: (() => void) | null = null;

  // receive queue (responder)
  rq: RecvWr[] = [];
  rqHead = 0;
  readonly inbound: Packet[] = [];
  ePsn = 0;
  /** The segment of message ePsn expected next (multi-packet SEND/WRITE). */
  eSeg = 0;
  responderFault: DeviceFault | null = null;
  /**
   * A receive WQE taken from an SRQ for the SEND being executed, and its SRQ: it stays with
   * the QP until that message completes (rxe keeps it as `qp->resp.wqe`), so a retried SEND
   * after an RNR NAK lands in the same buffer.
   */
  heldRecv: { wr: RecvWr; srq: SharedReceiveQueue } | null = null;
  /**
   * A multi-packet SEND or WRITE being received: its target as active DMA from the first
   * packet to the last (a holdoff driver must not slip in between two packets of one message).
   */
  rxMessageDma: ActiveDma | null = null;
  readonly atomicReplay = new Map<number, bigint>();
  responderWake: (() => void) | null = null;

  /**
   * Access contexts (with their scratch translation) of the three engines working for this
   * QP: the transmit side, the completion side (scattering responses) and the responder.
   * Each must have its own: a translation is held across the sleep of an access.
   */
  readonly sqContext: AccessContext;
  readonly completerContext: AccessContext;
  readonly rqContext: AccessContext;
  readonly stats: QpStats = { faults: 0, faultStallNs: 0, rnrNaksSent: 0, rnrNaksReceived: 0, retransmits: 0, timeouts: 0, dropped: 0 };

  constructor(readonly qpNum: number, init: QpInitAttr, cap: QpCap) {
    this.type = init.qpType;
    this.transport = init.qpType === IBV_QPT_RC ? 'RC' : init.qpType === IBV_QPT_UD ? 'UD' : 'XRC';
    this.reliable = init.qpType !== IBV_QPT_UD;
    this.pd = init.pd;
    this.sendCq = init.sendCq as CompletionQueue;
    this.recvCq = init.recvCq as CompletionQueue;
    this.srq = init.srq ?? null;
    this.xrcd = init.xrcd ?? null;
    this.sqSigAll = init.sqSigAll ?? false;
    this.cap = cap;
    const sx: Translation = newTranslation();
    const cx: Translation = newTranslation();
    const rx: Translation = newTranslation();
    this.sqContext = { qpNum, side: 'requester', opcode: 0, xlate: sx };
    this.completerContext = { qpNum, side: 'requester', opcode: 0, xlate: cx };
    this.rqContext = { qpNum, side: 'responder', opcode: 0, xlate: rx };
  }

  /** Send WQEs posted and not completed. */
  get sendQueueDepth(): number {
    return this.sq.length - this.sqHead;
  }

  /** Receive WQEs posted and not consumed. */
  get recvQueueDepth(): number {
    return this.rq.length - this.rqHead;
  }

  /** Index in `sq` of the WQE with sequence number `psn`. */
  indexOfPsn(psn: number): number {
    return psn - this.sqBasePsn;
  }

  /** A responder that can take incoming requests (RTR and later, not ERR). */
  get canReceive(): boolean {
    return this.state >= IBV_QPS_RTR && this.state !== IBV_QPS_ERR;
  }

  kickRequester(): void {
    const w = this.requesterWake;
    if (w) {
      this.requesterWake = null;
      w();
    }
  }

  kickCompleter(): void {
    const w = this.completerWake;
    if (w) {
      this.completerWake = null;
      w();
    }
  }

  kickResponder(): void {
    const w = this.responderWake;
    if (w) {
      this.responderWake = null;
      w();
    }
  }

  /** Drop completed send WQEs from the front now and then, keeping indices valid. */
  compactSendQueue(): void {
    if (this.sqHead > 1024 && this.sqHead * 2 > this.sq.length) {
      const n = this.sqHead;
      this.sq = this.sq.slice(n);
      this.sqBasePsn += n;
      this.sqHead -= n;
      this.sqNext -= n;
      this.sqHighSent -= n;
    }
  }

  /** Drop consumed receive WQEs from the front now and then. */
  compactRecvQueue(): void {
    if (this.rqHead > 1024 && this.rqHead * 2 > this.rq.length) {
      this.rq = this.rq.slice(this.rqHead);
      this.rqHead = 0;
    }
  }
}
