/**
 * dma-to-freed-page: DMA to a frame freed, or freed and reallocated, since its translation
 * was installed. Memory safety, kept apart from the notifier contract.
 */
import test from 'ava';
import { MADV_DONTNEED } from '../../kernel-model/index.ts';
import { MiniOdp, P, anon, devWrite, fill, ok, rig, run } from './_rig.ts';

test('a device write into a frame the kernel freed and handed to someone else is caught', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    const other = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, 2 * P, { bugs: { noZap: true } });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise frees the page');
    ok(yield* r.p.store(other, fill(7, 8)), 'the freed frame is reused for another page');
    ok(yield* devWrite(odp, buf, fill(2, 64)), 'dma through the stale translation');
  });
  const v = r.san!.violations.find((x) => x.id === 'dma-to-freed-page');
  t.truthy(v);
  t.regex(v!.message, /freed and reallocated/);
  t.true(v!.trail.some((e) => e.kind === 'page-free'));
});

test('legitimate for memory safety: a driver holding a page reference until its deferred zap is not a use-after-free (but breaks the contract)', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P, { bugs: { deferZapNs: 100_000 } });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise');
    ok(yield* devWrite(odp, buf, fill(2, 64)), 'dma before the deferred zap');
  });
  t.is(r.san!.count('dma-to-freed-page'), 0);
  t.true(r.san!.count('use-after-invalidate') >= 1);
});
