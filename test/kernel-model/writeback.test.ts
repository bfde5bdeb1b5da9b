/**
 * Writeback of pinned file pages (kernel rules 58, 63, 76, hazard H7, and the 2018
 * "dirty page without buffers" story of the history appendix, item 2).
 */
import test from 'ava';
import {
  EFAULT, EINVAL, MAP_SHARED, PG_DIRTY, PG_PRIVATE, PTE_DIRTY, PTE_WRITE, pteHas, vpn,
} from '../../kernel-model/index.ts';
import {
  FOLL_LONGTERM, FOLL_WRITE, getUserPagesFast, pinUserPagesFast, putUserPagesDirty, unpinUserPagesDirtyLock,
} from '../../kernel-model/gup.ts';
import { writebackFile, writebackPage } from '../../kernel-model/filemap.ts';
import { startFlusher } from '../../kernel-model/writeback.ts';
import { P, fill, frameAt, lines, ok, pair, runMain } from './_helpers.ts';
import { RW, rigOn, traceOf } from './_pin-helpers.ts';

test('history 2018 (H7, linux-4.18): a long-term GUP of a shared file page, writeback cleans it and drops its buffers, DMA writes, put with dirty: dirty-without-buffers, and the disk lacks the DMA data until a later writeback', (t) => {
  const r = rigOn('linux-4.18');
  const { k, p, events } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P, fill(0x11, P));
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    const f = pages[0]!;
    t.is(f, file.pageCache.get(0)!);
    t.true(k.phys.has(f, PG_DIRTY) && k.phys.has(f, PG_PRIVATE), 'write-faulted: dirty, buffers attached');
    events.length = 0;
    t.true(yield* writebackPage(k, file, 0, true));
    t.deepEqual(lines(events, p.mm), pair('PROTECTION_PAGE', a, a + P), 'folio_mkclean, regardless of the GUP reference');
    t.false(k.phys.has(f, PG_DIRTY), 'clean');
    t.false(k.phys.has(f, PG_PRIVATE), 'buffers dropped');
    t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'the CPU mapping is write-protected');
    k.dmaBus.write(f, 0, fill(0xdd, 8));
    t.deepEqual(file.diskPage(0).subarray(0, 8), fill(0x11, 8));
    t.is(trace.of('dirty-without-buffers').length, 0);
    putUserPagesDirty(k, pages, true);
    const crash = trace.of('dirty-without-buffers');
    t.is(crash.length, 1, 'set_page_dirty on a page the filesystem no longer tracks');
    t.is(crash[0]!.frame, f);
    t.is(crash[0]!.caller, 'set_page_dirty_lock');
    t.deepEqual(file.diskPage(0).subarray(0, 8), fill(0x11, 8), 'the DMA data is not on disk');
    t.is(yield* writebackFile(k, file), 1, 'a later writeback');
    t.deepEqual(file.diskPage(0).subarray(0, 8), fill(0xdd, 8), 'now it is');
    t.is(k.phys.refcount[f], 2, 'page cache + mapping: the GUP reference is gone');
  });
});

test('history 2018 (H7, linux-4.18): the same story with the writeback flusher (dropBuffers) cleaning the page behind the device', (t) => {
  const r = rigOn('linux-4.18');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P, fill(0x11, P));
  const flusher = startFlusher(k, { periodNs: 1_000_000, dropBuffers: true });
  const diskAt: Record<string, Uint8Array> = {};
  const main = p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    const f = pages[0]!;
    yield* k.sim.sleep(1_500_000); // the flusher ran at 1 ms
    t.false(k.phys.has(f, PG_DIRTY));
    t.false(k.phys.has(f, PG_PRIVATE));
    k.dmaBus.write(f, 0, fill(0xdd, 8));
    putUserPagesDirty(k, pages, true);
    diskAt.afterPut = file.diskPage(0).subarray(0, 8);
    yield* k.sim.sleep(1_000_000); // the flusher runs again at 2 ms
    diskAt.later = file.diskPage(0).subarray(0, 8);
  });
  const out = k.sim.run({ untilNs: 3_000_000 });
  t.not(out.reason, 'failed', out.failure);
  t.true(main.done);
  t.true(flusher.rounds >= 2);
  t.is(trace.of('dirty-without-buffers').length, 1);
  t.deepEqual(diskAt.afterPut, fill(0x11, 8), 'lost until the next writeback');
  t.deepEqual(diskAt.later, fill(0xdd, 8), 'written by the next flusher round');
});

test('rule 58 (H7, linux-6.x): the same writable long-term pin of a shared file page is refused with -EFAULT (get_user_pages with FOLL_LONGTERM is -EINVAL)', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const file = k.createFile('data', P);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), -EFAULT);
    t.is(yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), -EINVAL);
    t.deepEqual(pages, []);
  });
});

test('rules 63, 76 (H7, linux-6.x): a short-term write pin (O_DIRECT) is still exposed: writeback cleans the pinned page, a DMA store lands in a clean page, only the redirty at unpin saves it', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P, fill(0x11, P));
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, pages), 1);
    const f = pages[0]!;
    t.true(k.phys.maybeDmaPinned(f));
    events.length = 0;
    t.is(yield* writebackFile(k, file), 1, 'writeback does not skip a pinned page (rule 76)');
    t.deepEqual(lines(events, p.mm), pair('PROTECTION_PAGE', a, a + P));
    t.false(k.phys.has(f, PG_DIRTY));
    const pte = p.mm.pageTable.get(vpn(a));
    t.false(pteHas(pte, PTE_WRITE) || pteHas(pte, PTE_DIRTY));
    k.dmaBus.write(f, 0, fill(0xdd, 8));
    t.false(k.phys.has(f, PG_DIRTY), 'a device write to a clean page: nothing records it');
    t.is(yield* writebackFile(k, file), 0, 'so a writeback now writes nothing');
    t.deepEqual(file.diskPage(0).subarray(0, 8), fill(0x11, 8));
    unpinUserPagesDirtyLock(k, pages, true);
    t.true(k.phys.has(f, PG_DIRTY));
    t.is(yield* writebackFile(k, file), 1);
    t.deepEqual(file.diskPage(0).subarray(0, 8), fill(0xdd, 8));
  });
  t.is(trace.of('dirty-without-buffers').length, 0, 'buffers kept: redirtying is safe here');
});

test('H7 (linux-6.x): a short-term pin is still exposed to the 2018 crash when the filesystem drops the buffers of the cleaned page', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, pages), 1);
    t.true(yield* writebackPage(k, file, 0, true));
    k.dmaBus.write(pages[0]!, 0, fill(0xdd, 8));
    unpinUserPagesDirtyLock(k, pages, true);
    t.is(frameAt(p.mm, a), pages[0]!);
  });
  const crash = trace.of('dirty-without-buffers');
  t.is(crash.length, 1);
  t.is(crash[0]!.caller, 'unpin_user_pages_dirty_lock');
});

test('rule 76: a write through the CPU after writeback write-faults again (page_mkwrite), dirtying the page with its buffers', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const f = frameAt(p.mm, a);
    t.true(yield* writebackPage(k, file, 0, true));
    t.false(k.phys.has(f, PG_PRIVATE));
    ok(yield* p.store(a, fill(2, 8)), 'store again');
    t.true(k.phys.has(f, PG_DIRTY) && k.phys.has(f, PG_PRIVATE));
    t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE));
    yield* writebackFile(k, file);
    t.deepEqual(file.diskPage(0).subarray(0, 8), fill(2, 8));
  });
  t.is(trace.of('dirty-without-buffers').length, 0, 'the notifier-free CPU path is safe: it refaults');
});
