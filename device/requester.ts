import type { Co } from '../kernel-model/sim/index.ts';
import {
  IBV_ODP_SUPPORT_ATOMIC, IBV_ODP_SUPPORT_READ, IBV_ODP_SUPPORT_SEND,
} from './capabilities.ts';
import type { DmaRange } from './dma-activity.ts';
import { XLATE_FAULT_READ_ONLY } from './dma-engine.ts';
import type { MemoryRegion } from './memory-region.ts';
import type { Nic } from './nic.ts';
import { makePacket, type Packet } from './packet.ts';
import type { DeviceFault, FaultResolution } from './page-fault.ts';
import {
  IBV_QPS_ERR, IBV_QPS_RESET, IBV_QPS_RTS, IBV_QPS_SQD, IBV_QPT_XRC_SEND, type QueuePair, type SendWqe,
} from './queue-pair.ts';
import { SG_OK, SG_RETRY, gather, scatter, type KeyLookup, type OnFault } from './scatter-gather.ts';
import { RNR_RETRY_INFINITE, localAckTimeoutNs, rnrTimerNs } from './transport-timers.ts';
import {
  IBV_WC_ATOMIC_WRITE, IBV_WC_COMP_SWAP, IBV_WC_FETCH_ADD, IBV_WC_FLUSH, IBV_WC_LOC_PROT_ERR, IBV_WC_RDMA_READ, IBV_WC_RDMA_WRITE,
  IBV_WC_LOC_LEN_ERR, IBV_WC_REM_ACCESS_ERR, IBV_WC_REM_INV_REQ_ERR, IBV_WC_REM_OP_ERR, IBV_WC_RETRY_EXC_ERR,
  IBV_WC_RNR_RETRY_EXC_ERR, IBV_WC_SEND, IBV_WC_SUCCESS,
} from './work-completion.ts';
import {
  IBV_SEND_FENCE, IBV_WR_ATOMIC_CMP_AND_SWP, IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_WR_ATOMIC_WRITE, IBV_WR_FLUSH, IBV_WR_RDMA_READ,
  IBV_WR_RDMA_WRITE, IBV_WR_SEND, isAtomic, isReadOrAtomic, type Sge,
} from './work-request.ts';

/** The part [off, off + len) of an SGE list, as an SGE list (one packet's share of a message). */
export function sliceSgl(sgList: readonly Sge[], off: number, len: number): Sge[] {
  const out: Sge[] = [];
  let pos = 0;
  for (const s of sgList) {
    const end = pos + s.length;
    if (end > off && pos < off + len) {
      const from = Math.max(off, pos);
      const to = Math.min(off + len, end);
      out.push({ addr: s.addr + (from - pos), length: to - from, lkey: s.lkey });
    }
    pos = end;
    if (pos >= off + len) break;
  }
  return out;
}

/** A fault was resumed with the error bit. */
const SG_FAULT_FAILED = 2;
/** The QP was reset, moved to ERR or destroyed while the access waited. */
const SG_ABORTED = 3;

interface RequesterHooks {
  gatherLookup: KeyLookup;
  scatterLookup: KeyLookup;
  sendFault: OnFault;
  completerFault: OnFault;
}

export function wcOpcodeOf(op: number): number {
  switch (op) {
    case IBV_WR_SEND: return IBV_WC_SEND;
    case IBV_WR_RDMA_WRITE: return IBV_WC_RDMA_WRITE;
    case IBV_WR_RDMA_READ: return IBV_WC_RDMA_READ;
    case IBV_WR_ATOMIC_CMP_AND_SWP: return IBV_WC_COMP_SWAP;
    case IBV_WR_ATOMIC_FETCH_AND_ADD: return IBV_WC_FETCH_ADD;
    case IBV_WR_FLUSH: return IBV_WC_FLUSH;
    case IBV_WR_ATOMIC_WRITE: return IBV_WC_ATOMIC_WRITE;
    default: return IBV_WC_SEND;
  }
}

/**
 * The send side of the DMA engine, one coroutine per QP: transmit posted WQEs (gathering
 * their pages), keep a window of outstanding RC requests, take ACKs, NAKs and responses in
 * order, scatter READ and atomic results, and retry by go-back-N after an RNR NAK
 * (`rnr_retry`, the responder's `min_rnr_timer`) or a local ACK timeout (`timeout`,
 * `retry_cnt`). A page fault stalls only this QP: its coroutine parks until the driver
 * resumes the fault (rdma B6, B7).
 */
export class Requester {
  constructor(private readonly nic: Nic) {}

  /**
   * The transmit side: send posted WQEs in order while the window allows. In ERR it flushes
   * whatever is posted.
   */
  *runTransmitter(qp: QueuePair): Co {
    const sim = this.nic.sim;
    for (;;) {
      if (qp.destroyed) return;
      if (qp.state === IBV_QPS_ERR && qp.sqHead < qp.sq.length) this.nic.flushSend(qp);
      if (this.canTransmit(qp)) {
        yield* this.transmit(qp);
        continue;
      }
      yield* sim.park<void>((wake) => { qp.requesterWake = () => wake(); });
    }
  }

  /**
   * The completion side: ACKs, NAKs and responses in order (scattering READ and atomic
   * results), the ACK timer, and WQEs that failed before transmission. It runs while the
   * transmit side is stalled on a fault, so earlier WQEs still complete.
   */
  *runCompleter(qp: QueuePair): Co {
    const sim = this.nic.sim;
    for (;;) {
      if (qp.destroyed) return;
      qp.compactSendQueue();
      if (qp.state === IBV_QPS_ERR || qp.state === IBV_QPS_RESET) qp.responses.length = 0;
      const pkt = qp.responses.shift();
      if (pkt) {
        yield* this.handleResponse(qp, pkt);
      } else if (qp.timerExpired) {
        qp.timerExpired = false;
        this.handleTimeout(qp);
      } else if (qp.localError && qp.sq[qp.sqHead] === qp.localError.wqe) {
        const le = qp.localError;
        qp.localError = null;
        this.completeError(qp, le.wqe, le.status);
      } else {
        yield* sim.park<void>((wake) => { qp.completerWake = () => wake(); });
        continue;
      }
      // Completions free the window and go-back moves the send point: let the transmit side look.
      qp.kickRequester();
    }
  }

  private canTransmit(qp: QueuePair): boolean {
    if (qp.state !== IBV_QPS_RTS || qp.localError || qp.completerStalled) return false;
    if (qp.sqNext >= qp.sq.length) return false;
    const now = this.nic.sim.now();
    if (now < qp.rnrUntil) return false;
    const w = qp.sq[qp.sqNext] as SendWqe;
    if (w.visibleAt > now) {
      this.nic.ringDoorbell(qp, w.visibleAt);
      return false;
    }
    if (!qp.reliable) return true;
    if (qp.sqNext - qp.sqHead >= this.nic.sendWindow) return false;
    if (isReadOrAtomic(w.wr.opcode) && qp.rdAtomicOutstanding >= Math.max(1, qp.maxRdAtomic)) return false;
    if ((w.wr.sendFlags ?? 0) & IBV_SEND_FENCE && qp.rdAtomicOutstanding > 0) return false;
    return true;
  }

  // ---- transmit ------------------------------------------------------------------------

  private *transmit(qp: QueuePair): Co {
    const nic = this.nic;
    const sim = nic.sim;
    const w = qp.sq[qp.sqNext] as SendWqe;
    const wr = w.wr;
    const epoch = qp.epoch;
    const ctx = qp.sqContext;
    ctx.opcode = wr.opcode;
    const mtu = qp.pathMtu;
    const data = wr.opcode === IBV_WR_SEND || wr.opcode === IBV_WR_RDMA_WRITE;
    if (!qp.reliable && w.length > nic.caps.mtu) {
      // A UD message must fit in one packet of the port's MTU (UD has no path MTU; assumed
      // status: IBV_WC_LOC_LEN_ERR).
      qp.localError = { wqe: w, status: IBV_WC_LOC_LEN_ERR };
      qp.kickCompleter();
      return;
    }
    // A SEND or WRITE longer than the path MTU goes as several packets, gathered and sent one
    // at a time from the segment the last RNR NAK named; each can fault on its own.
    const segs = data && w.length > mtu ? Math.ceil(w.length / mtu) : 1;
    const goBacks = w.goBacks;
    // WQE processing and the PCIe read latency are pipelined across messages: they delay this
    // message's departure, not the gathering of the next one. The page reads themselves
    // occupy the engine for their bandwidth time. Later segments of the same WQE pay only
    // their reads (assumed: the WQE is parsed once).
    let pipelineNs = nic.costs.wqeProcessingNs;
    for (let seg = segs > 1 ? w.resumeSeg : 0; seg < segs; seg++) {
      const off = seg * mtu;
      const len = segs > 1 ? Math.min(mtu, w.length - off) : w.length;
      let payload: Uint8Array | undefined;
      if (data && !wr.inlineData && len > 0) {
        const hooks = this.hooksOf(qp);
        if (seg === 0 || seg === w.resumeSeg) pipelineNs += nic.costs.dmaReadLatencyNs;
        const sgl = segs > 1 ? sliceSgl(wr.sgList, off, len) : wr.sgList;
        const r = yield* nic.dmaActivity.during(qp.qpNum, 'requester', wr.opcode, this.localRanges(sgl),
          gather(nic.engine, ctx, sgl, hooks.gatherLookup, nic.odpAllowed(qp, IBV_ODP_SUPPORT_SEND), 0, hooks.sendFault));
        if (typeof r === 'number') {
          // Aborted, or overtaken: an old acknowledgement completed it, or a go-back moved the send point.
          if (r === SG_ABORTED || qp.epoch !== epoch || qp.sq[qp.sqNext] !== w || w.goBacks !== goBacks) return;
          // Completions stay in order: the error is reported once every earlier WQE has completed.
          qp.localError = { wqe: w, status: IBV_WC_LOC_PROT_ERR };
          qp.kickCompleter();
          return;
        }
        payload = r;
      } else if (wr.opcode === IBV_WR_ATOMIC_WRITE) {
        payload = wr.atomicWrite;
      } else if (wr.inlineData) {
        payload = segs > 1 ? wr.inlineData.subarray(off, off + len) : wr.inlineData;
      }
      // The QP may have been reset, errored or drained, or an RNR NAK may have moved the send
      // point back into this message, while the WQE was being read.
      if (qp.epoch !== epoch || qp.destroyed || qp.state !== IBV_QPS_RTS || qp.sq[qp.sqNext] !== w || w.goBacks !== goBacks) return;
      const fo = nic.fabric.options;
      const pkt = makePacket('request', nic.lid, qp.dlid, qp.qpNum, qp.destQpNum, w.psn, wr.opcode, fo.headerBytes + (payload ? payload.length : 0));
      pkt.payload = payload;
      pkt.seg = seg;
      pkt.offset = off;
      pkt.last = seg === segs - 1;
      if (wr.opcode === IBV_WR_RDMA_WRITE || wr.opcode === IBV_WR_RDMA_READ || wr.opcode === IBV_WR_ATOMIC_WRITE) {
        pkt.remoteAddr = wr.rdma?.remoteAddr ?? 0;
        pkt.rkey = wr.rdma?.rkey ?? 0;
        pkt.length = w.length;
        if (wr.opcode === IBV_WR_RDMA_READ) {
          // A re-issued READ asks only for the responses still missing.
          pkt.seg = w.respSeg;
          pkt.offset = w.respSeg * mtu;
        }
      } else if (wr.opcode === IBV_WR_SEND) {
        pkt.length = w.length;
      } else if (wr.opcode === IBV_WR_FLUSH) {
        // RETH plus the 4-byte FETH (IBA 1.5 memory placement extensions).
        pkt.remoteAddr = wr.rdma?.remoteAddr ?? 0;
        pkt.rkey = wr.rdma?.rkey ?? 0;
        pkt.length = w.length;
        pkt.flushType = wr.flush!.type;
        pkt.flushLevel = wr.flush!.level;
        pkt.wireBytes += 20;
      } else if (isAtomic(wr.opcode)) {
        const a = wr.atomic!;
        pkt.remoteAddr = a.remoteAddr;
        pkt.rkey = a.rkey;
        pkt.compareAdd = a.compareAdd;
        pkt.swap = a.swap;
        pkt.length = 8;
        pkt.wireBytes += 28;
      }
      if (qp.type === IBV_QPT_XRC_SEND) {
        pkt.xrcSrqn = wr.xrc?.remoteSrqn ?? 0;
        pkt.wireBytes += 4; // XRCETH
      }
      if (!qp.reliable) {
        const ud = wr.ud!;
        pkt.dstLid = ud.ah.dlid;
        pkt.dstQpn = ud.remoteQpn;
        pkt.qkey = ud.remoteQkey;
      }
      nic.transmit(pkt, qp, 'requester', pipelineNs);
      pipelineNs = 0;
    }
    qp.sqNext++;
    if (qp.sqNext > qp.sqHighSent) {
      qp.sqHighSent = qp.sqNext;
    } else {
      qp.stats.retransmits++;
      nic.stats.retransmits++;
    }
    if (!qp.reliable) {
      // UD: no acknowledgement; the WQE completes once its message is on the wire.
      this.completeSuccess(qp, w);
      return;
    }
    if (isReadOrAtomic(wr.opcode)) qp.rdAtomicOutstanding++;
    qp.lastActivity = sim.now();
    this.armTimer(qp);
  }

  private readonly hooks = new WeakMap<QueuePair, RequesterHooks>();

  /** The MR ranges of a local SGE list, for the DMA activity record. */
  private localRanges(sgList: readonly Sge[]): DmaRange[] {
    return this.nic.dmaActivity.sglRanges(sgList, (k) => this.nic.mrByKey(k));
  }

  /** Per-QP key checks and fault policies, built once (no closure per work request). */
  private hooksOf(qp: QueuePair): RequesterHooks {
    let h = this.hooks.get(qp);
    if (!h) {
      const nic = this.nic;
      h = {
        gatherLookup: (key, addr, len) => nic.checkLocalKey(qp, key, addr, len, false),
        scatterLookup: (key, addr, len) => nic.checkLocalKey(qp, key, addr, len, true),
        sendFault: this.stallOnFault(qp, false),
        completerFault: this.stallOnFault(qp, true),
      };
      this.hooks.set(qp, h);
    }
    return h;
  }

  /** The requester's fault policy: report the fault, park this QP until it is resumed. */
  private stallOnFault(qp: QueuePair, completer: boolean): OnFault {
    const nic = this.nic;
    const sim = nic.sim;
    const ctx = completer ? qp.completerContext : qp.sqContext;
    return function* (mr: MemoryRegion, key: number, iova: number, remaining: number, write: boolean, code: number): Co<number> {
      const epoch = qp.epoch;
      const fault: DeviceFault = {
        id: nic.faultQueue.allocateId(), nic: nic.name, time: sim.now(), qpNum: qp.qpNum,
        transport: qp.transport, side: 'requester', opcode: ctx.opcode, mrKey: key, iova, length: remaining, write,
        reason: code === XLATE_FAULT_READ_ONLY ? 'read-only' : 'absent',
      };
      mr.counters.faults++;
      qp.stats.faults++;
      const t0 = sim.now();
      // A fault while writing a response stalls the whole QP: nothing new is sent meanwhile.
      if (completer) qp.completerStalled = true;
      const res = yield* sim.park<FaultResolution>((wake) => nic.faultQueue.post(fault, wake));
      if (completer) {
        qp.completerStalled = false;
        qp.kickRequester();
      }
      qp.stats.faultStallNs += sim.now() - t0;
      if (qp.destroyed || qp.epoch !== epoch || qp.state === IBV_QPS_ERR || qp.state === IBV_QPS_RESET) return SG_ABORTED;
      return res.error ? SG_FAULT_FAILED : SG_RETRY;
    };
  }

  // ---- responses -----------------------------------------------------------------------

  private *handleResponse(qp: QueuePair, pkt: Packet): Co {
    if (!qp.reliable || (qp.state !== IBV_QPS_RTS && qp.state !== IBV_QPS_SQD)) return;
    const idx = qp.indexOfPsn(pkt.psn);
    if (idx < qp.sqHead || idx >= qp.sqHighSent) return; // stale or duplicate
    // Everything before idx is implicitly acknowledged, except a READ or atomic whose
    // response never came: that response was lost, so resend from it.
    const lastImplied = pkt.kind === 'ack' ? idx : idx - 1;
    for (let i = qp.sqHead; i <= lastImplied; i++) {
      const w = qp.sq[i] as SendWqe;
      if (isReadOrAtomic(w.wr.opcode) && !w.responded) {
        // An implied NAK. Start one retry sequence per lost response (as rxe does): the
        // rest of the old stream's answers would otherwise each restart it.
        if (qp.impliedRetryPsn === w.psn) return;
        qp.impliedRetryPsn = w.psn;
        if (qp.retryLeft === 0) {
          this.completeError(qp, w, IBV_WC_RETRY_EXC_ERR);
          return;
        }
        qp.retryLeft--;
        this.goBack(qp, i);
        return;
      }
      this.completeSuccess(qp, w);
    }
    if (qp.sqNext < qp.sqHead) qp.sqNext = qp.sqHead;
    if (pkt.kind === 'ack') {
      this.progress(qp);
      return;
    }
    const w = qp.sq[idx] as SendWqe;
    if (pkt.kind === 'nak') {
      this.handleNak(qp, w, idx, pkt);
      return;
    }
    if (w.responded) return;
    if (pkt.kind === 'read-response') {
      // Response segments are taken in order; a duplicate or one after a gap is ignored.
      if (pkt.seg !== w.respSeg) return;
      w.respSeg++;
      if (!pkt.last) {
        this.progress(qp);
        yield* this.scatterResult(qp, w, pkt, false);
        return;
      }
    }
    w.responded = true;
    qp.rdAtomicOutstanding--;
    if (qp.sqNext <= idx) qp.sqNext = idx + 1;
    this.progress(qp);
    yield* this.scatterResult(qp, w, pkt, true);
  }

  private handleNak(qp: QueuePair, w: SendWqe, idx: number, pkt: Packet): void {
    const sim = this.nic.sim;
    switch (pkt.nak) {
      case 'rnr': {
        qp.stats.rnrNaksReceived++;
        if (qp.rnrRetryLeft === 0) {
          this.completeError(qp, w, IBV_WC_RNR_RETRY_EXC_ERR);
          return;
        }
        if (qp.rnrRetry !== RNR_RETRY_INFINITE) qp.rnrRetryLeft--;
        qp.rnrUntil = sim.now() + rnrTimerNs(pkt.rnrTimer ?? 0);
        // Resend from the packet the responder refused, not from the message's start.
        this.goBack(qp, idx, pkt.seg);
        if (qp.rnrEvent) qp.rnrEvent.cancelled = true;
        qp.rnrEvent = sim.scheduler.at(qp.rnrUntil, () => {
          qp.rnrEvent = null;
          qp.kickRequester();
        });
        return;
      }
      case 'remote-access':
        this.completeError(qp, w, IBV_WC_REM_ACCESS_ERR);
        return;
      case 'remote-operational':
        this.completeError(qp, w, IBV_WC_REM_OP_ERR);
        return;
      default:
        this.completeError(qp, w, IBV_WC_REM_INV_REQ_ERR);
    }
  }

  /**
   * Write a READ response (one segment, at its offset in the message) or an atomic's original
   * value into the local buffers; `complete` on the last one.
   */
  private *scatterResult(qp: QueuePair, w: SendWqe, pkt: Packet, complete: boolean): Co {
    const nic = this.nic;
    const epoch = qp.epoch;
    const wr = w.wr;
    const ctx = qp.completerContext;
    ctx.opcode = wr.opcode;
    let data: Uint8Array;
    let bit: number;
    if (pkt.kind === 'atomic-response') {
      data = new Uint8Array(8);
      new DataView(data.buffer).setBigUint64(0, BigInt.asUintN(64, pkt.original ?? 0n), true);
      bit = IBV_ODP_SUPPORT_ATOMIC;
    } else {
      data = pkt.payload ?? new Uint8Array(0);
      bit = IBV_ODP_SUPPORT_READ;
    }
    const hooks = this.hooksOf(qp);
    const r = yield* nic.dmaActivity.during(qp.qpNum, 'requester', wr.opcode, this.localRanges(wr.sgList),
      scatter(nic.engine, ctx, wr.sgList, data, pkt.offset, hooks.scatterLookup, nic.odpAllowed(qp, bit), 0, hooks.completerFault));
    if (r === SG_ABORTED || qp.epoch !== epoch || qp.destroyed || qp.state === IBV_QPS_ERR) return;
    if (r !== SG_OK) {
      if (qp.sq[qp.sqHead] === w) this.completeError(qp, w, IBV_WC_LOC_PROT_ERR);
      else qp.localError = { wqe: w, status: IBV_WC_LOC_PROT_ERR };
      return;
    }
    if (complete && qp.sq[qp.sqHead] === w) this.completeSuccess(qp, w);
  }

  // ---- retries -------------------------------------------------------------------------

  /** Forward progress: reset the retry counters and restart the ACK timer. */
  private progress(qp: QueuePair): void {
    qp.retryLeft = qp.retryCnt;
    qp.rnrRetryLeft = qp.rnrRetry;
    qp.lastActivity = this.nic.sim.now();
    if (qp.sqHead < qp.sqNext) this.armTimer(qp);
  }

  /** Go-back-N: resend from WQE `idx`, from its segment `seg` (an RNR NAK's), later WQEs from their start. */
  private goBack(qp: QueuePair, idx: number, seg = 0): void {
    for (let i = idx; i < qp.sqHighSent && i < qp.sq.length; i++) {
      const x = qp.sq[i] as SendWqe;
      x.resumeSeg = i === idx ? seg : 0;
      x.goBacks++;
    }
    qp.sqNext = idx;
    let n = 0;
    for (let i = qp.sqHead; i < qp.sqNext; i++) {
      const w = qp.sq[i] as SendWqe;
      if (isReadOrAtomic(w.wr.opcode) && !w.responded) n++;
    }
    qp.rdAtomicOutstanding = n;
    qp.lastActivity = this.nic.sim.now();
  }

  private armTimer(qp: QueuePair): void {
    if (qp.timerEvent) return;
    const t = localAckTimeoutNs(qp.timeout);
    if (!Number.isFinite(t)) return;
    const sim = this.nic.sim;
    qp.timerEvent = sim.scheduler.at(qp.lastActivity + t, () => {
      qp.timerEvent = null;
      if (qp.sqHead >= qp.sqNext || (qp.state !== IBV_QPS_RTS && qp.state !== IBV_QPS_SQD)) return;
      if (sim.now() - qp.lastActivity >= t) {
        qp.timerExpired = true;
        qp.kickCompleter();
      } else {
        this.armTimer(qp);
      }
    });
  }

  private handleTimeout(qp: QueuePair): void {
    if (qp.sqHead >= qp.sqNext) return;
    const t = localAckTimeoutNs(qp.timeout);
    const now = this.nic.sim.now();
    if (now - qp.lastActivity < t) {
      this.armTimer(qp);
      return;
    }
    qp.stats.timeouts++;
    this.nic.stats.timeouts++;
    if (qp.retryLeft === 0) {
      this.completeError(qp, qp.sq[qp.sqHead] as SendWqe, IBV_WC_RETRY_EXC_ERR);
      return;
    }
    qp.retryLeft--;
    this.goBack(qp, qp.sqHead);
  }

  // ---- completions ---------------------------------------------------------------------

  private completeSuccess(qp: QueuePair, w: SendWqe): void {
    qp.sqHead++;
    this.nic.dmaActivity.end(w.dma);
    if (w.signaled) {
      this.nic.writeCqe(qp.sendCq, {
        wrId: w.wr.wrId, status: IBV_WC_SUCCESS, opcode: wcOpcodeOf(w.wr.opcode), vendorErr: 0,
        byteLen: w.length, qpNum: qp.qpNum, srcQp: 0, wcFlags: 0, slid: 0, time: 0,
      });
    }
  }

  /** Complete the head WQE in error (always reported, signaled or not) and fail the QP (rdma F1-F3). */
  private completeError(qp: QueuePair, w: SendWqe, status: number): void {
    if (qp.sq[qp.sqHead] !== w) throw new Error(`QP ${qp.qpNum}: completing a WQE that is not at the head`);
    qp.sqHead++;
    this.nic.dmaActivity.end(w.dma);
    if (qp.sqNext < qp.sqHead) qp.sqNext = qp.sqHead;
    this.nic.writeCqe(qp.sendCq, {
      wrId: w.wr.wrId, status, opcode: undefined, vendorErr: 0,
      byteLen: 0, qpNum: qp.qpNum, srcQp: 0, wcFlags: 0, slid: 0, time: 0,
    });
    if (qp.reliable) this.nic.qpToError(qp);
    else this.nic.qpToSqe(qp);
  }
}

