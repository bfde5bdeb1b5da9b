/**
 * Files, the page cache and writeback (DESIGN "Kernel model": files with a page cache, a
 * backing disk, writeback, truncate; spec/kernel.md rules 21c, 76): a shared file mapping
 * and read/write go through the same page-cache pages; a private mapping's writes stay
 * private; truncate and hole punch take pages away from every mapping.
 */
import test from 'ava';
import {
  EFAULT, MADV_DONTNEED, MAP_PRIVATE, MAP_SHARED, MS_ASYNC, MS_SYNC, PROT_READ, PROT_WRITE, PG_DIRTY,
  MmuIntervalNotifier, TASK_SIZE, mmuIntervalNotifierInsert, mmuIntervalSetSeq, type File,
} from '../../kernel-model/index.ts';
import { P, bytes, fill, frameAt, ok, rig, runMain } from './_helpers.ts';

const RW = PROT_READ | PROT_WRITE;

function diskBytes(file: File, index: number, off: number, n: number): Uint8Array {
  return file.diskPage(index).slice(off, off + n);
}

test('a store into a MAP_SHARED file mapping reaches the file: pread sees it at once, the disk after fsync', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 4 * P, fill(0x10, 4 * P));
  runMain(t, r, function* () {
    const s = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED, file), 'mmap');
    ok(yield* r.p.store(s + P + 100, fill(0xab, 50)), 'store');
    t.deepEqual(bytes(yield* r.p.pread(file, P + 100, 50), 'pread'), fill(0xab, 50), 'same page-cache page');
    t.deepEqual(diskBytes(file, 1, 100, 50), fill(0x10, 50), 'not on disk yet');
    t.true(r.k.phys.has(file.pageCache.get(1)!, PG_DIRTY), 'the page is dirty');
    t.is(yield* r.p.fsync(file), 0);
    t.deepEqual(diskBytes(file, 1, 100, 50), fill(0xab, 50), 'on disk after fsync');
    t.deepEqual(diskBytes(file, 1, 99, 1), fill(0x10, 1), 'neighbouring bytes untouched');
    t.false(r.k.phys.has(file.pageCache.get(1)!, PG_DIRTY), 'clean after writeback');
  });
});

test('msync(MS_SYNC) writes a shared mapping\'s dirty pages to disk; MS_ASYNC does not wait for it', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 2 * P);
  runMain(t, r, function* () {
    const s = ok(yield* r.p.mmap(0, 2 * P, RW, MAP_SHARED, file), 'mmap');
    ok(yield* r.p.store(s + 5, fill(0x77, 3)), 'store');
    t.is(yield* r.p.msync(s, 2 * P, MS_ASYNC), 0);
    t.false(file.disk.has(0), 'MS_ASYNC: nothing written here');
    t.is(yield* r.p.msync(s, 2 * P, MS_SYNC), 0);
    t.deepEqual(diskBytes(file, 0, 5, 3), fill(0x77, 3));
    ok(yield* r.p.store(s + 5, fill(0x78, 1)), 'store again (write fault after the clean)');
    t.is(yield* r.p.msync(s, P, MS_SYNC), 0);
    t.deepEqual(diskBytes(file, 0, 5, 3), new Uint8Array([0x78, 0x77, 0x77]));
  });
});

test('msync: bad flags or an unaligned address are -EINVAL; an unmapped range is -ENOMEM', (t) => {
  const r = rig();
  const file = r.k.createFile('f', P);
  runMain(t, r, function* () {
    const s = ok(yield* r.p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    t.is(yield* r.p.msync(s + 1, P, MS_SYNC), -22);
    t.is(yield* r.p.msync(s, P, MS_SYNC | MS_ASYNC), -22);
    t.is(yield* r.p.msync(s, P, 0x100), -22);
    t.is(yield* r.p.msync(0x10000000, P, MS_SYNC), -12);
  });
});

test('a MAP_PRIVATE file mapping\'s store does not reach the file', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 2 * P, fill(0x10, 2 * P));
  runMain(t, r, function* () {
    const m = ok(yield* r.p.mmap(0, 2 * P, RW, MAP_PRIVATE, file), 'mmap private');
    t.deepEqual(bytes(yield* r.p.load(m, 4), 'load'), fill(0x10, 4), 'reads the file');
    const cacheFrame = file.pageCache.get(0)!;
    t.is(frameAt(r.p.mm, m), cacheFrame, 'a read maps the page-cache page itself');
    ok(yield* r.p.store(m, fill(0xee, 4)), 'store');
    t.not(frameAt(r.p.mm, m), cacheFrame, 'the write got a private copy');
    t.deepEqual(bytes(yield* r.p.load(m, 5), 'load'), new Uint8Array([0xee, 0xee, 0xee, 0xee, 0x10]));
    t.deepEqual(bytes(yield* r.p.pread(file, 0, 4), 'pread'), fill(0x10, 4), 'the page cache is untouched');
    ok(yield* r.p.store(m + P, fill(0xef, 4)), 'store to a page never read (copied at fault time)');
    t.is(yield* r.p.fsync(file), 0);
    t.deepEqual(diskBytes(file, 0, 0, 4), fill(0x10, 4), 'the disk is untouched');
    t.deepEqual(diskBytes(file, 1, 0, 4), fill(0x10, 4));
    // Another process mapping the file shared sees the file, not the private copy.
    const s = ok(yield* r.p.mmap(0, 2 * P, PROT_READ, MAP_SHARED, file), 'mmap shared');
    t.deepEqual(bytes(yield* r.p.load(s, 4), 'load'), fill(0x10, 4));
  });
});

test('a private mapping sees later file changes until it writes the page (then it keeps its copy)', (t) => {
  const r = rig();
  const file = r.k.createFile('f', P, fill(1, P));
  runMain(t, r, function* () {
    const m = ok(yield* r.p.mmap(0, P, RW, MAP_PRIVATE, file), 'mmap private');
    bytes(yield* r.p.load(m, 1), 'map the page-cache page');
    t.is(yield* r.p.pwrite(file, 0, fill(2, 1)), 1);
    t.deepEqual(bytes(yield* r.p.load(m, 1), 'load'), fill(2, 1), 'not yet copied: sees the file');
    ok(yield* r.p.store(m + 1, fill(3, 1)), 'COW');
    t.is(yield* r.p.pwrite(file, 0, fill(4, 1)), 1);
    t.deepEqual(bytes(yield* r.p.load(m, 2), 'load'), new Uint8Array([2, 3]), 'copied: no longer follows the file');
  });
});

test('rule 21c: ftruncate drops the pages past EOF from every mapping; later access is -EFAULT (SIGBUS)', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 4 * P, fill(0x10, 4 * P));
  runMain(t, r, function* () {
    const s = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED, file), 'mmap shared');
    ok(yield* r.p.store(s, fill(0x20, 4 * P)), 'populate');
    const gone = [file.pageCache.get(2)!, file.pageCache.get(3)!];
    t.is(yield* r.p.ftruncate(file, 2 * P), 0);
    t.is(file.size, 2 * P);
    t.is(frameAt(r.p.mm, s + 2 * P), -1);
    t.is(frameAt(r.p.mm, s + 3 * P), -1);
    t.false(file.pageCache.has(2));
    t.false(file.pageCache.has(3));
    for (const f of gone) t.false(r.k.phys.isAllocated(f), 'the truncated page was freed');
    t.is(yield* r.p.load(s + 2 * P, 1), -EFAULT);
    t.is(yield* r.p.store(s + 3 * P + 5, fill(1, 1)), -EFAULT);
    t.deepEqual(bytes(yield* r.p.load(s + P, 4), 'load'), fill(0x20, 4), 'below EOF nothing changed');
    t.deepEqual(bytes(yield* r.p.pread(file, 0, 4 * P), 'pread'), fill(0x20, 2 * P), 'read stops at EOF');
  });
});

test('rule 21c: ftruncate also drops the private COW copies past EOF (even_cows): access is -EFAULT (SIGBUS)', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 4 * P, fill(0x10, 4 * P));
  runMain(t, r, function* () {
    const m = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_PRIVATE, file), 'mmap private');
    ok(yield* r.p.store(m, fill(0x30, 4 * P)), 'COW every page');
    const copies = [0, 1, 2, 3].map((i) => frameAt(r.p.mm, m + i * P));
    t.is(yield* r.p.ftruncate(file, P + 100), 0);
    t.is(frameAt(r.p.mm, m + 2 * P), -1);
    t.is(frameAt(r.p.mm, m + 3 * P), -1);
    t.false(r.k.phys.isAllocated(copies[2]!), 'the private copy was freed');
    t.is(yield* r.p.load(m + 2 * P, 1), -EFAULT);
    t.is(yield* r.p.load(m + 3 * P, 1), -EFAULT);
    t.is(frameAt(r.p.mm, m + P), copies[1]!, 'the copy of the partial last page stays');
    t.deepEqual(bytes(yield* r.p.load(m + P + 200, 4), 'load'), fill(0x30, 4), 'its bytes past EOF are the process\'s own');
  });
});

test('ftruncate zeroes the tail of a partial last page, in the page cache and on disk', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 2 * P, fill(0x10, 2 * P));
  runMain(t, r, function* () {
    const s = ok(yield* r.p.mmap(0, 2 * P, RW, MAP_SHARED, file), 'mmap');
    bytes(yield* r.p.load(s, 2 * P), 'populate');
    t.is(yield* r.p.ftruncate(file, P + 100), 0);
    const tail = bytes(yield* r.p.load(s + P, P), 'load the partial page');
    t.deepEqual(tail.slice(0, 100), fill(0x10, 100));
    t.deepEqual(tail.slice(100), fill(0, P - 100), 'zeroed past the new EOF');
    t.deepEqual(diskBytes(file, 1, 100, 10), fill(0, 10));
    t.is(yield* r.p.ftruncate(file, 3 * P), 0, 'growing');
    t.deepEqual(bytes(yield* r.p.pread(file, P, 2 * P), 'pread').slice(P - 10, P + 10), fill(0, 20), 'a grown file reads zeros');
    t.is(yield* r.p.ftruncate(file, -1), -22);
  });
});

test('rule 21c: hole punch zeroes the range in every mapping and on disk; the rest is untouched', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 6 * P, fill(0x10, 6 * P));
  runMain(t, r, function* () {
    const s = ok(yield* r.p.mmap(0, 6 * P, RW, MAP_SHARED, file), 'mmap');
    ok(yield* r.p.store(s, fill(0x20, 6 * P)), 'populate');
    t.is(yield* r.p.fsync(file), 0);
    t.is(yield* r.p.punchHole(file, 2 * P, 2 * P), 0);
    t.is(file.size, 6 * P, 'KEEP_SIZE');
    t.is(frameAt(r.p.mm, s + 2 * P), -1, 'unmapped');
    t.deepEqual(bytes(yield* r.p.load(s + 2 * P, 2 * P), 'load'), fill(0, 2 * P), 'refaults as zeros, no SIGBUS');
    t.deepEqual(bytes(yield* r.p.pread(file, 2 * P, 2 * P), 'pread'), fill(0, 2 * P));
    t.false(file.disk.has(2), 'a hole on disk');
    t.false(file.disk.has(3));
    t.deepEqual(bytes(yield* r.p.load(s + P, P), 'load'), fill(0x20, P), 'below the hole');
    t.deepEqual(bytes(yield* r.p.load(s + 4 * P, 2 * P), 'load'), fill(0x20, 2 * P), 'above the hole');
    t.is(yield* r.p.punchHole(file, 0, 0), -22);
  });
});

test('rule 21c: hole punch leaves private COW copies alone', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 2 * P, fill(0x10, 2 * P));
  runMain(t, r, function* () {
    const m = ok(yield* r.p.mmap(0, 2 * P, RW, MAP_PRIVATE, file), 'mmap private');
    ok(yield* r.p.store(m, fill(0x30, 4)), 'COW page 0');
    bytes(yield* r.p.load(m + P, 4), 'page 1 maps the page cache');
    t.is(yield* r.p.punchHole(file, 0, 2 * P), 0);
    t.deepEqual(bytes(yield* r.p.load(m, 4), 'load'), fill(0x30, 4), 'the private copy survives');
    t.deepEqual(bytes(yield* r.p.load(m + P, 4), 'load'), fill(0, 4), 'the file page was punched');
  });
});

test('pwrite then a mapped load sees the data; pwrite past EOF extends the file', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 2 * P);
  runMain(t, r, function* () {
    const s = ok(yield* r.p.mmap(0, 3 * P, PROT_READ, MAP_SHARED, file), 'mmap');
    bytes(yield* r.p.load(s, 1), 'map page 0 first');
    const data = new Uint8Array(300).map((_, i) => i & 0xff);
    t.is(yield* r.p.pwrite(file, P - 100, data), 300, 'straddles pages 0 and 1');
    t.deepEqual(bytes(yield* r.p.load(s + P - 100, 300), 'load'), data, 'already-mapped and newly faulted pages agree');
    t.is(yield* r.p.load(s + 2 * P, 1), -EFAULT, 'page 2 is past EOF');
    t.is(yield* r.p.pwrite(file, 2 * P + 10, fill(9, 5)), 5);
    t.is(file.size, 2 * P + 15);
    t.deepEqual(bytes(yield* r.p.load(s + 2 * P + 10, 5), 'load'), fill(9, 5), 'the extended page can be mapped now');
    t.is(yield* r.p.pwrite(file, -1, fill(1, 1)), -22);
    t.is(yield* r.p.fsync(file), 0);
    t.deepEqual(diskBytes(file, 0, P - 100, 100), data.slice(0, 100));
  });
});

test('rule 21c: madvise(DONTNEED) on file mappings: shared data survives in the page cache, private copies are dropped', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 2 * P, fill(0x10, 2 * P));
  runMain(t, r, function* () {
    const s = ok(yield* r.p.mmap(0, 2 * P, RW, MAP_SHARED, file), 'mmap shared');
    const m = ok(yield* r.p.mmap(0, 2 * P, RW, MAP_PRIVATE, file), 'mmap private');
    ok(yield* r.p.store(s, fill(0x20, 4)), 'shared store');
    ok(yield* r.p.store(m + P, fill(0x30, 4)), 'private store (COW)');
    ok(yield* r.p.madvise(s, 2 * P, MADV_DONTNEED), 'DONTNEED shared');
    ok(yield* r.p.madvise(m, 2 * P, MADV_DONTNEED), 'DONTNEED private');
    t.is(frameAt(r.p.mm, s), -1);
    t.is(frameAt(r.p.mm, m + P), -1);
    t.deepEqual(bytes(yield* r.p.load(s, 4), 'load'), fill(0x20, 4), 'refaulted from the page cache');
    t.deepEqual(bytes(yield* r.p.load(m, 4), 'load'), fill(0x20, 4), 'the private mapping sees the file again');
    t.deepEqual(bytes(yield* r.p.load(m + P, 4), 'load'), fill(0x10, 4), 'the private copy is gone');
    t.true(r.k.phys.has(file.pageCache.get(0)!, PG_DIRTY), 'the dirty state moved to the page, not lost');
    t.is(yield* r.p.fsync(file), 0);
    t.deepEqual(diskBytes(file, 0, 0, 4), fill(0x20, 4));
  });
});

test('mm/filemap.c generic_file_write_iter takes the inode lock: a pwrite past a truncation in progress (its unmap_mapping_range held off by a sleeping notifier) waits for it, so the truncation cannot drop the page the pwrite writes (fuzz holdoff 22204)', (t) => {
  const r = rig();
  const { k, p } = r;
  const file = k.createFile('data', 3 * P, fill(0x11, 3 * P));
  let wrote = -1;
  let truncated = -1;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, 3 * P, PROT_READ | PROT_WRITE, MAP_SHARED, file), 'mmap');
    bytes(yield* p.load(a + 2 * P, 8), 'fault page 2 in');
    ok(yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('slow'), p.mm, 0, TASK_SIZE, {
      *invalidate(s, _range, seq) {
        mmuIntervalSetSeq(s, seq);
        yield* k.sim.sleep(50_000);
        return true;
      },
    }), 'insert');
    const writer = p.spawnThread('writer', function* () {
      yield* k.sim.sleep(1_000);
      ok(yield* p.pwrite(file, 2 * P + 16, fill(0x77, 64)), 'pwrite into page 2, extending the file again');
      wrote = k.sim.now();
    });
    ok(yield* p.ftruncate(file, 2 * P), 'truncate to 2 pages');
    truncated = k.sim.now();
    yield* k.sim.join(writer);
    t.true(wrote >= truncated, 'the pwrite finished after the truncation it waited for');
    t.is(file.size, 2 * P + 80);
    t.deepEqual(bytes(yield* p.pread(file, 2 * P + 16, 64), 'pread'), fill(0x77, 64), 'what the pwrite wrote is in the file');
  });
});
