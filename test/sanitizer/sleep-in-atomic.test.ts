/**
 * sleep-in-atomic: a primitive that might sleep, called in atomic context (kernel rule 15,
 * H5): here, the OOM reaper's non-blockable invalidation.
 */
import test from 'ava';
import { MmuNotifier, Mutex, mmuNotifierRegister, oomKill, PROFILES } from '../../kernel-model/index.ts';
import { MiniOdp, P, anon, devWrite, expectIds, fill, ok, rig, run } from './_rig.ts';

test('a callback that takes its mutex in the reaper\'s non-blockable range: caught, with the invalidation in the trail', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    const odp = new MiniOdp(r, r.p.mm, buf, 2 * P, { bugs: { lockWhenNonBlockable: true } });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    oomKill(r.k, r.p);
    yield* r.k.sim.sleep(1_000_000);
  }, { untilNs: 100_000_000 });
  const v = r.san!.violations.find((x) => x.id === 'sleep-in-atomic');
  t.truthy(v);
  t.regex(v!.message, /mutex_lock\(mini-odp\.umem_mutex\) in atomic context \(non-blockable invalidation\)/);
  t.true(v!.trail.some((e) => e.kind === 'invalidate-start' && e.text.includes('non-blockable')));
});

test('legitimate: the callback answers false in the non-blockable range, and sleeps freely in blockable ones', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    const odp = new MiniOdp(r, r.p.mm, buf, 2 * P);
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    ok(yield* r.p.munmap(buf + P, P), 'a blockable invalidation: lock, zap, sync');
    oomKill(r.k, r.p);
    yield* r.k.sim.sleep(1_000_000);
  }, { untilNs: 100_000_000 });
  expectIds(t, r, []);
});

test('linux-3.0: every callback runs under RCU; a classic subscriber that locks a mutex there is caught', (t) => {
  const r = rig({ profile: PROFILES['linux-3.0'] });
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    const lock = new Mutex(r.k.sim, 'gru.lock');
    const sub = new MmuNotifier('gru', {
      *invalidateRangeStart() {
        yield* lock.lock();
        lock.unlock();
        return 0;
      },
    });
    ok(yield* mmuNotifierRegister(sub, r.p.mm), 'register');
    ok(yield* r.p.munmap(buf, P), 'munmap');
  });
  const v = r.san!.violations.find((x) => x.id === 'sleep-in-atomic');
  t.truthy(v);
  t.regex(v!.message, /RCU/);
});
