/**
 * fault-retry-storm (warning and metric): a NIC fault that keeps colliding with
 * invalidations until HMM_RANGE_DEFAULT_TIMEOUT runs out (rdma B3, kernel rule 31).
 */
import test from 'ava';
import { MADV_DONTNEED } from '../../kernel-model/index.ts';
import { IBV_WR_RDMA_WRITE, type DeviceFault } from '../../device/index.ts';
import { MiniOdp, P, anon, expectIds, ok, rig, run, type Rig } from './_rig.ts';

/** Post a responder write fault on `odp`'s page at `va`, as the DMA engine would. */
function postFault(r: Rig, odp: MiniOdp, va: number, done: (error: boolean) => void): void {
  const fault: DeviceFault = {
    id: r.nic.faultQueue.allocateId(), nic: r.nic.name, time: r.k.sim.now(), qpNum: 1, transport: 'RC', side: 'responder',
    opcode: IBV_WR_RDMA_WRITE, mrKey: odp.mr.lkey, iova: va, length: 64, write: true, reason: 'absent',
  };
  r.nic.faultQueue.post(fault, (res) => done(res.error));
}

/** A thread that throws the page away every `periodNs`, `count` times. */
function* storm(r: Rig, va: number, periodNs: number, count: number) {
  for (let i = 0; i < count; i++) {
    yield* r.k.sim.sleep(periodNs);
    ok(yield* r.p.madvise(va, P, MADV_DONTNEED), 'madvise');
  }
}

test('a fault that collides with an invalidation on every attempt runs out of budget: a warning, and the metric', (t) => {
  const r = rig({ translationCacheEntries: 64 });
  let error = null as boolean | null;
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    // Each attempt spends 1 ms between its snapshot and the mutex; the storm hits every 400 us.
    const odp = new MiniOdp(r, r.p.mm, buf, P, { faultWorkNs: 1_000_000 });
    yield* odp.register();
    odp.attachFaultHandler();
    const stormer = r.p.spawnThread('storm', () => storm(r, buf, 400_000, 3_000));
    postFault(r, odp, buf, (e) => { error = e; });
    yield* r.k.sim.join(stormer);
  }, { untilNs: 3_000_000_000 });
  t.is(error, true, 'resumed with an error (-EBUSY after the budget)');
  const v = r.san!.violations.find((x) => x.id === 'fault-retry-storm');
  t.truthy(v, r.san!.render());
  t.is(v!.severity, 'warning');
  const m = r.san!.metrics()['fault-retry-storm']!;
  t.is(m.budgetExhausted, 1);
  t.true(m.maxCollisionsPerFault! > 100, `collisions ${m.maxCollisionsPerFault}`);
  t.is(r.san!.errors().length, 0, 'legal kernel behaviour, not an error');
});

test('legitimate: a few collisions, then the fault gets through; counted in the metric only', (t) => {
  const r = rig({ translationCacheEntries: 64 });
  let error = null as boolean | null;
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P, { faultWorkNs: 1_000_000 });
    yield* odp.register();
    odp.attachFaultHandler();
    const stormer = r.p.spawnThread('storm', () => storm(r, buf, 400_000, 5));
    postFault(r, odp, buf, (e) => { error = e; });
    yield* r.k.sim.join(stormer);
    yield* r.k.sim.sleep(2_000_000);
  }, { untilNs: 3_000_000_000 });
  t.is(error, false);
  expectIds(t, r, []);
  const m = r.san!.metrics()['fault-retry-storm']!;
  t.is(m.faults, 1);
  t.is(m.faultsCollided, 1);
  t.true(m.collisions! >= 2);
  t.is(m.budgetExhausted, 0);
});
