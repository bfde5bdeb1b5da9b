/**
 * Page migration (kernel rules 21e, 71, 73, hazard H11): the CLEAR comes first; a pinned
 * page fails at the share step, a page with an extra reference fails the refcount check,
 * and either way the mapping is restored; an unreferenced page moves.
 */
import test from 'ava';
import { EAGAIN, EBUSY, MAP_SHARED, PTE_WRITE, pteHas, vpn } from '../../kernel-model/index.ts';
import { FOLL_LONGTERM, FOLL_WRITE, getUserPagesFast, pinUserPagesFast, putUserPages, unpinUserPages } from '../../kernel-model/gup.ts';
import { migratePage } from '../../kernel-model/migrate.ts';
import { startNumaBalancing } from '../../kernel-model/numa-balancing.ts';
import { P, bytes, fill, frameAt, lines, ok, pair, runMain } from './_helpers.ts';
import { ANON, RW, rigOn, traceOf } from './_pin-helpers.ts';

type Hold = 'nothing' | 'pin' | 'get';

const expected: Record<Hold, number> = { nothing: 0, pin: -EBUSY, get: -EAGAIN };

for (const hold of ['nothing', 'pin', 'get'] as const) {
  const title = hold === 'nothing'
    ? 'rule 73: migrating an unreferenced anonymous page sends CLEAR and moves the data: new frame, same bytes, old frame freed'
    : hold === 'pin'
      ? 'rules 71, 73: migrating a pinned anonymous page sends CLEAR, fails at the share step (-EBUSY), and leaves the mapping as it was: same frame, same bytes'
      : 'rule 73 (H11): migrating an anonymous page with one extra plain reference sends CLEAR, fails the refcount check (-EAGAIN), and restores the mapping: same frame, same bytes';
  test(title, (t) => {
    const r = rigOn('linux-6.x');
    const { k, p, events } = r;
    const trace = traceOf(k);
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(0x3c, 128)), 'store');
      const f = frameAt(p.mm, a);
      const pteBefore = p.mm.pageTable.get(vpn(a));
      const held: number[] = [];
      if (hold === 'pin') t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, held), 1);
      if (hold === 'get') t.is(yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE, held), 1);
      const refs = k.phys.refcount[f];
      events.length = 0;
      t.is(yield* migratePage(k, f, 'compaction'), expected[hold]);
      t.deepEqual(lines(events, p.mm), pair('CLEAR', a, a + P), 'try_to_migrate_one\'s CLEAR, whatever happens next');
      if (hold === 'nothing') {
        const nf = frameAt(p.mm, a);
        t.not(nf, f);
        t.true(nf >= 0);
        t.false(k.phys.isAllocated(f), 'the old frame is freed');
        t.is(k.phys.refcount[nf], 1);
        t.deepEqual(k.phys.read(nf, 0, 128), fill(0x3c, 128));
      } else {
        t.is(frameAt(p.mm, a), f, 'same frame');
        t.is(p.mm.pageTable.get(vpn(a)), pteBefore, 'the PTE is restored exactly');
        t.is(k.phys.refcount[f], refs, 'no reference leaked or lost');
        t.deepEqual(k.dmaBus.read(f, 0, 128), fill(0x3c, 128), 'same bytes');
        // The holder and the process still share the page.
        ok(yield* p.store(a, fill(0x4d, 4)), 'store');
        t.deepEqual(k.dmaBus.read(f, 0, 4), fill(0x4d, 4));
      }
      t.deepEqual(bytes(yield* p.load(a + 4, 4), 'load'), fill(0x3c, 4));
      if (hold === 'pin') unpinUserPages(k, held);
      if (hold === 'get') putUserPages(k, held);
    });
    t.deepEqual(trace.of('migrate').map((m) => m.ret), [expected[hold]]);
  });
}

test('rule 73 (H11): a pinned page-cache page fails the refcount check (-EAGAIN) and its shared mappings come back; unpinned, it moves and the page cache follows', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  const file = k.createFile('data', P, fill(0x5e, P));
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    ok(yield* p.store(a, fill(0x6f, 4)), 'store');
    const f = file.pageCache.get(0)!;
    const pins: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_LONGTERM, pins), 1);
    events.length = 0;
    t.is(yield* migratePage(k, f, 'numa'), -EAGAIN);
    t.deepEqual(lines(events, p.mm), pair('CLEAR', a, a + P));
    t.is(frameAt(p.mm, a), f);
    t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'restored with its permissions');
    t.is(file.pageCache.get(0), f);
    unpinUserPages(k, pins);
    t.is(yield* migratePage(k, f, 'numa'), 0);
    const nf = file.pageCache.get(0)!;
    t.not(nf, f);
    t.is(frameAt(p.mm, a), nf);
    t.is(k.phys.refcount[nf], 2, 'page cache + mapping');
    t.false(k.phys.isAllocated(f));
    t.deepEqual(bytes(yield* p.load(a, 8), 'load'), new Uint8Array([0x6f, 0x6f, 0x6f, 0x6f, 0x5e, 0x5e, 0x5e, 0x5e]));
  });
});

test('rule 73: a COW-shared page mapped by parent and child moves for both, with one CLEAR per mapping', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x71, 16)), 'store');
    const child = yield* p.fork();
    if (typeof child === 'number') throw new Error(`fork: ${child}`);
    const f = frameAt(p.mm, a);
    t.is(frameAt(child.mm, a), f);
    events.length = 0;
    t.is(yield* migratePage(k, f, 'compaction'), 0);
    const nf = frameAt(p.mm, a);
    t.not(nf, f);
    t.is(frameAt(child.mm, a), nf);
    t.is(k.phys.mapcount[nf], 2);
    t.is(k.phys.refcount[nf], 2);
    t.deepEqual([...lines(events, p.mm), ...lines(events, child.mm)], [...pair('CLEAR', a, a + P), ...pair('CLEAR', a, a + P)]);
    t.deepEqual(bytes(yield* child.load(a, 16), 'child load'), fill(0x71, 16));
    ok(yield* p.store(a, fill(0x72, 16)), 'parent store still COWs');
    t.deepEqual(bytes(yield* child.load(a, 16), 'child load'), fill(0x71, 16));
  });
});

test('NUMA balancing (rule 73): the scanner migrates mapped pages behind the process\'s back; each attempt is a CLEAR, the bytes follow the page, a pinned page stays put', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  const stats = startNumaBalancing(k, { periodNs: 1_000_000, pagesPerScan: 4 });
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, 8 * P, RW, ANON), 'mmap');
    for (let i = 0; i < 8; i++) ok(yield* p.store(a + i * P, fill(0x40 + i, 64)), 'store');
    const pinned: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pinned), 1);
    const before = Array.from({ length: 8 }, (_, i) => frameAt(p.mm, a + i * P));
    yield* k.sim.sleep(20_000_000);
    const after = Array.from({ length: 8 }, (_, i) => frameAt(p.mm, a + i * P));
    t.is(after[0], before[0], 'the pinned page never moves');
    t.true(after.slice(1).some((f, i) => f !== before[i + 1]), 'some unpinned page moved');
    for (let i = 0; i < 8; i++) t.deepEqual(bytes(yield* p.load(a + i * P, 64), 'load'), fill(0x40 + i, 64));
    unpinUserPages(k, pinned);
    yield* p.exit();
  });
  const out = k.sim.run({ untilNs: 30_000_000 });
  t.not(out.reason, 'failed', out.failure);
  t.true(stats.migrated > 0 && stats.failed > 0, `migrated ${stats.migrated}, failed ${stats.failed}`);
  t.true(events.filter((e) => e.phase === 'start' && e.range.event === 1).length >= stats.attempted, 'one CLEAR per attempt at least');
});
