/**
 * rxe resolves ODP misses inline (drivers/infiniband/sw/rxe/rxe_odp.c: rxe_odp_mr_copy and
 * rxe_odp_atomic_op call rxe_odp_map_range_and_lock, which faults the range with
 * hmm_range_fault in the requester's or responder's own context): no RNR NAK and no
 * dropped request for an ODP miss, so no ACK timeout either (rdma B8 is mlx5's behaviour,
 * not rxe's). mlx5 (event-queue faults) is the contrast.
 */
import test from 'ava';
import {
  CAPABILITY_PRESETS, Fabric, IBV_ACCESS_ON_DEMAND, IBV_SEND_SIGNALED, IBV_WC_SUCCESS, IBV_WR_ATOMIC_CMP_AND_SWP,
  IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, IBV_WR_SEND, type NicCapabilities,
} from '../../device/index.ts';
import { PROFILES, Simulation, type Co } from '../../kernel-model/index.ts';
import { createRdmaNode, odpStrategy, pinnedStrategy } from '../../driver/index.ts';
import { ALL_ACCESS, P, completions, connectRc, load, mapAnon, must, openApp, pattern, store } from '../../scenarios/app.ts';

function run(caps: Partial<NicCapabilities>) {
  const sim = new Simulation({ seed: 1 });
  const fabric = new Fabric(sim);
  const mk = (name: string) => createRdmaNode(sim, fabric, { name, kernel: { profile: PROFILES['linux-6.x'] }, nic: { caps }, device: { nonOdp: pinnedStrategy(), odp: odpStrategy() } });
  const na = mk('a');
  const nb = mk('b');
  const a = openApp(na, na.kernel.createProcess('req'));
  const b = openApp(nb, nb.kernel.createProcess('resp'));
  const statuses: number[] = [];
  const got: { recv?: Uint8Array; write?: Uint8Array; read?: Uint8Array; cas?: bigint; faa?: bigint; word?: bigint } = {};
  const main = a.p.spawnThread('main', function* (): Co {
    const [qa, qb] = connectRc(a, b);
    const src = yield* mapAnon(a, 4);
    yield* store(a, src, pattern(3, 4 * P));
    // Every buffer is ODP and registered before its pages exist: each first touch is a miss.
    const local = yield* mapAnon(a, 4);
    const remote = yield* mapAnon(b, 4);
    const odp = ALL_ACCESS | IBV_ACCESS_ON_DEMAND;
    const lmr = must(yield* a.ctx.regMr(a.pd, local, 4 * P, odp), 'reg_mr local');
    const smr = must(yield* a.ctx.regMr(a.pd, src, 4 * P, odp), 'reg_mr src');
    const rmr = must(yield* b.ctx.regMr(b.pd, remote, 4 * P, odp), 'reg_mr remote');
    yield* store(b, remote + 3 * P, pattern(9, P));
    const S = IBV_SEND_SIGNALED;
    must(yield* b.ctx.postRecv(qb, { wrId: 100, sgList: [{ addr: remote, length: P, lkey: rmr.lkey }] }), 'post_recv');
    must(yield* a.ctx.postSend(qa, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: src, length: 100, lkey: smr.lkey }] }), 'SEND');
    must(yield* a.ctx.postSend(qa, { wrId: 2, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src + P, length: P, lkey: smr.lkey }], rdma: { remoteAddr: remote + P, rkey: rmr.rkey } }), 'WRITE');
    must(yield* a.ctx.postSend(qa, { wrId: 3, opcode: IBV_WR_RDMA_READ, sendFlags: S, sgList: [{ addr: local, length: P, lkey: lmr.lkey }], rdma: { remoteAddr: remote + 3 * P, rkey: rmr.rkey } }), 'READ');
    must(yield* a.ctx.postSend(qa, { wrId: 4, opcode: IBV_WR_ATOMIC_CMP_AND_SWP, sendFlags: S, sgList: [{ addr: local + P, length: 8, lkey: lmr.lkey }], atomic: { remoteAddr: remote + 2 * P, compareAdd: 0n, swap: 555n, rkey: rmr.rkey } }), 'CAS');
    must(yield* a.ctx.postSend(qa, { wrId: 5, opcode: IBV_WR_ATOMIC_FETCH_AND_ADD, sendFlags: S, sgList: [{ addr: local + P + 8, length: 8, lkey: lmr.lkey }], atomic: { remoteAddr: remote + 2 * P, compareAdd: 7n, swap: 0n, rkey: rmr.rkey } }), 'FAA');
    for (const wc of yield* completions(a, 5)) statuses.push(wc.status);
    for (const wc of yield* completions(b, 1)) statuses.push(wc.status);
    got.recv = yield* load(b, remote, 100);
    got.write = yield* load(b, remote + P, P);
    got.read = yield* load(a, local, P);
    const words = yield* load(a, local + P, 16);
    const dv = new DataView(words.buffer, words.byteOffset, 16);
    got.cas = dv.getBigUint64(0, true);
    got.faa = dv.getBigUint64(8, true);
    const w = yield* load(b, remote + 2 * P, 8);
    got.word = new DataView(w.buffer, w.byteOffset, 8).getBigUint64(0, true);
  });
  const out = sim.run({ task: main, untilNs: 10_000_000_000 });
  if (out.failure !== undefined) throw new Error(out.failure);
  return { statuses, got, a: na.nic, b: nb.nic, done: main.done };
}

test('rdma B8 does not apply to rxe (rxe_odp_mr_copy, rxe_odp_atomic_op via rxe_odp_map_range_and_lock): RC SEND/WRITE/READ/atomics over cold ODP memory complete with no RNR NAK and no ACK timeout', (t) => {
  const r = run(CAPABILITY_PRESETS.rxe);
  t.true(r.done);
  t.deepEqual(r.statuses, Array(6).fill(IBV_WC_SUCCESS));
  // The misses happened, on both sides, and were resolved inline.
  t.true(r.a.faultQueue.raised >= 2, `requester misses ${r.a.faultQueue.raised}`);
  t.true(r.b.faultQueue.raised >= 3, `responder misses ${r.b.faultQueue.raised}`);
  t.is(r.b.stats.rnrNaksSent, 0);
  t.is(r.a.stats.timeouts, 0);
  t.is(r.a.stats.retransmits, 0);
  // And the bytes are right.
  t.deepEqual(r.got.recv, pattern(3, 4 * P).subarray(0, 100));
  t.deepEqual(r.got.write, pattern(3, 4 * P).subarray(P, 2 * P));
  t.deepEqual(r.got.read, pattern(9, P));
  t.is(r.got.cas, 0n);
  t.is(r.got.faa, 555n);
  t.is(r.got.word, 562n);
});

test('rdma B8 (mlx5, event-queue faults, the contrast): the same traffic answers responder misses with RNR NAKs and drops the READ and atomics until the ACK timeout', (t) => {
  const r = run(CAPABILITY_PRESETS.mlx5);
  t.deepEqual(r.statuses, Array(6).fill(IBV_WC_SUCCESS));
  t.true(r.b.stats.rnrNaksSent >= 1);
  t.true(r.a.stats.timeouts >= 1);
});
