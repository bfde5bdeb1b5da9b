/**
 * pin-leak: pins still held after the verbs context released its MRs and the mm is gone.
 */
import test from 'ava';
import { MiniPinned, P, anon, devWrite, expectIds, fill, ok, rig, run } from './_rig.ts';

test('a release that never unpins, then exit: caught, with the pins in the trail', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    const mr = new MiniPinned(r, r.p.mm, buf, 2 * P);
    yield* mr.register();
    ok(yield* devWrite(mr, buf, fill(1, 64)), 'dma');
    ok(yield* r.p.exit(), 'exit: the mm is gone, the context not yet');
    yield* mr.dereg({ unpin: false }); // context release: the MR goes, the pins stay
  });
  const v = r.san!.violations.find((x) => x.id === 'pin-leak');
  t.truthy(v);
  t.regex(v!.message, /2 GUP reference\(s\) \(2 pin\(s\)\) taken from mm1/);
  t.true(v!.trail.some((e) => e.kind === 'gup'));
});

test('legitimate: unpinned at release; and pins of an MR still registered when the run ends', (t) => {
  const r = rig();
  run(t, r, function* () {
    const a = yield* anon(r.p, 2);
    const mr = new MiniPinned(r, r.p.mm, a, 2 * P);
    yield* mr.register();
    yield* mr.dereg();
    const b = yield* anon(r.p, 1);
    const kept = new MiniPinned(r, r.p.mm, b, P);
    yield* kept.register();
    ok(yield* r.p.exit(), 'exit with an MR still registered');
  });
  expectIds(t, r, []);
});
