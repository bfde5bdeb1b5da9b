/**
 * Errors without ODP and for keys that fail their checks (rdma F1-F3, A1, A2, A7), and the
 * verbs calls' errno results.
 */
import test from 'ava';
import { Simulation } from '../../kernel-model/sim/index.ts';
import {
  EINVAL, ENOMEM, EOPNOTSUPP, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_READ,
  IBV_ACCESS_REMOTE_WRITE, IBV_QPS_ERR, IBV_QPS_INIT, IBV_QPS_RESET, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPS_SQD,
  IBV_QPT_RC, IBV_SEND_SIGNALED, IBV_WC_LOC_PROT_ERR, IBV_WC_WR_FLUSH_ERR, IBV_WR_RDMA_READ,
  IBV_WR_RDMA_WRITE, IBV_WR_SEND, MemoryRegion, NO_ODP_CAPS, RXE_ODP_CAPS, type SendWr,
} from '../../device/index.ts';
import {
  ALL_ACCESS, buffer, makeNode, mapBuffer, rcPair, runScript, statusNames, twoNodes, type Buffer,
} from './helpers.ts';

const S = IBV_SEND_SIGNALED;

function writeWr(wrId: number, src: Buffer, dst: Buffer, length = 4096, rkey = dst.mr.rkey): SendWr {
  return { wrId, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.iova, length, lkey: src.mr.lkey }],
    rdma: { remoteAddr: dst.iova, rkey } };
}

test('rdma F1: without ODP a local absent entry gives IBV_WC_LOC_PROT_ERR, the QP goes to ERROR and later WRs are flushed', (t) => {
  const { sim, a, b } = twoNodes({ caps: { odp: NO_ODP_CAPS } });
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x1000, 2);
  const dst = buffer(b, 0x9000, 2);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src, 0, 1); // page 1 missing
    yield* mapBuffer(b, dst);
    a.nic.postSend(qa, writeWr(1, src, dst, 4096));
    a.nic.postSend(qa, writeWr(2, src, dst, 8192));
    a.nic.postSend(qa, writeWr(3, src, dst, 4096));
    yield* a.cq.waitFor(3);
    const wcs = a.cq.poll(3);
    t.deepEqual(statusNames(wcs), ['IBV_WC_SUCCESS', 'IBV_WC_LOC_PROT_ERR', 'IBV_WC_WR_FLUSH_ERR']);
    t.deepEqual(wcs.map((w) => [w.wrId, w.qpNum]), [[1, qa.qpNum], [2, qa.qpNum], [3, qa.qpNum]]);
    // Posting after the error still succeeds, and the WR is flushed (F3).
    t.is(a.nic.postSend(qa, writeWr(4, src, dst)), 0);
    yield* a.cq.wait();
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_WR_FLUSH_ERR']);
  });
  t.is(qa.state, IBV_QPS_ERR);
  t.is(a.nic.faultQueue.raised, 0);
});

test('rdma F2: without ODP a remote absent entry gives IBV_WC_REM_ACCESS_ERR; both QPs go to ERROR and the responder flushes its receives', (t) => {
  const { sim, a, b } = twoNodes({ caps: { odp: NO_ODP_CAPS } });
  const [qa, qb] = rcPair(a, b);
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 1);
  const events: string[] = [];
  b.nic.asyncEvent$.subscribe((e) => events.push(`${e.type}:${e.qpNum}`));
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    b.nic.postRecv(qb, { wrId: 50, sgList: [{ addr: dst.iova, length: 16, lkey: dst.mr.lkey }] });
    a.nic.postSend(qa, writeWr(1, src, dst));
    yield* a.cq.wait();
    yield* b.cq.wait();
  });
  t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_REM_ACCESS_ERR']);
  const [rwc] = b.cq.poll(1);
  t.like(rwc!, { wrId: 50, status: IBV_WC_WR_FLUSH_ERR });
  t.is(qa.state, IBV_QPS_ERR);
  t.is(qb.state, IBV_QPS_ERR);
  t.deepEqual(events, [`IBV_EVENT_QP_ACCESS_ERR:${qb.qpNum}`]);
});

for (const [what, make] of [
  ['an rkey of another PD', (b: ReturnType<typeof twoNodes>['b']) => buffer(b, 0x9000, 1, { pd: b.nic.allocPd() })],
  ['an MR without REMOTE_WRITE', (b: ReturnType<typeof twoNodes>['b']) => buffer(b, 0x9000, 1, { access: IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ })],
] as const) {
  test(`rdma F2: ${what} gives IBV_WC_REM_ACCESS_ERR`, (t) => {
    const { sim, a, b } = twoNodes();
    const [qa] = rcPair(a, b);
    const src = buffer(a, 0x1000, 1);
    const dst = make(b);
    runScript(t, sim, function* () {
      yield* mapBuffer(a, src);
      yield* mapBuffer(b, dst);
      a.nic.postSend(qa, writeWr(1, src, dst));
      yield* a.cq.wait();
    });
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_REM_ACCESS_ERR']);
  });
}

test('rdma F2: an unknown rkey, an access past the MR\'s end, and a revoked MR all give IBV_WC_REM_ACCESS_ERR', (t) => {
  for (const variant of ['unknown', 'bounds', 'revoked', 'destroyed'] as const) {
    const { sim, a, b } = twoNodes();
    const [qa] = rcPair(a, b);
    const src = buffer(a, 0x1000, 2);
    const dst = buffer(b, 0x9000, 1);
    runScript(t, sim, function* () {
      yield* mapBuffer(a, src);
      yield* mapBuffer(b, dst);
      if (variant === 'revoked') t.is(b.nic.revokeMr(dst.mr), 0);
      if (variant === 'destroyed') t.is(b.nic.destroyMr(dst.mr), 0);
      a.nic.postSend(qa, writeWr(1, src, dst, variant === 'bounds' ? 8192 : 4096, variant === 'unknown' ? dst.mr.rkey + 1 : dst.mr.rkey));
      yield* a.cq.wait();
    });
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_REM_ACCESS_ERR'], variant);
  }
});

test('rdma F1: a READ response scattered into an MR without LOCAL_WRITE gives IBV_WC_LOC_PROT_ERR', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const local = buffer(a, 0x1000, 1, { access: 0 });
  const remote = buffer(b, 0x9000, 1);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, local, 0, 1, false);
    yield* mapBuffer(b, remote);
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_READ, sendFlags: S, sgList: [{ addr: local.iova, length: 64, lkey: local.mr.lkey }],
      rdma: { remoteAddr: remote.iova, rkey: remote.mr.rkey } });
    yield* a.cq.wait();
  });
  t.is(a.cq.poll(1)[0]!.status, IBV_WC_LOC_PROT_ERR);
});

test('rdma F: a SEND with no receive posted is an RNR NAK; rnr_retry 0 gives IBV_WC_RNR_RETRY_EXC_ERR', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b, { rnrRetry: 0 });
  const src = buffer(a, 0x1000, 1);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 8, lkey: src.mr.lkey }] });
    yield* a.cq.wait();
  });
  t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_RNR_RETRY_EXC_ERR']);
});

test('rdma F: a SEND larger than the posted receive fails: IBV_WC_LOC_LEN_ERR at the responder, IBV_WC_REM_INV_REQ_ERR at the requester', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b);
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 1);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    b.nic.postRecv(qb, { wrId: 9, sgList: [{ addr: dst.iova, length: 100, lkey: dst.mr.lkey }] });
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 200, lkey: src.mr.lkey }] });
    yield* a.cq.wait();
    yield* b.cq.wait();
  });
  t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_REM_INV_REQ_ERR']);
  t.deepEqual(statusNames(b.cq.poll(1)), ['IBV_WC_LOC_LEN_ERR']);
});

test('verbs errno: posting to a QP before RTS is -EINVAL, a full send queue -ENOMEM, bad transitions -EINVAL', (t) => {
  const sim = new Simulation();
  const n = makeNode(sim, undefined, 'nic');
  const qp = n.nic.createQp({ qpType: IBV_QPT_RC, pd: n.pd, sendCq: n.cq, recvCq: n.cq, cap: { maxSendWr: 1, maxRecvWr: 1 } });
  if (typeof qp === 'number') return t.fail();
  const buf = buffer(n, 0x1000, 1);
  const wr = writeWr(1, buf, buf);
  t.is(n.nic.postSend(qp, wr), -EINVAL, 'RESET');
  t.is(n.nic.postRecv(qp, { wrId: 1, sgList: [] }), -EINVAL, 'recv in RESET');
  t.is(n.nic.modifyQp(qp, { qpState: IBV_QPS_RTS }), -EINVAL, 'RESET -> RTS');
  t.is(n.nic.modifyQp(qp, { qpState: IBV_QPS_INIT, qpAccessFlags: ALL_ACCESS }), 0);
  t.is(n.nic.postSend(qp, wr), -EINVAL, 'INIT');
  t.is(n.nic.postRecv(qp, { wrId: 1, sgList: [] }), 0, 'recv in INIT is allowed');
  t.is(n.nic.postRecv(qp, { wrId: 2, sgList: [] }), -ENOMEM, 'receive queue full');
  t.is(n.nic.modifyQp(qp, { qpState: IBV_QPS_RTR }), -EINVAL, 'RC RTR needs a destination');
  t.is(n.nic.modifyQp(qp, { qpState: IBV_QPS_RTR, destQpNum: qp.qpNum, ahAttr: { dlid: n.nic.lid }, retryCnt: 8 }), -EINVAL, 'retry_cnt > 7');
  t.is(n.nic.modifyQp(qp, { qpState: IBV_QPS_RTR, destQpNum: qp.qpNum, ahAttr: { dlid: n.nic.lid } }), 0);
  t.is(n.nic.postSend(qp, wr), -EINVAL, 'RTR');
  t.is(n.nic.modifyQp(qp, { qpState: IBV_QPS_SQD }), -EINVAL, 'RTR -> SQD');
  t.is(n.nic.modifyQp(qp, { qpState: IBV_QPS_RTS }), 0);
  t.is(n.nic.postSend(qp, { ...wr, opcode: 1 as never }), -EINVAL, 'WITH_IMM not modelled');
  t.is(n.nic.postSend(qp, { ...wr, rdma: undefined }), -EINVAL, 'RDMA WRITE without a remote address');
  t.is(n.nic.postSend(qp, wr), 0);
  t.is(n.nic.postSend(qp, wr), -ENOMEM, 'send queue full');
  t.is(n.nic.modifyQp(qp, { qpState: IBV_QPS_ERR }), 0);
  t.is(n.nic.modifyQp(qp, { qpState: IBV_QPS_RTS }), -EINVAL, 'ERR -> RTS');
  t.is(n.nic.modifyQp(qp, { qpState: IBV_QPS_RESET }), 0);
  t.is(qp.state, IBV_QPS_RESET);
  t.is(n.nic.destroyQp(qp), 0);
  t.is(n.nic.destroyQp(qp), -EINVAL);
});

test('rdma A1, A2, A7: MR creation checks access flags, ODP support and the implicit form', (t) => {
  const sim = new Simulation();
  const odp = makeNode(sim, undefined, 'odp');
  const plain = makeNode(sim, undefined, 'plain', { caps: { odp: NO_ODP_CAPS } });
  const rxe = makeNode(sim, undefined, 'rxe', { caps: { odp: RXE_ODP_CAPS } });
  const mk = (n: typeof odp, o: { access: number; iova?: number; length?: number; onDemand?: boolean; implicit?: boolean; pd?: number }) =>
    n.nic.createMr({ pd: o.pd ?? n.pd, iova: o.iova ?? 0x1000, length: o.length ?? 0x1000, access: o.access, onDemand: o.onDemand, implicit: o.implicit });
  t.is(mk(odp, { access: IBV_ACCESS_REMOTE_WRITE }), -EINVAL, 'remote write without local write');
  t.is(mk(odp, { access: 1 << 20 }), -EINVAL, 'unknown bit');
  t.is(mk(odp, { access: 0, pd: 99 }), -EINVAL, 'unknown PD');
  t.is(mk(odp, { access: 0, length: 0 }), -EINVAL, 'empty');
  t.is(mk(plain, { access: IBV_ACCESS_ON_DEMAND }), -EOPNOTSUPP, 'ODP on a NIC that cannot fault');
  t.true(mk(odp, { access: IBV_ACCESS_ON_DEMAND }) instanceof MemoryRegion);
  t.is(mk(odp, { access: 0, onDemand: true, implicit: true, iova: 0x1000 }), -EINVAL, 'implicit needs iova 0');
  t.is(mk(rxe, { access: 0, onDemand: true, implicit: true, iova: 0 }), -EINVAL, 'implicit needs the implicit capability');
  const imr = mk(odp, { access: 0, onDemand: true, implicit: true, iova: 0 });
  t.true(imr instanceof MemoryRegion);
  const m1 = mk(odp, { access: 0 }) as MemoryRegion;
  const m2 = mk(odp, { access: 0 }) as MemoryRegion;
  t.not(m1.lkey, m2.lkey);
  t.is(odp.nic.mrByKey(m1.lkey), m1);
  t.is(odp.nic.createQp({ qpType: 3 as never, pd: odp.pd, sendCq: odp.cq, recvCq: odp.cq }), -EOPNOTSUPP, 'UC is not modelled');

});
