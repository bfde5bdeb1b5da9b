/**
 * The sanitizer observes, never steers (DESIGN "Dependency rule"): the same seed gives
 * the same trace, byte for byte, with and without it attached, and it adds no record.
 * The run mixes everything it subscribes to: preemption from the seed, CPU stores, munmap,
 * fork and exit, the writeback flusher, real QP traffic over loopback with NIC faults
 * handled by a mirror, direct DMA, pins, and a few deliberate violations.
 */
import test from 'ava';
import {
  FOLL_WRITE, MADV_DONTNEED, serializeTrace, startFlusher,
} from '../../kernel-model/index.ts';
import {
  IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, IBV_SEND_SIGNALED, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE,
  type CompletionQueue, type QueuePair,
} from '../../device/index.ts';
import { ALL_ACCESS, MiniOdp, MiniPinned, P, anon, devWrite, fill, ok, rig, sharedFile } from './_rig.ts';

function workload(seed: number, sanitize: boolean): { trace: string; records: number; violations: number; now: number } {
  const r = rig({ seed, sanitizer: sanitize, preempt: { probability: 0.2, maxDelayNs: 500 } });
  const { k, nic, p, pd } = r;
  const sim = k.sim;
  startFlusher(k, { periodNs: 200_000, dropBuffers: true });
  const cq = nic.createCq(1024) as CompletionQueue;
  const qp = (): QueuePair => {
    const q = nic.createQp({ qpType: IBV_QPT_RC, pd, sendCq: cq, recvCq: cq });
    if (typeof q === 'number') throw new Error(`createQp ${q}`);
    return q;
  };
  const qa = qp();
  const qb = qp();
  for (const [q, peer] of [[qa, qb], [qb, qa]] as const) {
    const attr = { timeout: 14, retryCnt: 7, rnrRetry: 7, minRnrTimer: 1, maxRdAtomic: 4, maxDestRdAtomic: 4 };
    nic.modifyQp(q, { qpState: IBV_QPS_INIT, qpAccessFlags: ALL_ACCESS });
    nic.modifyQp(q, { ...attr, qpState: IBV_QPS_RTR, destQpNum: peer.qpNum, ahAttr: { dlid: nic.lid } });
    nic.modifyQp(q, { ...attr, qpState: IBV_QPS_RTS });
  }
  const file = k.createFile('data', 8 * P);
  p.spawnThread('main', function* () {
    const src = yield* anon(p, 4);
    ok(yield* p.store(src, fill(0x5a, 4 * P)), 'store');
    const pinned = new MiniPinned(r, p.mm, src, 4 * P);
    yield* pinned.register();
    const dst = yield* anon(p, 8);
    const odp = new MiniOdp(r, p.mm, dst, 8 * P);
    yield* odp.register();
    odp.attachFaultHandler();
    for (let i = 0; i < 6; i++) {
      ok(nic.postSend(qa, {
        wrId: i, opcode: i % 3 === 2 ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
        sgList: [{ addr: src + (i % 4) * P, length: P, lkey: pinned.mr.lkey }],
        rdma: { remoteAddr: dst + i * P, rkey: odp.mr.rkey },
      }), 'postSend');
    }
    yield* sim.sleep(200_000);
    ok(yield* p.madvise(dst, 2 * P, MADV_DONTNEED), 'madvise');
    ok(yield* p.munmap(dst + 6 * P, 2 * P), 'munmap');
    const mapped = yield* sharedFile(p, file, 2);
    ok(yield* p.store(mapped, fill(1, 64)), 'store to the file');
    const shortPin = new MiniPinned(r, p.mm, mapped, 2 * P);
    yield* shortPin.register(FOLL_WRITE);
    yield* sim.sleep(300_000); // the flusher cleans the pinned page and drops its buffers
    ok(yield* devWrite(shortPin, mapped, fill(2, 64)), 'dma into a cleaned page');
    yield* shortPin.dereg({ dirty: true }); // dirty without buffers
    const child = yield* p.fork();
    if (typeof child !== 'number') {
      const t2 = child.spawnThread('child', function* () {
        ok(yield* child.store(src, fill(3, 8)), 'child store');
        ok(yield* child.exit(), 'child exit');
      });
      yield* sim.join(t2);
    }
    yield* pinned.dereg();
  });
  const out = sim.run({ untilNs: 5_000_000 });
  if (out.reason === 'failed') throw new Error(out.failure);
  r.san?.finish();
  return { trace: serializeTrace(r.records), records: r.records.length, violations: r.san?.violations.length ?? 0, now: out.now };
}

for (const seed of [1, 7, 42]) {
  test(`seed ${seed}: the same trace with and without the sanitizer`, (t) => {
    const bare = workload(seed, false);
    const watched = workload(seed, true);
    t.true(bare.records > 150, `a substantial run (${bare.records} records)`);
    t.true(watched.violations > 0, 'the sanitizer had things to say');
    t.is(watched.records, bare.records, 'no record added');
    t.is(watched.now, bare.now);
    t.true(watched.trace === bare.trace, 'byte-identical serialized trace');
  });
}

test('different seeds give different traces (the comparison above is not vacuous)', (t) => {
  t.not(workload(1, false).trace, workload(2, false).trace);
});
