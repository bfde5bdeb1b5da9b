/**
 * The trigger table (spec/kernel.md rule 21, 21a-21j): which primary-MMU operation sends
 * which notifier event over which range, as seen on `k.notifier$` (a 'start' then an
 * 'end' for each invalidation), and the operations that must send nothing (rule 18).
 *
 * Each test first opens a dmirror (an interval subscriber over all of user space) so the
 * notifier core has a subscriber on the mm, then marks the stream and looks only at what
 * the operation under test sent.
 */
import test from 'ava';
import {
  MADV_DONTFORK, MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED,
  MMAP_BASE, MREMAP_FIXED, MREMAP_MAYMOVE, MS_SYNC, PMD_SIZE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE,
  ENOMEM, ULONG_MAX, MmuNotifyEvent, pteWrite, vpn,
  type Co, type Process,
  PROFILES,
} from '../../kernel-model/index.ts';
import { GiB, P, bytes, fill, frameAt, lines, ok, openMirror, pair, rig, runMain, type Rig } from './_helpers.ts';

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;

function* anon(p: Process, len: number, prot = RW): Co<number> {
  return ok(yield* p.mmap(0, len, prot, ANON), 'mmap');
}

/** Everything the notifier stream carried for `p`'s mm since `mark`. */
function since(r: Rig, mark: number, p: Process = r.p): string[] {
  return lines(r.events.slice(mark), p.mm);
}

// ---- 21a: region unmap ---------------------------------------------------------------------

test('rule 21a: munmap sends one UNMAP over the aligned request, holes included', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 8 * P);
    ok(yield* r.p.store(a, fill(1, 8 * P)), 'populate');
    ok(yield* r.p.munmap(a + 3 * P, 2 * P), 'punch a hole');
    // The request starts and ends in holes too: [a - P, a + 9P), length not page-aligned.
    const mark = r.events.length;
    t.is(yield* r.p.munmap(a - P, 10 * P - 100), 0);
    t.deepEqual(since(r, mark), pair('UNMAP', a - P, a + 9 * P), 'one invalidation for both VMAs and the holes');
    t.is(r.p.mm.vmas.length, 0);
    for (let i = 0; i < 8; i++) t.is(frameAt(r.p.mm, a + i * P), -1);
  });
});

test('rule 21a: munmap of a range that touches no VMA sends nothing', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 2 * P);
    ok(yield* r.p.munmap(a, P), 'munmap the lower page');
    const mark = r.events.length;
    t.is(yield* r.p.munmap(a, P), 0, 'a hole: success');
    t.is(yield* r.p.munmap(0x10000000, 16 * P), 0, 'never mapped: success');
    t.deepEqual(since(r, mark), []);
  });
});

test('rule 21a: MAP_FIXED over a mapping sends one UNMAP over the new mapping\'s range', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 4 * P);
    ok(yield* r.p.store(a + 2 * P, fill(1, 2 * P)), 'populate');
    const mark = r.events.length;
    // Covers the upper half of the mapping and two pages above it.
    t.is(yield* r.p.mmap(a + 2 * P, 4 * P, RW, ANON | MAP_FIXED), a + 2 * P);
    t.deepEqual(since(r, mark), pair('UNMAP', a + 2 * P, a + 6 * P));
    const mark2 = r.events.length;
    t.is(yield* r.p.mmap(0x10000000, 4 * P, RW, ANON | MAP_FIXED), 0x10000000);
    t.deepEqual(since(r, mark2), [], 'MAP_FIXED onto empty space sends nothing');
  });
});

// ---- 21b: mremap ---------------------------------------------------------------------------

test('rule 21b: mremap shrink sends UNMAP of the removed tail', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 6 * P);
    ok(yield* r.p.store(a, fill(2, 6 * P)), 'populate');
    const mark = r.events.length;
    t.is(yield* r.p.mremap(a, 6 * P, 2 * P), a);
    t.deepEqual(since(r, mark), pair('UNMAP', a + 2 * P, a + 6 * P));
    t.deepEqual(bytes(yield* r.p.load(a + P, 4), 'load'), fill(2, 4), 'the head keeps its bytes');
  });
});

test('rule 21b: mremap move sends UNMAP of the old range, then a second UNMAP of exactly the old range; the destination gets nothing', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 4 * P);
    ok(yield* r.p.store(a, fill(3, 4 * P)), 'populate');
    // A destination at another offset inside its PMD, so move_page_tables does not
    // realign the old range down to a PMD boundary (that variant is not modelled).
    const dest = 0x40000000 + 3 * P;
    t.not(dest % PMD_SIZE, a % PMD_SIZE);
    const mark = r.events.length;
    t.is(yield* r.p.mremap(a, 4 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_FIXED, dest), dest);
    t.deepEqual(since(r, mark), [...pair('UNMAP', a, a + 4 * P), ...pair('UNMAP', a, a + 4 * P)]);
    t.deepEqual(bytes(yield* r.p.load(dest, 4 * P), 'load'), fill(3, 4 * P), 'bytes moved');
  });
});

test('rule 21b: mremap move with MREMAP_FIXED over a mapped destination unmaps it first (21a)', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 2 * P);
    ok(yield* r.p.store(a, fill(3, 2 * P)), 'populate');
    const dest = ok(yield* r.p.mmap(0x40000000 + 5 * P, 2 * P, RW, ANON | MAP_FIXED), 'destination');
    const mark = r.events.length;
    t.is(yield* r.p.mremap(a, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, dest), dest);
    t.deepEqual(since(r, mark), [
      ...pair('UNMAP', dest, dest + 2 * P),
      ...pair('UNMAP', a, a + 2 * P),
      ...pair('UNMAP', a, a + 2 * P),
    ]);
  });
});

// ---- 21c: zap-style CLEARs -----------------------------------------------------------------

/** Two adjacent VMAs [a, a+2P) rw and [a+2P, a+4P) r--, populated. */
function* twoVmas(r: Rig): Co<number> {
  const a = yield* anon(r.p, 4 * P);
  ok(yield* r.p.store(a, fill(4, 4 * P)), 'populate');
  ok(yield* r.p.mprotect(a + 2 * P, 2 * P, PROT_READ), 'split');
  return a;
}

test('rule 21c: madvise(DONTNEED) sends one CLEAR per VMA, the request clipped to each', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* twoVmas(r);
    t.is(r.p.mm.vmas.length, 2);
    const mark = r.events.length;
    t.is(yield* r.p.madvise(a + P, 2 * P, MADV_DONTNEED), 0);
    t.deepEqual(since(r, mark), [...pair('CLEAR', a + P, a + 2 * P), ...pair('CLEAR', a + 2 * P, a + 3 * P)]);
    t.not(frameAt(r.p.mm, a), -1);
    t.is(frameAt(r.p.mm, a + P), -1);
    t.is(frameAt(r.p.mm, a + 2 * P), -1);
    t.not(frameAt(r.p.mm, a + 3 * P), -1);
    t.deepEqual(bytes(yield* r.p.load(a + P, 4), 'load'), fill(0, 4), 'DONTNEED on private anon: refault gives zeros');
  });
});

test('rule 21c: madvise(FREE) sends one CLEAR per VMA, clipped, though the pages stay mapped (lazy free)', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* twoVmas(r);
    const mark = r.events.length;
    t.is(yield* r.p.madvise(a + P, 2 * P, MADV_FREE), 0);
    t.deepEqual(since(r, mark), [...pair('CLEAR', a + P, a + 2 * P), ...pair('CLEAR', a + 2 * P, a + 3 * P)]);
    t.not(frameAt(r.p.mm, a + P), -1);
  });
});

test('rule 21c: madvise over a hole sends CLEARs for the mapped VMAs only, and returns -ENOMEM', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 4 * P);
    ok(yield* r.p.munmap(a + P, 2 * P), 'hole');
    const mark = r.events.length;
    t.is(yield* r.p.madvise(a, 4 * P, MADV_DONTNEED), -ENOMEM);
    t.deepEqual(since(r, mark), [...pair('CLEAR', a, a + P), ...pair('CLEAR', a + 3 * P, a + 4 * P)]);
  });
});

/** Distinct ranges of the CLEARs in `ls`, each started then ended (pairing checked). */
function clears(t: { true: (v: boolean, m?: string) => void }, ls: string[]): string[] {
  const open = new Set<string>();
  const seen: string[] = [];
  for (const l of ls) {
    const [phase, event, range] = l.split(' ') as [string, string, string];
    t.true(event === 'CLEAR', `unexpected ${l}`);
    if (phase === 'start') {
      open.add(range);
      if (!seen.includes(range)) seen.push(range);
    } else {
      t.true(open.delete(range), `end without start: ${l}`);
    }
  }
  t.true(open.size === 0, 'every CLEAR ended');
  return seen.sort();
}

const hexRange = (s: number, e: number) => `0x${s.toString(16)}-0x${e.toString(16)}`;

test('rule 21c: ftruncate sends a CLEAR per VMA mapping the file past the new size, over its overlap (to the VMA end)', (t) => {
  const r = rig();
  const file = r.k.createFile('data', 8 * P, fill(0x5a, 8 * P));
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a1 = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED, file, 0), 'mmap pages 0-3');
    // Maps pages 2..9: the file has 8, so the top two pages lie past EOF already.
    const a2 = ok(yield* r.p.mmap(0, 8 * P, PROT_READ, MAP_SHARED, file, 2 * P), 'mmap pages 2-9');
    ok(yield* r.p.store(a1, fill(1, 4 * P)), 'populate a1');
    bytes(yield* r.p.load(a2, 6 * P), 'populate a2');
    const mark = r.events.length;
    t.is(yield* r.p.ftruncate(file, 3 * P), 0);
    // truncate_pagecache: unmap_mapping_range(holebegin, 0 = to the end, even_cows).
    t.deepEqual(clears(t, since(r, mark)), [hexRange(a1 + 3 * P, a1 + 4 * P), hexRange(a2 + P, a2 + 8 * P)].sort());
  });
});

test('rule 21c: hole punch sends a CLEAR per VMA over its overlap with the hole', (t) => {
  const r = rig();
  const file = r.k.createFile('data', 8 * P, fill(0x5a, 8 * P));
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a1 = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED, file, 0), 'mmap pages 0-3');
    const a2 = ok(yield* r.p.mmap(0, 6 * P, PROT_READ, MAP_SHARED, file, 2 * P), 'mmap pages 2-7');
    ok(yield* r.p.store(a1, fill(1, 4 * P)), 'populate a1');
    const mark = r.events.length;
    t.is(yield* r.p.punchHole(file, 2 * P, 3 * P), 0); // pages 2..4
    t.deepEqual(clears(t, since(r, mark)), [hexRange(a1 + 2 * P, a1 + 4 * P), hexRange(a2, a2 + 3 * P)].sort());
  });
});

test('rule 21c: madvise(MADV_REMOVE) punches the file: a CLEAR over the request in every VMA mapping that range', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const s = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS), 'shmem');
    ok(yield* r.p.store(s, fill(1, 4 * P)), 'populate');
    const child = yield* r.p.fork();
    if (typeof child === 'number') throw new Error(`fork ${child}`);
    yield* openMirror(r.k, child.mm, 'child-mirror');
    const mark = r.events.length;
    t.is(yield* r.p.madvise(s + P, 2 * P, MADV_REMOVE), 0);
    t.deepEqual(since(r, mark), pair('CLEAR', s + P, s + 3 * P));
    t.deepEqual(since(r, mark, child), pair('CLEAR', s + P, s + 3 * P), 'the child shares the shmem object');
    t.deepEqual(bytes(yield* r.p.load(s, 4 * P), 'load').slice(P - 1, 3 * P + 1),
      new Uint8Array([1, ...fill(0, 2 * P), 1]), 'the hole reads as zeros');
  });
});

// ---- 21d: COW ------------------------------------------------------------------------------

test('rule 21d: a COW break after fork sends a one-page CLEAR on the writer\'s mm; the last sharer reuses its page silently (rule 18)', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 4 * P);
    ok(yield* r.p.store(a, fill(1, 4 * P)), 'populate');
    const child = yield* r.p.fork();
    if (typeof child === 'number') throw new Error(`fork ${child}`);
    yield* openMirror(r.k, child.mm, 'child-mirror');
    const mark = r.events.length;
    ok(yield* r.p.store(a + P + 100, fill(2, 8)), 'parent writes');
    t.deepEqual(since(r, mark), pair('CLEAR', a + P, a + 2 * P));
    const mark2 = r.events.length;
    const frameBefore = frameAt(child.mm, a + P);
    const w = r.k.sim.spawn('child-write', function* () {
      ok(yield* child.store(a + P, fill(3, 8)), 'child writes');
    });
    yield* r.k.sim.join(w);
    t.deepEqual(lines(r.events.slice(mark2)), [], 'the child is now the only user of the old page: reused in place');
    t.is(frameAt(child.mm, a + P), frameBefore);
  });
});

test('rule 21d: writing over the zero page sends a one-page CLEAR', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 2 * P);
    bytes(yield* r.p.load(a, 2 * P), 'read: zero page');
    t.is(frameAt(r.p.mm, a + P), 0);
    const mark = r.events.length;
    ok(yield* r.p.store(a + P + 5, fill(9, 1)), 'write');
    t.deepEqual(since(r, mark), pair('CLEAR', a + P, a + 2 * P));
    t.true(frameAt(r.p.mm, a + P) > 0);
  });
});

// ---- rule 18: faults that send nothing -------------------------------------------------------

test('rule 18: first-touch faults (read maps the zero page, write a new page) send nothing', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 4 * P);
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 4 * P);
    const s = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED, file), 'shared file');
    const pf = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_PRIVATE, file), 'private file');
    const sh = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS), 'shmem');
    const mark = r.events.length;
    bytes(yield* r.p.load(a, P), 'anon read');
    ok(yield* r.p.store(a + P, fill(1, P)), 'anon write');
    bytes(yield* r.p.load(s, P), 'shared file read');
    ok(yield* r.p.store(s + P, fill(1, P)), 'shared file write');
    bytes(yield* r.p.load(pf, P), 'private file read');
    ok(yield* r.p.store(pf + P, fill(1, P)), 'private file write (copy at fault time, PTE was empty)');
    bytes(yield* r.p.load(sh, P), 'shmem read');
    ok(yield* r.p.store(sh + P, fill(1, P)), 'shmem write');
    t.deepEqual(since(r, mark), []);
  });
});

test('rule 18: a write fault on an exclusive anonymous page reuses it in place and sends nothing (linux-5.8: before 6.0 mprotect leaves the PTE read-only)', (t) => {
  // From 6.0 mprotect itself makes the PTE writable (MM_CP_TRY_CHANGE_WRITABLE,
  // test/kernel-model/mprotect.test.ts), so the read-only exclusive PTE is made on 5.8.
  const r = rig({ profile: PROFILES['linux-5.8'] });
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, P);
    ok(yield* r.p.store(a, fill(1, 8)), 'populate');
    const frame = frameAt(r.p.mm, a);
    // Round-trip through read-only: the PTE loses its write bit, the page stays exclusive.
    ok(yield* r.p.mprotect(a, P, PROT_READ), 'mprotect r');
    ok(yield* r.p.mprotect(a, P, RW), 'mprotect rw');
    t.false(pteWrite(r.p.mm.pageTable.get(vpn(a))), 'write comes back through a fault');
    const mark = r.events.length;
    ok(yield* r.p.store(a, fill(2, 8)), 'write fault');
    t.deepEqual(since(r, mark), []);
    t.is(frameAt(r.p.mm, a), frame, 'same page');
    t.true(pteWrite(r.p.mm.pageTable.get(vpn(a))));
  });
});

test('rule 18: a write fault on a shared file page (page_mkwrite) sends nothing', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 2 * P, fill(7, 2 * P));
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const s = ok(yield* r.p.mmap(0, 2 * P, RW, MAP_SHARED, file), 'mmap');
    bytes(yield* r.p.load(s, P), 'read fault: read-only PTE');
    const frame = frameAt(r.p.mm, s);
    t.false(pteWrite(r.p.mm.pageTable.get(vpn(s))));
    const mark = r.events.length;
    ok(yield* r.p.store(s, fill(8, 4)), 'write fault');
    t.deepEqual(since(r, mark), []);
    t.is(frameAt(r.p.mm, s), frame);
  });
});

// ---- 21h: mprotect -------------------------------------------------------------------------

test('rule 21h: mprotect sends PROTECTION_VMA from the first populated 1 GiB slot to the end of the range', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 3 * GiB);
    t.is(a % GiB, 0, 'placed on a PUD boundary');
    ok(yield* r.p.store(a + GiB + 5 * P, fill(1, 1)), 'populate the second GiB only');
    const mark = r.events.length;
    t.is(yield* r.p.mprotect(a + P, 3 * GiB - P, PROT_READ), 0);
    t.deepEqual(since(r, mark), pair('PROTECTION_VMA', a + GiB, a + 3 * GiB), 'starts at the populated slot, runs to the end');
    // When the first slot is populated the range starts at the requested address.
    ok(yield* r.p.mprotect(a, 3 * GiB, RW), 'back to rw');
    ok(yield* r.p.store(a + 7 * P, fill(1, 1)), 'populate the first GiB');
    const mark2 = r.events.length;
    t.is(yield* r.p.mprotect(a + 2 * P, 3 * GiB - 2 * P, PROT_READ), 0);
    t.deepEqual(since(r, mark2), pair('PROTECTION_VMA', a + 2 * P, a + 3 * GiB));
  });
});

test('rule 21h: mprotect to the protection a range already has sends nothing', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 4 * P);
    ok(yield* r.p.store(a, fill(1, 4 * P)), 'populate');
    const mark = r.events.length;
    t.is(yield* r.p.mprotect(a, 4 * P, RW), 0);
    t.deepEqual(since(r, mark), []);
  });
});

test('rule 21h: mprotect of a range with nothing populated sends nothing, yet changes the protection', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 4 * P);
    const mark = r.events.length;
    t.is(yield* r.p.mprotect(a, 4 * P, PROT_READ), 0);
    t.deepEqual(since(r, mark), []);
    t.is(yield* r.p.store(a, fill(1, 1)), -14, 'now read-only');
  });
});

test('rule 21h: making a range more permissive still sends PROTECTION_VMA', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 4 * P, PROT_READ);
    bytes(yield* r.p.load(a, P), 'populate (zero page)');
    const mark = r.events.length;
    t.is(yield* r.p.mprotect(a, 4 * P, RW), 0);
    t.deepEqual(since(r, mark), pair('PROTECTION_VMA', a, a + 4 * P));
    const mark2 = r.events.length;
    t.is(yield* r.p.mprotect(a, 4 * P, RW | PROT_EXEC), 0);
    t.deepEqual(since(r, mark2), pair('PROTECTION_VMA', a, a + 4 * P), 'adding exec counts too');
    const mark3 = r.events.length;
    t.is(yield* r.p.mprotect(a, 4 * P, PROT_NONE), 0);
    t.deepEqual(since(r, mark3), pair('PROTECTION_VMA', a, a + 4 * P));
  });
});

test('rule 21h: one PROTECTION_VMA per 512 GiB chunk that has a populated slot', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const B = 0x7e8000000000; // a 512 GiB (P4D) boundary
    t.is(B % (512 * GiB), 0);
    const a = ok(yield* r.p.mmap(B - 2 * GiB, 4 * GiB, RW, ANON | MAP_FIXED), 'mmap across the boundary');
    ok(yield* r.p.store(B - P, fill(1, 1)), 'populate just below');
    ok(yield* r.p.store(B + GiB + GiB / 2, fill(1, 1)), 'populate the second GiB above');
    const mark = r.events.length;
    t.is(yield* r.p.mprotect(a, 4 * GiB, PROT_READ), 0);
    t.deepEqual(since(r, mark), [...pair('PROTECTION_VMA', B - GiB, B), ...pair('PROTECTION_VMA', B + GiB, B + 2 * GiB)]);
  });
});

test('rule 21h: mprotect over several VMAs: one invalidation per piece whose flags change', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 6 * P);
    ok(yield* r.p.store(a, fill(1, 6 * P)), 'populate');
    ok(yield* r.p.mprotect(a + 2 * P, 2 * P, PROT_READ), 'middle r--');
    const mark = r.events.length;
    t.is(yield* r.p.mprotect(a + P, 4 * P, PROT_READ), 0);
    t.deepEqual(since(r, mark), [...pair('PROTECTION_VMA', a + P, a + 2 * P), ...pair('PROTECTION_VMA', a + 4 * P, a + 5 * P)]);
  });
});

// ---- 21i: fork -----------------------------------------------------------------------------

test('rule 21i/66: fork sends PROTECTION_PAGE over the whole parent COW VMA that has an anon_vma', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 4 * P, fill(1, 4 * P));
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 8 * P);
    ok(yield* r.p.store(a + 3 * P, fill(1, 1)), 'one anonymous page');
    const pf = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_PRIVATE, file), 'private file');
    ok(yield* r.p.store(pf + P, fill(2, 1)), 'a written private file mapping has an anon_vma too');
    const mark = r.events.length;
    const child = yield* r.p.fork();
    t.true(typeof child !== 'number');
    // VMAs in address order: pf (placed lower) first.
    t.deepEqual(since(r, mark), [...pair('PROTECTION_PAGE', pf, pf + 4 * P), ...pair('PROTECTION_PAGE', a, a + 8 * P)]);
  });
});

test('rule 21i/69: fork sends nothing for shared mappings, never-written private mappings, or MADV_DONTFORK VMAs', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 4 * P, fill(1, 4 * P));
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const sh = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS), 'shmem');
    ok(yield* r.p.store(sh, fill(1, 4 * P)), 'written');
    const sf = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED, file), 'shared file');
    ok(yield* r.p.store(sf, fill(1, 4 * P)), 'written');
    const pf = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_PRIVATE, file), 'private file');
    bytes(yield* r.p.load(pf, 4 * P), 'read only: no anon_vma');
    const z = yield* anon(r.p, 4 * P);
    bytes(yield* r.p.load(z, 4 * P), 'zero pages only: no anon_vma');
    const df = yield* anon(r.p, 4 * P);
    ok(yield* r.p.store(df, fill(1, 4 * P)), 'written');
    ok(yield* r.p.madvise(df, 4 * P, MADV_DONTFORK), 'DONTFORK');
    const mark = r.events.length;
    const child = yield* r.p.fork();
    t.true(typeof child !== 'number');
    t.deepEqual(since(r, mark), []);
  });
});

// ---- 76: writeback -------------------------------------------------------------------------

test('rule 76: msync(MS_SYNC) writeback of a dirty shared file page sends PROTECTION_PAGE over the page', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 4 * P);
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const s = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED, file), 'mmap');
    ok(yield* r.p.store(s + 2 * P + 9, fill(1, 3)), 'dirty one page');
    const mark = r.events.length;
    t.is(yield* r.p.msync(s, 4 * P, MS_SYNC), 0);
    t.deepEqual(since(r, mark), pair('PROTECTION_PAGE', s + 2 * P, s + 3 * P));
    t.false(pteWrite(r.p.mm.pageTable.get(vpn(s + 2 * P))), 'write-protected until the next write fault');
  });
});

test('rule 76: fsync writes back only dirty pages: a clean mapped page gets no PROTECTION_PAGE', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 4 * P);
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const s = ok(yield* r.p.mmap(0, 4 * P, RW, MAP_SHARED, file), 'mmap');
    bytes(yield* r.p.load(s, P), 'map page 0 clean');
    ok(yield* r.p.store(s + P, fill(1, 3)), 'dirty page 1');
    const mark = r.events.length;
    t.is(yield* r.p.fsync(file), 0);
    t.deepEqual(since(r, mark), pair('PROTECTION_PAGE', s + P, s + 2 * P));
    const mark2 = r.events.length;
    t.is(yield* r.p.fsync(file), 0);
    t.deepEqual(since(r, mark2), [], 'nothing dirty any more: nothing to clean');
    ok(yield* r.p.store(s + P, fill(2, 3)), 'dirty it again (write fault, no notification)');
    const mark3 = r.events.length;
    t.is(yield* r.p.fsync(file), 0);
    t.deepEqual(since(r, mark3), pair('PROTECTION_PAGE', s + P, s + 2 * P));
  });
});

// ---- 33/34: exit ---------------------------------------------------------------------------

test('rules 33-34: exit sends RELEASE over [0, ULONG_MAX) first, then UNMAP over [0, ULONG_MAX)', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 4 * P);
    ok(yield* r.p.store(a, fill(1, 4 * P)), 'populate');
    const mark = r.events.length;
    t.is(yield* r.p.exit(), 0);
    const evs = r.events.slice(mark).filter((e) => e.mm === r.p.mm.id);
    t.deepEqual(evs.map((e) => [e.phase, e.range.event, e.range.start, e.range.end]), [
      ['start', MmuNotifyEvent.RELEASE, 0, ULONG_MAX],
      ['end', MmuNotifyEvent.RELEASE, 0, ULONG_MAX],
      ['start', MmuNotifyEvent.UNMAP, 0, ULONG_MAX],
      ['end', MmuNotifyEvent.UNMAP, 0, ULONG_MAX],
    ]);
    t.true(evs.every((e) => e.blockable));
    t.true(r.p.mm.exited);
  });
});

test('the notifier stream is quiet for a process whose pages are only read and written in place', (t) => {
  // Negative space for the table: steady-state access to populated memory notifies nothing.
  const r = rig();
  runMain(t, r, function* () {
    yield* openMirror(r.k, r.p.mm);
    const a = yield* anon(r.p, 4 * P);
    ok(yield* r.p.store(a, fill(1, 4 * P)), 'populate');
    const mark = r.events.length;
    for (let i = 0; i < 5; i++) {
      ok(yield* r.p.store(a + i * 100, fill(i, 50)), 'store');
      bytes(yield* r.p.load(a + i * 300, 3 * P), 'load');
    }
    t.deepEqual(since(r, mark), []);
    t.is(MMAP_BASE % GiB, 0);
  });
});
