/**
 * Path MTU (issue 18 item 4): a message longer than the QP's path MTU is several packets,
 * and each can fault and be NAKed or retried on its own. Sources: rdma-core ibv_modify_qp(3)
 * (`path_mtu`, `enum ibv_mtu`); kernel drivers/infiniband/sw/rxe/rxe_resp.c (`check_length`:
 * first/middle packets carry exactly the MTU; `read_reply`: one response packet per MTU,
 * FIRST/MIDDLE/LAST), rxe_req.c (a packet per MTU); rdma B8 (a responder fault on a WRITE is
 * an RNR NAK; the NAK names the packet, so only the rest is resent).
 */
import test from 'ava';
import {
  EINVAL, IBV_MTU_1024, IBV_MTU_256, IBV_MTU_4096, IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPS_SQE, IBV_QPT_UD,
  IBV_SEND_SIGNALED, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, IBV_WR_SEND, nicCapabilities, type DeviceFault, type QueuePair,
} from '../../device/index.ts';
import { buffer, contents, fill, mapBuffer, pager, rcPair, runScript, statusNames, twoNodes } from './helpers.ts';

const S = IBV_SEND_SIGNALED;
const KiB = 1024;

/**
 * A fault served within one RNR timer (the calibrated ~220 µs NIC fault spans several):
 * these tests count packets of exactly one RNR NAK and one resend.
 */
const FAST_FAULT = { faultResumeNs: 2_000 };

test('ibv_modify_qp(3) path_mtu: an enum ibv_mtu value up to the port\'s active MTU; anything else is -EINVAL', (t) => {
  const { a, b } = twoNodes({ caps: { mtu: 1024 } });
  t.throws(() => rcPair(a, b, { pathMtu: IBV_MTU_4096 }), { message: /-22/ }, 'larger than the port MTU');
  const { a: a2, b: b2 } = twoNodes();
  const [qa] = rcPair(a2, b2, { pathMtu: IBV_MTU_1024 });
  t.is(qa.pathMtu, 1024);
  t.is(a2.nic.modifyQp(qa, { pathMtu: 6 }), -EINVAL);
  t.is(a2.nic.modifyQp(qa, { pathMtu: 0 }), -EINVAL);
  t.is(nicCapabilities().mtu, 4096, 'default port MTU: 4096 (InfiniBand)');
});

test('model choice: a QP whose path MTU was never set sends one packet per message (rdma-core would require IBV_QP_PATH_MTU at RTR)', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x10000, 16);
  const dst = buffer(b, 0x40000, 16);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.iova, length: 64 * KiB, lkey: src.mr.lkey }],
      rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } });
    yield* a.cq.waitFor(1);
  });
  t.is(b.nic.stats.packetsReceived, 1);
  t.deepEqual(contents(b, dst, 0, 64 * KiB), contents(a, src, 0, 64 * KiB));
});

test('rxe check_length: a 10 KiB RDMA WRITE with a 1 KiB path MTU is 10 packets on the wire, acknowledged once, bytes intact', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b, { pathMtu: IBV_MTU_1024 });
  const src = buffer(a, 0x10000, 3);
  const dst = buffer(b, 0x40000, 3);
  fill(a, src, (i) => i * 13 + 5);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    t.is(a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.iova + 7, length: 10 * KiB, lkey: src.mr.lkey }],
      rdma: { remoteAddr: dst.iova + 3, rkey: dst.mr.rkey } }), 0);
    yield* a.cq.waitFor(1);
  });
  t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_SUCCESS']);
  t.is(b.nic.stats.packetsReceived, 10, 'ten request packets');
  t.is(a.nic.stats.packetsReceived, 1, 'one ACK for the message');
  t.deepEqual(contents(b, dst, 3, 10 * KiB), contents(a, src, 7, 10 * KiB));
});

test('rdma B8 per packet: a WRITE whose 9th packet faults is RNR-NAKed at that packet; only packets 9..16 are resent', (t) => {
  const { sim, a, b } = twoNodes({ costs: FAST_FAULT });
  const [qa, qb] = rcPair(a, b, { pathMtu: IBV_MTU_1024 });
  const src = buffer(a, 0x10000, 4);
  const dst = buffer(b, 0x40000, 4, { onDemand: true });
  fill(a, src, (i) => (i * 7) ^ 0x33);
  const log: DeviceFault[] = [];
  pager(b, [dst], { log });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst, 0, 2); // pages 0 and 1 mapped, 2 and 3 cold
    t.is(a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.iova, length: 16 * KiB, lkey: src.mr.lkey }],
      rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } }), 0);
    yield* a.cq.waitFor(1);
  });
  t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_SUCCESS']);
  t.is(log.length, 1);
  t.is(log[0]!.iova, dst.iova + 8 * KiB, 'the fault is at the 9th packet');
  t.is(qb.stats.rnrNaksSent, 1);
  // 16 first-time packets (those after the faulting one were dropped as out of sequence),
  // then the resend of packets 9..16: 8 more, not 16.
  t.is(b.nic.stats.packetsReceived, 24);
  t.deepEqual(contents(b, dst, 0, 16 * KiB), contents(a, src, 0, 16 * KiB));
});

test('rxe read_reply: a 16 KiB READ with a 1 KiB path MTU is answered in 16 packets; a fault at the 9th stops the response there and the re-issued READ asks only for the rest', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b, { pathMtu: IBV_MTU_1024 });
  const local = buffer(a, 0x10000, 4);
  const remote = buffer(b, 0x40000, 4, { onDemand: true });
  fill(b, remote, (i) => (i * 31) & 0xff);
  const log: DeviceFault[] = [];
  pager(b, [remote], { log });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, local);
    yield* mapBuffer(b, remote, 0, 2);
    t.is(a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_READ, sendFlags: S, sgList: [{ addr: local.iova, length: 16 * KiB, lkey: local.mr.lkey }],
      rdma: { remoteAddr: remote.iova, rkey: remote.mr.rkey } }), 0);
    yield* a.cq.waitFor(1);
  });
  t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_SUCCESS']);
  t.is(log.length, 1);
  t.is(log[0]!.iova, remote.iova + 8 * KiB);
  t.is(qa.stats.timeouts, 1, 'the dropped rest is recovered by the local ACK timeout');
  t.is(a.nic.stats.packetsReceived, 16, '8 response packets, then the missing 8: none twice');
  t.is(b.nic.stats.packetsReceived, 2, 'the READ, then the READ for the rest');
  t.is(qb.stats.dropped, 1);
  t.deepEqual(contents(a, local, 0, 16 * KiB), contents(b, remote, 0, 16 * KiB));
});

test('per-packet SEND: a 6 KiB SEND with a 1 KiB path MTU lands in one receive WQE (byte_len 6 KiB) even when a packet in the middle faults', (t) => {
  const { sim, a, b } = twoNodes({ costs: FAST_FAULT });
  const [qa, qb] = rcPair(a, b, { pathMtu: IBV_MTU_1024 });
  const src = buffer(a, 0x10000, 2);
  const dst = buffer(b, 0x40000, 2, { onDemand: true });
  fill(a, src, (i) => i + 1);
  const log: DeviceFault[] = [];
  pager(b, [dst], { log });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst, 0, 1);
    b.nic.postRecv(qb, { wrId: 5, sgList: [{ addr: dst.iova, length: 8 * KiB, lkey: dst.mr.lkey }] });
    t.is(a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 6 * KiB, lkey: src.mr.lkey }] }), 0);
    yield* a.cq.waitFor(1);
    yield* b.cq.waitFor(1);
  });
  t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_SUCCESS']);
  const [wc] = b.cq.drain();
  t.deepEqual([wc!.wrId, wc!.status, wc!.byteLen], [5, 0, 6 * KiB]);
  t.is(log.length, 1);
  t.is(log[0]!.iova, dst.iova + 4 * KiB, 'the 5th packet faults');
  t.is(b.nic.stats.packetsReceived, 6 + 2, 'six packets, then the 5th and 6th again');
  t.deepEqual(contents(b, dst, 0, 6 * KiB), contents(a, src, 0, 6 * KiB));
});

test('a UD message longer than the port MTU (UD has no path MTU) completes in error (IBV_WC_LOC_LEN_ERR, assumed) and the send queue errors', (t) => {
  const { sim, a, b } = twoNodes({ caps: { mtu: 1024 } });
  const qp = a.nic.createQp({ qpType: IBV_QPT_UD, pd: a.pd, sendCq: a.cq, recvCq: a.cq }) as QueuePair;
  a.nic.modifyQp(qp, { qpState: IBV_QPS_INIT, qkey: 1 });
  a.nic.modifyQp(qp, { qpState: IBV_QPS_RTR });
  a.nic.modifyQp(qp, { qpState: IBV_QPS_RTS });
  const src = buffer(a, 0x10000, 1);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    t.is(a.nic.postSend(qp, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 1025, lkey: src.mr.lkey }],
      ud: { ah: { dlid: b.nic.lid }, remoteQpn: 1, remoteQkey: 1 } }), 0);
    yield* a.cq.waitFor(1);
  });
  t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_LOC_LEN_ERR']);
  t.is(qp.state, IBV_QPS_SQE);
});

test('wire cost per packet: the same 64 KiB WRITE puts one header per packet on the wire (256 packets at a 256-byte path MTU, 16 at 4096)', (t) => {
  const times: number[] = [];
  const wire: number[] = [];
  for (const pathMtu of [IBV_MTU_4096, IBV_MTU_256]) {
    const { sim, a, b, fabric } = twoNodes();
    const [qa] = rcPair(a, b, { pathMtu });
    const src = buffer(a, 0x10000, 16);
    const dst = buffer(b, 0x40000, 16);
    runScript(t, sim, function* () {
      yield* mapBuffer(a, src);
      yield* mapBuffer(b, dst);
      const t0 = sim.now();
      a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.iova, length: 64 * KiB, lkey: src.mr.lkey }],
        rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } });
      yield* a.cq.waitFor(1);
      times.push(sim.now() - t0);
    });
    t.is(b.nic.stats.packetsReceived, (64 * KiB) / (128 << pathMtu));
    wire.push(fabric.bytes);
  }
  const header = 64; // DEFAULT_FABRIC.headerBytes
  t.is(wire[1]! - wire[0]!, (256 - 16) * header, 'one header per packet');
  // The extra 15 KiB of headers cost about 1.2 µs of wire time, but smaller packets also
  // leave sooner (each is gathered and sent on its own), so the completion time is not
  // simply longer: measured, not asserted.
  t.log(`64 KiB WRITE: ${times[0]} ns at MTU 4096, ${times[1]} ns at MTU 256`);
});
