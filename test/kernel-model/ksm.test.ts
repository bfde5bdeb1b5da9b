/**
 * KSM (issue 14 item 9; kernel rules 21g, 75): ksmd merges identical anonymous pages of
 * MADV_MERGEABLE VMAs, write-protecting then replacing each with one-page CLEARs.
 * [read] torvalds/linux mm/ksm.c (write_protect_page: MMU_NOTIFY_CLEAR over the page before
 * any check; replace_page: MMU_NOTIFY_CLEAR; try_to_merge_two_pages; cmp_and_merge_page's
 * checksum test; break_ksm).
 */
import test from 'ava';
import {
  FOLL_GET, FOLL_LONGTERM, FOLL_WRITE, Kernel, MADV_MERGEABLE, MmuIntervalNotifier, PG_LAZYFREE, TASK_SIZE, mmuIntervalNotifierInsert, mmuIntervalSetSeq, MADV_PAGEOUT, PG_ANON_EXCLUSIVE, MADV_UNMERGEABLE, PG_KSM, PTE_WRITE, getUserPages, ksmDoScan,
  ksmStats, pinUserPagesFast, pteHas, putUserPages, startKsmd, unpinUserPages, vpn, newReclaimStats, shrinkPage, PG_SWAPCACHE, type Process,
} from '../../kernel-model/index.ts';
import { P, bytes, fill, frameAt, lines, ok, pair, rig, runMain } from './_helpers.ts';
import { ANON, RW } from './_pin-helpers.ts';

/** Two pages with the same contents at a and a + P, the rest different. */
function* twoTwins(p: Process): Generator<unknown, number, unknown> {
  const a = ok(yield* p.mmap(0, 4 * P, RW, ANON), 'mmap');
  ok(yield* p.store(a, fill(0x5a, 100)), 'store');
  ok(yield* p.store(a + P, fill(0x5a, 100)), 'store');
  ok(yield* p.store(a + 2 * P, fill(0x11, 100)), 'store');
  return a;
}

test('mm/ksm.c (rule 21g): two identical pages merge into one read-only KSM page; CLEAR for the first write_protect_page, then CLEAR write-protect and CLEAR replace of the second', (t) => {
  const r = rig();
  const { k, p, events } = r;
  runMain(t, r, function* () {
    const a = yield* twoTwins(p);
    ok(yield* p.madvise(a, 4 * P, MADV_MERGEABLE), 'madvise');
    yield* ksmDoScan(k, 100); // first sight: checksums only (cmp_and_merge_page)
    t.deepEqual(lines(events, p.mm), [], 'nothing merged on the first scan');
    t.not(frameAt(p.mm, a), frameAt(p.mm, a + P));
    yield* ksmDoScan(k, 100);
    const kframe = frameAt(p.mm, a + P);
    t.is(frameAt(p.mm, a), kframe, 'both addresses map one page');
    t.true(k.phys.has(kframe, PG_KSM));
    t.is(k.phys.mapcount[kframe], 2);
    t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE));
    t.false(pteHas(p.mm.pageTable.get(vpn(a + P)), PTE_WRITE));
    t.not(frameAt(p.mm, a + 2 * P), kframe);
    t.deepEqual(lines(events, p.mm), [...pair('CLEAR', a + P, a + 2 * P), ...pair('CLEAR', a, a + P), ...pair('CLEAR', a, a + P)]);
    t.deepEqual(bytes(yield* p.load(a, 100), 'load'), fill(0x5a, 100));
  });
  t.is(ksmStats(k).merged, 1);
  t.is(ksmStats(k).ksmPages, 1);
});

test('mm/ksm.c + do_wp_page: a write to a KSM page copies it (one-page CLEAR), the other mapping keeps the KSM page and its contents', (t) => {
  const r = rig();
  const { k, p, events } = r;
  runMain(t, r, function* () {
    const a = yield* twoTwins(p);
    ok(yield* p.madvise(a, 4 * P, MADV_MERGEABLE), 'madvise');
    yield* ksmDoScan(k, 100);
    yield* ksmDoScan(k, 100);
    const kframe = frameAt(p.mm, a);
    events.length = 0;
    ok(yield* p.store(a, fill(0x77, 4)), 'store');
    t.not(frameAt(p.mm, a), kframe);
    t.is(frameAt(p.mm, a + P), kframe);
    t.is(k.phys.mapcount[kframe], 1);
    t.deepEqual(lines(events, p.mm), pair('CLEAR', a, a + P));
    // The last mapping of a KSM page is still not reused in place.
    events.length = 0;
    ok(yield* p.store(a + P, fill(0x78, 4)), 'store');
    t.not(frameAt(p.mm, a + P), kframe);
    t.deepEqual(lines(events, p.mm), pair('CLEAR', a + P, a + 2 * P));
    const got = bytes(yield* p.load(a + P, 100), 'load');
    t.deepEqual(got.subarray(0, 4), fill(0x78, 4));
    t.deepEqual(got.subarray(4), fill(0x5a, 96));
  });
});

test('rule 75: a pinned exclusive page is not merged (write_protect_page restores it after its CLEAR), nor a page with an extra FOLL_GET reference', (t) => {
  for (const how of ['pin', 'get'] as const) {
    const r = rig();
    const { k, p, events } = r;
    runMain(t, r, function* () {
      const a = yield* twoTwins(p);
      const refs: number[] = [];
      if (how === 'pin') t.is(yield* pinUserPagesFast(p.mm, a + P, 1, FOLL_WRITE | FOLL_LONGTERM, refs), 1);
      else {
        yield* p.mm.mmapLock.downRead();
        t.is(yield* getUserPages(p.mm, a + P, 1, FOLL_GET, refs), 1);
        p.mm.mmapLock.upRead();
      }
      ok(yield* p.madvise(a, 4 * P, MADV_MERGEABLE), 'madvise');
      yield* ksmDoScan(k, 100);
      yield* ksmDoScan(k, 100);
      t.not(frameAt(p.mm, a), frameAt(p.mm, a + P), `${how}: not merged`);
      t.true(pteHas(p.mm.pageTable.get(vpn(a + P)), PTE_WRITE), `${how}: the held page keeps its writable PTE`);
      t.true(ksmStats(k).wpFailed > 0);
      // The abandoned write-protect still sent its pair (the address was known).
      t.true(lines(events, p.mm).join('|').includes(pair('CLEAR', a + P, a + 2 * P).join('|')));
      if (how === 'pin') unpinUserPages(k, refs);
      else putUserPages(k, refs);
    });
  }
});

test('rule 75 (corrected): a read-only, clean, shared page skips the reference check, so a FOLL_GET reference on it does not stop the merge', (t) => {
  const r = rig();
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = yield* twoTwins(p);
    const child = yield* p.fork('child');
    t.true(typeof child !== 'number');
    // Swapped out from both mms by global reclaim (MADV_PAGEOUT leaves a page the child
    // also maps alone) and read back by the parent: each page is shared through its swap
    // slot, so swap-in maps it read-only, clean and not exclusive.
    for (const f of [frameAt(p.mm, a), frameAt(p.mm, a + P)]) t.is(yield* shrinkPage(k, f, newReclaimStats(), true), 'freed');
    bytes(yield* p.load(a, 8), 'load');
    bytes(yield* p.load(a + P, 8), 'load');
    t.false(k.phys.has(frameAt(p.mm, a + P), PG_ANON_EXCLUSIVE));
    const refs: number[] = [];
    yield* p.mm.mmapLock.downRead();
    t.is(yield* getUserPages(p.mm, a + P, 1, FOLL_GET, refs), 1);
    p.mm.mmapLock.upRead();
    ok(yield* p.madvise(a, 4 * P, MADV_MERGEABLE), 'madvise');
    yield* ksmDoScan(k, 100);
    yield* ksmDoScan(k, 100);
    t.is(frameAt(p.mm, a), frameAt(p.mm, a + P), 'merged despite the FOLL_GET reference');
    t.is(ksmStats(k).wpFailed, 0);
    putUserPages(k, refs);
  });
});

test('mm/ksm.c ksm_scan_thread: ksmd scans pages_to_scan pages every sleep_millisecs; MADV_UNMERGEABLE breaks the KSM page out again (break_ksm: an unshare CLEAR)', (t) => {
  const k = new Kernel({ seed: 1 });
  const p = k.createProcess('app');
  const events: string[] = [];
  k.notifier$.subscribe((e) => { if (e.phase === 'start') events.push(`${e.range.start}`); });
  const stats = startKsmd(k, { sleepNs: 1_000_000, pagesToScan: 2 });
  let a = 0;
  let mergedAt = -1;
  const main = p.spawnThread('main', function* () {
    a = yield* twoTwins(p);
    ok(yield* p.madvise(a, 4 * P, MADV_MERGEABLE), 'madvise');
    while (frameAt(p.mm, a) !== frameAt(p.mm, a + P)) yield* k.sim.sleep(500_000);
    mergedAt = k.sim.now();
    events.length = 0;
    ok(yield* p.madvise(a, 4 * P, MADV_UNMERGEABLE), 'unmerge');
    t.not(frameAt(p.mm, a), frameAt(p.mm, a + P));
    t.false(k.phys.has(frameAt(p.mm, a), PG_KSM));
    t.false(k.phys.has(frameAt(p.mm, a + P), PG_KSM));
  });
  k.sim.run({ task: main, untilNs: 100_000_000 });
  t.true(main.done);
  // 3 pages, 2 a wake-up: two full scans need three wake-ups, 1 ms apart.
  t.true(mergedAt >= 2_000_000, `merged at ${mergedAt}`);
  t.is(stats.merged, 1);
  t.deepEqual(events, [String(a), String(a + P)], 'one CLEAR per KSM mapping broken out');
});

test('mm/memory.c do_swap_page (folio_test_ksm, ksm_might_need_to_copy) + do_wp_page: a write that swaps a KSM page back in from the swap cache, the slot no longer shared but the page still mapped elsewhere, copies it; the other mapping keeps its bytes (lost-write found by the issue-14 fuzz campaign, odp seed 14103)', (t) => {
  const r = rig();
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = yield* twoTwins(p);
    ok(yield* p.madvise(a, 4 * P, MADV_MERGEABLE), 'madvise');
    yield* ksmDoScan(k, 100);
    yield* ksmDoScan(k, 100);
    const kframe = frameAt(p.mm, a);
    t.is(frameAt(p.mm, a + P), kframe);
    // Reclaim unmaps both mappings to one swap slot; a transient extra reference keeps the
    // page in the swap cache (__remove_mapping's refcount check fails).
    k.phys.get(kframe);
    t.is(yield* shrinkPage(k, kframe, newReclaimStats(), true), 'busy');
    k.phys.put(kframe);
    t.is(frameAt(p.mm, a), -1, 'swapped out');
    t.true(k.phys.has(kframe, PG_SWAPCACHE), 'still in the swap cache');
    // A read brings the KSM page back at a + P: the slot now has one user left, but the page
    // is mapped there.
    t.deepEqual(bytes(yield* p.load(a + P, 100), 'load'), fill(0x5a, 100));
    t.is(frameAt(p.mm, a + P), kframe);
    ok(yield* p.store(a, fill(0x77, 4)), 'store');
    t.not(frameAt(p.mm, a), kframe, 'the write got its own copy (do_wp_page never reuses a KSM page)');
    t.deepEqual(bytes(yield* p.load(a, 8), 'load'), new Uint8Array([0x77, 0x77, 0x77, 0x77, 0x5a, 0x5a, 0x5a, 0x5a]));
    t.deepEqual(bytes(yield* p.load(a + P, 100), 'load'), fill(0x5a, 100), 'the other mapping keeps its bytes');
  });
});

test('mm/madvise.c madvise_cold_or_pageout_pte_range: MADV_PAGEOUT leaves a KSM page another process maps alone, so a lazyfree mark by one sharer cannot discard the other\'s data (fuzz 22102)', (t) => {
  const r = rig();
  const { k, p } = r;
  const q = k.createProcess('other');
  runMain(t, r, function* () {
    // The same bytes at the same address in two processes: ksmd merges them across mms.
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* q.mmap(a, 2 * P, RW, ANON | 0x10 /* MAP_FIXED */), 'mmap');
    for (const x of [p, q]) ok(yield* x.store(a, fill(0x11, 64)), 'store');
    for (const x of [p, q]) ok(yield* x.madvise(a, 2 * P, MADV_MERGEABLE), 'madvise');
    yield* ksmDoScan(k, 100);
    yield* ksmDoScan(k, 100);
    const kframe = frameAt(p.mm, a);
    t.is(frameAt(q.mm, a), kframe, 'merged across the two mms');
    t.is(k.phys.mapcount[kframe], 2);
    ok(yield* p.madvise(a, P, 8 /* MADV_FREE */), 'free');
    ok(yield* p.madvise(a, P, MADV_PAGEOUT), 'pageout');
    t.is(frameAt(q.mm, a), kframe, 'still mapped in the other process');
    t.true(k.phys.isAllocated(kframe));
    t.deepEqual(bytes(yield* q.load(a, 64), 'load'), fill(0x11, 64), 'the other process keeps its bytes');
  });
});

test('mm/ksm.c try_to_merge_two_pages vs mm/madvise.c madvise_free_pte_range (a kernel race the model keeps): MADV_FREE by the first sharer after its page became the stable KSM page, before replace_page maps it into the second mm (whose notifier sleeps in write_protect_page), lazyfrees it; reclaim then discards it from both, and the second process reads zeros (fuzz holdoff 22202)', (t) => {
  const r = rig();
  const { k, p } = r;
  const q = k.createProcess('other');
  const guards: string[] = [];
  k.sim.trace$.subscribe((rec) => {
    if (rec.type === 'race-guard' && rec.what === 'lazyfree-ksm-discard') guards.push(`mm${rec.mm}`);
  });
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* q.mmap(a, P, RW, ANON | 0x10 /* MAP_FIXED */), 'mmap');
    for (const x of [p, q]) ok(yield* x.store(a, fill(0x11, 64)), 'store');
    for (const x of [p, q]) ok(yield* x.madvise(a, P, MADV_MERGEABLE), 'madvise');
    // A driver on each mm whose invalidation sleeps (a holdoff device waiting for DMA):
    // ksmd's write_protect_page of the second page waits in it.
    for (const x of [p, q]) {
      ok(yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier(`slow-${x.name}`), x.mm, 0, TASK_SIZE, {
        *invalidate(s, _range, seq) {
          mmuIntervalSetSeq(s, seq);
          yield* k.sim.sleep(50_000);
          return true;
        },
      }), 'insert');
    }
    const ksmd = k.sim.spawn('ksmd', function* () {
      yield* ksmDoScan(k, 100);
      yield* ksmDoScan(k, 100);
    }, { kind: 'kthread' });
    // Wait for the window: one process's page is the stable KSM page, the other's not yet replaced.
    let first: Process | null = null;
    while (!first && !ksmd.done) {
      yield* k.sim.sleep(1_000);
      for (const [x, y] of [[p, q], [q, p]] as const) {
        const f = frameAt(x.mm, a);
        if (f >= 0 && k.phys.has(f, PG_KSM) && frameAt(y.mm, a) !== f) first = x;
      }
    }
    if (!first) return t.fail('no merge window seen');
    const second = first === p ? q : p;
    ok(yield* first.madvise(a, P, 8 /* MADV_FREE */), 'MADV_FREE by the first sharer');
    yield* k.sim.join(ksmd);
    const kframe = frameAt(first.mm, a);
    t.is(frameAt(second.mm, a), kframe, 'replace_page mapped the stable page into the second mm');
    t.is(k.phys.mapcount[kframe], 2);
    t.true(k.phys.has(kframe, PG_LAZYFREE), 'lazyfree: madvise_free_pte_range saw one mapping and did not exclude a KSM folio');
    // Global reclaim: the first pass finds the PTEs young, the second discards.
    for (let i = 0; i < 2 && k.phys.isAllocated(kframe); i++) yield* shrinkPage(k, kframe, newReclaimStats());
    t.deepEqual(bytes(yield* second.load(a, 8), 'load'), new Uint8Array(8), 'the second process, which never freed it, reads zeros');
    t.deepEqual(guards.sort(), [`mm${p.mm.id}`, `mm${q.mm.id}`].sort(), 'a lazyfree-ksm-discard record per mapping');
  });
});
