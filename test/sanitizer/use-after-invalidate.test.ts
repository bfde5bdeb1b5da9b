/**
 * use-after-invalidate: a device access through a translation installed before the
 * invalidate callback for its address returned true (kernel rule 11, rdma C5).
 */
import test from 'ava';
import { MADV_DONTNEED, oomKill } from '../../kernel-model/index.ts';
import { MiniOdp, P, anon, devRead, devWrite, expectIds, fill, ok, rig, run } from './_rig.ts';

test('a callback that returns true without zapping: the next DMA is caught, with the madvise in its trail', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 4);
    const odp = new MiniOdp(r, r.p.mm, buf, 4 * P, { bugs: { noZap: true } });
    yield* odp.register();
    ok(yield* r.p.store(buf, fill(1)), 'store');
    ok(yield* devWrite(odp, buf, fill(2, 64)), 'dma');
    ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise');
    ok(yield* devWrite(odp, buf, fill(3, 64)), 'dma after the invalidation');
  });
  const v = r.san!.violations.find((x) => x.id === 'use-after-invalidate');
  t.truthy(v);
  t.is(v!.severity, 'error');
  const kinds = v!.trail.map((e) => e.kind);
  t.true(kinds.includes('syscall') && kinds.includes('invalidate-start') && kinds.includes('callback') && kinds.includes('dma'), kinds.join(','));
  t.true(v!.trail.some((e) => e.kind === 'syscall' && e.text.startsWith('madvise')));
  // The page went back to the allocator and the device entry still names it: the other views.
  t.true(r.san!.count('dma-to-freed-page') >= 1);
  t.true(r.san!.count('stale-translation') >= 1);
});

test('a zap without a sync: the translation cache still serves the old translation, caught', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    const odp = new MiniOdp(r, r.p.mm, buf, 2 * P, { bugs: { noSync: true } });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(2, 64)), 'dma');
    ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise');
    ok(yield* devWrite(odp, buf, fill(3, 64)), 'dma after the invalidation');
  });
  const v = r.san!.violations.find((x) => x.id === 'use-after-invalidate');
  t.truthy(v, 'caught');
  t.regex(v!.message, /translation cache/);
});

test('legitimate: a correct driver refaults after the invalidation; nothing is reported', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 4);
    const odp = new MiniOdp(r, r.p.mm, buf, 4 * P);
    yield* odp.register();
    ok(yield* r.p.store(buf, fill(1, 4 * P)), 'store');
    ok(yield* devWrite(odp, buf, fill(2, 2 * P)), 'dma');
    ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise');
    ok(yield* devWrite(odp, buf, fill(3, 2 * P)), 'dma after the invalidation refaults');
    ok(yield* r.p.munmap(buf + 3 * P, P), 'munmap');
    const got = yield* devRead(odp, buf, 64);
    t.deepEqual(got, fill(3, 64));
    t.true(odp.invalidations >= 2);
  });
  expectIds(t, r, []);
});

test('legitimate: an access in flight when the invalidation syncs is fenced, not reported', (t) => {
  // Slow translations: the access started before the zap commits while the sync drains it.
  const r = rig({ costs: { translationMissNs: 20_000 }, translationCacheEntries: 0 });
  let fenced = 0;
  r.nic.access$.subscribe((a) => { if (a.fenced) fenced++; });
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P);
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'first dma maps the page');
    const sim = r.k.sim;
    const dma = sim.spawn('dma', function* () { ok(yield* devWrite(odp, buf, fill(2, 64)), 'dma'); });
    yield* sim.sleep(1_000);
    ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise');
    yield* sim.join(dma);
  });
  t.true(fenced >= 1, 'the access was fenced by the sync');
  expectIds(t, r, []);
});

test('legitimate: a non-blockable invalidation refused with false/-EAGAIN leaves translations usable', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    const odp = new MiniOdp(r, r.p.mm, buf, 2 * P);
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(2, 2 * P)), 'dma');
    const reap = oomKill(r.k, r.p);
    yield* r.k.sim.sleep(1_000);
    // The reaper skipped the VMA (the driver answered false): the device may go on.
    ok(yield* devWrite(odp, buf, fill(3, 2 * P)), 'dma after the refused reap');
    t.true(reap.skippedVmas >= 1);
  }, { untilNs: 10_000_000 });
  expectIds(t, r, []);
});

test('legitimate: accesses while a holdoff callback still waits for DMA to drain are not reported', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P, { holdoffNs: 50_000, strategy: 'holdoff' });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    const sim = r.k.sim;
    const dma = sim.spawn('dma', function* () {
      for (let i = 0; i < 10; i++) {
        yield* sim.sleep(2_000);
        ok(yield* devWrite(odp, buf, fill(i, 64)), 'dma during the holdoff');
      }
    });
    ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise');
    yield* sim.join(dma);
  });
  expectIds(t, r, []);
});
