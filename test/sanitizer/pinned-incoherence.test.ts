/**
 * pinned-incoherence (warning): a pinned MR and the process stop seeing the same page
 * (rdma H1, kernel H3, H8).
 */
import test from 'ava';
import { MADV_DONTNEED } from '../../kernel-model/index.ts';
import { MiniPinned, P, anon, devRead, expectIds, fill, ok, rig, run } from './_rig.ts';

test('MADV_DONTNEED then a CPU store: the process gets a new page, the NIC keeps the pinned one', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    ok(yield* r.p.store(buf, fill(1, 2 * P)), 'store');
    const mr = new MiniPinned(r, r.p.mm, buf, 2 * P);
    yield* mr.register();
    ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise');
    ok(yield* r.p.store(buf, fill(2, 8)), 'store into a new zeroed page');
    t.deepEqual(yield* devRead(mr, buf, 8), fill(1, 8), 'the NIC still reads the old page');
  });
  const v = r.san!.violations.find((x) => x.id === 'pinned-incoherence');
  t.truthy(v);
  t.is(v!.severity, 'warning');
  t.true(v!.trail.some((e) => e.kind === 'fault' || e.kind === 'cpu-store'));
  t.is(r.san!.errors().length, 0, 'a hazard of pinning, not a memory-safety error');
});

test('legitimate (linux-6.x): fork copies pinned pages for the child, the parent keeps its pinned page writable', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    ok(yield* r.p.store(buf, fill(1, 2 * P)), 'store');
    const mr = new MiniPinned(r, r.p.mm, buf, 2 * P);
    yield* mr.register();
    const child = yield* r.p.fork();
    t.not(typeof child, 'number');
    ok(yield* r.p.store(buf, fill(5, 8)), 'parent writes its pinned page in place');
    t.deepEqual(yield* devRead(mr, buf, 8), fill(5, 8));
  });
  expectIds(t, r, []);
});
