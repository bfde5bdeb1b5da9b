/**
 * Reclaim and swap (kernel rules 37, 71, 72, hazard H7's reclaim side): pages aged by
 * accessed bits and young callbacks, maybe-pinned pages kept, anonymous pages swapped
 * out and back intact under kswapd.
 */
import test from 'ava';
import {
  ENOMEM, Kernel, MAP_SHARED, MmuNotifier, PG_ACTIVE, PG_DIRTY, PG_PRIVATE, PROFILES, PTE_SWAP,
  mmuNotifierRegister, pteHas, vpn, type Co, type MmStruct,
} from '../../kernel-model/index.ts';
import {
  FOLL_LONGTERM, FOLL_WRITE, getUserPagesFast, pinUserPagesFast, putUserPagesDirty, unpinUserPages,
  unpinUserPagesDirtyLock,
} from '../../kernel-model/gup.ts';
import { newReclaimStats, shrinkPage, startKswapd, type ReclaimOutcome, type ReclaimStats } from '../../kernel-model/vmscan.ts';
import { P, bytes, fill, frameAt, lines, ok, pair, runMain } from './_helpers.ts';
import { ANON, RW, rigOn, traceOf } from './_pin-helpers.ts';

/** Run shrink_folio_list on the page mapped at addr. */
function* shrinkAt(k: Kernel, mm: MmStruct, addr: number, stats: ReclaimStats): Co<ReclaimOutcome> {
  return yield* shrinkPage(k, frameAt(mm, addr), stats);
}

test('rule 37: reclaim evicts a page a device keeps reading through the DmaBus (DMA sets no accessed bit) and keeps one a classic subscriber reports young', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const youngCalls: string[] = [];
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x10, P)), 'store');
    ok(yield* p.store(a + P, fill(0x20, P)), 'store');
    const busy = frameAt(p.mm, a);
    const watched = frameAt(p.mm, a + P);
    // A mirror that tracks device accesses itself and answers the aging callbacks for page 2.
    ok(yield* mmuNotifierRegister(new MmuNotifier('kvm-like', {
      clearFlushYoung: (_s, _mm, start, end) => {
        youngCalls.push(`${(start - a) / P}-${(end - a) / P}`);
        return start <= a + P && a + P < end;
      },
    }), p.mm), 'register');
    const stats = newReclaimStats();
    // First pass: the CPU accessed bits from the stores give both a second chance.
    t.is(yield* shrinkAt(k, p.mm, a, stats), 'young');
    t.is(yield* shrinkAt(k, p.mm, a + P, stats), 'young');
    // The device keeps reading both frames; no CPU touches them.
    for (let i = 0; i < 8; i++) {
      t.deepEqual(k.dmaBus.read(busy, 0, 4), fill(0x10, 4));
      t.deepEqual(k.dmaBus.read(watched, 0, 4), fill(0x20, 4));
    }
    t.is(yield* shrinkAt(k, p.mm, a, stats), 'freed', 'DMA alone does not keep a page young');
    t.is(yield* shrinkAt(k, p.mm, a + P, stats), 'young', 'the subscriber said young');
    t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_SWAP), 'swapped out');
    t.false(k.phys.isAllocated(busy), 'the frame the device was reading is free');
    t.is(frameAt(p.mm, a + P), watched);
    t.is(stats.swappedOut, 1);
    t.is(stats.keptYoung, 3);
    // The process gets its data back from swap in a new frame.
    t.deepEqual(bytes(yield* p.load(a, 4), 'load'), fill(0x10, 4));
  });
  t.deepEqual(youngCalls, ['0-1', '1-2', '0-1', '1-2'], 'one clear_flush_young per mapping, over that page');
});

test('rule 72: a maybe-pinned anonymous page is not swapped out: no unmap, no notification', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x30, 16)), 'store');
    const f = frameAt(p.mm, a);
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    const stats = newReclaimStats();
    events.length = 0;
    t.is(yield* shrinkAt(k, p.mm, a, stats), 'young');
    t.is(yield* shrinkAt(k, p.mm, a, stats), 'pinned');
    t.is(yield* shrinkAt(k, p.mm, a, stats), 'pinned');
    t.deepEqual(lines(events, p.mm), [], 'not unmapped');
    t.is(frameAt(p.mm, a), f);
    t.is(k.swap.used, 0, 'no swap slot taken');
    t.is(stats.keptPinned, 2);
    unpinUserPages(k, pages);
    t.is(yield* shrinkAt(k, p.mm, a, stats), 'freed', 'unpinned: it can go');
  });
});

test('rule 72: a maybe-pinned file page is unmapped (CLEAR) but kept in the page cache, on the active list, buffers intact; the process refaults the same page', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  const file = k.createFile('data', P, fill(0x44, P));
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_LONGTERM, pages), 1);
    const f = pages[0]!;
    t.is(f, file.pageCache.get(0)!);
    k.phys.set(f, PG_PRIVATE);
    const stats = newReclaimStats();
    t.is(yield* shrinkAt(k, p.mm, a, stats), 'young');
    events.length = 0;
    t.is(yield* shrinkPage(k, f, stats), 'pinned');
    t.deepEqual(lines(events, p.mm), pair('CLEAR', a, a + P), 'try_to_unmap ran before the pin check');
    t.is(frameAt(p.mm, a), -1, 'unmapped');
    t.is(file.pageCache.get(0), f, 'still in the page cache');
    t.true(k.phys.isAllocated(f));
    t.true(k.phys.has(f, PG_ACTIVE));
    t.true(k.phys.has(f, PG_PRIVATE), 'the filesystem keeps its buffers');
    t.deepEqual(bytes(yield* p.load(a, 4), 'load'), fill(0x44, 4));
    t.is(frameAt(p.mm, a), f, 'refaulted from the page cache');
    unpinUserPages(k, pages);
  });
});

test('history 2018 (H7, linux-4.18): reclaim unmaps a GUP-referenced file page and drops its buffers; the later put with dirty hits a page without buffers', (t) => {
  const r = rigOn('linux-4.18');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    const f = pages[0]!;
    const stats = newReclaimStats();
    const seen: ReclaimOutcome[] = [];
    for (let i = 0; i < 3; i++) seen.push(yield* shrinkPage(k, f, stats));
    t.deepEqual(seen, ['young', 'writeback', 'busy'], 'aged, written back, then unmapped but still referenced');
    t.is(frameAt(p.mm, a), -1);
    t.false(k.phys.has(f, PG_PRIVATE), 'buffers released');
    t.false(k.phys.has(f, PG_DIRTY));
    k.dmaBus.write(f, 0, fill(0xdd, 8));
    putUserPagesDirty(k, pages, true);
  });
  t.is(trace.of('dirty-without-buffers').length, 1);
});

test('rule 72 (H7, linux-6.x; mm/vmscan.c shrink_folio_list, d824ec2a1546 in 6.4): with a pin instead, reclaim unmaps the page but keeps it and its buffers before any pageout, and the unpin redirties it safely', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, pages), 1);
    const f = pages[0]!;
    const stats = newReclaimStats();
    const seen: ReclaimOutcome[] = [];
    for (let i = 0; i < 3; i++) seen.push(yield* shrinkPage(k, f, stats));
    t.deepEqual(seen, ['young', 'pinned', 'pinned'], 'folio_maybe_dma_pinned is checked after try_to_unmap, before pageout');
    t.true(k.phys.has(f, PG_PRIVATE));
    t.true(k.phys.has(f, PG_DIRTY), 'never written back while pinned');
    k.dmaBus.write(f, 0, fill(0xdd, 8));
    unpinUserPagesDirtyLock(k, pages, true);
    t.true(k.phys.has(f, PG_DIRTY));
  });
  t.is(trace.of('dirty-without-buffers').length, 0);
});

test('seed 004 (linux-3.0): reclaim unmaps an anonymous page a driver holds with get_user_pages (invalidate_page after the PTE is gone); it stays in the swap cache and the refault maps the same physical page', (t) => {
  const r = rigOn('linux-3.0');
  const { k, p } = r;
  const heard: string[] = [];
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x10, 16)), 'store');
    const refs: number[] = [];
    t.is(yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE, refs), 1);
    const f = refs[0]!;
    ok(yield* mmuNotifierRegister(new MmuNotifier('ib', {
      invalidatePage: (_s, mm, addr) => { heard.push(`invalidate_page ${addr === a ? 'buf' : '?'} pte ${frameAt(mm, addr) === f ? 'still there' : 'gone'}`); },
    }), p.mm), 'register');
    const stats = newReclaimStats();
    t.is(yield* shrinkPage(k, f, stats), 'young');
    t.is(yield* shrinkPage(k, f, stats), 'busy', 'unmapped, but the extra reference keeps it');
    t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_SWAP));
    t.true(k.phys.isAllocated(f));
    // The driver keeps writing the page it holds ("SetPageDirty before put_page").
    k.dmaBus.write(f, 0, fill(0xdd, 4));
    t.deepEqual(bytes(yield* p.load(a, 8), 'load'), new Uint8Array([0xdd, 0xdd, 0xdd, 0xdd, 0x10, 0x10, 0x10, 0x10]));
    t.is(frameAt(p.mm, a), f, 'filled back from the same physical page');
    t.is(k.swap.used, 0, 'the slot is gone with its last user');
    putUserPagesDirty(k, refs, true);
    t.is(k.phys.refcount[f], 1);
  });
  t.deepEqual(heard, ['invalidate_page buf pte gone']);
});

test('rules 71, 72: under memory pressure kswapd swaps anonymous pages out and back with their contents intact, and leaves a pinned page alone', (t) => {
  const k = new Kernel({ seed: 3, profile: PROFILES['linux-6.x'], frames: 64 });
  const p = k.createProcess('app');
  const trace = traceOf(k);
  const stats = startKswapd(k, { lowWatermark: 12, highWatermark: 24, periodNs: 100_000 });
  const N = 150;
  let pinnedFrame = -1;
  const mismatches: number[] = [];
  const main = p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, N * P, RW, ANON), 'mmap');
    const pins: number[] = [];
    ok(yield* p.store(a, fill(0xee, 64)), 'store');
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pins), 1);
    pinnedFrame = pins[0]!;
    for (let i = 1; i < N; i++) {
      const data = new Uint8Array(64).fill(i & 0xff);
      data[0] = i >> 8;
      for (;;) {
        const ret = yield* p.store(a + i * P, data);
        if (ret === 0) break;
        t.is(ret, -ENOMEM);
        yield* k.sim.sleep(100_000); // wait for kswapd
      }
      yield* k.sim.sleep(20_000);
    }
    for (let i = 0; i < N; i++) {
      let got: Uint8Array | number;
      for (;;) {
        got = yield* p.load(a + i * P, 64);
        if (got !== -ENOMEM) break;
        yield* k.sim.sleep(100_000);
      }
      const want = i === 0 ? fill(0xee, 64) : new Uint8Array(64).fill(i & 0xff);
      if (i > 0) want[0] = i >> 8;
      if (Buffer.compare(bytes(got, `load page ${i}`), want) !== 0) mismatches.push(i);
      yield* k.sim.sleep(20_000);
    }
    t.is(frameAt(p.mm, a), pinnedFrame, 'the pinned page never left');
    unpinUserPages(k, pins);
  });
  const out = k.sim.run({ task: main, untilNs: 60_000_000_000 });
  t.is(out.reason, 'task-done', out.failure);
  t.deepEqual(mismatches, []);
  t.true(stats.swappedOut > N - 64, `swapped out ${stats.swappedOut}`);
  t.true(stats.keptPinned > 0, 'the pinned page was scanned and kept');
  const swapIns = trace.of('fault').filter((f) => f.kind === 'swap-in');
  t.true(swapIns.length > N - 64, `swapped in ${swapIns.length}`);
  const pinnedOutcomes = trace.of('reclaim').filter((r) => r.frame === pinnedFrame).map((r) => r.outcome);
  t.false(pinnedOutcomes.includes('freed'));
});

test('rule 21e (mm/vmscan.c shrink_folio_list: try_to_unmap, then pageout): reclaim of a dirty shared file page unmaps it with a CLEAR first, then writes it back; the next pass frees it', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  const file = k.createFile('data', P);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    ok(yield* p.store(a, fill(0x5d, 8)), 'store');
    const f = frameAt(p.mm, a);
    t.true(k.phys.has(f, PG_DIRTY));
    const stats = newReclaimStats();
    t.is(yield* shrinkPage(k, f, stats), 'young');
    events.length = 0;
    t.is(yield* shrinkPage(k, f, stats), 'writeback');
    t.deepEqual(lines(events, p.mm), pair('CLEAR', a, a + P), 'try_to_unmap\'s CLEAR, no PROTECTION_PAGE from folio_mkclean');
    t.is(frameAt(p.mm, a), -1, 'unmapped before the write started');
    t.deepEqual(file.disk.get(0)?.subarray(0, 8), fill(0x5d, 8), 'written back');
    t.false(k.phys.has(f, PG_DIRTY));
    t.is(yield* shrinkPage(k, f, stats), 'freed');
    t.is(file.pageCache.get(0), undefined);
    t.deepEqual(bytes(yield* p.load(a, 8), 'load'), fill(0x5d, 8), 'read back from the disk');
  });
});
