/**
 * NIC page faults (rdma B1, B5-B8, A3): what faults, who stalls, how the peer sees a
 * responder fault, and how resumes (in any order, with or without error) end it.
 */
import test from 'ava';
import {
  IBV_ODP_SUPPORT, IBV_ODP_SUPPORT_READ, IBV_ODP_SUPPORT_SEND, IBV_QPS_ERR, IBV_SEND_SIGNALED,
  IBV_WC_SUCCESS, IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, IBV_WR_SEND, PTE_READ_WRITE,
  localAckTimeoutNs, type DeviceFault, type SendWr,
} from '../../device/index.ts';
import {
  buffer, createQp, connect, mapBuffer, pager, rcPair, runScript, statusNames, twoNodes, type Buffer, type Node,
} from './helpers.ts';

const S = IBV_SEND_SIGNALED;

function writeWr(wrId: number, src: Buffer, dst: Buffer, length = 4096): SendWr {
  return { wrId, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.iova, length, lkey: src.mr.lkey }],
    rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } };
}

function readWr(wrId: number, local: Buffer, remote: Buffer, length = 4096): SendWr {
  return { wrId, opcode: IBV_WR_RDMA_READ, sendFlags: S, sgList: [{ addr: local.iova, length, lkey: local.mr.lkey }],
    rdma: { remoteAddr: remote.iova, rkey: remote.mr.rkey } };
}

function* completions(n: Node, count: number) {
  yield* n.cq.waitFor(count);
  return n.cq.poll(count);
}

test('rdma B7: a requester-side fault stalls only its QP; another QP keeps moving', (t) => {
  const { sim, a, b } = twoNodes();
  const q1 = createQp(a);
  const q2 = createQp(a);
  const r1 = createQp(b);
  const r2 = createQp(b);
  connect(a, q1, b, r1);
  connect(a, q2, b, r2);
  const cold = buffer(a, 0x100000, 1, { onDemand: true });
  const warm = buffer(a, 0x200000, 1);
  const dst = buffer(b, 0x300000, 2);
  const faults: DeviceFault[] = [];
  pager(a, [cold], { delayNs: 100_000, log: faults });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, warm);
    yield* mapBuffer(b, dst);
    a.nic.postSend(q1, writeWr(1, cold, dst));
    a.nic.postSend(q2, writeWr(2, warm, dst));
    a.nic.postSend(q2, writeWr(3, warm, dst));
    const wcs = yield* completions(a, 3);
    t.deepEqual(wcs.map((w) => w.wrId), [2, 3, 1], 'q2 finished while q1 was stalled');
    t.true(wcs.every((w) => w.status === IBV_WC_SUCCESS));
    t.true(wcs[1]!.time < 20_000 && wcs[2]!.time > 100_000);
  });
  t.is(faults.length, 1);
  const f = faults[0]!;
  t.like(f, { nic: 'a', qpNum: q1.qpNum, side: 'requester', transport: 'RC', opcode: IBV_WR_RDMA_WRITE,
    mrKey: cold.mr.lkey, iova: cold.iova, length: 4096, write: false, reason: 'absent' });
  t.is(q1.stats.faults, 1);
  t.true(q1.stats.faultStallNs >= 100_000);
  t.is(q2.stats.faults, 0);
  t.is(cold.mr.counters.faults, 1);
});

test('rdma B8: a responder fault on RDMA WRITE is an RNR NAK; with rnr_retry 0 the requester gets IBV_WC_RNR_RETRY_EXC_ERR', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b, { rnrRetry: 0 });
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 1, { onDemand: true });
  const faults: DeviceFault[] = [];
  pager(b, [dst], { delayNs: 1_000_000, log: faults });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    a.nic.postSend(qa, writeWr(1, src, dst));
    a.nic.postSend(qa, writeWr(2, src, dst));
    const wcs = yield* completions(a, 2);
    t.deepEqual(statusNames(wcs), ['IBV_WC_RNR_RETRY_EXC_ERR', 'IBV_WC_WR_FLUSH_ERR']);
    t.is(wcs[0]!.opcode, undefined, 'opcode is undefined in an error completion (rdma F3)');
    // The peer's fault may reach its driver after the requester has already given up.
    yield* sim.sleep(10_000);
  });
  t.is(qa.state, IBV_QPS_ERR);
  t.is(qa.stats.rnrNaksReceived, 1);
  t.is(qb.stats.rnrNaksSent, 1);
  t.is(faults.length, 1);
  t.like(faults[0]!, { side: 'responder', mrKey: dst.mr.rkey, write: true, qpNum: qb.qpNum });
});

test('rdma B8: rnr_retry 7 retries forever; the WRITE completes once the driver resolves the fault', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b, { rnrRetry: 7, minRnrTimer: 1 }); // 10 µs between retries
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 1, { onDemand: true });
  const faults: DeviceFault[] = [];
  pager(b, [dst], { delayNs: 2_000_000, log: faults });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    a.nic.postSend(qa, writeWr(1, src, dst));
    const [wc] = yield* completions(a, 1);
    t.is(wc!.status, IBV_WC_SUCCESS);
    t.true(wc!.time > 2_000_000);
  });
  t.is(faults.length, 1, 'retries during the outstanding fault raise no new fault');
  t.true(qa.stats.rnrNaksReceived > 100, `${qa.stats.rnrNaksReceived} RNR NAKs`);
  t.is(qb.stats.rnrNaksSent, qa.stats.rnrNaksReceived);
});

test('rdma B8: rnr_retry 3 gives up after three retries spaced by the responder\'s min_rnr_timer', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b, { rnrRetry: 3, minRnrTimer: 14 }); // 1.28 ms
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 1, { onDemand: true });
  pager(b, [dst], { resume: false });
  let posted = 0;
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    posted = sim.now();
    a.nic.postSend(qa, writeWr(1, src, dst));
    const [wc] = yield* completions(a, 1);
    t.deepEqual(statusNames([wc!]), ['IBV_WC_RNR_RETRY_EXC_ERR']);
    const elapsed = wc!.time - posted;
    t.true(elapsed > 3 * 1_280_000 && elapsed < 3 * 1_280_000 + 100_000, `${elapsed} ns`);
  });
  t.is(qa.stats.rnrNaksReceived, 4);
});

test('rdma B8: a responder fault on the receive buffer of a SEND is an RNR NAK too', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b, { rnrRetry: 7, minRnrTimer: 1 });
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 1, { onDemand: true });
  const faults: DeviceFault[] = [];
  pager(b, [dst], { delayNs: 200_000, log: faults });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    b.nic.postRecv(qb, { wrId: 5, sgList: [{ addr: dst.iova, length: 4096, lkey: dst.mr.lkey }] });
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src.iova, length: 512, lkey: src.mr.lkey }] });
    const [wc] = yield* completions(a, 1);
    t.is(wc!.status, IBV_WC_SUCCESS);
    const [rwc] = yield* completions(b, 1);
    t.like(rwc!, { status: IBV_WC_SUCCESS, wrId: 5, byteLen: 512 });
  });
  t.is(faults.length, 1);
  t.like(faults[0]!, { side: 'responder', opcode: IBV_WR_SEND, mrKey: dst.mr.lkey, write: true });
  t.true(qa.stats.rnrNaksReceived > 5);
});

test('rdma B8: a responder fault on RDMA READ drops the request: retry_cnt timeouts, then IBV_WC_RETRY_EXC_ERR', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b, { timeout: 10, retryCnt: 2 });
  const local = buffer(a, 0x1000, 1);
  const remote = buffer(b, 0x9000, 1, { onDemand: true });
  const faults: DeviceFault[] = [];
  pager(b, [remote], { resume: false, log: faults });
  let posted = 0;
  runScript(t, sim, function* () {
    yield* mapBuffer(a, local);
    posted = sim.now();
    a.nic.postSend(qa, readWr(1, local, remote));
    a.nic.postSend(qa, writeWr(2, local, remote));
    const wcs = yield* completions(a, 2);
    t.deepEqual(statusNames(wcs), ['IBV_WC_RETRY_EXC_ERR', 'IBV_WC_WR_FLUSH_ERR']);
    const elapsed = wcs[0]!.time - posted;
    const timeout = localAckTimeoutNs(10);
    t.true(elapsed >= 3 * timeout && elapsed < 3 * timeout + 100_000, `${elapsed} ns for 3 timeouts of ${timeout}`);
  });
  t.is(qa.stats.timeouts, 3);
  t.is(qa.stats.rnrNaksReceived, 0, 'no RNR for READ');
  t.is(qb.stats.rnrNaksSent, 0);
  t.is(faults.length, 1, 'retransmissions during the outstanding fault raise no new fault');
  t.true(qb.stats.dropped >= 3);
});

test('rdma B8: a READ whose responder fault is resolved before the local ACK timeout completes after one retransmission', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b, { timeout: 10, retryCnt: 1 });
  const local = buffer(a, 0x1000, 1);
  const remote = buffer(b, 0x9000, 1, { onDemand: true });
  b.mem.write(remote.frames[0]!, 0, new Uint8Array([9, 8, 7]));
  pager(b, [remote], { delayNs: 500_000 });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, local);
    a.nic.postSend(qa, readWr(1, local, remote));
    const [wc] = yield* completions(a, 1);
    t.is(wc!.status, IBV_WC_SUCCESS);
    t.true(wc!.time > localAckTimeoutNs(10), 'the requester only learns by timing out');
  });
  t.is(qa.stats.timeouts, 1);
  t.is(qa.stats.retransmits, 1);
  t.deepEqual([...a.mem.read(local.frames[0]!, 0, 3)], [9, 8, 7]);
});

test('rdma B8: an atomic on a faulting page is dropped too; retry_cnt 0 fails at the first timeout', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b, { timeout: 8, retryCnt: 0 });
  const local = buffer(a, 0x1000, 1);
  const remote = buffer(b, 0x9000, 1, { onDemand: true });
  pager(b, [remote], { resume: false });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, local);
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_ATOMIC_FETCH_AND_ADD, sendFlags: S, sgList: [{ addr: local.iova, length: 8, lkey: local.mr.lkey }],
      atomic: { remoteAddr: remote.iova, compareAdd: 1n, swap: 0n, rkey: remote.mr.rkey } });
    const [wc] = yield* completions(a, 1);
    t.deepEqual(statusNames([wc!]), ['IBV_WC_RETRY_EXC_ERR']);
  });
  t.is(qa.stats.timeouts, 1);
});

test('rdma B8: timeout 0 never times out: a READ waits for its responder fault however long it takes', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b, { timeout: 0, retryCnt: 0 });
  const local = buffer(a, 0x1000, 1);
  const remote = buffer(b, 0x9000, 1, { onDemand: true });
  pager(b, [remote], { resume: false });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, local);
    a.nic.postSend(qa, readWr(1, local, remote));
    yield* sim.sleep(10_000_000_000);
  });
  t.is(a.cq.length, 0, 'no completion, no error: the QP waits (the fault was never resumed and the READ was dropped)');
  t.is(qa.stats.timeouts, 0);
});

test('rdma B7: the fault queue is bounded; a fault beyond its depth waits for a slot', (t) => {
  const { sim, a, b } = twoNodes({ faultQueueDepth: 2 });
  const qps = [0, 1, 2].map(() => createQp(a));
  const dst = buffer(b, 0x900000, 3);
  const srcs = [0, 1, 2].map((i) => buffer(a, 0x100000 * (i + 1), 1, { onDemand: true }));
  qps.forEach((q) => connect(a, q, b, createQp(b)));
  const seen: DeviceFault[] = [];
  a.nic.fault$.subscribe((f) => seen.push(f));
  runScript(t, sim, function* () {
    yield* mapBuffer(b, dst);
    qps.forEach((q, i) => a.nic.postSend(q, writeWr(i, srcs[i]!, dst)));
    yield* sim.sleep(100_000);
    t.is(seen.length, 2, 'two faults reported');
    t.is(a.nic.pendingFaults().length, 2);
    t.is(a.nic.faultQueue.backlogged, 1, 'the third waits for a slot');
    // Resolve the first; the third fault is reported in its place.
    const first = seen[0]!;
    const buf = srcs.find((s) => s.mr.lkey === first.mrKey)!;
    yield* mapBuffer(a, buf);
    t.is(a.nic.resumeFault(first.id), 0);
    t.is(a.nic.resumeFault(first.id), -2, 'a fault resumes once (-ENOENT after)');
    yield* sim.sleep(100_000);
    t.is(seen.length, 3);
    for (const f of seen.slice(1)) {
      yield* mapBuffer(a, srcs.find((s) => s.mr.lkey === f.mrKey)!);
      a.nic.resumeFault(f.id);
    }
    const wcs = yield* completions(a, 3);
    t.true(wcs.every((w) => w.status === IBV_WC_SUCCESS));
  });
  t.is(a.nic.faultQueue.highWater, 2);
});

test('rdma B7: faults on different QPs resolve out of order, each QP resuming on its own', (t) => {
  const { sim, a, b } = twoNodes();
  const q1 = createQp(a);
  const q2 = createQp(a);
  connect(a, q1, b, createQp(b));
  connect(a, q2, b, createQp(b));
  const s1 = buffer(a, 0x100000, 1, { onDemand: true });
  const s2 = buffer(a, 0x200000, 1, { onDemand: true });
  const dst = buffer(b, 0x900000, 1);
  const seen: DeviceFault[] = [];
  a.nic.fault$.subscribe((f) => seen.push(f));
  runScript(t, sim, function* () {
    yield* mapBuffer(b, dst);
    a.nic.postSend(q1, writeWr(1, s1, dst));
    a.nic.postSend(q2, writeWr(2, s2, dst));
    yield* sim.sleep(50_000);
    t.deepEqual(seen.map((f) => f.qpNum), [q1.qpNum, q2.qpNum]);
    yield* mapBuffer(a, s2);
    a.nic.resumeFault(seen[1]!.id);
    const [w2] = yield* completions(a, 1);
    t.is(w2!.wrId, 2);
    yield* sim.sleep(50_000);
    t.is(a.cq.length, 0, 'q1 still stalled');
    yield* mapBuffer(a, s1);
    a.nic.resumeFault(seen[0]!.id);
    const [w1] = yield* completions(a, 1);
    t.is(w1!.wrId, 1);
  });
});

test('rdma B6: a requester fault resumed with error fails the WQE (IBV_WC_LOC_PROT_ERR), errors the QP and flushes the rest', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const cold = buffer(a, 0x100000, 1, { onDemand: true });
  const dst = buffer(b, 0x900000, 1);
  a.nic.fault$.subscribe((f) => a.nic.resumeFault(f.id, { error: true }));
  runScript(t, sim, function* () {
    yield* mapBuffer(b, dst);
    a.nic.postSend(qa, writeWr(1, cold, dst));
    a.nic.postSend(qa, writeWr(2, cold, dst));
    const wcs = yield* completions(a, 2);
    t.deepEqual(statusNames(wcs), ['IBV_WC_LOC_PROT_ERR', 'IBV_WC_WR_FLUSH_ERR']);
    t.deepEqual(wcs.map((w) => w.wrId), [1, 2]);
  });
  t.is(qa.state, IBV_QPS_ERR);
});

test('rdma B6: a resume without error when nothing was mapped (a lost race) just faults again', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const cold = buffer(a, 0x100000, 1, { onDemand: true });
  const dst = buffer(b, 0x900000, 1);
  let n = 0;
  a.nic.fault$.subscribe((f) => {
    n++;
    if (n < 3) {
      a.nic.resumeFault(f.id); // EAGAIN: resume, the hardware retries and faults again
      return;
    }
    sim.spawn('map', function* () {
      yield* mapBuffer(a, cold);
      a.nic.resumeFault(f.id);
    });
  });
  runScript(t, sim, function* () {
    yield* mapBuffer(b, dst);
    a.nic.postSend(qa, writeWr(1, cold, dst));
    const [wc] = yield* completions(a, 1);
    t.is(wc!.status, IBV_WC_SUCCESS);
  });
  t.is(n, 3);
});

test('rdma B6: a responder fault resumed with error answers the peer with IBV_WC_REM_ACCESS_ERR and errors both QPs', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b, { rnrRetry: 7, minRnrTimer: 1 });
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 1, { onDemand: true });
  b.nic.fault$.subscribe((f) => sim.spawn('fail', function* () {
    yield* sim.sleep(50_000);
    b.nic.resumeFault(f.id, { error: true });
  }));
  const events: string[] = [];
  b.nic.asyncEvent$.subscribe((e) => events.push(e.type));
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    a.nic.postSend(qa, writeWr(1, src, dst));
    const [wc] = yield* completions(a, 1);
    t.deepEqual(statusNames([wc!]), ['IBV_WC_REM_ACCESS_ERR']);
  });
  t.is(qa.state, IBV_QPS_ERR);
  t.is(qb.state, IBV_QPS_ERR);
  t.deepEqual(events, ['IBV_EVENT_QP_ACCESS_ERR']);
});

test('rdma B1: a write to a read-only entry faults ("read-only"); the driver upgrades the entry in place', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 1, { onDemand: true });
  const faults: DeviceFault[] = [];
  pager(b, [dst], { log: faults });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst, 0, 1, false); // prefetched read-only (rdma D2)
    // A READ of it needs no fault; a WRITE does.
    a.nic.postSend(qa, readWr(1, src, dst));
    a.nic.postSend(qa, writeWr(2, src, dst));
    const wcs = yield* completions(a, 2);
    t.deepEqual(statusNames(wcs), ['IBV_WC_SUCCESS', 'IBV_WC_SUCCESS']);
  });
  t.is(faults.length, 1);
  t.like(faults[0]!, { reason: 'read-only', write: true });
  t.is(dst.mr.pageTable.perm(0), PTE_READ_WRITE);
  t.is(dst.mr.counters.zappedPages, 0, 'no invalidation was needed');
});

test('rdma A3: an ODP MR cannot fault for an operation whose transport capability bit is missing', (t) => {
  // RC may fault on sends and READs, not on incoming RDMA WRITEs.
  const caps = { odp: { generalCaps: IBV_ODP_SUPPORT, rcOdpCaps: IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_READ, ucOdpCaps: 0, udOdpCaps: 0, xrcOdpCaps: 0 } };
  const { sim, a, b } = twoNodes({ caps });
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 1, { onDemand: true });
  const faults: DeviceFault[] = [];
  pager(b, [dst], { log: faults });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    a.nic.postSend(qa, writeWr(1, src, dst));
    const [wc] = yield* completions(a, 1);
    t.deepEqual(statusNames([wc!]), ['IBV_WC_REM_ACCESS_ERR']);
  });
  t.is(faults.length, 0);
});

test('rdma B5: a WQE mixing a pinned key and an ODP key faults only on the ODP one', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b);
  const pinned = buffer(a, 0x10000, 1);
  const odp = buffer(a, 0x20000, 1, { onDemand: true });
  const dst = buffer(b, 0x90000, 2);
  const faults: DeviceFault[] = [];
  pager(a, [odp], { log: faults });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, pinned);
    yield* mapBuffer(b, dst);
    b.nic.postRecv(qb, { wrId: 1, sgList: [{ addr: dst.iova, length: 8192, lkey: dst.mr.lkey }] });
    a.nic.postSend(qa, { wrId: 2, opcode: IBV_WR_SEND, sendFlags: S,
      sgList: [{ addr: pinned.iova, length: 4096, lkey: pinned.mr.lkey }, { addr: odp.iova + 100, length: 1000, lkey: odp.mr.lkey }] });
    const [wc] = yield* completions(a, 1);
    t.is(wc!.status, IBV_WC_SUCCESS);
  });
  t.is(faults.length, 1);
  t.like(faults[0]!, { mrKey: odp.mr.lkey, iova: odp.iova + 100, length: 1000 });
});

