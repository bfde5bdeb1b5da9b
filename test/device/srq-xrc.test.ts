/**
 * Shared receive queues and XRC on the NIC model (issue 18 item 1): SRQ receives from
 * several QPs, overflow, the limit event, the SRQ_RECV ODP bit; XRC domains, XRC SRQs,
 * initiator and target QPs, the domain check, XRC over ODP; refusals on a device without XRC.
 * Sources: rdma-core man pages ibv_create_srq(3), ibv_post_srq_recv(3), ibv_modify_srq(3),
 * ibv_open_xrcd(3), ibv_create_qp_ex(3); kernel drivers/infiniband/sw/rxe/rxe_resp.c
 * (`get_srq_wqe`), rxe_verbs.c (`rxe_post_recv`), drivers/infiniband/hw/mlx5/srq.c
 * (`mlx5_ib_modify_srq`), mlx5/odp.c (`internal_fill_odp_caps`: SRQ_RECV bit per transport).
 */
import test from 'ava';
import {
  CAPABILITY_PRESETS, EBUSY, EINVAL, ENOMEM, EOPNOTSUPP, IBV_ODP_SUPPORT_RECV, IBV_ODP_SUPPORT_SEND,
  IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, IBV_QPT_UD, IBV_QPT_XRC_RECV,
  IBV_QPT_XRC_SEND, IBV_SEND_SIGNALED, IBV_SRQT_XRC, IBV_SRQ_LIMIT, IBV_SRQ_MAX_WR, IBV_WC_RECV, IBV_WR_RDMA_WRITE,
  IBV_WR_SEND, MLX5_ODP_CAPS, SharedReceiveQueue, XrcDomain, type DeviceFault, type NicAsyncEvent, type QueuePair,
} from '../../device/index.ts';
import {
  ALL_ACCESS, TEST_ATTR, buffer, contents, createQp, fill, mapBuffer, pager, runScript, statusNames, twoNodes, type Node,
} from './helpers.ts';

const S = IBV_SEND_SIGNALED;

/** Bring one QP of `n` up against the peer QP on `peer` (INIT, RTR, RTS). */
function up(n: Node, qp: QueuePair, peer: Node, peerQpNum: number): void {
  const at = { ...TEST_ATTR };
  t0(n.nic.modifyQp(qp, { qpState: IBV_QPS_INIT, qpAccessFlags: ALL_ACCESS }));
  t0(n.nic.modifyQp(qp, { ...at, qpState: IBV_QPS_RTR, destQpNum: peerQpNum, ahAttr: { dlid: peer.nic.lid } }));
  t0(n.nic.modifyQp(qp, { ...at, qpState: IBV_QPS_RTS }));
}

function t0(r: number): void {
  if (r !== 0) throw new Error(`verbs call failed: ${r}`);
}

function srqOf(n: Node, maxWr = 16): SharedReceiveQueue {
  const srq = n.nic.createSrq({ pd: n.pd, maxWr, maxSge: 2 });
  if (typeof srq === 'number') throw new Error(`createSrq ${srq}`);
  return srq;
}

/** An RC pair whose responder side takes its receives from `srq`. */
function rcPairWithSrq(a: Node, b: Node, srq: SharedReceiveQueue): [QueuePair, QueuePair] {
  const qa = createQp(a);
  const qb = b.nic.createQp({ qpType: IBV_QPT_RC, pd: b.pd, sendCq: b.cq, recvCq: b.cq, srq }) as QueuePair;
  up(a, qa, b, qb.qpNum);
  up(b, qb, a, qa.qpNum);
  return [qa, qb];
}

test('ibv_create_srq(3), ibv_post_srq_recv(3): two RC QPs share one SRQ; WQEs are taken in order, completions name the receiving QP', (t) => {
  const { sim, a, b } = twoNodes();
  const srq = srqOf(b);
  const [qa1, qb1] = rcPairWithSrq(a, b, srq);
  const [qa2, qb2] = rcPairWithSrq(a, b, srq);
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x8000, 3);
  fill(a, src, (i) => i + 3);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    for (let i = 0; i < 3; i++) t.is(b.nic.postSrqRecv(srq, { wrId: 100 + i, sgList: [{ addr: dst.iova + i * 4096, length: 4096, lkey: dst.mr.lkey }] }), 0);
    // rxe_post_recv: a QP attached to an SRQ has no receive queue of its own.
    t.is(b.nic.postRecv(qb1, { wrId: 1, sgList: [] }), -EINVAL);
    t.is(a.nic.postSend(qa2, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 64, lkey: src.mr.lkey }] }), 0);
    yield* b.cq.waitFor(1);
    t.is(a.nic.postSend(qa1, { wrId: 2, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova + 64, length: 32, lkey: src.mr.lkey }] }), 0);
    yield* b.cq.waitFor(2);
    yield* a.cq.waitFor(2);
  });
  const recvs = b.cq.drain();
  t.deepEqual(recvs.map((w) => [w.wrId, w.qpNum, w.opcode, w.byteLen]), [[100, qb2.qpNum, IBV_WC_RECV, 64], [101, qb1.qpNum, IBV_WC_RECV, 32]]);
  t.deepEqual(contents(b, dst, 4096, 32), contents(a, src, 64, 32), 'the second message landed in the second SRQ WQE');
  t.is(srq.depth, 1);
  t.is(b.nic.destroySrq(srq), -EBUSY, 'ib_destroy_srq: QPs still attached');
  t.is(b.nic.destroyQp(qb1), 0);
  t.is(b.nic.destroyQp(qb2), 0);
  t.is(b.nic.destroySrq(srq), 0);
});

test('ibv_post_srq_recv(3): SRQ overflow is -ENOMEM, too many SGEs -EINVAL; ibv_create_srq beyond the device caps -EINVAL', (t) => {
  const { b } = twoNodes();
  const srq = srqOf(b, 2);
  const wr = { wrId: 1, sgList: [{ addr: 0x1000, length: 8, lkey: 1 }] };
  t.is(b.nic.postSrqRecv(srq, wr), 0);
  t.is(b.nic.postSrqRecv(srq, wr), 0);
  t.is(b.nic.postSrqRecv(srq, wr), -ENOMEM, 'the SRQ holds max_wr WQEs');
  t.is(b.nic.postSrqRecv(srq, { wrId: 2, sgList: [wr.sgList[0]!, wr.sgList[0]!, wr.sgList[0]!] }), -EINVAL);
  t.is(b.nic.createSrq({ pd: b.pd, maxWr: b.nic.caps.maxSrqWr + 1, maxSge: 1 }), -EINVAL);
  t.is(b.nic.createSrq({ pd: b.pd, maxWr: 4, maxSge: b.nic.caps.maxSrqSge + 1 }), -EINVAL);
  t.is(b.nic.createSrq({ pd: 999, maxWr: 4, maxSge: 1 }), -EINVAL, 'unknown PD');
  t.is(b.nic.createSrq({ pd: b.pd, maxWr: 0, maxSge: 1 }), -EINVAL);
  // An XRC SRQ needs a domain and a CQ; an XRC SRQ cannot serve an RC QP.
  t.is(b.nic.createSrq({ pd: b.pd, maxWr: 4, maxSge: 1, srqType: IBV_SRQT_XRC }), -EINVAL);
  const xrcd = b.nic.allocXrcd() as XrcDomain;
  const xsrq = b.nic.createSrq({ pd: b.pd, maxWr: 4, maxSge: 1, srqType: IBV_SRQT_XRC, xrcd, cq: b.cq }) as SharedReceiveQueue;
  t.true(xsrq instanceof SharedReceiveQueue);
  t.is(b.nic.createQp({ qpType: IBV_QPT_RC, pd: b.pd, sendCq: b.cq, recvCq: b.cq, srq: xsrq }), -EINVAL);
  t.is(b.nic.deallocXrcd(xrcd), -EBUSY, 'the XRC SRQ still uses the domain');
});

test('ibv_modify_srq(3), rxe get_srq_wqe: the armed limit fires IBV_EVENT_SRQ_LIMIT_REACHED once, when a taken WQE leaves fewer than srq_limit', (t) => {
  const { sim, a, b } = twoNodes();
  const srq = srqOf(b, 8);
  const [qa] = rcPairWithSrq(a, b, srq);
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x8000, 1);
  const events: NicAsyncEvent[] = [];
  b.nic.asyncEvent$.subscribe((e) => events.push(e));
  // mlx5_ib_modify_srq: srq_limit >= max is -EINVAL; no resize on mlx5.
  t.is(b.nic.modifySrq(srq, { srqLimit: 8 }, IBV_SRQ_LIMIT), -EINVAL);
  t.is(b.nic.modifySrq(srq, { maxWr: 16 }, IBV_SRQ_MAX_WR), -EINVAL, 'mlx5: "We don\'t support resizing SRQs yet"');
  t.is(b.nic.modifySrq(srq, {}, 4), -EINVAL, 'unknown mask bit');
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    for (let i = 0; i < 4; i++) t0(b.nic.postSrqRecv(srq, { wrId: i, sgList: [{ addr: dst.iova, length: 256, lkey: dst.mr.lkey }] }));
    t.is(b.nic.modifySrq(srq, { srqLimit: 3 }, IBV_SRQ_LIMIT), 0);
    const send = (id: number) => a.nic.postSend(qa, { wrId: id, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 16, lkey: src.mr.lkey }] });
    t0(send(1));
    yield* b.cq.waitFor(1);
    t.is(events.length, 0, '3 WQEs left: not below the limit');
    t0(send(2));
    yield* b.cq.waitFor(2);
    t.deepEqual(events.map((e) => [e.type, e.srqNum]), [['IBV_EVENT_SRQ_LIMIT_REACHED', srq.srqNum]]);
    t.is(srq.limit, 0, 'disarmed');
    t0(send(3));
    yield* b.cq.waitFor(3);
    t.is(events.length, 1, 'fires once per arming');
  });
});

test('ibv_modify_srq(3): rxe (IBV_DEVICE_SRQ_RESIZE) grows an SRQ; shrinking below the posted WQEs is -EINVAL', (t) => {
  const { b } = twoNodes({ caps: CAPABILITY_PRESETS.rxe });
  const srq = srqOf(b, 2);
  t0(b.nic.postSrqRecv(srq, { wrId: 1, sgList: [] }));
  t0(b.nic.postSrqRecv(srq, { wrId: 2, sgList: [] }));
  t.is(b.nic.postSrqRecv(srq, { wrId: 3, sgList: [] }), -ENOMEM);
  t.is(b.nic.modifySrq(srq, { maxWr: 4 }, IBV_SRQ_MAX_WR), 0);
  t.is(b.nic.postSrqRecv(srq, { wrId: 3, sgList: [] }), 0);
  t.is(b.nic.modifySrq(srq, { maxWr: 2 }, IBV_SRQ_MAX_WR), -EINVAL);
});

for (const [name, bits, faults] of [
  ['SRQ_RECV set', MLX5_ODP_CAPS.rcOdpCaps, true],
  ['RECV but no SRQ_RECV', IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_RECV, false],
] as const) {
  test(`rdma A3, mlx5 internal_fill_odp_caps: a SEND into a cold ODP buffer posted to an SRQ faults only with the SRQ_RECV bit (${name})`, (t) => {
    const { sim, a, b } = twoNodes({ caps: { odp: { ...MLX5_ODP_CAPS, rcOdpCaps: bits } } });
    const srq = srqOf(b);
    const [qa] = rcPairWithSrq(a, b, srq);
    const src = buffer(a, 0x1000, 1);
    const dst = buffer(b, 0x8000, 1, { onDemand: true });
    fill(a, src, (i) => i ^ 0x5a);
    const log: DeviceFault[] = [];
    pager(b, [dst], { log });
    runScript(t, sim, function* () {
      yield* mapBuffer(a, src);
      t0(b.nic.postSrqRecv(srq, { wrId: 9, sgList: [{ addr: dst.iova, length: 4096, lkey: dst.mr.lkey }] }));
      t0(a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 4096, lkey: src.mr.lkey }] }));
      yield* a.cq.waitFor(1);
      yield* sim.sleep(100_000);
    });
    if (faults) {
      t.is(log.length, 1);
      t.is(log[0]!.side, 'responder');
      t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_SUCCESS'], 'RNR NAK, fault resolved, retried into the same SRQ WQE');
      t.deepEqual(b.cq.drain().map((w) => w.wrId), [9]);
      t.deepEqual(contents(b, dst, 0, 4096), contents(a, src, 0, 4096));
    } else {
      t.is(log.length, 0);
      t.deepEqual(statusNames(b.cq.drain()), ['IBV_WC_LOC_PROT_ERR'], 'the device may not fault on an SRQ receive');
      t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_REM_OP_ERR']);
    }
  });
}

/** An XRC initiator on `a`, and on `b` a domain, a target QP and an XRC SRQ in it. */
function xrcPair(a: Node, b: Node, maxWr = 8): { ini: QueuePair; tgt: QueuePair; xrcd: XrcDomain; xsrq: SharedReceiveQueue } {
  const xrcd = b.nic.allocXrcd() as XrcDomain;
  const xsrq = b.nic.createSrq({ pd: b.pd, maxWr, maxSge: 1, srqType: IBV_SRQT_XRC, xrcd, cq: b.cq }) as SharedReceiveQueue;
  const ini = a.nic.createQp({ qpType: IBV_QPT_XRC_SEND, pd: a.pd, sendCq: a.cq }) as QueuePair;
  const tgt = b.nic.createQp({ qpType: IBV_QPT_XRC_RECV, pd: 0, xrcd }) as QueuePair;
  up(a, ini, b, tgt.qpNum);
  up(b, tgt, a, ini.qpNum);
  return { ini, tgt, xrcd, xsrq };
}

test('ibv_open_xrcd(3), ibv_create_qp_ex(3): an XRC SEND lands in the XRC SRQ it names and completes on that SRQ\'s CQ; an RDMA WRITE is checked against the SRQ\'s PD', (t) => {
  const { sim, a, b } = twoNodes();
  const { ini, tgt, xsrq } = xrcPair(a, b);
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x8000, 2);
  fill(a, src, (i) => i * 3);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    t.is(b.nic.postRecv(tgt, { wrId: 1, sgList: [] }), -EINVAL, 'an XRC target has no receive queue');
    t.is(b.nic.postSend(tgt, { wrId: 1, opcode: IBV_WR_SEND, sgList: [] }), -EINVAL, 'nor a send queue');
    t0(b.nic.postSrqRecv(xsrq, { wrId: 77, sgList: [{ addr: dst.iova, length: 4096, lkey: dst.mr.lkey }] }));
    t0(a.nic.postSend(ini, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 100, lkey: src.mr.lkey }], xrc: { remoteSrqn: xsrq.srqNum } }));
    t0(a.nic.postSend(ini, { wrId: 2, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.iova, length: 200, lkey: src.mr.lkey }],
      rdma: { remoteAddr: dst.iova + 4096, rkey: dst.mr.rkey }, xrc: { remoteSrqn: xsrq.srqNum } }));
    yield* a.cq.waitFor(2);
  });
  t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_SUCCESS', 'IBV_WC_SUCCESS']);
  const [wc] = b.cq.drain();
  t.deepEqual([wc!.wrId, wc!.qpNum, wc!.byteLen], [77, tgt.qpNum, 100]);
  t.deepEqual(contents(b, dst, 0, 100), contents(a, src, 0, 100));
  t.deepEqual(contents(b, dst, 4096, 200), contents(a, src, 0, 200));
});

test('XRC domain mismatch: a SEND naming an XRC SRQ of another domain (or no SRQ) is refused; the initiator completes with IBV_WC_REM_INV_REQ_ERR', (t) => {
  const { sim, a, b } = twoNodes();
  const { ini } = xrcPair(a, b);
  const other = b.nic.allocXrcd() as XrcDomain;
  const foreign = b.nic.createSrq({ pd: b.pd, maxWr: 4, maxSge: 1, srqType: IBV_SRQT_XRC, xrcd: other, cq: b.cq }) as SharedReceiveQueue;
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x8000, 1);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    t0(b.nic.postSrqRecv(foreign, { wrId: 5, sgList: [{ addr: dst.iova, length: 4096, lkey: dst.mr.lkey }] }));
    t0(a.nic.postSend(ini, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 10, lkey: src.mr.lkey }], xrc: { remoteSrqn: foreign.srqNum } }));
    yield* a.cq.waitFor(1);
  });
  t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_REM_INV_REQ_ERR']);
  t.is(b.cq.length, 0, 'nothing delivered into the other domain\'s SRQ');
  t.is(foreign.depth, 1);
});

test('rdma A3: XRC over ODP (mlx5 xrc_odp_caps): a SEND into a cold ODP buffer of an XRC SRQ faults as an XRC responder fault and completes', (t) => {
  const { sim, a, b } = twoNodes({ caps: CAPABILITY_PRESETS.mlx5 });
  const { ini, xsrq } = xrcPair(a, b);
  const src = buffer(a, 0x1000, 1, { onDemand: true });
  const dst = buffer(b, 0x8000, 1, { onDemand: true });
  fill(a, src, (i) => i + 11);
  const logA: DeviceFault[] = [];
  const logB: DeviceFault[] = [];
  pager(a, [src], { log: logA });
  pager(b, [dst], { log: logB });
  runScript(t, sim, function* () {
    t0(b.nic.postSrqRecv(xsrq, { wrId: 3, sgList: [{ addr: dst.iova, length: 4096, lkey: dst.mr.lkey }] }));
    t0(a.nic.postSend(ini, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 4096, lkey: src.mr.lkey }], xrc: { remoteSrqn: xsrq.srqNum } }));
    yield* a.cq.waitFor(1);
    yield* b.cq.waitFor(1);
  });
  t.deepEqual(logA.map((f) => [f.transport, f.side]), [['XRC', 'requester']]);
  t.deepEqual(logB.map((f) => [f.transport, f.side]), [['XRC', 'responder']]);
  t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_SUCCESS']);
  t.deepEqual(contents(b, dst, 0, 4096), contents(a, src, 0, 4096));
});

test('no XRC on rxe: XRC QPs, XRC SRQs and domains are -EOPNOTSUPP; an unknown QP type too', (t) => {
  const { b } = twoNodes({ caps: CAPABILITY_PRESETS.rxe });
  t.is(b.nic.allocXrcd(), -EOPNOTSUPP);
  t.is(b.nic.createQp({ qpType: IBV_QPT_XRC_SEND, pd: b.pd, sendCq: b.cq }), -EOPNOTSUPP);
  t.is(b.nic.createQp({ qpType: IBV_QPT_XRC_RECV, pd: b.pd, xrcd: new XrcDomain(1) }), -EOPNOTSUPP);
  t.is(b.nic.createSrq({ pd: b.pd, maxWr: 4, maxSge: 1, srqType: IBV_SRQT_XRC, xrcd: new XrcDomain(1), cq: b.cq }), -EOPNOTSUPP);
  t.is(b.nic.createQp({ qpType: 3 as typeof IBV_QPT_UD, pd: b.pd, sendCq: b.cq, recvCq: b.cq }), -EOPNOTSUPP, 'UC is not modelled');
  t.is(b.nic.createQp({ qpType: IBV_QPT_RC, pd: b.pd, sendCq: b.cq }), -EINVAL, 'RC needs a receive CQ');
});
