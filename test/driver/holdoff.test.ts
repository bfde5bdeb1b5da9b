/**
 * The holdoff strategy (a design under study: rdma H3, seed 000) on two nodes with
 * non-faultable NICs: invalidations wait for DMA actively touching their range (rdma H3.1),
 * bounded by a timeout after which the MR is revoked (rdma G7, F3); local work on an
 * invalidated range is remapped by the provider before the doorbell; rkey access to a
 * zapped range fails (rdma F2) unless an eager remap got there first; non-blockable ranges
 * are refused (rdma C2, kernel rules 15-17).
 */
import test from 'ava';
import { DEFAULT_CPU_COSTS, MADV_DONTNEED, oomKill, type OomReapResult } from '../../kernel-model/index.ts';
import {
  IBV_QPS_ERR, IBV_SEND_SIGNALED, IBV_WC_LOC_PROT_ERR, IBV_WC_REM_ACCESS_ERR, IBV_WC_REM_OP_ERR, IBV_WC_SUCCESS,
  IBV_WC_WR_FLUSH_ERR, IBV_WR_RDMA_WRITE, IBV_WR_SEND, wcStatusName, type WorkCompletion,
} from '../../device/index.ts';
import { DEFAULT_REMAP_SYSCALL_NS, zapRuns, type HoldoffUmem, type IbvMr } from '../../driver/index.ts';
import {
  P, complaints, completions, connectRc, holdoffUmem, load, mapFilled, must, pageAccessNs, pattern, regMr, runApp, twoHoldoffApps,
  updateNs, writeTimeline, zapNs, kernelZapCpuNs,
} from './_holdoff-rig.ts';

const statuses = (wcs: readonly WorkCompletion[]) => wcs.map((w) => wcStatusName(w.status));
const LONG = 10_000_000; // a holdoff timeout no test reaches: 10 ms
const MiB4 = 1024; // pages in 4 MiB

test('rdma H3.1 (seed 000): munmap of the source of a long RDMA WRITE waits until the write has drained; latency = remaining DMA time + zap + sync', (t) => {
  const { sim, fabric, a, b } = twoHoldoffApps({ holdoffTimeoutNs: LONG });
  const costs = a.node.nic.costs;
  const [qa] = connectRc(a, b);
  const m: { latency?: number; expected?: number; wcs?: WorkCompletion[]; match?: boolean; heldOff?: number; holdoffNs?: number; remaining?: number } = {};
  runApp(t, sim, a, function* () {
    const src = yield* mapFilled(a, MiB4, (i) => i * 7 + 3);
    const mrA = yield* regMr(a, src, MiB4 * P);
    let dst = 0;
    let rkey = 0;
    yield* sim.join(b.p.spawnThread('setup', function* () {
      dst = yield* mapFilled(b, MiB4, () => 0);
      rkey = (yield* regMr(b, dst, MiB4 * P)).rkey;
    }));
    const t0 = sim.now();
    must(yield* a.ctx.postSend(qa, {
      wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
      sgList: [{ addr: src, length: MiB4 * P, lkey: mrA.lkey }], rdma: { remoteAddr: dst, rkey },
    }), 'post WRITE');
    const tl = writeTimeline(costs, fabric.options, MiB4, t0);
    // Half-way through the gather: the NIC is reading the buffer the process unmaps.
    const tm = tl.gatherStart + 512 * pageAccessNs(costs) + 111;
    yield* sim.sleep(tm - sim.now());
    must(yield* a.p.munmap(src, MiB4 * P), 'munmap');
    m.latency = sim.now() - tm;
    // The send WQE is active on its buffer until its ACK completes it (a retransmission reads it again).
    m.remaining = tl.ackArrival - tm;
    // Plus the kernel's own CPU time around the zap (cpu-costs.ts); its notifier dispatch
    // overlaps the wait for the DMA, which ends when it ends.
    m.expected = m.remaining + zapNs(costs, MiB4) + costs.syncNs + kernelZapCpuNs(MiB4) - DEFAULT_CPU_COSTS.notifierDispatchNs;
    m.wcs = yield* completions(a, 1);
    const got = yield* load(b, dst, MiB4 * P);
    const want = pattern(MiB4 * P, (i) => i * 7 + 3);
    m.match = got.every((v, i) => v === want[i]);
    m.heldOff = holdoffUmem(mrA).stats.heldOff;
    m.holdoffNs = holdoffUmem(mrA).stats.holdoffNs;
  });
  t.is(m.latency, m.expected, `munmap took ${m.latency} ns; remaining DMA ${m.remaining} + zap ${zapNs(costs, MiB4)} + sync ${costs.syncNs}`);
  t.true((m.remaining ?? 0) > 600_000, 'a real holdoff: the rest of the gather, the wire and the remote writes');
  t.is(m.holdoffNs, (m.remaining ?? 0) - DEFAULT_CPU_COSTS.notifierDispatchNs, 'the holdoff began after the notifier dispatch');
  t.is(m.heldOff, 1);
  t.deepEqual(statuses(m.wcs ?? []), ['IBV_WC_SUCCESS'], 'the WRITE was not disturbed');
  t.true(m.match, 'every byte of the unmapped buffer reached the peer');
});

test('rdma H3.1: munmap of the target of an incoming RDMA WRITE waits for the responder to finish writing it', (t) => {
  const { sim, fabric, a, b } = twoHoldoffApps({ holdoffTimeoutNs: LONG });
  const costs = b.node.nic.costs;
  const [qa] = connectRc(a, b);
  const m: { latency?: number; expected?: number; wcs?: WorkCompletion[] } = {};
  runApp(t, sim, a, function* () {
    const src = yield* mapFilled(a, MiB4, (i) => i);
    const mrA = yield* regMr(a, src, MiB4 * P);
    let dst = 0;
    let rkey = 0;
    yield* sim.join(b.p.spawnThread('setup', function* () {
      dst = yield* mapFilled(b, MiB4, () => 0);
      rkey = (yield* regMr(b, dst, MiB4 * P)).rkey;
    }));
    const t0 = sim.now();
    must(yield* a.ctx.postSend(qa, {
      wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
      sgList: [{ addr: src, length: MiB4 * P, lkey: mrA.lkey }], rdma: { remoteAddr: dst, rkey },
    }), 'post WRITE');
    const tl = writeTimeline(costs, fabric.options, MiB4, t0);
    const tm = tl.arrival + 300 * pageAccessNs(costs) + 5;
    yield* sim.join(b.p.spawnThread('unmap', function* () {
      yield* sim.sleep(tm - sim.now());
      must(yield* b.p.munmap(dst, MiB4 * P), 'munmap');
      m.latency = sim.now() - tm;
    }));
    m.expected = tl.writeEnd - tm + zapNs(costs, MiB4) + costs.syncNs + kernelZapCpuNs(MiB4) - DEFAULT_CPU_COSTS.notifierDispatchNs;
    m.wcs = yield* completions(a, 1);
  });
  t.is(m.latency, m.expected);
  t.deepEqual(statuses(m.wcs ?? []), ['IBV_WC_SUCCESS']);
});

test('rdma H3.1, G7, F3: with a short holdoff timeout the MR is revoked instead: QPs to ERROR, zap, sync; the app sees error completions', (t) => {
  const timeout = 100_000;
  const { sim, a, b } = twoHoldoffApps({ holdoffTimeoutNs: timeout });
  const costs = a.node.nic.costs;
  const [qa] = connectRc(a, b);
  a.ctx.enableMrEvents();
  const revokedAt: number[] = [];
  a.ctx.on('mr:revoked', () => revokedAt.push(sim.now()));
  const m: { latency?: number; wcs?: WorkCompletion[]; later?: WorkCompletion[]; mrState?: string; qpState?: number; untouched?: boolean; stats?: object } = {};
  runApp(t, sim, a, function* () {
    const src = yield* mapFilled(a, MiB4, (i) => i + 1);
    const mrA = yield* regMr(a, src, MiB4 * P);
    let dst = 0;
    let rkey = 0;
    yield* sim.join(b.p.spawnThread('setup', function* () {
      dst = yield* mapFilled(b, MiB4, () => 0);
      rkey = (yield* regMr(b, dst, MiB4 * P)).rkey;
    }));
    must(yield* a.ctx.postSend(qa, {
      wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
      sgList: [{ addr: src, length: MiB4 * P, lkey: mrA.lkey }], rdma: { remoteAddr: dst, rkey },
    }), 'post WRITE');
    yield* sim.sleep(costs.doorbellNs + 200 * pageAccessNs(costs));
    const tm = sim.now();
    must(yield* a.p.munmap(src, MiB4 * P), 'munmap');
    m.latency = sim.now() - tm;
    m.wcs = yield* completions(a, 1);
    // Work posted later on the dead QP is flushed too.
    must(yield* a.ctx.postSend(qa, { wrId: 2, opcode: IBV_WR_SEND, sendFlags: IBV_SEND_SIGNALED, sgList: [] }), 'post SEND');
    m.later = yield* completions(a, 1);
    m.mrState = mrA.umem.mr.state;
    m.qpState = qa.state;
    const got = yield* load(b, dst, MiB4 * P);
    m.untouched = got.every((v) => v === 0);
    const s = holdoffUmem(mrA).stats;
    m.stats = { timeouts: s.timeouts, revocations: s.revocations, heldOff: s.heldOff };
  });
  t.is(m.latency, timeout + zapNs(costs, MiB4) + costs.syncNs + kernelZapCpuNs(MiB4), 'the timeout, then the fence: zap and sync (and the kernel\'s CPU time around them)');
  t.deepEqual(statuses(m.wcs ?? []), ['IBV_WC_WR_FLUSH_ERR']);
  t.is(m.wcs?.[0]?.status, IBV_WC_WR_FLUSH_ERR);
  t.deepEqual(statuses(m.later ?? []), ['IBV_WC_WR_FLUSH_ERR']);
  t.is(m.mrState, 'revoked');
  t.is(m.qpState, IBV_QPS_ERR);
  t.true(m.untouched, 'nothing reached the peer');
  t.deepEqual(m.stats, { timeouts: 1, revocations: 1, heldOff: 1 });
  t.is(revokedAt.length, 1, 'the opt-in mr:revoked extension event (rdma F4: real verbs have none)');
});

test('DESIGN holdoff: a posted but idle RECV does not hold off an invalidation (latency = zap + sync); a SEND arriving later cannot wait for a remap (rdma F2)', (t) => {
  const { sim, a, b } = twoHoldoffApps({ holdoffTimeoutNs: LONG });
  const costs = b.node.nic.costs;
  const [qa, qb] = connectRc(a, b);
  const m: { latency?: number; heldOff?: number; sendWc?: WorkCompletion[]; recvWc?: WorkCompletion[] } = {};
  runApp(t, sim, a, function* () {
    const src = yield* mapFilled(a, 4, () => 0x5a);
    const mrA = yield* regMr(a, src, 4 * P);
    yield* sim.join(b.p.spawnThread('recv', function* () {
      const buf = yield* mapFilled(b, 16, () => 0);
      const mrB = yield* regMr(b, buf, 16 * P);
      must(yield* b.ctx.postRecv(qb, { wrId: 7, sgList: [{ addr: buf, length: 16 * P, lkey: mrB.lkey }] }), 'post RECV');
      yield* sim.sleep(10_000);
      const t0 = sim.now();
      must(yield* b.p.madvise(buf, 16 * P, MADV_DONTNEED), 'madvise');
      m.latency = sim.now() - t0;
      m.heldOff = holdoffUmem(mrB).stats.heldOff;
    }));
    must(yield* a.ctx.postSend(qa, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: src, length: 4 * P, lkey: mrA.lkey }] }), 'post SEND');
    m.sendWc = yield* completions(a, 1);
    m.recvWc = yield* completions(b, 1);
  });
  t.is(m.latency, zapNs(costs, 16) + costs.syncNs + kernelZapCpuNs(16));
  t.is(m.heldOff, 0);
  t.is(m.sendWc?.[0]?.status, IBV_WC_REM_OP_ERR, statuses(m.sendWc ?? []).join());
  t.is(m.recvWc?.[0]?.status, IBV_WC_LOC_PROT_ERR, statuses(m.recvWc ?? []).join());
});

test('DESIGN holdoff: local work after an invalidation is remapped by the provider (validity word, remap system call) and the SEND moves the new bytes', (t) => {
  const { sim, a, b } = twoHoldoffApps({ holdoffTimeoutNs: LONG });
  const costs = a.node.nic.costs;
  const [qa, qb] = connectRc(a, b);
  const m: { postNs?: number; secondPostNs?: number; validity?: number[]; wcs?: string[]; match?: boolean; remaps?: number; remapNs?: number } = {};
  runApp(t, sim, a, function* () {
    const src = yield* mapFilled(a, 16, (i) => i >> 4);
    const mrA = yield* regMr(a, src, 16 * P);
    const umem = holdoffUmem(mrA);
    let buf = 0;
    yield* sim.join(b.p.spawnThread('recv', function* () {
      buf = yield* mapFilled(b, 16, () => 0);
      const mrB = yield* regMr(b, buf, 16 * P);
      must(yield* b.ctx.postRecv(qb, { wrId: 7, sgList: [{ addr: buf, length: 16 * P, lkey: mrB.lkey }] }), 'post RECV');
      must(yield* b.ctx.postRecv(qb, { wrId: 8, sgList: [{ addr: buf, length: 16 * P, lkey: mrB.lkey }] }), 'post RECV');
    }));
    must(yield* a.p.madvise(src + 4 * P, 4 * P, MADV_DONTNEED), 'madvise');
    m.validity = [...umem.validity];
    // The process writes new bytes where it dropped the old pages (fresh frames).
    must(yield* a.p.store(src + 4 * P, pattern(4 * P, () => 0xee)), 'store');
    const sge = { addr: src, length: 16 * P, lkey: mrA.lkey };
    let t0 = sim.now();
    must(yield* a.ctx.postSend(qa, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: IBV_SEND_SIGNALED, sgList: [sge] }), 'post SEND');
    m.postNs = sim.now() - t0;
    const wcs = yield* completions(a, 1);
    t0 = sim.now();
    must(yield* a.ctx.postSend(qa, { wrId: 2, opcode: IBV_WR_SEND, sendFlags: IBV_SEND_SIGNALED, sgList: [sge] }), 'post SEND');
    m.secondPostNs = sim.now() - t0;
    wcs.push(...(yield* completions(a, 1)), ...(yield* completions(b, 2)));
    m.wcs = statuses(wcs);
    const now = yield* load(a, src, 16 * P);
    const got = yield* load(b, buf, 16 * P);
    m.match = got.every((v, i) => v === now[i]) && now[4 * P] === 0xee && now[0] === 0;
    m.remaps = umem.stats.remaps;
    m.remapNs = umem.stats.remapNs;
  });
  t.deepEqual(m.validity, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1], 'the invalidation cleared the shared validity word of its pages');
  t.is(m.postNs, DEFAULT_REMAP_SYSCALL_NS + updateNs(costs, 4), 'post_send paid the remap system call: its fixed cost and one update of the 4 pages');
  t.is(m.secondPostNs, 0, 'a valid range costs no system call');
  t.deepEqual(m.wcs, ['IBV_WC_SUCCESS', 'IBV_WC_SUCCESS', 'IBV_WC_SUCCESS', 'IBV_WC_SUCCESS']);
  t.true(m.match, 'the peer received the bytes the process wrote after the invalidation');
  t.is(m.remaps, 1);
  t.is(m.remapNs, m.postNs);
});

for (const eagerRemap of [false, true]) {
  test(`rdma F2, DESIGN holdoff: a remote WRITE into a zapped range ${eagerRemap ? 'succeeds after the eager-remap worker mapped it again' : 'fails with REM_ACCESS_ERR and breaks the RC connection'}`, (t) => {
    const { sim, a, b } = twoHoldoffApps({ holdoffTimeoutNs: LONG, b: { eagerRemap } });
    const [qa, qb] = connectRc(a, b);
    const m: { wcs?: WorkCompletion[]; qa?: number; qb?: number; landed?: boolean; eager?: number } = {};
    runApp(t, sim, a, function* () {
      const src = yield* mapFilled(a, 1, () => 0x77);
      const mrA = yield* regMr(a, src, P);
      let dst = 0;
      let mrB: IbvMr | undefined;
      yield* sim.join(b.p.spawnThread('drop', function* () {
        dst = yield* mapFilled(b, 16, () => 1);
        mrB = yield* regMr(b, dst, 16 * P);
        must(yield* b.p.madvise(dst, 16 * P, MADV_DONTNEED), 'madvise');
      }));
      yield* sim.sleep(100_000);
      must(yield* a.ctx.postSend(qa, {
        wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
        sgList: [{ addr: src, length: P, lkey: mrA.lkey }], rdma: { remoteAddr: dst + 2 * P, rkey: mrB?.rkey ?? 0 },
      }), 'post WRITE');
      m.wcs = yield* completions(a, 1);
      yield* sim.sleep(10_000);
      m.qa = qa.state;
      m.qb = qb.state;
      const got = yield* load(b, dst + 2 * P, P);
      m.landed = got.every((v) => v === 0x77);
      m.eager = holdoffUmem(mrB!).stats.eagerRemaps;
    });
    if (eagerRemap) {
      t.is(m.wcs?.[0]?.status, IBV_WC_SUCCESS, statuses(m.wcs ?? []).join());
      t.true(m.landed, 'the bytes are in the process memory (the new pages)');
      t.is(m.eager, 1);
      t.not(m.qb, IBV_QPS_ERR);
    } else {
      t.is(m.wcs?.[0]?.status, IBV_WC_REM_ACCESS_ERR, statuses(m.wcs ?? []).join());
      t.is(m.qa, IBV_QPS_ERR, 'the requester QP is in ERR');
      t.is(m.qb, IBV_QPS_ERR, 'so is the responder (class C error)');
      t.false(m.landed);
      t.is(m.eager, 0);
    }
  });
}

test('rdma C2, kernel rules 15-17: a non-blockable invalidation (OOM reaper) is refused with false; the VMA is skipped and the device untouched', (t) => {
  const { sim, a, b } = twoHoldoffApps({ holdoffTimeoutNs: LONG });
  connectRc(a, b);
  const m: { result?: OomReapResult; refused?: number; zapped?: number; present?: number; mapped?: number } = {};
  let mrLkey = 0;
  runApp(t, sim, a, function* () {
    const buf = yield* mapFilled(a, 16, () => 9);
    const mr = yield* regMr(a, buf, 16 * P);
    mrLkey = mr.lkey;
  });
  const umem = a.node.device.umemByKey.get(mrLkey);
  if (!umem) throw new Error('no umem');
  sim.spawn('oom', function* () {
    m.result = oomKill(a.k, a.p);
    yield* sim.sleep(2_000_000_000);
  });
  const out = sim.run({ untilNs: sim.now() + 3_000_000_000 });
  t.is(out.failure, undefined, out.failure);
  const hs = (umem as HoldoffUmem).stats;
  m.refused = hs.refusedNonBlockable;
  m.zapped = umem.mr.counters.zappedPages;
  m.present = umem.mr.pageTable.presentPages;
  t.false(m.result?.reaped, 'every attempt was refused');
  t.is(m.result?.skippedVmas, m.result?.attempts ?? -1);
  t.true((m.refused ?? 0) >= 1);
  t.is(m.refused, m.result?.attempts ?? -1);
  t.is(m.zapped, 0, 'no zap');
  t.is(m.present, 16, 'the device still maps every page');
  t.is(sim.sleepInAtomic, 0, 'the callback did not sleep in atomic context');
  t.deepEqual(complaints(sim), [], 'no complaint from the kernel model');
});

test('rdma C4: zap runs close only at an absent page on an 8-entry boundary', (t) => {
  const P_ = 1;
  const A = 0;
  t.deepEqual(zapRuns([P_, P_, A, P_], 0, 3), [[0, 4]], 'P,P,A,P within one group: one zap');
  const across = new Array<number>(16).fill(A);
  across[7] = P_;
  t.deepEqual(zapRuns(across, 0, 15), [[7, 1]], 'P at 7, A at 8 (a boundary): the run closes there');
  const two = [P_, A, A, A, A, A, A, A, A, P_];
  t.deepEqual(zapRuns(two, 0, 9), [[0, 8], [9, 1]]);
  t.deepEqual(zapRuns([A, A, A], 0, 2), [], 'nothing present: no zap');
});
