/**
 * The DMA engine moves the right bytes for every opcode, between two nodes, on loopback
 * and over UD, and completes with IBV_WC_SUCCESS (the happy path every rdma rule assumes).
 */
import test from 'ava';
import { Simulation } from '../../kernel-model/sim/index.ts';
import {
  CompletionQueue, DEVICE_PAGE_SIZE, IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_UD, IBV_SEND_SIGNALED,
  IBV_WC_COMP_SWAP, IBV_WC_FETCH_ADD, IBV_WC_RDMA_READ, IBV_WC_RDMA_WRITE, IBV_WC_RECV, IBV_WC_SEND,
  IBV_WC_SUCCESS, IBV_WR_ATOMIC_CMP_AND_SWP, IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_WR_RDMA_READ,
  IBV_WR_RDMA_WRITE, IBV_WR_SEND, UD_GRH_BYTES, type DeviceAccess, type QueuePair,
} from '../../device/index.ts';
import {
  buffer, connect, contents, createQp, fill, makeNode, mapBuffer, rcPair, runScript, statusNames, twoNodes,
} from './helpers.ts';

const S = IBV_SEND_SIGNALED;

test('rdma F: RDMA WRITE of several pages moves the bytes to the peer and completes with IBV_WC_SUCCESS', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x10000, 3);
  const dst = buffer(b, 0x7f0000, 4);
  fill(a, src, (i) => i * 7 + 1);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    // Unaligned on both sides: 10000 bytes starting 100 bytes into the source.
    t.is(a.nic.postSend(qa, { wrId: 42, opcode: IBV_WR_RDMA_WRITE, sendFlags: S,
      sgList: [{ addr: src.iova + 100, length: 10_000, lkey: src.mr.lkey }],
      rdma: { remoteAddr: dst.iova + 3000, rkey: dst.mr.rkey } }), 0);
    yield* a.cq.wait();
  });
  const [wc] = a.cq.poll(1);
  t.deepEqual(statusNames([wc!]), ['IBV_WC_SUCCESS']);
  t.is(wc!.wrId, 42);
  t.is(wc!.opcode, IBV_WC_RDMA_WRITE);
  t.is(wc!.qpNum, qa.qpNum);
  t.deepEqual(contents(b, dst, 3000, 10_000), contents(a, src, 100, 10_000));
  t.deepEqual(contents(b, dst, 0, 3000), new Uint8Array(3000), 'bytes before the target untouched');
});

test('rdma F: RDMA READ pulls the peer\'s bytes into a multi-SGE local list', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const local = buffer(a, 0x20000, 2);
  const remote = buffer(b, 0x40000, 2);
  fill(b, remote, (i) => 255 - (i % 251));
  runScript(t, sim, function* () {
    yield* mapBuffer(a, local);
    yield* mapBuffer(b, remote);
    t.is(a.nic.postSend(qa, { wrId: 7, opcode: IBV_WR_RDMA_READ, sendFlags: S,
      sgList: [{ addr: local.iova, length: 1000, lkey: local.mr.lkey }, { addr: local.iova + 5000, length: 3000, lkey: local.mr.lkey }],
      rdma: { remoteAddr: remote.iova + 4000, rkey: remote.mr.rkey } }), 0);
    yield* a.cq.wait();
  });
  const [wc] = a.cq.poll(1);
  t.is(wc!.status, IBV_WC_SUCCESS);
  t.is(wc!.opcode, IBV_WC_RDMA_READ);
  t.is(wc!.byteLen, 4000);
  const want = contents(b, remote, 4000, 4000);
  t.deepEqual(contents(a, local, 0, 1000), want.subarray(0, 1000));
  t.deepEqual(contents(a, local, 5000, 3000), want.subarray(1000));
});

test('rdma F: SEND lands in the peer\'s posted receive, both sides complete with IBV_WC_SUCCESS', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b);
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 2);
  fill(a, src, (i) => i ^ 0x5a);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    t.is(b.nic.postRecv(qb, { wrId: 900, sgList: [{ addr: dst.iova + 10, length: 8000, lkey: dst.mr.lkey }] }), 0);
    t.is(a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 3000, lkey: src.mr.lkey }] }), 0);
    yield* a.cq.wait();
    yield* b.cq.wait();
  });
  const [sendWc] = a.cq.poll(1);
  const [recvWc] = b.cq.poll(1);
  t.is(sendWc!.status, IBV_WC_SUCCESS);
  t.is(sendWc!.opcode, IBV_WC_SEND);
  t.is(recvWc!.status, IBV_WC_SUCCESS);
  t.is(recvWc!.opcode, IBV_WC_RECV);
  t.is(recvWc!.wrId, 900);
  t.is(recvWc!.byteLen, 3000);
  t.deepEqual(contents(b, dst, 10, 3000), contents(a, src, 0, 3000));
});

test('rdma F: inline SEND gathers nothing from memory', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b);
  const dst = buffer(b, 0x9000, 1);
  const accesses: DeviceAccess[] = [];
  a.nic.access$.subscribe((x) => accesses.push(x));
  runScript(t, sim, function* () {
    yield* mapBuffer(b, dst);
    b.nic.postRecv(qb, { wrId: 1, sgList: [{ addr: dst.iova, length: 64, lkey: dst.mr.lkey }] });
    a.nic.postSend(qa, { wrId: 2, opcode: IBV_WR_SEND, sendFlags: S, sgList: [], inlineData: new Uint8Array([1, 2, 3, 4]) });
    yield* b.cq.wait();
  });
  t.deepEqual([...contents(b, dst, 0, 4)], [1, 2, 3, 4]);
  t.is(accesses.length, 0);
});

test('rdma I3: compare-and-swap and fetch-and-add return the old value and update the remote word', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const local = buffer(a, 0x1000, 1);
  const remote = buffer(b, 0x2000, 1);
  const word = (n: bigint) => {
    const u = new Uint8Array(8);
    new DataView(u.buffer).setBigUint64(0, n, true);
    return u;
  };
  const readWord = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  b.mem.write(remote.frames[0]!, 64, word(100n));
  runScript(t, sim, function* () {
    yield* mapBuffer(a, local);
    yield* mapBuffer(b, remote);
    // CAS that matches: 100 -> 555; CAS that does not match leaves 555; FAA adds 2^64-1 (wraps to 554).
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_ATOMIC_CMP_AND_SWP, sendFlags: S, sgList: [{ addr: local.iova, length: 8, lkey: local.mr.lkey }],
      atomic: { remoteAddr: remote.iova + 64, compareAdd: 100n, swap: 555n, rkey: remote.mr.rkey } });
    a.nic.postSend(qa, { wrId: 2, opcode: IBV_WR_ATOMIC_CMP_AND_SWP, sendFlags: S, sgList: [{ addr: local.iova + 8, length: 8, lkey: local.mr.lkey }],
      atomic: { remoteAddr: remote.iova + 64, compareAdd: 100n, swap: 777n, rkey: remote.mr.rkey } });
    a.nic.postSend(qa, { wrId: 3, opcode: IBV_WR_ATOMIC_FETCH_AND_ADD, sendFlags: S, sgList: [{ addr: local.iova + 16, length: 8, lkey: local.mr.lkey }],
      atomic: { remoteAddr: remote.iova + 64, compareAdd: 2n ** 64n - 1n, swap: 0n, rkey: remote.mr.rkey } });
    yield* a.cq.waitFor(3);
  });
  const wcs = a.cq.poll(3);
  t.deepEqual(statusNames(wcs), ['IBV_WC_SUCCESS', 'IBV_WC_SUCCESS', 'IBV_WC_SUCCESS']);
  t.deepEqual(wcs.map((w) => w.opcode), [IBV_WC_COMP_SWAP, IBV_WC_COMP_SWAP, IBV_WC_FETCH_ADD]);
  t.is(readWord(contents(a, local, 0, 8)), 100n);
  t.is(readWord(contents(a, local, 8, 8)), 555n);
  t.is(readWord(contents(a, local, 16, 8)), 555n);
  t.is(readWord(contents(b, remote, 64, 8)), 554n);
});

test('rdma F: completions of one RC QP arrive in posting order across opcodes', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b);
  const local = buffer(a, 0x100000, 8);
  const remote = buffer(b, 0x200000, 8);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, local);
    yield* mapBuffer(b, remote);
    for (let i = 0; i < 4; i++) b.nic.postRecv(qb, { wrId: 100 + i, sgList: [{ addr: remote.iova + i * 4096, length: 4096, lkey: remote.mr.lkey }] });
    const ops = [IBV_WR_RDMA_WRITE, IBV_WR_RDMA_READ, IBV_WR_SEND, IBV_WR_RDMA_WRITE, IBV_WR_RDMA_READ, IBV_WR_SEND] as const;
    ops.forEach((opcode, i) => {
      t.is(a.nic.postSend(qa, { wrId: i, opcode, sendFlags: S, sgList: [{ addr: local.iova + i * 4096, length: 4096, lkey: local.mr.lkey }],
        rdma: { remoteAddr: remote.iova + 4 * 4096, rkey: remote.mr.rkey } }), 0);
    });
    yield* a.cq.waitFor(ops.length);
  });
  const wcs = a.cq.poll(6);
  t.deepEqual(wcs.map((w) => w.wrId), [0, 1, 2, 3, 4, 5]);
  t.true(wcs.every((w) => w.status === IBV_WC_SUCCESS));
});

test('rdma F: loopback on one node (two QPs on the same NIC) moves bytes without the wire', (t) => {
  const sim = new Simulation({ seed: 3 });
  const n = makeNode(sim, undefined, 'solo');
  const q1 = createQp(n);
  const q2 = createQp(n);
  connect(n, q1, n, q2);
  const src = buffer(n, 0x10000, 2);
  const dst = buffer(n, 0x80000, 2);
  fill(n, src, (i) => i % 13);
  runScript(t, sim, function* () {
    yield* mapBuffer(n, src);
    yield* mapBuffer(n, dst);
    n.nic.postSend(q1, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.iova, length: 8192, lkey: src.mr.lkey }],
      rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } });
    yield* n.cq.wait();
  });
  t.is(n.cq.poll(1)[0]!.status, IBV_WC_SUCCESS);
  t.deepEqual(contents(n, dst, 0, 8192), contents(n, src, 0, 8192));
  t.is(n.nic.fabric.bytes > 8192, true);
  t.is(n.nic.fabric.lost, 0);
});

test('rdma F: UD SEND delivers to the QP named by the address handle, after the 40-byte GRH space', (t) => {
  const { sim, a, b } = twoNodes();
  const mk = (n: typeof a, cq: CompletionQueue) => {
    const qp = n.nic.createQp({ qpType: IBV_QPT_UD, pd: n.pd, sendCq: cq, recvCq: cq }) as QueuePair;
    n.nic.modifyQp(qp, { qpState: IBV_QPS_INIT, qkey: 0x1111 });
    n.nic.modifyQp(qp, { qpState: IBV_QPS_RTR });
    n.nic.modifyQp(qp, { qpState: IBV_QPS_RTS });
    return qp;
  };
  const ua = mk(a, a.cq);
  const ub = mk(b, b.cq);
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x5000, 1);
  fill(a, src, (i) => i + 3);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    b.nic.postRecv(ub, { wrId: 77, sgList: [{ addr: dst.iova, length: 1040, lkey: dst.mr.lkey }] });
    // Wrong Q_Key: dropped silently. Then the right one.
    a.nic.postSend(ua, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 1000, lkey: src.mr.lkey }],
      ud: { ah: { dlid: b.nic.lid }, remoteQpn: ub.qpNum, remoteQkey: 0x2222 } });
    a.nic.postSend(ua, { wrId: 2, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 1000, lkey: src.mr.lkey }],
      ud: { ah: { dlid: b.nic.lid }, remoteQpn: ub.qpNum, remoteQkey: 0x1111 } });
    yield* a.cq.waitFor(2);
    yield* b.cq.wait();
  });
  t.deepEqual(statusNames(a.cq.poll(2)), ['IBV_WC_SUCCESS', 'IBV_WC_SUCCESS'], 'UD sends complete locally');
  const [wc] = b.cq.poll(1);
  t.is(wc!.status, IBV_WC_SUCCESS);
  t.is(wc!.wrId, 77);
  t.is(wc!.byteLen, 1000 + UD_GRH_BYTES);
  t.is(wc!.srcQp, ua.qpNum);
  t.is(wc!.slid, a.nic.lid);
  t.deepEqual(contents(b, dst, UD_GRH_BYTES, 1000), contents(a, src, 0, 1000));
  t.is(ub.stats.dropped, 1, 'the wrong-Q_Key message was dropped');
});

test('access events name the MR, iova, frame, direction and translation of every page access', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x10000, 2);
  const dst = buffer(b, 0x30000, 2);
  const seen: DeviceAccess[] = [];
  a.nic.access$.subscribe((x) => seen.push(x));
  b.nic.access$.subscribe((x) => seen.push(x));
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.iova + 2048, length: 4096, lkey: src.mr.lkey }],
      rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } });
    yield* a.cq.wait();
  });
  t.deepEqual(seen.map((x) => [x.nic, x.side, x.write, x.mrKey, x.iova, x.length, x.frame, x.offset]), [
    ['a', 'requester', false, src.mr.lkey, src.iova + 2048, 2048, src.frames[0], 2048],
    ['a', 'requester', false, src.mr.lkey, src.iova + 4096, 2048, src.frames[1], 0],
    ['b', 'responder', true, dst.mr.rkey, dst.iova, 4096, dst.frames[0], 0],
  ]);
  for (const x of seen) {
    t.false(x.stale);
    t.false(x.fenced);
    t.true(x.generation > 0);
    t.true(x.time >= x.installedAt);
    t.is(x.opcode, IBV_WR_RDMA_WRITE);
  }
  t.false(seen[0]!.fromCache);
});

test('virtual time: a 4 KiB RDMA WRITE completes in about a microsecond-scale round trip', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x10000, 1);
  const dst = buffer(b, 0x30000, 1);
  let posted = 0;
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    posted = sim.now();
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.iova, length: DEVICE_PAGE_SIZE, lkey: src.mr.lkey }],
      rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } });
    yield* a.cq.wait();
  });
  const latency = a.cq.poll(1)[0]!.time - posted;
  // doorbell + WQE + DMA read + wire (64+4096 B at 12.5 B/ns + 1 µs) + responder write + ACK + CQE
  t.true(latency > 2_000 && latency < 10_000, `latency ${latency} ns`);
});

