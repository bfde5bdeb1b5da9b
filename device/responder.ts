import type { Co } from '../kernel-model/sim/index.ts';
import {
  IBV_ACCESS_FLUSH_GLOBAL, IBV_ACCESS_FLUSH_PERSISTENT, IBV_ACCESS_REMOTE_ATOMIC, IBV_ACCESS_REMOTE_READ,
  IBV_ACCESS_REMOTE_WRITE, accessWritable,
} from './access-flags.ts';
import {
  IBV_ODP_SUPPORT_ATOMIC, IBV_ODP_SUPPORT_ATOMIC_WRITE, IBV_ODP_SUPPORT_FLUSH, IBV_ODP_SUPPORT_READ,
  IBV_ODP_SUPPORT_RECV, IBV_ODP_SUPPORT_SRQ_RECV, IBV_ODP_SUPPORT_WRITE,
} from './capabilities.ts';
import { DEVICE_PAGE_SIZE } from './device-page-table.ts';
import { XLATE_FAULT_READ_ONLY, XLATE_OK, XLATE_PROT } from './dma-engine.ts';
import type { MemoryRegion } from './memory-region.ts';
import type { Nic } from './nic.ts';
import { makePacket, type NakCode, type Packet } from './packet.ts';
import type { DmaRange } from './dma-activity.ts';
import type { DeviceFault, FaultResolution } from './page-fault.ts';
import { IBV_QPS_ERR, IBV_QPT_XRC_RECV, type QueuePair } from './queue-pair.ts';
import { IBV_SRQT_XRC, type SharedReceiveQueue } from './shared-receive-queue.ts';
import { SG_OK, SG_PROT as SG_PROT_CODE, SG_RETRY, readRange, scatter, sglCapacity, writeRange, type KeyLookup, type OnFault } from './scatter-gather.ts';
import { IBV_WC_LOC_LEN_ERR, IBV_WC_LOC_PROT_ERR, IBV_WC_RECV, IBV_WC_SUCCESS } from './work-completion.ts';
import {
  IBV_FLUSH_GLOBAL, IBV_FLUSH_MR, IBV_FLUSH_PERSISTENT, IBV_WR_ATOMIC_CMP_AND_SWP, IBV_WR_ATOMIC_WRITE, IBV_WR_FLUSH,
  IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, IBV_WR_SEND, isAtomic, type RecvWr,
} from './work-request.ts';

/** A receive WQE for a SEND and where it came from (null: the QP's own receive queue). */
interface RecvSlot {
  wr: RecvWr;
  srq: SharedReceiveQueue | null;
}

/** A responder fault was posted: stop, and answer the request as the opcode demands. */
const SG_FAULTED = 2;
/** Bytes at the start of a UD receive buffer reserved for the GRH (IB spec; rdma-core `ibv_post_recv`). */
export const UD_GRH_BYTES = 40;
/** How many atomic results a responder keeps to answer duplicate requests. */
const ATOMIC_REPLAY_DEPTH = 16;

/**
 * The receive side of the DMA engine, one coroutine per QP, taking incoming requests in
 * sequence. A responder-side page fault (ODP) is reported and the request is not executed:
 * an RC SEND or RDMA WRITE is answered with an RNR NAK (the requester backs off by
 * `min_rnr_timer` and retries within `rnr_retry`, rdma B8); an RDMA READ or atomic is
 * dropped, so the requester's local ACK timeout and `retry_cnt` govern. While the fault is
 * outstanding, later requests are refused the same way and raise no new fault. A fault
 * resumed with the error bit fails the request with a NAK (remote access for RDMA,
 * remote operational for a SEND whose receive buffer failed) and moves the QP to ERR.
 * Without ODP, or when a key fails its checks, the errors of rdma F1-F3 apply.
 */
export class Responder {
  constructor(private readonly nic: Nic) {}

  *run(qp: QueuePair): Co {
    for (;;) {
      if (qp.destroyed) return;
      const pkt = qp.inbound.shift();
      if (!pkt) {
        qp.compactRecvQueue();
        yield* this.nic.sim.park<void>((wake) => { qp.responderWake = () => wake(); });
        continue;
      }
      if (!qp.canReceive) {
        qp.stats.dropped++;
        continue;
      }
      if (!qp.reliable) {
        yield* this.udReceive(qp, pkt);
        continue;
      }
      if (pkt.psn < qp.ePsn) {
        yield* this.duplicate(qp, pkt);
        continue;
      }
      if (pkt.psn > qp.ePsn) {
        // After an RNR NAK or a dropped request the responder waits for the expected PSN and
        // ignores the rest (no PSN-sequence-error NAK is modelled; the requester's go-back
        // or timeout resends them).
        qp.stats.dropped++;
        continue;
      }
      if ((pkt.opcode === IBV_WR_SEND || pkt.opcode === IBV_WR_RDMA_WRITE) && pkt.seg !== qp.eSeg) {
        // A packet of the current message already taken (a go-back resends from the message's
        // start), or one after a gap: ignored, as out-of-sequence packets are.
        qp.stats.dropped++;
        continue;
      }
      if (qp.responderFault) {
        if (pkt.opcode === IBV_WR_SEND || pkt.opcode === IBV_WR_RDMA_WRITE) this.rnrNak(qp, pkt);
        else qp.stats.dropped++;
        continue;
      }
      yield* this.execute(qp, pkt, false);
    }
  }

  /** A SEND or WRITE packet was taken: the message is done at its last packet, else the next one is expected. */
  private segmentDone(qp: QueuePair, pkt: Packet): boolean {
    if (!pkt.last) {
      qp.eSeg++;
      return false;
    }
    qp.eSeg = 0;
    qp.ePsn++;
    this.nic.endRxMessage(qp);
    return true;
  }

  /**
   * An XRC target QP delivers into the XRC SRQ the packet names, which must belong to the
   * target's XRC domain; memory checks then use that SRQ's PD. A packet naming no such SRQ,
   * or one of another domain, is refused with an invalid-request NAK (IBA XRC domain
   * violation; the requester completes with IBV_WC_REM_INV_REQ_ERR). Null: refused.
   */
  private xrcSrq(qp: QueuePair, pkt: Packet): SharedReceiveQueue | null {
    const srq = this.nic.srqByNum(pkt.xrcSrqn ?? 0);
    if (!srq || srq.destroyed || srq.type !== IBV_SRQT_XRC || srq.xrcd !== qp.xrcd) return null;
    return srq;
  }

  /** The PD memory checks use: the QP's, or on an XRC target the named XRC SRQ's. */
  private pdOf(qp: QueuePair, pkt: Packet): number {
    return qp.type === IBV_QPT_XRC_RECV ? this.nic.srqByNum(pkt.xrcSrqn ?? 0)?.pd ?? -1 : qp.pd;
  }

  private *execute(qp: QueuePair, pkt: Packet, duplicate: boolean): Co {
    if (qp.type === IBV_QPT_XRC_RECV && !this.xrcSrq(qp, pkt)) return this.invalidRequest(qp, pkt);
    switch (pkt.opcode) {
      case IBV_WR_SEND: return yield* this.send(qp, pkt);
      case IBV_WR_RDMA_WRITE: return yield* this.write(qp, pkt);
      case IBV_WR_RDMA_READ: return yield* this.read(qp, pkt, duplicate);
      case IBV_WR_FLUSH: return yield* this.flush(qp, pkt, duplicate);
      case IBV_WR_ATOMIC_WRITE: return yield* this.atomicWrite(qp, pkt);
      default:
        if (isAtomic(pkt.opcode)) return yield* this.atomic(qp, pkt);
        this.nak(qp, pkt.psn, 'invalid-request');
        this.nic.qpToError(qp);
    }
  }

  // ---- SEND ----------------------------------------------------------------------------

  /**
   * The receive WQE for an incoming SEND: the QP's receive queue head; or, with an SRQ (an
   * XRC target: the SRQ the packet names), the WQE already held for this message, else the
   * SRQ's next one, which the QP then holds (rxe `get_srq_wqe`).
   */
  private recvFor(qp: QueuePair, pkt: Packet): RecvSlot | null {
    const srq = qp.type === IBV_QPT_XRC_RECV ? this.xrcSrq(qp, pkt) : qp.srq;
    if (!srq) {
      const wr = qp.rq[qp.rqHead];
      return wr ? { wr, srq: null } : null;
    }
    if (qp.heldRecv && qp.heldRecv.srq === srq) return qp.heldRecv;
    const wr = this.nic.takeSrqWqe(srq);
    if (!wr) return null;
    qp.heldRecv = { wr, srq };
    return qp.heldRecv;
  }

  private *send(qp: QueuePair, pkt: Packet): Co {
    const nic = this.nic;
    const slot = this.recvFor(qp, pkt);
    if (!slot) {
      // No receive WQE: the classic receiver-not-ready.
      this.rnrNak(qp, pkt);
      return;
    }
    const recv = slot;
    const data = pkt.payload ?? new Uint8Array(0);
    const total = pkt.length ?? data.length;
    if (pkt.seg === 0 && total > sglCapacity(recv.wr.sgList)) {
      this.completeRecv(qp, recv, IBV_WC_LOC_LEN_ERR, 0, pkt);
      this.nak(qp, pkt.psn, 'invalid-request');
      nic.qpToError(qp);
      return;
    }
    const epoch = qp.epoch;
    const r = yield* this.scatterRecv(qp, recv, data, pkt.offset, pkt);
    if (qp.epoch !== epoch || !qp.canReceive) return;
    if (r === SG_FAULTED) {
      this.rnrNak(qp, pkt);
      return;
    }
    if (r !== SG_OK) {
      // The receive buffer failed its checks (rxe class A: remote operational error).
      this.completeRecv(qp, recv, IBV_WC_LOC_PROT_ERR, 0, pkt);
      this.nak(qp, pkt.psn, 'remote-operational');
      nic.qpToError(qp);
      return;
    }
    if (!this.segmentDone(qp, pkt)) return;
    this.completeRecv(qp, recv, IBV_WC_SUCCESS, total, pkt);
    this.ack(qp, pkt.psn);
  }

  /**
   * Scatter a SEND into its receive WQE. The ODP bit is RECV for a QP's own receive queue and
   * SRQ_RECV for a WQE from an SRQ (mlx5 reports those as `MLX5_WQE_PF_TYPE_RMP` faults and
   * `internal_fill_odp_caps` has a separate SRQ_RECV bit per transport).
   */
  private *scatterRecv(qp: QueuePair, recv: RecvSlot, data: Uint8Array, skip: number, pkt: Packet): Co<number> {
    const nic = this.nic;
    const ctx = qp.rqContext;
    ctx.opcode = pkt.opcode;
    const hooks = this.hooksOf(qp);
    const pd = recv.srq ? recv.srq.pd : qp.pd;
    const lookup: KeyLookup = recv.srq ? (key, addr, len) => nic.checkLocalKeyPd(pd, key, addr, len, true) : hooks.recvLookup;
    const ranges = nic.dmaActivity.sglRanges(recv.wr.sgList, (k) => nic.mrByKey(k));
    const bit = recv.srq ? IBV_ODP_SUPPORT_SRQ_RECV : IBV_ODP_SUPPORT_RECV;
    return yield* this.duringMessage(qp, pkt, ranges,
      scatter(nic.engine, ctx, recv.wr.sgList, data, skip, lookup, nic.odpAllowed(qp, bit), 0, hooks.fault));
  }

  /** Consume a receive WQE (from the receive queue, or the one held from an SRQ) and complete it. */
  private completeRecv(qp: QueuePair, slot: RecvSlot, status: number, bytes: number, pkt: Packet): void {
    const recv = slot.wr;
    if (slot.srq) {
      if (qp.heldRecv?.wr === recv) qp.heldRecv = null;
    } else if (qp.rq[qp.rqHead] === recv) {
      qp.rqHead++;
    }
    const ok = status === IBV_WC_SUCCESS;
    const ud = !qp.reliable;
    this.nic.writeCqe(slot.srq?.cq ?? qp.recvCq, {
      wrId: recv.wrId, status, opcode: ok ? IBV_WC_RECV : undefined, vendorErr: 0,
      byteLen: ok ? bytes : 0, qpNum: qp.qpNum, srcQp: ok && ud ? pkt.srcQpn : 0, wcFlags: 0,
      slid: ok && ud ? pkt.srcLid : 0, time: 0,
    });
  }

  // ---- RDMA WRITE, READ, atomics ---------------------------------------------------------

  private checkRkey(qp: QueuePair, pkt: Packet, length: number, flag: number): MemoryRegion | null {
    if (length === 0) return null;
    return this.nic.checkRemoteKey(qp, pkt.rkey ?? 0, pkt.remoteAddr ?? 0, length, flag, this.pdOf(qp, pkt));
  }

  private *write(qp: QueuePair, pkt: Packet): Co {
    const nic = this.nic;
    const data = pkt.payload ?? new Uint8Array(0);
    if (!(qp.qpAccessFlags & IBV_ACCESS_REMOTE_WRITE)) return this.invalidRequest(qp, pkt);
    if (data.length > 0) {
      // Each packet writes its share at its offset; the rkey covers the whole message (rxe
      // `check_rkey` checks the RETH length at the first packet).
      const addr = (pkt.remoteAddr ?? 0) + pkt.offset;
      const mr = this.checkRkey(qp, pkt, pkt.length ?? data.length, IBV_ACCESS_REMOTE_WRITE);
      if (!mr) return this.accessError(qp, pkt);
      const epoch = qp.epoch;
      const ctx = qp.rqContext;
      ctx.opcode = pkt.opcode;
      const rest = (pkt.length ?? data.length) - pkt.offset;
      const r = yield* this.duringMessage(qp, pkt, [{ mr, iova: pkt.remoteAddr ?? 0, length: pkt.length ?? data.length }],
        writeRange(nic.engine, ctx, mr, pkt.rkey ?? 0, addr, data, 0, data.length,
          mr.onDemand && nic.odpAllowed(qp, IBV_ODP_SUPPORT_WRITE), 0, this.faultToMessageEnd(qp, rest - data.length)));
      if (qp.epoch !== epoch || !qp.canReceive) return;
      if (r === SG_FAULTED) return this.rnrNak(qp, pkt);
      if (r !== SG_OK) return this.accessError(qp, pkt);
    }
    if (this.segmentDone(qp, pkt)) this.ack(qp, pkt.psn);
  }

  /**
   * Run one packet's DMA with its message's target recorded as active: a single-packet
   * message for the packet's duration; a multi-packet one from its first packet until its
   * last (or until it fails, see `Nic.endRxMessage`).
   */
  private *duringMessage<T>(qp: QueuePair, pkt: Packet, ranges: DmaRange[], body: Co<T>): Co<T> {
    const dma = this.nic.dmaActivity;
    if (pkt.seg === 0 && pkt.last) return yield* dma.during(qp.qpNum, 'responder', pkt.opcode, ranges, body);
    if (!qp.rxMessageDma) qp.rxMessageDma = dma.begin(qp.qpNum, 'responder', pkt.opcode, ranges);
    return yield* body;
  }

  /**
   * RDMA READ: the response goes as one packet per path MTU, from the segment the request
   * asks for (a re-issued READ asks only for what is missing). A page that faults stops the
   * response there: the packets before it stand, the rest is dropped, and the requester's
   * local ACK timeout re-issues the READ from the first missing segment.
   */
  private *read(qp: QueuePair, pkt: Packet, duplicate: boolean): Co {
    const nic = this.nic;
    const total = pkt.length ?? 0;
    if (!(qp.qpAccessFlags & IBV_ACCESS_REMOTE_READ)) return this.invalidRequest(qp, pkt);
    let mr: MemoryRegion | null = null;
    if (total > 0) {
      mr = this.checkRkey(qp, pkt, total, IBV_ACCESS_REMOTE_READ);
      if (!mr) return this.accessError(qp, pkt);
    }
    const epoch = qp.epoch;
    const base = pkt.remoteAddr ?? 0;
    const r = mr
      ? yield* nic.dmaActivity.during(qp.qpNum, 'responder', pkt.opcode, [{ mr, iova: base + pkt.offset, length: total - pkt.offset }],
        this.readSegments(qp, mr, pkt, total))
      : this.readResponse(qp, pkt, new Uint8Array(0), pkt.seg, pkt.offset, true, true);
    if (qp.epoch !== epoch || !qp.canReceive) return;
    if (r === SG_FAULTED) {
      qp.stats.dropped++; // dropped: the requester's local ACK timeout will resend it
      return;
    }
    if (r !== SG_OK) return this.accessError(qp, pkt);
    if (!duplicate) qp.ePsn++;
  }

  private *readSegments(qp: QueuePair, mr: MemoryRegion, pkt: Packet, total: number): Co<number> {
    const nic = this.nic;
    const ctx = qp.rqContext;
    const mtu = qp.pathMtu;
    const faultable = mr.onDemand && nic.odpAllowed(qp, IBV_ODP_SUPPORT_READ);
    let seg = pkt.seg;
    let off = pkt.offset;
    while (off < total) {
      const len = Math.min(mtu, total - off);
      ctx.opcode = pkt.opcode;
      const epoch = qp.epoch;
      const r = yield* readRange(nic.engine, ctx, mr, pkt.rkey ?? 0, (pkt.remoteAddr ?? 0) + off, len, faultable, 0,
        this.faultToMessageEnd(qp, total - off - len));
      if (typeof r === 'number') return r;
      if (qp.epoch !== epoch || !qp.canReceive) return SG_OK;
      this.readResponse(qp, pkt, r, seg, off, off + len >= total, off === pkt.offset);
      off += len;
      seg++;
    }
    return SG_OK;
  }

  /** One READ response packet; the first pays the READ's PCIe read latency (pipelined). */
  private readResponse(qp: QueuePair, pkt: Packet, data: Uint8Array, seg: number, offset: number, last: boolean, first: boolean): number {
    const p = this.answer(qp, 'read-response', pkt.psn, pkt.opcode);
    p.payload = data;
    p.wireBytes += data.length;
    p.seg = seg;
    p.offset = offset;
    p.last = last;
    this.send1(qp, p, first ? this.nic.costs.dmaReadLatencyNs : 0);
    return SG_OK;
  }

  private *atomic(qp: QueuePair, pkt: Packet): Co {
    const nic = this.nic;
    if (!(qp.qpAccessFlags & IBV_ACCESS_REMOTE_ATOMIC)) return this.invalidRequest(qp, pkt);
    const addr = pkt.remoteAddr ?? 0;
    if (addr % 8 !== 0) return this.invalidRequest(qp, pkt); // misaligned atomic
    const mr = this.checkRkey(qp, pkt, 8, IBV_ACCESS_REMOTE_ATOMIC);
    if (!mr) return this.accessError(qp, pkt);
    const epoch = qp.epoch;
    const ctx = qp.rqContext;
    ctx.opcode = pkt.opcode;
    const compareAdd = pkt.compareAdd ?? 0n;
    const swap = pkt.swap ?? 0n;
    const apply = pkt.opcode === IBV_WR_ATOMIC_CMP_AND_SWP
      ? (old: bigint) => (old === BigInt.asUintN(64, compareAdd) ? swap : old)
      : (old: bigint) => old + compareAdd;
    const faultable = mr.onDemand && nic.odpAllowed(qp, IBV_ODP_SUPPORT_ATOMIC);
    let r = yield* nic.dmaActivity.during(qp.qpNum, 'responder', pkt.opcode, [{ mr, iova: addr, length: 8 }],
      this.nicAtomic(qp, mr, pkt, addr, faultable, apply));
    // rxe (`rxe_odp_atomic_op` -> `rxe_odp_map_range_and_lock`): the miss is mapped inline
    // and the atomic runs then, once.
    while (typeof r === 'number' && r !== XLATE_PROT && nic.caps.odpMissHandling === 'inline' && qp.epoch === epoch && qp.canReceive) {
      if ((yield* this.hooksOf(qp).fault(mr, pkt.rkey ?? 0, addr, 8, true, r)) !== SG_RETRY) return;
      r = yield* nic.dmaActivity.during(qp.qpNum, 'responder', pkt.opcode, [{ mr, iova: addr, length: 8 }],
        this.nicAtomic(qp, mr, pkt, addr, faultable, apply));
    }
    if (qp.epoch !== epoch || !qp.canReceive) return;
    if (typeof r === 'number') {
      if (r === XLATE_PROT) return this.accessError(qp, pkt);
      // A fault: report it and drop the request (the requester times out and resends).
      yield* this.hooksOf(qp).fault(mr, pkt.rkey ?? 0, addr, 8, true, r);
      qp.stats.dropped++;
      return;
    }
    qp.atomicReplay.set(pkt.psn, r.original);
    if (qp.atomicReplay.size > ATOMIC_REPLAY_DEPTH) {
      const oldest = qp.atomicReplay.keys().next().value;
      if (oldest !== undefined) qp.atomicReplay.delete(oldest);
    }
    qp.ePsn++;
    this.atomicResponse(qp, pkt, r.original);
  }

  /**
   * RDMA FLUSH (rxe `process_flush`, `rxe_odp_flush_pmem_iova`). The QP must allow each
   * requested placement type (IBV_ACCESS_FLUSH_GLOBAL / _PERSISTENT in its access flags, else
   * an invalid-request NAK as rxe's `check_qp_attr_access` gives), and the rkey's MR must carry
   * them too (else class C, remote access). Level MR flushes the whole MR. On an ODP MR the
   * pages must be mapped first, with write access when the MR is writable, as
   * `rxe_odp_map_range_and_lock(..., RXE_PAGEFAULT_DEFAULT)` maps them; a fault drops the
   * request like a READ's. Without the transport's ODP FLUSH bit an ODP MR refuses FLUSH with
   * an invalid-request NAK (rxe before ODP flush: "ODP is not supported right now",
   * RESPST_ERR_UNSUPPORTED_OPCODE). The answer is a zero-length READ response.
   */
  private *flush(qp: QueuePair, pkt: Packet, duplicate: boolean): Co {
    const nic = this.nic;
    const type = pkt.flushType ?? 0;
    let access = 0;
    if (type & IBV_FLUSH_GLOBAL) access |= IBV_ACCESS_FLUSH_GLOBAL;
    if (type & IBV_FLUSH_PERSISTENT) access |= IBV_ACCESS_FLUSH_PERSISTENT;
    if (access === 0 || (qp.qpAccessFlags & access) !== access) return this.invalidRequest(qp, pkt);
    const whole = pkt.flushLevel === IBV_FLUSH_MR;
    const mr = nic.checkRemoteKey(qp, pkt.rkey ?? 0, pkt.remoteAddr ?? 0, whole ? -1 : pkt.length ?? 0, access, this.pdOf(qp, pkt));
    if (!mr) return this.accessError(qp, pkt);
    const odp = mr.onDemand && nic.odpAllowed(qp, IBV_ODP_SUPPORT_FLUSH);
    if (mr.onDemand && !odp) return this.invalidRequest(qp, pkt);
    const start = whole ? mr.iova : pkt.remoteAddr ?? 0;
    const length = whole ? mr.length : pkt.length ?? 0;
    const epoch = qp.epoch;
    const ctx = qp.rqContext;
    ctx.opcode = pkt.opcode;
    const write = accessWritable(mr.access);
    const r = yield* nic.dmaActivity.during(qp.qpNum, 'responder', pkt.opcode, [{ mr, iova: start, length }],
      this.flushPages(qp, mr, pkt.rkey ?? 0, start, length, write, odp));
    if (qp.epoch !== epoch || !qp.canReceive) return;
    if (r === SG_FAULTED) {
      qp.stats.dropped++; // like a READ: the requester's local ACK timeout resends it
      return;
    }
    if (r !== SG_OK) return this.accessError(qp, pkt);
    if (!duplicate) qp.ePsn++;
    this.send1(qp, this.answer(qp, 'read-response', pkt.psn, pkt.opcode), 0);
  }

  /** Translate every page of a flushed range (the host's cache write-back itself is not modelled). */
  private *flushPages(qp: QueuePair, mr: MemoryRegion, key: number, start: number, length: number, write: boolean, faultable: boolean): Co<number> {
    const engine = this.nic.engine;
    let a = start;
    const end = start + length;
    while (a < end) {
      if (!mr.valid) return SG_PROT_CODE;
      const code = yield* engine.touchPage(qp.rqContext, mr, a, write, faultable);
      if (code !== XLATE_OK) {
        if (code === XLATE_PROT) return SG_PROT_CODE;
        const action = yield* this.hooksOf(qp).fault(mr, key, a, end - a, write, code);
        if (action === SG_RETRY) continue; // resolved inline (rxe): touch the page again
        return action;
      }
      a = (Math.floor(a / DEVICE_PAGE_SIZE) + 1) * DEVICE_PAGE_SIZE;
    }
    return SG_OK;
  }

  /**
   * RDMA ATOMIC WRITE (rxe `atomic_write_reply`, `rxe_odp_do_atomic_write`): 8 bytes written
   * at once. Needs REMOTE_WRITE on the QP (else invalid request) and on the MR (else class C);
   * a misaligned address is an invalid request (RESPST_ERR_MISALIGNED_ATOMIC, IBA A19.4.2). An
   * ODP MR without the transport's ATOMIC_WRITE bit refuses it with an invalid request (rxe's
   * stub returns RESPST_ERR_UNSUPPORTED_OPCODE); with it, a fault drops the request as an
   * atomic's is. Acknowledged like a WRITE.
   */
  private *atomicWrite(qp: QueuePair, pkt: Packet): Co {
    const nic = this.nic;
    if (!(qp.qpAccessFlags & IBV_ACCESS_REMOTE_WRITE)) return this.invalidRequest(qp, pkt);
    const data = pkt.payload ?? new Uint8Array(0);
    const addr = pkt.remoteAddr ?? 0;
    const mr = this.checkRkey(qp, pkt, 8, IBV_ACCESS_REMOTE_WRITE);
    if (!mr || data.length !== 8) return this.accessError(qp, pkt);
    if (addr % 8 !== 0) return this.invalidRequest(qp, pkt);
    const odp = mr.onDemand && nic.odpAllowed(qp, IBV_ODP_SUPPORT_ATOMIC_WRITE);
    if (mr.onDemand && !odp) return this.invalidRequest(qp, pkt);
    const epoch = qp.epoch;
    const ctx = qp.rqContext;
    ctx.opcode = pkt.opcode;
    const r = yield* nic.dmaActivity.during(qp.qpNum, 'responder', pkt.opcode, [{ mr, iova: addr, length: 8 }],
      writeRange(nic.engine, ctx, mr, pkt.rkey ?? 0, addr, data, 0, 8, odp, nic.costs.atomicNs, this.hooksOf(qp).fault));
    if (qp.epoch !== epoch || !qp.canReceive) return;
    if (r === SG_FAULTED) {
      qp.stats.dropped++;
      return;
    }
    if (r !== SG_OK) return this.accessError(qp, pkt);
    qp.ePsn++;
    this.ack(qp, pkt.psn);
  }

  /** The atomic's page access; an XLATE_* code when the page cannot be used. */
  private *nicAtomic(qp: QueuePair, mr: MemoryRegion, pkt: Packet, addr: number, faultable: boolean, apply: (old: bigint) => bigint): Co<{ original: bigint } | number> {
    if (!mr.valid) return XLATE_PROT;
    return yield* this.nic.engine.atomicPage(qp.rqContext, mr, pkt.rkey ?? 0, addr, faultable, apply);
  }

  /** A request with a PSN already executed: acknowledge again, re-read, or replay an atomic. */
  private *duplicate(qp: QueuePair, pkt: Packet): Co {
    if (pkt.opcode === IBV_WR_RDMA_READ || pkt.opcode === IBV_WR_FLUSH) {
      if (qp.responderFault) return;
      if (qp.type === IBV_QPT_XRC_RECV && !this.xrcSrq(qp, pkt)) return;
      if (pkt.opcode === IBV_WR_FLUSH) yield* this.flush(qp, pkt, true);
      else yield* this.read(qp, pkt, true);
      return;
    }
    if (isAtomic(pkt.opcode)) {
      const original = qp.atomicReplay.get(pkt.psn);
      if (original === undefined) return;
      this.atomicResponse(qp, pkt, original);
      return;
    }
    if (!pkt.last) return; // the message's last packet is the one acknowledged
    this.ack(qp, qp.ePsn - 1);
  }

  // ---- UD ------------------------------------------------------------------------------

  private *udReceive(qp: QueuePair, pkt: Packet): Co {
    if (pkt.opcode !== IBV_WR_SEND || pkt.qkey !== qp.qkey || qp.responderFault) {
      qp.stats.dropped++;
      return;
    }
    const recv = this.recvFor(qp, pkt);
    const data = pkt.payload ?? new Uint8Array(0);
    if (!recv || data.length + UD_GRH_BYTES > sglCapacity(recv.wr.sgList)) {
      if (recv) this.giveBack(qp, recv);
      qp.stats.dropped++; // UD has no RNR: no receive WQE, or too small, and the message is lost
      return;
    }
    const epoch = qp.epoch;
    const r = yield* this.scatterRecv(qp, recv, data, UD_GRH_BYTES, pkt);
    if (qp.epoch !== epoch || !qp.canReceive) return;
    if (r === SG_FAULTED) {
      // The message is lost; a WQE taken from an SRQ goes back for the next one.
      this.giveBack(qp, recv);
      qp.stats.dropped++;
      return;
    }
    if (r !== SG_OK) {
      this.completeRecv(qp, recv, IBV_WC_LOC_PROT_ERR, 0, pkt);
      this.nic.qpToError(qp);
      return;
    }
    this.completeRecv(qp, recv, IBV_WC_SUCCESS, data.length + UD_GRH_BYTES, pkt);
  }

  /** A UD message was dropped after its WQE was taken from an SRQ: return it to the SRQ's head. */
  private giveBack(qp: QueuePair, slot: RecvSlot): void {
    if (!slot.srq || qp.heldRecv?.wr !== slot.wr) return;
    qp.heldRecv = null;
    slot.srq.giveBack(slot.wr);
  }

  // ---- faults --------------------------------------------------------------------------

  /**
   * The responder's fault policy: report the fault without waiting (the responder must keep
   * answering) and stop the request. When the driver resumes the fault, the QP takes
   * requests again; with the error bit, the pending request fails and the QP errors.
   */
  private readonly hooks = new WeakMap<QueuePair, { recvLookup: KeyLookup; fault: OnFault }>();

  /** Per-QP key check and fault policy, built once (no closure per request). */
  private hooksOf(qp: QueuePair): { recvLookup: KeyLookup; fault: OnFault } {
    let h = this.hooks.get(qp);
    if (!h) {
      const nic = this.nic;
      h = { recvLookup: (key, addr, len) => nic.checkLocalKey(qp, key, addr, len, true), fault: this.reportFault(qp) };
      this.hooks.set(qp, h);
    }
    return h;
  }

  /**
   * The fault policy for one packet of a longer RDMA message: the fault names the bytes to
   * the end of the whole operation, as an RDMA responder fault carries `rdma_op_len` (rdma B6,
   * `mlx5_ib_mr_rdma_pfault_handler`), not only this packet's share.
   */
  private faultToMessageEnd(qp: QueuePair, beyond: number): OnFault {
    const fault = this.hooksOf(qp).fault;
    if (beyond <= 0) return fault;
    return (mr, key, iova, remaining, write, code) => fault(mr, key, iova, remaining + beyond, write, code);
  }

  private reportFault(qp: QueuePair): OnFault {
    const self = this;
    const nic = this.nic;
    const sim = nic.sim;
    const fail = (fault: DeviceFault) => {
      if (!qp.reliable) {
        self.completeRecvError(qp);
        nic.qpToError(qp);
        return;
      }
      if (fault.opcode === IBV_WR_SEND) {
        self.completeRecvError(qp);
        self.nak(qp, qp.ePsn, 'remote-operational');
      } else {
        self.nak(qp, qp.ePsn, 'remote-access');
        nic.raiseAsyncEvent('IBV_EVENT_QP_ACCESS_ERR', qp);
      }
      nic.qpToError(qp);
    };
    return function* (mr: MemoryRegion, key: number, iova: number, remaining: number, write: boolean, code: number): Co<number> {
      const fault: DeviceFault = {
        id: nic.faultQueue.allocateId(), nic: nic.name, time: sim.now(), qpNum: qp.qpNum, transport: qp.transport,
        side: 'responder', opcode: qp.rqContext.opcode, mrKey: key, iova, length: remaining, write,
        reason: code === XLATE_FAULT_READ_ONLY ? 'read-only' : 'absent',
      };
      mr.counters.faults++;
      qp.stats.faults++;
      const epoch = qp.epoch;
      const t0 = sim.now();
      if (nic.caps.odpMissHandling === 'inline') {
        // rxe: the responder maps the range itself (rxe_odp_mr_copy / rxe_odp_atomic_op ->
        // rxe_odp_map_range_and_lock) and goes on with the same packet; later packets wait
        // in the queue behind it. No RNR NAK, nothing dropped.
        const res = yield* sim.park<FaultResolution>((wake) => nic.faultQueue.post(fault, wake));
        qp.stats.faultStallNs += sim.now() - t0;
        if (qp.destroyed || qp.epoch !== epoch || !qp.canReceive) return SG_FAULTED;
        if (!res.error) return SG_RETRY;
        fail(fault);
        return SG_FAULTED;
      }
      qp.responderFault = fault;
      nic.faultQueue.post(fault, (res) => {
        if (qp.responderFault !== fault) return;
        qp.responderFault = null;
        qp.stats.faultStallNs += sim.now() - t0;
        if (!res.error || qp.epoch !== epoch || !qp.canReceive) return;
        fail(fault);
      });
      return SG_FAULTED;
    };
  }

  /** The receive WQE whose buffer faulted and could not be resolved: the held SRQ WQE, or the queue head. */
  private completeRecvError(qp: QueuePair): void {
    let recv: RecvWr | undefined;
    let cq = qp.recvCq;
    if (qp.heldRecv) {
      recv = qp.heldRecv.wr;
      cq = qp.heldRecv.srq.cq ?? qp.recvCq;
      qp.heldRecv = null;
    } else {
      recv = qp.rq[qp.rqHead];
      if (recv) qp.rqHead++;
    }
    if (!recv) return;
    this.nic.writeCqe(cq, {
      wrId: recv.wrId, status: IBV_WC_LOC_PROT_ERR, opcode: undefined, vendorErr: 0,
      byteLen: 0, qpNum: qp.qpNum, srcQp: 0, wcFlags: 0, slid: 0, time: 0,
    });
  }

  // ---- answers -------------------------------------------------------------------------

  /** Class C: NAK remote access error; the responder errors too and reports QP_ACCESS_ERR (rdma F2). */
  private accessError(qp: QueuePair, pkt: Packet): void {
    this.nak(qp, pkt.psn, 'remote-access');
    this.nic.raiseAsyncEvent('IBV_EVENT_QP_ACCESS_ERR', qp);
    this.nic.qpToError(qp);
  }

  private invalidRequest(qp: QueuePair, pkt: Packet): void {
    this.nak(qp, pkt.psn, 'invalid-request');
    this.nic.qpToError(qp);
  }

  private rnrNak(qp: QueuePair, pkt: Packet): void {
    qp.stats.rnrNaksSent++;
    this.nic.stats.rnrNaksSent++;
    const p = this.answer(qp, 'nak', pkt.psn, pkt.opcode);
    p.nak = 'rnr';
    p.seg = pkt.seg;
    p.rnrTimer = qp.minRnrTimer;
    this.send1(qp, p, 0);
  }

  private atomicResponse(qp: QueuePair, pkt: Packet, original: bigint): void {
    const p = this.answer(qp, 'atomic-response', pkt.psn, pkt.opcode);
    p.original = original;
    p.wireBytes += 8;
    this.send1(qp, p, 0);
  }

  private ack(qp: QueuePair, psn: number): void {
    this.send1(qp, this.answer(qp, 'ack', psn, 0), 0);
  }

  private nak(qp: QueuePair, psn: number, code: NakCode): void {
    const p = this.answer(qp, 'nak', psn, 0);
    p.nak = code;
    this.send1(qp, p, 0);
  }

  private answer(qp: QueuePair, kind: Packet['kind'], psn: number, opcode: number): Packet {
    return makePacket(kind, this.nic.lid, qp.dlid, qp.qpNum, qp.destQpNum, psn, opcode, this.nic.fabric.options.headerBytes);
  }

  /**
   * Answer the requester. Request processing (and a READ's PCIe read latency) is pipelined:
   * it delays the answer, not the next request; answers leave in order.
   */
  private send1(qp: QueuePair, p: Packet, extraNs: number): void {
    if (qp.state === IBV_QPS_ERR && p.kind !== 'nak') return;
    this.nic.transmit(p, qp, 'responder', this.nic.costs.responderProcessingNs + extraNs);
  }
}
