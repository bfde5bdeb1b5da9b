/**
 * deadlock (wait-for cycle) and lock-order (lockdep): rdma C10 (CVE-2022-48675), kernel
 * rule 8 and H4.
 */
import test from 'ava';
import { mmput, mmuIntervalReadBegin } from '../../kernel-model/index.ts';
import { MiniOdp, P, anon, devWrite, expectIds, fill, ok, rig, run } from './_rig.ts';

test('CVE-2022-48675: the fault worker drops the last mm reference under the umem mutex; exit_mmap\'s callback takes it again', (t) => {
  const r = rig();
  const sim = r.k.sim;
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P);
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    const mm = r.p.mm;
    t.true(mm.mmgetNotZero(), 'the fault worker holds an mm reference');
    sim.spawn('mini-odp/page-fault', function* () {
      yield* odp.mutex.lock();
      yield* sim.sleep(10_000); // the process exits meanwhile
      yield* mmput(mm); // the last reference: exit_mmap runs here, under the mutex
      odp.mutex.unlock();
    }, { kind: 'worker' });
    ok(yield* r.p.exit(), 'exit');
  });
  const v = r.san!.violations.find((x) => x.id === 'deadlock');
  t.truthy(v, r.san!.render());
  t.regex(v!.message, /mini-odp\/page-fault waits for mini-odp\.umem_mutex/);
  t.true(v!.trail.some((e) => e.kind === 'lock' && e.text.includes('took mini-odp.umem_mutex')));
});

test('lock-order: a fault path that calls read_begin with the driver lock held (the callback takes it inside the notifier\'s pseudo-lock)', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    const odp = new MiniOdp(r, r.p.mm, buf, 2 * P);
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    ok(yield* r.p.munmap(buf + P, P), 'an invalidation: pseudo-lock, then the umem mutex');
    yield* odp.mutex.lock();
    yield* mmuIntervalReadBegin(odp.sub); // rule 27: must not hold the driver lock
    odp.mutex.unlock();
  });
  const v = r.san!.violations.find((x) => x.id === 'lock-order');
  t.truthy(v);
  t.is(v!.severity, 'warning');
  t.regex(v!.message, /mmu_notifier_invalidate_range_start taken while holding umem_mutex/);
});

test('legitimate: faults and invalidations in the canonical order', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 4);
    const odp = new MiniOdp(r, r.p.mm, buf, 4 * P);
    yield* odp.register();
    for (let i = 0; i < 4; i++) {
      ok(yield* devWrite(odp, buf + i * P, fill(i, 64)), 'dma');
      ok(yield* r.p.store(buf + i * P, fill(9, 8)), 'store');
    }
    ok(yield* r.p.munmap(buf, 2 * P), 'munmap');
    ok(yield* devWrite(odp, buf + 3 * P, fill(1, 64)), 'dma');
    ok(yield* r.p.exit(), 'exit');
  });
  expectIds(t, r, []);
});
