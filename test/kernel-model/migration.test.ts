/**
 * Page migration (kernel rules 21e, 71, 73, hazard H11): the CLEAR comes first; a pinned
 * page fails at the share step, a page with an extra reference fails the refcount check,
 * and either way the mapping is restored; an unreferenced page moves.
 */
import test from 'ava';
import {
  EAGAIN, EBUSY, PTE_PROTNONE, HMM_PFN_REQ_FAULT, HMM_PFN_VALID, HMM_PFN_WRITE, MAP_FIXED, MAP_SHARED, MmuIntervalNotifier, MmuNotifier,
  MmuNotifyEvent, PROFILES, PTE_WRITE, ZERO_PFN, hmmRangeFault, hmmRangeInit, mmuIntervalNotifierInsert, mmuIntervalReadBegin,
  mmuIntervalSetSeq, mmuNotifierRegister, pteHas, vpn, hex,
  type Co, type Kernel, type MmStruct, type MmuNotifierRange,
} from '../../kernel-model/index.ts';
import { FOLL_LONGTERM, FOLL_WRITE, getUserPagesFast, pinUserPagesFast, putUserPages, unpinUserPages } from '../../kernel-model/gup.ts';
import { migratePage, migrationUnmapFunction } from '../../kernel-model/migrate.ts';
import { startNumaBalancing } from '../../kernel-model/numa-balancing.ts';
import { DEFAULT_CPU_COSTS } from '../../kernel-model/cpu-costs.ts';
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

test('NUMA balancing (kernel/sched/fair.c task_numa_work, mm/mprotect.c change_prot_numa, rules 21h, 73): each scan sends PROTECTION_VMA over its window and makes the PTEs NUMA hints; the next access migrates the page (CLEAR), the bytes follow, a pinned page is never hinted', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  const MiB = 1024 * 1024;
  let buf = 0;
  let stats: ReturnType<typeof startNumaBalancing> | undefined;
  p.spawnThread('main', function* () {
    buf = ok(yield* p.mmap(0x40000000, 8 * MiB, RW, ANON | MAP_FIXED), 'mmap');
    for (let i = 0; i < 8 * MiB; i += P) ok(yield* p.store(buf + i, fill((i / P) & 0xff, 8)), 'store');
    const pinned: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, buf, 1, FOLL_WRITE | FOLL_LONGTERM, pinned), 1);
    // Balancing starts once the buffer is populated: its 2048 page faults take about 2 ms
    // of CPU time (cpu-costs.ts pageFaultNs), two scan periods that would have hinted the
    // first windows before the test looks. A 2 MiB scan size: each pass hints one
    // PMD-aligned 2 MiB window of the 8 MiB buffer.
    t.true(k.sim.now() >= 2048 * DEFAULT_CPU_COSTS.pageFaultNs, 'the population took CPU time');
    stats = startNumaBalancing(k, { periodNs: 1_000_000, scanSizeMb: 2 });
    const before = frameAt(p.mm, buf + P);
    events.length = 0;
    yield* k.sim.sleep(1_500_000); // one scan: [buf, buf + 2 MiB)
    const windows = events.filter((e) => e.phase === 'start' && e.range.event === MmuNotifyEvent.PROTECTION_VMA).map((e) => [e.range.start, e.range.end]);
    t.deepEqual(windows, [[buf, buf + 2 * MiB]], 'one PROTECTION_VMA over the first window');
    t.true(pteHas(p.mm.pageTable.get(vpn(buf + P)), PTE_PROTNONE), 'hinted');
    t.false(pteHas(p.mm.pageTable.get(vpn(buf + 2 * MiB)), PTE_PROTNONE), 'outside the window');
    t.false(pteHas(p.mm.pageTable.get(vpn(buf)), PTE_PROTNONE), 'the pinned page of a COW mapping is skipped');
    events.length = 0;
    t.deepEqual(bytes(yield* p.load(buf + P, 8), 'load'), fill(1, 8), 'the hinting fault migrates, the bytes follow');
    t.not(frameAt(p.mm, buf + P), before);
    t.deepEqual(lines(events, p.mm), pair('CLEAR', buf + P, buf + 2 * P), 'the migration\'s CLEAR');
    yield* k.sim.sleep(4_000_000); // three more scans: the next windows, then round again
    unpinUserPages(k, pinned);
    yield* p.exit();
  });
  const out = k.sim.run({ untilNs: 20_000_000 });
  t.not(out.reason, 'failed', out.failure);
  if (!stats) throw new Error('balancing never started');
  t.true(stats.scans >= 4);
  t.is(stats.migrated, 1);
  t.true(stats.ptesUpdated >= 4 * 512 - 1, `PTEs hinted: ${stats.ptesUpdated}`);
});

// ---- migration entries (issue 14 item 1) ----------------------------------------------------

/** A classic subscriber whose CLEAR callbacks sleep 1 ms at `phase`: the migration pauses there. */
function* slowClears(k: Kernel, mm: MmStruct, phase: 'start' | 'end'): Co<void> {
  const nap = function* (range: MmuNotifierRange): Co<void> {
    if (range.event === MmuNotifyEvent.CLEAR) yield* k.sim.sleep(1_000_000);
  };
  const sub = new MmuNotifier(`slow-${phase}`, phase === 'start'
    ? { *invalidateRangeStart(_s, range) { yield* nap(range); return 0; } }
    : { *invalidateRangeEnd(_s, range) { yield* nap(range); } });
  t0(yield* mmuNotifierRegister(sub, mm));
}
function t0(ret: number): void {
  if (ret !== 0) throw new Error(`mmu_notifier_register: ${ret}`);
}

test('rule 73 (mm/rmap.c try_to_migrate_one, mm/migrate.c migration_entry_wait): a second mapping reading the page mid-migration waits on its migration entry and reads the bytes, not zeros', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x71, 16)), 'store');
    const child = yield* p.fork();
    if (typeof child === 'number') throw new Error(`fork: ${child}`);
    const f = frameAt(p.mm, a);
    // The parent's mapping is unmapped first; the child's CLEAR then sleeps, so the parent
    // reads while its PTE is a migration entry.
    yield* slowClears(k, child.mm, 'start');
    let got: Uint8Array | number = -1;
    let readAt = 0;
    const reader = p.spawnThread('reader', function* () {
      yield* k.sim.sleep(500_000);
      got = yield* p.load(a, 16);
      readAt = k.sim.now();
    });
    t.is(yield* migratePage(k, f, 'compaction'), 0);
    const doneAt = k.sim.now();
    while (!reader.done) yield* k.sim.sleep(100_000);
    t.deepEqual(bytes(got, 'reader load'), fill(0x71, 16), 'the bytes, not the zero page');
    t.true(readAt >= doneAt, 'the read finished only once the migration had');
    const nf = frameAt(p.mm, a);
    t.not(nf, f);
    t.not(nf, ZERO_PFN);
    t.is(frameAt(child.mm, a), nf, 'both mappings restored to the new folio');
    t.is(k.phys.mapcount[nf], 2);
  });
  t.true(trace.of('fault').some((e) => e.kind === 'migration-wait' && e.mm === p.mm.id), 'the fault went through migration_entry_wait');
});

test('rule 73 (mm/migrate.c remove_migration_ptes, mm/memory.c zap_nonpresent_ptes): a migration racing mmap(MAP_FIXED) over the page restores nothing over the new VMA, and the CPU store to it survives', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x71, 16)), 'store');
    const f = frameAt(p.mm, a);
    // The CLEAR's end sleeps: the migration entry is in place meanwhile.
    yield* slowClears(k, p.mm, 'end');
    let storedFrame = -1;
    const racer = p.spawnThread('racer', function* () {
      yield* k.sim.sleep(300_000);
      ok(yield* p.mmap(a, P, RW, ANON | MAP_FIXED), 'mmap MAP_FIXED');
      ok(yield* p.store(a, fill(0x99, 16)), 'store to the new VMA');
      storedFrame = frameAt(p.mm, a);
      storedAt = k.sim.now();
    });
    let storedAt = Infinity;
    const span = `${hex(a)}-${hex(a + P)}`;
    events.length = 0;
    const ret = yield* migratePage(k, f, 'compaction');
    const doneAt = k.sim.now();
    while (!racer.done) yield* k.sim.sleep(100_000);
    t.is(ret, 0);
    t.true(storedAt < doneAt, 'the MAP_FIXED and the store ran while the migration was in flight');
    t.deepEqual(lines(events, p.mm).slice(0, 3), ['start CLEAR ' + span, 'end CLEAR ' + span, 'start UNMAP ' + span]);
    t.is(frameAt(p.mm, a), storedFrame, 'the new VMA keeps its own page');
    t.deepEqual(bytes(yield* p.load(a, 16), 'load'), fill(0x99, 16), 'the CPU store is not lost');
    t.false(k.phys.isAllocated(f), 'the old folio is freed');
    t.deepEqual(k.phys.mappingsOf(storedFrame).map((m) => m.addr), [a], 'rmap: one mapping of the new page');
  });
});

test('rule 47 (mm/hmm.c hmm_vma_handle_pte): hmm_range_fault reports a page under migration without VALID unless it needs a fault; then it waits (migration_entry_wait) and restarts', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x5a, 2 * P)), 'store');
    // The interval covers only the second page, so the migration of the first does not
    // collide with its sequence and the walk itself is observed.
    const sub = new MmuIntervalNotifier('hmm');
    t0(yield* mmuIntervalNotifierInsert(sub, p.mm, a + P, P, { invalidate: (s, _r, seq) => { mmuIntervalSetSeq(s, seq); return true; } }));
    yield* slowClears(k, p.mm, 'end');
    const f = frameAt(p.mm, a);
    let migrated = -1;
    let doneAt = Infinity;
    p.spawnThread('migrate', function* () {
      migrated = yield* migratePage(k, f, 'compaction');
      doneAt = k.sim.now();
    });
    yield* k.sim.sleep(300_000);
    const snap = hmmRangeInit(sub, a, a + 2 * P, yield* mmuIntervalReadBegin(sub), 0);
    yield* p.mm.mmapLock.downRead();
    t.is(yield* hmmRangeFault(snap), 0);
    p.mm.mmapLock.upRead();
    t.true(k.sim.now() < doneAt, 'no wait without a fault request');
    t.is(snap.flags[0], 0, 'under migration: not VALID');
    t.is(snap.flags[1], HMM_PFN_VALID | HMM_PFN_WRITE);
    const req = hmmRangeInit(sub, a, a + 2 * P, yield* mmuIntervalReadBegin(sub), HMM_PFN_REQ_FAULT);
    yield* p.mm.mmapLock.downRead();
    t.is(yield* hmmRangeFault(req), 0);
    p.mm.mmapLock.upRead();
    t.true(k.sim.now() >= doneAt, 'the walk waited for the migration to end');
    t.is(migrated, 0);
    const nf = frameAt(p.mm, a);
    t.not(nf, f);
    t.is(req.pfns[0], nf, 'the new folio, not a fresh page faulted in over the entry');
    t.is(req.flags[0], HMM_PFN_VALID | HMM_PFN_WRITE);
    t.deepEqual(k.dmaBus.read(req.pfns[0]!, 0, 4), fill(0x5a, 4));
  });
});

test('rule 73 (mm/migrate.c migration_entry_wait): GUP on a page under migration waits and pins the new folio, not a fresh one', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x3e, 8)), 'store');
    yield* slowClears(k, p.mm, 'end');
    const f = frameAt(p.mm, a);
    p.spawnThread('migrate', () => migratePage(k, f, 'compaction'));
    yield* k.sim.sleep(300_000);
    const got: number[] = [];
    t.is(yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE, got), 1);
    t.is(got[0], frameAt(p.mm, a));
    t.not(got[0], f);
    t.deepEqual(k.dmaBus.read(got[0]!, 0, 8), fill(0x3e, 8));
    putUserPages(k, got);
  });
});

test('migration entries: the profile names the unmap step (try_to_migrate_one since 5.14, try_to_unmap_one with TTU_MIGRATION before)', (t) => {
  t.is(migrationUnmapFunction(PROFILES['linux-6.x'].release), 'try_to_migrate_one');
  t.is(migrationUnmapFunction('5.14'), 'try_to_migrate_one');
  t.is(migrationUnmapFunction('5.13'), 'try_to_unmap_one(TTU_MIGRATION)');
  t.is(migrationUnmapFunction(PROFILES['linux-5.8'].release), 'try_to_unmap_one(TTU_MIGRATION)');
});
