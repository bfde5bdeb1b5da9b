/**
 * blocked-migration (warning): a page the device holds a reference to made migration
 * fail (kernel rules 71-73, H11, H12).
 */
import test from 'ava';
import { FOLL_WRITE, getUserPagesFast, migratePage, pteFrame } from '../../kernel-model/index.ts';
import { MiniOdp, MiniPinned, P, anon, devWrite, expectIds, fill, ok, rig, run } from './_rig.ts';

test('compaction meets a page pinned for an MR: a warning naming the pin', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    const mr = new MiniPinned(r, r.p.mm, buf, P);
    yield* mr.register();
    t.true((yield* migratePage(r.k, mr.frames[0]!, 'compaction')) < 0);
  });
  const v = r.san!.violations.find((x) => x.id === 'blocked-migration');
  t.truthy(v);
  t.is(v!.severity, 'warning');
  t.regex(v!.message, /pinned for an MR/);
});

test('a mirror that holds page references until a deferred zap blocks migration: a warning', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P, { bugs: { deferZapNs: 1_000_000 } });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    const frame = pteFrame(r.p.mm.pageTable.get(buf / P));
    t.true((yield* migratePage(r.k, frame, 'numa')) < 0, 'the reference taken in the callback makes it fail');
  });
  const v = r.san!.violations.find((x) => x.id === 'blocked-migration');
  t.truthy(v, r.san!.render());
  t.regex(v!.message, /device translates it/);
});

test('legitimate: a correct mirror lets the page move; a failure caused by someone else\'s reference is not the device\'s', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P);
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    const frame = pteFrame(r.p.mm.pageTable.get(buf / P));
    t.is(yield* migratePage(r.k, frame, 'numa'), 0, 'migrated');
    ok(yield* devWrite(odp, buf, fill(2, 64)), 'dma refaults to the new frame');
    const other = yield* anon(r.p, 1);
    const pages: number[] = [];
    ok(yield* getUserPagesFast(r.p.mm, other, 1, FOLL_WRITE, pages), 'a plain GUP reference outside any MR');
    t.true((yield* migratePage(r.k, pages[0]!, 'compaction')) < 0);
  });
  expectIds(t, r, []);
});
