/**
 * GUP and pinning (kernel rules 54-65, section I of spec/kernel.md) and RLIMIT_MEMLOCK
 * accounting. Devices are stood in for by direct DmaBus accesses to the pinned frames.
 */
import test from 'ava';
import {
  EFAULT, EINTR, EINVAL, ENOMEM, GUP_PIN_COUNTING_BIAS, MAP_PRIVATE, MAP_SHARED, PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY,
  PG_MOVABLE_ZONE, PG_PRIVATE, PROT_NONE, PROT_READ, PTE_DIRTY, PTE_WRITE, VM_IO, VM_PFNMAP, ZERO_PFN, pteHas, vpn,
} from '../../kernel-model/index.ts';
import {
  FOLL_FAST_ONLY, FOLL_FORCE, FOLL_GET, FOLL_LONGTERM, FOLL_MADV_POPULATE, FOLL_PCI_P2PDMA, FOLL_PIN, FOLL_REMOTE,
  FOLL_TOUCH, FOLL_TRIED, FOLL_UNLOCKABLE, FOLL_WRITE,
  accountPinnedVm, getUserPagesFast, pinUserPagesFast, putUserPages, unaccountPinnedVm, unpinUserPages,
  unpinUserPagesDirtyLock,
} from '../../kernel-model/gup.ts';
import { writebackFile } from '../../kernel-model/filemap.ts';
import { P, bytes, fill, frameAt, lines, ok, pair, runMain } from './_helpers.ts';
import { ANON, RW, SHARED_ANON, rigOn, traceOf } from './_pin-helpers.ts';

// ---- rule 54: flag validity ------------------------------------------------------------

test('rule 54: GET with PIN, a caller-passed PIN, LONGTERM without PIN, LONGTERM|PCI_P2PDMA and internal flags fail with -EINVAL, pinning nothing', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const mm = p.mm;
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const f = frameAt(mm, a);
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_GET, pages), -EINVAL, 'FOLL_GET and FOLL_PIN together');
    t.is(yield* getUserPagesFast(mm, a, 1, FOLL_PIN, pages), -EINVAL, 'FOLL_PIN is internal');
    t.is(yield* getUserPagesFast(mm, a, 1, FOLL_LONGTERM, pages), -EINVAL, 'FOLL_LONGTERM requires FOLL_PIN');
    t.is(yield* getUserPagesFast(mm, a, 1, FOLL_LONGTERM | FOLL_WRITE, pages), -EINVAL, 'FOLL_LONGTERM requires FOLL_PIN');
    t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_LONGTERM | FOLL_PCI_P2PDMA, pages), -EINVAL, 'LONGTERM with PCI_P2PDMA');
    for (const flag of [FOLL_TOUCH, FOLL_REMOTE, FOLL_TRIED, FOLL_FAST_ONLY, FOLL_UNLOCKABLE, FOLL_MADV_POPULATE]) {
      t.is(yield* pinUserPagesFast(mm, a, 1, flag, pages), -EINVAL, `pin with internal flag 0x${flag.toString(16)}`);
      t.is(yield* getUserPagesFast(mm, a, 1, flag, pages), -EINVAL, `get with internal flag 0x${flag.toString(16)}`);
    }
    t.deepEqual(pages, []);
    t.is(k.phys.refcount[f], 1, 'no reference taken');
    t.false(mm.hasPinned, 'a refused pin never reached the pinning path, so MMF_HAS_PINNED is clear');
  });
});

test('rule 54: different callers may GET and PIN the same page', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const got: number[] = [];
    const pinned: number[] = [];
    t.is(yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE, got), 1);
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, pinned), 1);
    t.is(got[0], pinned[0]);
    t.is(k.phys.refcount[got[0]!], 1 + 1 + GUP_PIN_COUNTING_BIAS);
    putUserPages(k, got);
    unpinUserPages(k, pinned);
    t.is(k.phys.refcount[got[0]!], 1);
  });
});

// ---- rule 55: reference accounting -----------------------------------------------------

test('rule 55: each pin of a small page adds 1024 to its refcount, each GET adds 1; unpin and put reverse exactly', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const mm = p.mm;
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const f = frameAt(mm, a);
    t.is(k.phys.refcount[f], 1, 'the mapping holds the only reference');
    const pins: number[] = [];
    for (let i = 1; i <= 3; i++) {
      t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_WRITE, pins), 1);
      t.is(k.phys.refcount[f], 1 + i * GUP_PIN_COUNTING_BIAS);
      t.is(k.phys.pincount[f], 0, 'small folios use the bias, not _pincount');
    }
    const gets: number[] = [];
    t.is(yield* getUserPagesFast(mm, a, 1, 0, gets), 1);
    t.is(k.phys.refcount[f], 2 + 3 * GUP_PIN_COUNTING_BIAS);
    unpinUserPages(k, pins.slice(0, 2));
    t.is(k.phys.refcount[f], 2 + GUP_PIN_COUNTING_BIAS);
    putUserPages(k, gets);
    unpinUserPages(k, pins.slice(2));
    t.is(k.phys.refcount[f], 1, 'back to the mapping reference alone');
    t.true(k.phys.isAllocated(f));
  });
});

test('rule 55: the shared zero page is never counted: pinning it (short-term, read-only) and unpinning it leave its refcount alone', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    const before = k.phys.refcount[ZERO_PFN];
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 2, 0, pages), 2);
    t.deepEqual(pages, [ZERO_PFN, ZERO_PFN], 'a short-term read-only pin of never-written memory gets the zero page');
    t.is(k.phys.refcount[ZERO_PFN], before);
    unpinUserPages(k, pages);
    unpinUserPagesDirtyLock(k, [ZERO_PFN], true);
    t.is(k.phys.refcount[ZERO_PFN], before);
    t.false(k.phys.has(ZERO_PFN, PG_DIRTY), 'the zero page is never dirtied');
  });
});

// ---- rule 56: folio_maybe_dma_pinned ---------------------------------------------------

test('rule 56 (H10): plain GUP references that bring a small page to refcount 1024 make maybeDmaPinned true, a false positive; one fewer does not', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const f = frameAt(p.mm, a);
    const gets: number[] = [];
    while (k.phys.refcount[f]! < GUP_PIN_COUNTING_BIAS - 1) t.is(yield* getUserPagesFast(p.mm, a, 1, 0, gets), 1);
    t.is(gets.length, 1022);
    t.false(k.phys.maybeDmaPinned(f), 'refcount 1023: not pinned');
    t.is(yield* getUserPagesFast(p.mm, a, 1, 0, gets), 1);
    t.is(k.phys.refcount[f], GUP_PIN_COUNTING_BIAS);
    t.true(k.phys.maybeDmaPinned(f), 'refcount 1024 from plain references reads as pinned');
    t.false(p.mm.hasPinned, 'nothing was pinned with FOLL_PIN');
    putUserPages(k, gets.splice(0, 1));
    t.false(k.phys.maybeDmaPinned(f));
    putUserPages(k, gets);
    t.is(k.phys.refcount[f], 1);
  });
});

// ---- rule 57: MMF_HAS_PINNED -----------------------------------------------------------

test('rule 57: MMF_HAS_PINNED is set by the first FOLL_PIN, not by FOLL_GET, and never cleared (unpin, munmap)', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const mm = p.mm;
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const gets: number[] = [];
    t.is(yield* getUserPagesFast(mm, a, 1, FOLL_WRITE, gets), 1);
    t.false(mm.hasPinned, 'FOLL_GET does not set it');
    putUserPages(k, gets);
    const pins: number[] = [];
    t.is(yield* pinUserPagesFast(mm, a, 1, 0, pins), 1);
    t.true(mm.hasPinned);
    unpinUserPages(k, pins);
    t.true(mm.hasPinned, 'still set after the last unpin');
    ok(yield* p.munmap(a, P), 'munmap');
    t.true(mm.hasPinned, 'still set with nothing mapped');
  });
});

// ---- rule 58: VMA checks ---------------------------------------------------------------

test('rule 58: VM_IO and VM_PFNMAP VMAs and addresses without a VMA fail with -EFAULT', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const mm = p.mm;
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 2 * P)), 'store');
    const pages: number[] = [];
    mm.findVma(a)!.flags |= VM_IO;
    t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_WRITE, pages), -EFAULT, 'VM_IO');
    t.is(yield* getUserPagesFast(mm, a, 1, 0, pages), -EFAULT, 'VM_IO, GET');
    mm.findVma(a)!.flags = (mm.findVma(a)!.flags & ~VM_IO) | VM_PFNMAP;
    t.is(yield* pinUserPagesFast(mm, a, 1, 0, pages), -EFAULT, 'VM_PFNMAP');
    mm.findVma(a)!.flags &= ~VM_PFNMAP;
    ok(yield* p.munmap(a, 2 * P), 'munmap');
    t.is(yield* pinUserPagesFast(mm, a, 1, 0, pages), -EFAULT, 'no VMA');
    t.deepEqual(pages, []);
    void k;
  });
});

test('rule 58: a write to a read-only private file mapping needs FOLL_FORCE and lands in a private anonymous copy, never in the file', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const file = k.createFile('lib.so', P, fill(0x11, P));
  runMain(t, r, function* () {
    const mm = p.mm;
    const a = ok(yield* p.mmap(0, P, PROT_READ, MAP_PRIVATE, file), 'mmap');
    t.deepEqual(bytes(yield* p.load(a, 4), 'load'), fill(0x11, 4));
    const cached = file.pageCache.get(0)!;
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_WRITE, pages), -EFAULT, 'no FOLL_FORCE');
    t.is(yield* getUserPagesFast(mm, a, 1, FOLL_WRITE, pages), -EFAULT, 'no FOLL_FORCE, GET');
    t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_WRITE | FOLL_FORCE, pages), 1);
    const f = pages[0]!;
    t.not(f, cached, 'COW broken: not the page-cache page');
    t.true(k.phys.has(f, PG_ANON) && k.phys.has(f, PG_ANON_EXCLUSIVE), 'a private, exclusive anonymous copy');
    t.is(frameAt(mm, a), f, 'the process maps the copy');
    t.false(pteHas(mm.pageTable.get(vpn(a)), PTE_WRITE), 'read-only still: a forced write does not make the PTE writable (maybe_mkwrite)');
    k.dmaBus.write(f, 0, fill(0xdd, 4));
    t.deepEqual(bytes(yield* p.load(a, 4), 'load'), fill(0xdd, 4), 'the process sees the forced write in its copy');
    t.deepEqual(k.phys.read(cached, 0, 4), fill(0x11, 4), 'the page cache is untouched');
    t.false(k.phys.has(cached, PG_DIRTY));
    unpinUserPagesDirtyLock(k, pages, true);
    yield* writebackFile(k, file);
    t.deepEqual(file.diskPage(0).subarray(0, 4), fill(0x11, 4), 'the file on disk is untouched');
    t.is(yield* p.store(a, fill(1, 1)), -EFAULT, 'the process itself still cannot write');
    // A second forced write pin follows the read-only PTE to the same exclusive copy.
    const again: number[] = [];
    t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_WRITE | FOLL_FORCE, again), 1);
    t.deepEqual(again, [f]);
    unpinUserPages(k, again);
  });
});

test('rule 58: a forced write to never-touched read-only private anonymous memory gets a private page, mapped read-only', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const mm = p.mm;
    const a = ok(yield* p.mmap(0, P, PROT_READ, ANON), 'mmap');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_WRITE, pages), -EFAULT);
    t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_WRITE | FOLL_FORCE, pages), 1);
    t.not(pages[0], ZERO_PFN);
    t.is(frameAt(mm, a), pages[0]!);
    t.false(pteHas(mm.pageTable.get(vpn(a)), PTE_WRITE));
    k.dmaBus.write(pages[0]!, 0, fill(9, 4));
    t.deepEqual(bytes(yield* p.load(a, 4), 'load'), fill(9, 4));
    unpinUserPages(k, pages);
  });
});

test('rule 58: a forced write to a read-only shared mapping is refused (-EFAULT); a forced read of PROT_NONE memory is allowed (VM_MAYREAD)', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const file = k.createFile('data', P, fill(0x22, P));
  runMain(t, r, function* () {
    const mm = p.mm;
    const a = ok(yield* p.mmap(0, P, PROT_READ, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_WRITE | FOLL_FORCE, pages), -EFAULT);
    const b = ok(yield* p.mmap(0, P, PROT_NONE, ANON), 'mmap');
    t.is(yield* pinUserPagesFast(mm, b, 1, 0, pages), -EFAULT, 'read of a VMA without VM_READ');
    t.is(yield* pinUserPagesFast(mm, b, 1, FOLL_FORCE, pages), 1, 'FOLL_FORCE with VM_MAYREAD');
    unpinUserPages(k, pages);
  });
});

test('rule 58: under linux-6.x a writable long-term pin of a shared (dirty-tracked) file mapping fails with -EFAULT; short-term pins, GET, shmem and private mappings are allowed', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const file = k.createFile('data', 4 * P);
  runMain(t, r, function* () {
    const mm = p.mm;
    const shared = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap shared');
    const priv = ok(yield* p.mmap(0, P, RW, MAP_PRIVATE, file, P), 'mmap private');
    const shm = ok(yield* p.mmap(0, P, RW, SHARED_ANON), 'mmap shmem');
    const pins: number[] = [];
    t.is(yield* pinUserPagesFast(mm, shared, 1, FOLL_WRITE | FOLL_LONGTERM, pins), -EFAULT);
    t.is(yield* pinUserPagesFast(mm, shared, 1, FOLL_LONGTERM, pins), 1, 'read-only long-term pin is fine');
    t.is(yield* pinUserPagesFast(mm, shared, 1, FOLL_WRITE, pins), 1, 'short-term write pin (O_DIRECT) is fine');
    const gets: number[] = [];
    t.is(yield* getUserPagesFast(mm, shared, 1, FOLL_WRITE, gets), 1, 'GET is fine');
    t.is(yield* pinUserPagesFast(mm, priv, 1, FOLL_WRITE | FOLL_LONGTERM, pins), 1, 'private file mapping: COW, no dirty tracking');
    t.true(k.phys.has(pins[2]!, PG_ANON));
    t.is(yield* pinUserPagesFast(mm, shm, 1, FOLL_WRITE | FOLL_LONGTERM, pins), 1, 'shmem needs no dirty tracking');
    unpinUserPages(k, pins);
    putUserPages(k, gets);
  });
});

test('rule 58 (profiles): under linux-4.18 a writable long-term GUP of a shared file mapping is allowed (get_user_pages with FOLL_LONGTERM), and pin_user_pages does not exist yet (5.6)', (t) => {
  const r = rigOn('linux-4.18');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P);
  runMain(t, r, function* () {
    const mm = p.mm;
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* getUserPagesFast(mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    t.is(pages[0], file.pageCache.get(0));
    t.is(k.phys.refcount[pages[0]!], 3, 'page cache + mapping + one plain reference: no bias before 5.7');
    t.is(yield* pinUserPagesFast(mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, []), -EINVAL);
    t.false(mm.hasPinned);
    putUserPages(k, pages);
  });
  const refused = trace.of('interface-refused');
  t.is(refused.length, 1);
  t.is(refused[0]!.api, 'pin_user_pages');
  t.regex(refused[0]!.message, /linux-4\.18.*5\.6/);
});

// ---- rule 60: write pins fault for write first -----------------------------------------

test('rule 60: a write pin of a COW-shared anonymous page breaks COW first (one CLEAR); the pin gets the new page, the child keeps the old', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0xaa, 8)), 'store');
    const old = frameAt(p.mm, a);
    const child = yield* p.fork();
    if (typeof child === 'number') throw new Error(`fork: ${child}`);
    t.is(frameAt(child.mm, a), old, 'COW-shared after fork');
    events.length = 0;
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, pages), 1);
    const f = pages[0]!;
    t.not(f, old);
    t.is(frameAt(p.mm, a), f);
    t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'the PTE is writable');
    t.deepEqual(lines(events, p.mm), pair('CLEAR', a, a + P), 'wp_page_copy CLEAR');
    ok(yield* p.store(a, fill(0xbb, 8)), 'store');
    t.deepEqual(k.dmaBus.read(f, 0, 8), fill(0xbb, 8), 'the parent writes into the pinned page');
    t.deepEqual(bytes(yield* child.load(a, 8), 'child load'), fill(0xaa, 8));
    unpinUserPages(k, pages);
  });
});

test('rule 60: a short-term write pin of a clean shared file page write-faults it: page_mkwrite attaches buffers and dirties it, the PTE becomes writable and dirty', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P, fill(0x33, P));
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    t.deepEqual(bytes(yield* p.load(a, 4), 'load'), fill(0x33, 4));
    const f = file.pageCache.get(0)!;
    t.false(k.phys.has(f, PG_DIRTY));
    t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'mapped read-only after a read fault');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, pages), 1);
    t.is(pages[0], f, 'a shared mapping is written in place');
    t.true(k.phys.has(f, PG_DIRTY));
    t.true(k.phys.has(f, PG_PRIVATE));
    const pte = p.mm.pageTable.get(vpn(a));
    t.true(pteHas(pte, PTE_WRITE) && pteHas(pte, PTE_DIRTY));
    unpinUserPages(k, pages);
  });
  t.is(trace.of('dirty-without-buffers').length, 0);
});

// ---- rule 61: anon-exclusive -----------------------------------------------------------

// linux-5.15: 5.8 broke COW for every read GUP of a COW mapping (should_force_cow_break).
for (const profile of ['linux-6.x', 'linux-5.15'] as const) {
  const unshares = profile === 'linux-6.x';
  test(`rule 61 (H9, ${profile}): a read-only pin of a COW-shared anonymous page ${unshares ? 'unshares it first and then observes the process\'s later writes' : 'pins the shared page, and the process\'s next write moves away from it'}`, (t) => {
    const r = rigOn(profile);
    const { k, p, events } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(0xaa, 8)), 'store');
      const shared = frameAt(p.mm, a);
      const child = yield* p.fork();
      if (typeof child === 'number') throw new Error(`fork: ${child}`);
      events.length = 0;
      const pages: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, 0, pages), 1);
      const f = pages[0]!;
      if (unshares) {
        t.not(f, shared, 'FAULT_FLAG_UNSHARE gave the parent its own copy');
        t.true(k.phys.has(f, PG_ANON_EXCLUSIVE), 'every pinned anonymous page is exclusive');
        t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'unshare does not make the PTE writable');
        t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_DIRTY), 'nor dirty');
        t.deepEqual(lines(events, p.mm), pair('CLEAR', a, a + P));
      } else {
        t.is(f, shared, 'no unshare before 5.19');
      }
      t.deepEqual(k.dmaBus.read(f, 0, 8), fill(0xaa, 8));
      ok(yield* p.store(a, fill(0xbb, 8)), 'store');
      if (unshares) {
        t.is(frameAt(p.mm, a), f, 'the exclusive page is reused in place');
        t.deepEqual(k.dmaBus.read(f, 0, 8), fill(0xbb, 8), 'the pin observes the write');
      } else {
        t.not(frameAt(p.mm, a), f, 'COW moved the parent to a new page');
        t.deepEqual(k.dmaBus.read(f, 0, 8), fill(0xaa, 8), 'the pin is stale');
      }
      t.deepEqual(bytes(yield* child.load(a, 8), 'child load'), fill(0xaa, 8), 'the child keeps its snapshot');
      unpinUserPages(k, pages);
    });
  });
}

// ---- rule 62: long-term pins leave ZONE_MOVABLE ----------------------------------------

test('rule 62 (H12): a long-term pin of a page in the movable zone migrates it first (CLEAR); the VA is then backed by another frame with the same bytes', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  const trace = traceOf(k);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x5a, 64)), 'store');
    const movable = frameAt(p.mm, a);
    k.phys.set(movable, PG_MOVABLE_ZONE);
    events.length = 0;
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    const f = pages[0]!;
    t.not(f, movable);
    t.false(k.phys.has(f, PG_MOVABLE_ZONE));
    t.is(frameAt(p.mm, a), f, 'the VA is backed by the new frame');
    t.deepEqual(k.dmaBus.read(f, 0, 64), fill(0x5a, 64));
    t.false(k.phys.isAllocated(movable), 'the movable frame was freed');
    t.is(k.phys.refcount[f], 1 + GUP_PIN_COUNTING_BIAS, 'nothing left over from the first, undone pin');
    t.deepEqual(lines(events, p.mm), pair('CLEAR', a, a + P));
    ok(yield* p.store(a, fill(0x6b, 8)), 'store');
    t.deepEqual(k.dmaBus.read(f, 0, 8), fill(0x6b, 8));
    unpinUserPages(k, pages);
  });
  t.deepEqual(trace.of('migrate').map((m) => [m.reason, m.ret]), [['longterm-pin', 0]]);
});

test('rule 62: a short-term pin leaves a movable page where it is; a long-term pin whose migration fails pins nothing', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x5a, 2 * P)), 'store');
    const f0 = frameAt(p.mm, a);
    const f1 = frameAt(p.mm, a + P);
    k.phys.set(f0, PG_MOVABLE_ZONE);
    k.phys.set(f1, PG_MOVABLE_ZONE);
    const short: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, short), 1);
    t.deepEqual(short, [f0], 'short-term pins may stay in ZONE_MOVABLE');
    unpinUserPages(k, short);
    // A driver's extra reference makes the migration fail (refcount mismatch, rule 73).
    const held: number[] = [];
    t.is(yield* getUserPagesFast(p.mm, a + P, 1, 0, held), 1);
    const pins: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 2, FOLL_WRITE | FOLL_LONGTERM, pins), -ENOMEM);
    t.deepEqual(pins, []);
    t.is(k.phys.refcount[f1], 2, 'nothing left pinned on the page that could not move');
    t.is(frameAt(p.mm, a + P), f1, 'its mapping is restored');
    putUserPages(k, held);
  });
});

// ---- rule 63: unpin with dirtying ------------------------------------------------------

test('rule 63: unpin_user_pages_dirty_lock(make_dirty) dirties the pages that are not dirty, through the filesystem hook; make_dirty false only unpins', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', 2 * P);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, 2 * P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 2, FOLL_WRITE, pages), 2);
    t.is(yield* writebackFile(k, file), 2, 'writeback cleans both pinned pages');
    for (const f of pages) t.false(k.phys.has(f, PG_DIRTY));
    k.dmaBus.write(pages[0]!, 0, fill(0xd0, 4));
    k.dmaBus.write(pages[1]!, 0, fill(0xd1, 4));
    unpinUserPagesDirtyLock(k, [pages[0]!], true);
    unpinUserPagesDirtyLock(k, [pages[1]!], false);
    t.true(k.phys.has(pages[0]!, PG_DIRTY), 'redirtied at unpin');
    t.false(k.phys.has(pages[1]!, PG_DIRTY), 'make_dirty false: unpin only');
    for (const f of pages) t.is(k.phys.refcount[f], 2, 'unpinned: page cache + mapping');
    t.is(yield* writebackFile(k, file), 1);
    t.deepEqual(file.diskPage(0).subarray(0, 4), fill(0xd0, 4), 'the DMA data reaches the disk');
    t.deepEqual(file.diskPage(1).subarray(0, 4), fill(0, 4), 'lost: never redirtied');
  });
  t.deepEqual(trace.of('dirty-without-buffers'), [], 'the buffers were kept, so redirtying is safe');
});

test('rule 63: an already dirty page is not dirtied again at unpin (no filesystem call)', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, pages), 1);
    t.true(k.phys.has(pages[0]!, PG_DIRTY));
    // Drop the buffers without cleaning: a filesystem call now would be recorded.
    k.phys.clear(pages[0]!, PG_PRIVATE);
    unpinUserPagesDirtyLock(k, pages, true);
    t.true(k.phys.has(pages[0]!, PG_DIRTY));
  });
  t.deepEqual(trace.of('dirty-without-buffers'), []);
});

// ---- rule 64: partial counts -----------------------------------------------------------

test('rule 64: GUP returns the number of pages grabbed before a hole, and -EFAULT when the first page is in one', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, 4 * P, RW, ANON), 'mmap');
    ok(yield* p.munmap(a + 2 * P, P), 'punch a hole');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 4, FOLL_WRITE, pages), 2);
    t.is(pages.length, 2);
    for (const f of pages) t.is(k.phys.refcount[f], 1 + GUP_PIN_COUNTING_BIAS);
    const more: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a + 2 * P, 2, FOLL_WRITE, more), -EFAULT);
    t.deepEqual(more, []);
    const gets: number[] = [];
    t.is(yield* getUserPagesFast(p.mm, a + P, 3, 0, gets), 1, 'GET too');
    putUserPages(k, gets);
    unpinUserPages(k, pages);
    for (const f of pages) t.is(k.phys.refcount[f], 1);
  });
});

test('rule 64: a fatal signal aborts GUP with -EINTR; an allocation failure in the fault gives -ENOMEM, or the short count when pages were already grabbed', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const pages: number[] = [];
    k.faultInjection.signalRate = 1;
    try {
      // Page 1 was never touched: the lockless walk takes nothing, the slow path sees the signal.
      t.is(yield* pinUserPagesFast(p.mm, a + P, 1, FOLL_WRITE, pages), -EINTR);
      t.deepEqual(pages, []);
      // Page 0 is present and writable: gup_fast takes it without looking at signals, and
      // internal_get_user_pages_fast returns that short count when the slow path fails.
      t.is(yield* pinUserPagesFast(p.mm, a, 2, FOLL_WRITE, pages), 1);
    } finally {
      k.faultInjection.signalRate = 0;
    }
    unpinUserPages(k, pages.splice(0));
    k.phys.allocFailureRate = 1;
    t.is(yield* pinUserPagesFast(p.mm, a, 2, FOLL_WRITE, pages), 1, 'page 0 was present; page 1 could not be allocated');
    t.is(yield* pinUserPagesFast(p.mm, a + P, 1, FOLL_WRITE, []), -ENOMEM);
    k.phys.allocFailureRate = 0;
    unpinUserPages(k, pages);
    t.is(k.phys.refcount[pages[0]!], 1);
  });
});

// ---- rule 65: a reference is not a mapping ---------------------------------------------

test('rule 65 (H3): after munmap a pinned frame stays allocated with its bytes, owned by the pinner alone; the last unpin frees it', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x77, 32)), 'store');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    const f = pages[0]!;
    const gen = k.dmaBus.generation(f);
    ok(yield* p.munmap(a, P), 'munmap');
    t.is(frameAt(p.mm, a), -1);
    t.true(k.dmaBus.allocated(f));
    t.is(k.dmaBus.generation(f), gen, 'not freed and reused');
    t.is(k.phys.refcount[f], GUP_PIN_COUNTING_BIAS, 'only the pin holds it');
    t.is(k.phys.mapcount[f], 0);
    t.deepEqual(k.dmaBus.read(f, 0, 32), fill(0x77, 32));
    // The process maps new memory at the same address: the pin does not follow (H3).
    const b = ok(yield* p.mmap(a, P, RW, ANON), 'mmap again');
    ok(yield* p.store(b, fill(0x88, 32)), 'store');
    t.not(frameAt(p.mm, b), f);
    t.deepEqual(k.dmaBus.read(f, 0, 32), fill(0x77, 32));
    unpinUserPages(k, pages);
    t.false(k.dmaBus.allocated(f), 'the last unpin frees it');
  });
});

// ---- RLIMIT_MEMLOCK --------------------------------------------------------------------

test('RLIMIT_MEMLOCK: accountPinnedVm charges pinned_vm and fails with -ENOMEM past the limit, charging nothing', (t) => {
  const r = rigOn('linux-6.x');
  const { p } = r;
  const mm = p.mm;
  mm.memlockLimitPages = 4;
  t.is(accountPinnedVm(mm, 3), 0);
  t.is(mm.pinnedVm, 3);
  t.is(accountPinnedVm(mm, 2), -ENOMEM);
  t.is(mm.pinnedVm, 3, 'a refused charge leaves pinned_vm unchanged');
  t.is(accountPinnedVm(mm, 1), 0, 'up to the limit exactly');
  t.is(accountPinnedVm(mm, 1), -ENOMEM);
  unaccountPinnedVm(mm, 4);
  t.is(mm.pinnedVm, 0);
  t.is(accountPinnedVm(mm, 4), 0);
  mm.memlockLimitPages = Infinity;
  t.is(accountPinnedVm(mm, 1 << 20), 0, 'unlimited (CAP_IPC_LOCK)');
});
