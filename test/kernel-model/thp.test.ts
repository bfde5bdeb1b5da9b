/**
 * Anonymous transparent huge pages (kernel-model/huge-memory.ts): PMD mappings at fault,
 * the splits every partial operation forces and the CLEAR each split sends (spec/kernel.md
 * rule 21f), khugepaged's collapse, COW of a PMD per profile, exact pin counts on a large
 * folio, fork of a pinned THP, large folios in reclaim, and hmm_range_fault's map order
 * (rule 47).
 */
import test from 'ava';
import {
  EBUSY, Kernel, MADV_DONTNEED, MADV_FREE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MREMAP_FIXED, MREMAP_MAYMOVE,
  PMD_SIZE, PROFILES, PROT_READ, PROT_WRITE, TASK_SIZE, GUP_PIN_COUNTING_BIAS, FOLL_LONGTERM, FOLL_WRITE,
  HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_VALID, HMM_PFN_WRITE, HPAGE_PMD_NR,
  MmuIntervalNotifier, collapseHugePage, hmmPfnEncode, hmmPfnRecord, hmmRangeFault, hmmRangeInit, khugepagedScanMm,
  mmuIntervalNotifierInsert, mmuIntervalReadBegin, mmuIntervalSetSeq, pinUserPagesFast, unpinUserPages, newReclaimStats, shrinkPage, migratePage,
  pteFrame, ZERO_CPU_COSTS, vpn, type Co, type HmmRange, type MmStruct, type KernelProfile, type Process, type ProfileName,
} from '../../kernel-model/index.ts';
import { P, bytes, fill, lines, ok, pair, rig, runMain, type Rig } from './_helpers.ts';

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
const M2 = PMD_SIZE;
/** A 2 MiB-aligned address for MAP_FIXED mappings. */
const BASE = 0x7e0000000000;

/** A THP-eligible mapping of `blocks` 2 MiB blocks at BASE, each block touched once (one THP each). */
function* thpBuffer(p: Process, blocks: number, advise = true): Co<number> {
  const a = ok(yield* p.mmap(BASE, blocks * M2, RW, ANON | MAP_FIXED), 'mmap');
  if (advise) ok(yield* p.madvise(a, blocks * M2, MADV_HUGEPAGE), 'madvise(HUGEPAGE)');
  for (let b = 0; b < blocks; b++) ok(yield* p.store(a + b * M2, fill(0x40 + b, 8)), 'store');
  return a;
}

const hugeAt = (mm: MmStruct, addr: number): boolean => mm.pageTable.pmdHuge(vpn(addr));
const headAt = (mm: MmStruct, addr: number): number => pteFrame(mm.pageTable.getPmd(vpn(addr)));

function profiled(name: ProfileName, extra: Partial<KernelProfile> = {}, cpu: Partial<typeof ZERO_CPU_COSTS> = {}): Rig {
  return rig({ profile: { ...PROFILES[name], ...extra }, cpuCosts: { ...ZERO_CPU_COSTS, ...cpu } });
}

// ---- fault --------------------------------------------------------------------------------

test('do_huge_pmd_anonymous_page (mm/huge_memory.c): under MADV_HUGEPAGE a fault maps the whole 2 MiB block with one huge entry and sends nothing (rule 18); without it, 4 KiB pages', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* thpBuffer(r.p, 1);
    t.true(hugeAt(r.p.mm, a));
    const head = headAt(r.p.mm, a);
    t.is(head % HPAGE_PMD_NR, 0, 'the folio is 2 MiB aligned in physical memory');
    t.is(r.k.phys.order[head], 9);
    t.is(r.k.phys.folioHead(head + 77), head);
    // Every page of the block resolves through the one entry.
    t.is(pteFrame(r.p.mm.pageTable.get(vpn(a + 77 * P))), head + 77);
    t.is(r.k.phys.mapcount[head + 77], 1, 'page_mapcount counts the PMD mapping for every page');
    t.is(r.k.phys.mappingsOf(head + 77)[0]?.addr, a + 77 * P, 'the rmap answers per page from the one PMD item');
    t.is(r.k.phys.folioRefCount(head + 300), 1, 'one folio reference for the PMD mapping');
    t.deepEqual(lines(r.events), []);
    // Without MADV_HUGEPAGE under `madvise`: a 4 KiB page.
    const b = ok(yield* r.p.mmap(BASE + 8 * M2, M2, RW, ANON | MAP_FIXED), 'mmap');
    ok(yield* r.p.store(b, fill(1, 8)), 'store');
    t.false(hugeAt(r.p.mm, b));
    t.is(r.p.mm.pageTable.entries, HPAGE_PMD_NR + 1);
  });
});

test('transparent_hugepage/enabled: `always` maps THPs without madvise, `never` not even with MADV_HUGEPAGE, and MADV_NOHUGEPAGE opts a VMA out', (t) => {
  for (const [mode, advice, huge] of [['always', 0, true], ['never', MADV_HUGEPAGE, false], ['always', MADV_NOHUGEPAGE, false], ['madvise', MADV_HUGEPAGE, true]] as const) {
    const r = rig();
    r.k.transparentHugepage.enabled = mode;
    runMain(t, r, function* () {
      const a = ok(yield* r.p.mmap(BASE, M2, RW, ANON | MAP_FIXED), 'mmap');
      if (advice) ok(yield* r.p.madvise(a, M2, advice), 'madvise');
      ok(yield* r.p.store(a, fill(1, 8)), 'store');
      t.is(hugeAt(r.p.mm, a), huge, `${mode} with advice ${advice}`);
    });
  }
});

test('thp fault fallback: a VMA that does not cover the aligned block, or no free 2 MiB of memory, gets 4 KiB pages (THP_FAULT_FALLBACK)', (t) => {
  const r = rig({ frames: 1024 + 100 });
  r.k.transparentHugepage.enabled = 'always';
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(BASE + P, M2, RW, ANON | MAP_FIXED), 'mmap');
    ok(yield* r.p.store(a, fill(1, 8)), 'store');
    t.false(hugeAt(r.p.mm, a), 'an unaligned VMA covers no whole block');
    const b = ok(yield* r.p.mmap(BASE + 4 * M2, 4 * M2, RW, ANON | MAP_FIXED), 'mmap');
    ok(yield* r.p.store(b, fill(1, 8)), 'store');
    t.true(hugeAt(r.p.mm, b), 'the first THP fits');
    ok(yield* r.p.store(b + M2, fill(1, 8)), 'store');
    t.false(hugeAt(r.p.mm, b + M2), 'no second aligned 2 MiB block free: 4 KiB');
    t.is(r.k.transparentHugepage.stats.faultFallback, 1);
  });
});

// ---- splits: munmap, DONTNEED, mprotect, mremap ------------------------------------------

test('rule 21f, mm/huge_memory.c (__split_huge_pmd, vma_adjust_trans_huge): a partial munmap of a THP splits it first (CLEAR over the 2 MiB block), then unmaps the request (UNMAP); the rest stays mapped', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* thpBuffer(r.p, 1);
    const head = headAt(r.p.mm, a);
    r.events.length = 0;
    ok(yield* r.p.munmap(a + 16 * P, 4 * P), 'munmap');
    t.deepEqual(lines(r.events), [...pair('CLEAR', a, a + M2), ...pair('UNMAP', a + 16 * P, a + 20 * P)]);
    t.false(hugeAt(r.p.mm, a));
    t.is(r.p.mm.pageTable.entries, HPAGE_PMD_NR - 4);
    t.is(r.k.phys.folioRefCount(head), HPAGE_PMD_NR - 4, 'one folio reference per remaining PTE mapping');
    t.is(r.k.phys.order[head], 9, 'the folio stays large (only the PMD was split)');
    t.deepEqual(Array.from(bytes(yield* r.p.load(a, 8), 'load')), Array.from(fill(0x40, 8)));
  });
});

test('rule 21f, mm/memory.c (zap_pmd_range -> __split_huge_pmd): MADV_DONTNEED of part of a THP nests the split CLEAR over the block inside its own CLEAR; DONTNEED of the whole block removes the PMD (zap_huge_pmd) and frees the folio', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* thpBuffer(r.p, 2);
    r.events.length = 0;
    ok(yield* r.p.madvise(a + 8 * P, 8 * P, MADV_DONTNEED), 'madvise');
    t.deepEqual(lines(r.events), [
      `start CLEAR 0x${(a + 8 * P).toString(16)}-0x${(a + 16 * P).toString(16)}`,
      ...pair('CLEAR', a, a + M2),
      `end CLEAR 0x${(a + 8 * P).toString(16)}-0x${(a + 16 * P).toString(16)}`,
    ]);
    t.false(hugeAt(r.p.mm, a));
    t.is(r.p.mm.pageTable.get(vpn(a + 8 * P)), 0);
    const freeBefore = r.k.phys.freeFrames;
    r.events.length = 0;
    ok(yield* r.p.madvise(a + M2, M2, MADV_DONTNEED), 'madvise');
    t.deepEqual(lines(r.events), pair('CLEAR', a + M2, a + 2 * M2), 'a whole block: no split');
    t.is(r.k.phys.freeFrames, freeBefore + HPAGE_PMD_NR, 'the whole folio went back');
    t.deepEqual(Array.from(bytes(yield* r.p.load(a + M2, 4), 'load')), [0, 0, 0, 0]);
  });
});

test('cpu costs, mm/huge_memory.c (zap_huge_pmd): zapping a whole THP is one entry of zap work (zapPerPageNs once, not 512 times), a PTE-mapped 2 MiB block 512 entries; the flush covers the whole block either way', (t) => {
  const r = profiled('linux-6.x', {}, { zapPerPageNs: 1_000 });
  runMain(t, r, function* () {
    const a = yield* thpBuffer(r.p, 1);
    const b = ok(yield* r.p.mmap(BASE + 4 * M2, M2, RW, ANON | MAP_FIXED), 'mmap');
    for (let i = 0; i < HPAGE_PMD_NR; i++) ok(yield* r.p.store(b + i * P, fill(1, 1)), 'store');
    t.true(hugeAt(r.p.mm, a));
    t.false(hugeAt(r.p.mm, b));
    let t0 = r.k.sim.now();
    ok(yield* r.p.madvise(a, M2, MADV_DONTNEED), 'madvise');
    t.is(r.k.sim.now() - t0, 1_000, 'one huge entry');
    t0 = r.k.sim.now();
    ok(yield* r.p.madvise(b, M2, MADV_DONTNEED), 'madvise');
    t.is(r.k.sim.now() - t0, HPAGE_PMD_NR * 1_000, '512 PTEs');
  });
});

test('rule 21f: munmap of whole THPs sends one UNMAP and no split; MADV_FREE over a whole THP marks it lazy-free on the huge entry, over part of it splits first', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* thpBuffer(r.p, 2);
    r.events.length = 0;
    ok(yield* r.p.madvise(a, M2, MADV_FREE), 'madvise(FREE)');
    t.deepEqual(lines(r.events), pair('CLEAR', a, a + M2));
    t.true(hugeAt(r.p.mm, a), 'FREE over the whole block keeps the PMD');
    r.events.length = 0;
    ok(yield* r.p.madvise(a + M2, P, MADV_FREE), 'madvise(FREE)');
    t.deepEqual(lines(r.events), [`start CLEAR 0x${(a + M2).toString(16)}-0x${(a + M2 + P).toString(16)}`, ...pair('CLEAR', a + M2, a + 2 * M2), `end CLEAR 0x${(a + M2).toString(16)}-0x${(a + M2 + P).toString(16)}`]);
    r.events.length = 0;
    ok(yield* r.p.munmap(a, 2 * M2), 'munmap');
    t.deepEqual(lines(r.events), pair('UNMAP', a, a + 2 * M2));
  });
});

test('rule 21f/21h, mm/huge_memory.c (change_huge_pmd): mprotect of a whole THP changes the huge entry in place (one PROTECTION_VMA); of part of it, the VMA split sends the CLEAR over the block first', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* thpBuffer(r.p, 2);
    r.events.length = 0;
    ok(yield* r.p.mprotect(a, M2, PROT_READ), 'mprotect');
    t.deepEqual(lines(r.events), pair('PROTECTION_VMA', a, a + M2));
    t.true(hugeAt(r.p.mm, a));
    t.false((r.p.mm.pageTable.getPmd(vpn(a)) & 2) !== 0, 'the huge entry lost write');
    r.events.length = 0;
    ok(yield* r.p.mprotect(a + M2 + 4 * P, 4 * P, PROT_READ), 'mprotect');
    t.deepEqual(lines(r.events), [...pair('CLEAR', a + M2, a + 2 * M2), ...pair('PROTECTION_VMA', a + M2 + 4 * P, a + M2 + 8 * P)]);
    t.false(hugeAt(r.p.mm, a + M2));
  });
});

test('rule 21b/21f, mm/mremap.c (move_page_tables): a THP moves whole when both ends are 2 MiB aligned; at an unaligned destination it is split (CLEAR nested in the move\'s UNMAP)', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* thpBuffer(r.p, 1);
    const head = headAt(r.p.mm, a);
    r.events.length = 0;
    const dst = BASE + 16 * M2;
    t.is(yield* r.p.mremap(a, M2, M2, MREMAP_MAYMOVE | MREMAP_FIXED, dst), dst);
    t.true(hugeAt(r.p.mm, dst));
    t.is(headAt(r.p.mm, dst), head, 'the same folio, one entry moved');
    t.deepEqual(lines(r.events), [...pair('UNMAP', a, a + M2), ...pair('UNMAP', a, a + M2)]);
    r.events.length = 0;
    const dst2 = BASE + 32 * M2 + P;
    t.is(yield* r.p.mremap(dst, M2, M2, MREMAP_MAYMOVE | MREMAP_FIXED, dst2), dst2);
    t.deepEqual(lines(r.events), [
      `start UNMAP 0x${dst.toString(16)}-0x${(dst + M2).toString(16)}`, ...pair('CLEAR', dst, dst + M2), `end UNMAP 0x${dst.toString(16)}-0x${(dst + M2).toString(16)}`,
      ...pair('UNMAP', dst, dst + M2),
    ]);
    t.false(hugeAt(r.p.mm, dst2));
    t.deepEqual(Array.from(bytes(yield* r.p.load(dst2, 8), 'load')), Array.from(fill(0x40, 8)));
  });
});

// ---- COW of a PMD --------------------------------------------------------------------------

test('do_huge_pmd_wp_page (mm/huge_memory.c, 5.8 3917c80280c9): after fork a write to the shared THP splits it (CLEAR over 2 MiB) and copies one 4 KiB page (CLEAR over the page); linux-4.18 copied all 2 MiB into a new THP with one CLEAR', (t) => {
  for (const name of ['linux-6.x', 'linux-4.18'] as const) {
    const r = profiled(name);
    runMain(t, r, function* () {
      const a = yield* thpBuffer(r.p, 1);
      const head = headAt(r.p.mm, a);
      const child = yield* r.p.fork();
      if (typeof child === 'number') return t.fail('fork');
      t.true(hugeAt(child.mm, a), `${name}: the child shares the PMD`);
      t.is(headAt(child.mm, a), head);
      r.events.length = 0;
      ok(yield* r.p.store(a + 5 * P, fill(9, 4)), 'store');
      const mine = lines(r.events, r.p.mm);
      if (name === 'linux-6.x') {
        t.deepEqual(mine, [...pair('CLEAR', a, a + M2), ...pair('CLEAR', a + 5 * P, a + 6 * P)]);
        t.false(hugeAt(r.p.mm, a));
        t.not(pteFrame(r.p.mm.pageTable.get(vpn(a + 5 * P))), head + 5, 'the written page was copied');
        t.is(pteFrame(r.p.mm.pageTable.get(vpn(a + 6 * P))), head + 6, 'its neighbours still map the shared folio');
      } else {
        t.deepEqual(mine, pair('CLEAR', a, a + M2));
        t.true(hugeAt(r.p.mm, a), 'a new THP');
        t.not(headAt(r.p.mm, a), head);
      }
      t.deepEqual(Array.from(bytes(yield* child.load(a + 5 * P, 4), 'load')), [0, 0, 0, 0], `${name}: the child still sees the old bytes`);
      t.deepEqual(Array.from(bytes(yield* child.load(a, 4), 'load')), [0x40, 0x40, 0x40, 0x40]);
    });
  }
});

test('no page-table lock in the model (commit 798b1cc): do_huge_pmd_wp_page\'s 2 MiB copy (linux-4.18, mm/huge_memory.c pmdp_huge_clear_flush) settles the new PMD before the TLB flush\'s CPU time: a second writer during the flush finds the new writable entry, not the old one to copy again', (t) => {
  // Only the flush costs time (10 us), so the second thread's write lands inside it.
  const r = profiled('linux-4.18', {}, { tlbFlushNs: 10_000 });
  runMain(t, r, function* () {
    const a = yield* thpBuffer(r.p, 1);
    const head = headAt(r.p.mm, a);
    const child = yield* r.p.fork();
    if (typeof child === 'number') return t.fail('fork');
    const other = r.p.spawnThread('other', function* () {
      yield* r.k.sim.sleep(1_000);
      ok(yield* r.p.store(a + 7 * P, fill(7, 4)), 'store during the flush');
    });
    ok(yield* r.p.store(a + 5 * P, fill(5, 4)), 'store');
    yield* r.k.sim.join(other);
    t.true(hugeAt(r.p.mm, a), 'one new THP');
    t.not(headAt(r.p.mm, a), head);
    t.is(r.k.transparentHugepage.stats.splitPmd, 0);
    t.is(r.k.phys.folioRefCount(head), 1, 'the child\'s reference only: the old folio was put once');
    t.deepEqual(Array.from(bytes(yield* r.p.load(a + 5 * P, 1), 'load')), [5]);
    t.deepEqual(Array.from(bytes(yield* r.p.load(a + 7 * P, 1), 'load')), [7], 'both writes in the one copy');
    t.deepEqual(Array.from(bytes(yield* child.load(a + 7 * P, 4), 'load')), [0, 0, 0, 0], 'the child keeps the old bytes');
  });
});

// ---- khugepaged -----------------------------------------------------------------------------
test('no page-table lock in the model: collapse_huge_page (mm/khugepaged.c, __collapse_huge_page_isolate after the range start) checks the PTEs again after the notifier start; a GUP-fast pin taken meanwhile stops the collapse (-EBUSY, the CLEAR still ended) and the pinned page stays mapped', (t) => {
  // The subscriber's dispatch costs 10 us: the pin lands inside the collapse's range start.
  const r = profiled('linux-6.x', {}, { notifierDispatchNs: 10_000 });
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(BASE, M2, RW, ANON | MAP_FIXED), 'mmap');
    for (let i = 0; i < HPAGE_PMD_NR; i += 64) ok(yield* r.p.store(a + i * P, fill(1, 4)), 'store');
    ok(yield* r.p.madvise(a, M2, MADV_HUGEPAGE), 'madvise');
    yield* subscribe(r.p.mm);
    const pages: number[] = [];
    const pinner = r.p.spawnThread('pinner', function* () {
      yield* r.k.sim.sleep(5_000);
      t.is(yield* pinUserPagesFast(r.p.mm, a + 64 * P, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    });
    r.events.length = 0;
    t.is(yield* collapseHugePage(r.p.mm, a), -EBUSY);
    yield* r.k.sim.join(pinner);
    t.deepEqual(lines(r.events), pair('CLEAR', a, a + M2));
    t.false(hugeAt(r.p.mm, a));
    t.is(pteFrame(r.p.mm.pageTable.get(vpn(a + 64 * P))), pages[0] as number, 'the pinned page is the one mapped');
    unpinUserPages(r.k, pages);
  });
});


test('rule 21f, mm/khugepaged.c (collapse_huge_page): khugepaged collapses a PTE-mapped block into one THP with a CLEAR over the block; the bytes are kept; a pinned page stops it (SCAN_PAGE_COUNT) with nothing sent', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(BASE, 2 * M2, RW, ANON | MAP_FIXED), 'mmap');
    for (let i = 0; i < 2 * HPAGE_PMD_NR; i += 64) ok(yield* r.p.store(a + i * P, fill(i & 0xff, 4)), 'store');
    t.false(hugeAt(r.p.mm, a));
    t.is((yield* collapseHugePage(r.p.mm, a)) < 0, true, 'not eligible without MADV_HUGEPAGE (madvise mode)');
    ok(yield* r.p.madvise(a, 2 * M2, MADV_HUGEPAGE), 'madvise');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(r.p.mm, a + M2, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    r.events.length = 0;
    t.is(yield* khugepagedScanMm(r.p.mm), 1, 'one block collapsed, the pinned one not');
    t.deepEqual(lines(r.events), pair('CLEAR', a, a + M2));
    t.true(hugeAt(r.p.mm, a));
    t.false(hugeAt(r.p.mm, a + M2));
    t.is(yield* collapseHugePage(r.p.mm, a + M2), -EBUSY);
    for (let i = 0; i < HPAGE_PMD_NR; i += 64) t.is(bytes(yield* r.p.load(a + i * P, 1), 'load')[0], i & 0xff);
    unpinUserPages(r.k, pages);
    t.is(yield* collapseHugePage(r.p.mm, a + M2), 0, 'unpinned: it collapses');
  });
});

// ---- pins -------------------------------------------------------------------------------------

test('rule 55, mm/gup.c (try_grab_folio, 5.7 47e29d32afba): pinning pages of a THP counts exactly in the folio\'s _pincount with one reference each, never GUP_PIN_COUNTING_BIAS; unpin restores both', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* thpBuffer(r.p, 1);
    const head = headAt(r.p.mm, a);
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(r.p.mm, a + 3 * P, 5, FOLL_WRITE | FOLL_LONGTERM, pages), 5);
    t.is(r.k.phys.folioPincount(head), 5);
    t.is(r.k.phys.folioRefCount(head), 1 + 5);
    t.true(r.k.phys.folioRefCount(head) < GUP_PIN_COUNTING_BIAS);
    t.true(r.k.phys.maybeDmaPinned(head + 400), 'any page of a pinned folio is maybe pinned (folio_maybe_dma_pinned)');
    unpinUserPages(r.k, pages);
    t.is(r.k.phys.folioPincount(head), 0);
    t.is(r.k.phys.folioRefCount(head), 1);
    t.false(r.k.phys.maybeDmaPinned(head + 400));
  });
});

test('rule 68, mm/huge_memory.c (copy_huge_pmd, 5.9 "mm/thp: Split huge pmds/puds if they\'re pinned when fork()"): fork splits a pinned THP in the parent (a CLEAR over the block nested in PROTECTION_PAGE) and gives the child copies; linux-5.8 shares the pinned PMD', (t) => {
  for (const name of ['linux-6.x', 'linux-5.8'] as const) {
    const r = profiled(name);
    runMain(t, r, function* () {
      const a = yield* thpBuffer(r.p, 1);
      const head = headAt(r.p.mm, a);
      const pages: number[] = [];
      t.is(yield* pinUserPagesFast(r.p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
      r.events.length = 0;
      const child = yield* r.p.fork();
      if (typeof child === 'number') return t.fail('fork');
      if (name === 'linux-6.x') {
        t.deepEqual(lines(r.events, r.p.mm), [
          `start PROTECTION_PAGE 0x${a.toString(16)}-0x${(a + M2).toString(16)}`, ...pair('CLEAR', a, a + M2),
          `end PROTECTION_PAGE 0x${a.toString(16)}-0x${(a + M2).toString(16)}`,
        ]);
        t.false(hugeAt(r.p.mm, a), 'the parent\'s PMD was split');
        t.is(pteFrame(r.p.mm.pageTable.get(vpn(a))), head, 'the parent keeps the pinned page, writable');
        t.true((r.p.mm.pageTable.get(vpn(a)) & 2) !== 0);
        t.not(pteFrame(child.mm.pageTable.get(vpn(a))), head, 'the child got a copy');
        t.not(pteFrame(child.mm.pageTable.get(vpn(a + 300 * P))), head + 300, 'of every page of the maybe-pinned folio');
      } else {
        t.deepEqual(lines(r.events, r.p.mm), pair('PROTECTION_PAGE', a, a + M2));
        t.true(hugeAt(child.mm, a));
        t.is(headAt(child.mm, a), head, 'linux-5.8: the pinned THP is COW-shared');
      }
      t.deepEqual(Array.from(bytes(yield* child.load(a, 4), 'load')), [0x40, 0x40, 0x40, 0x40]);
      unpinUserPages(r.k, pages);
    });
  }
});

// ---- reclaim and migration -------------------------------------------------------------------

test('large folios in reclaim and migration (shrink_folio_list / migrate_pages split them; can_split_folio refuses a pinned one): a THP is split (CLEAR over its block) and its pages reclaimed; a pinned THP is kept whole, 512 pages counted as pinned', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* thpBuffer(r.p, 2);
    const h0 = headAt(r.p.mm, a);
    const h1 = headAt(r.p.mm, a + M2);
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(r.p.mm, a + M2, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    const stats = newReclaimStats();
    r.events.length = 0;
    t.is(yield* shrinkPage(r.k, h1, stats, true), 'pinned');
    t.is(stats.keptPinned, HPAGE_PMD_NR);
    t.true(hugeAt(r.p.mm, a + M2), 'can_split_folio refuses before anything is unmapped: the PMD stays');
    t.deepEqual(lines(r.events), [], 'and nothing is sent');
    t.is(yield* migratePage(r.k, h1 + 3, 'numa'), -EBUSY);
    r.events.length = 0;
    t.is(yield* shrinkPage(r.k, h0, stats, true), 'freed');
    t.deepEqual(lines(r.events).slice(0, 2), pair('CLEAR', a, a + M2), 'the PMD split first');
    t.is(r.k.phys.order[h0], 0, 'the folio was split into small pages');
    t.deepEqual(Array.from(bytes(yield* r.p.load(a, 4), 'load')), [0x40, 0x40, 0x40, 0x40], 'swapped back in');
    unpinUserPages(r.k, pages);
  });
});

// ---- hmm_range_fault map order --------------------------------------------------------------

function* subscribe(mm: MmStruct): Co<MmuIntervalNotifier> {
  const sub = new MmuIntervalNotifier('thp-test');
  ok(yield* mmuIntervalNotifierInsert(sub, mm, 0, TASK_SIZE, {
    invalidate: (s, _range, curSeq) => {
      mmuIntervalSetSeq(s, curSeq);
      return true;
    },
  }), 'insert');
  return sub;
}

/** The rule-31 loop: read_begin, hmm_range_fault under the mmap lock, again on -EBUSY. */
function* walk(sub: MmuIntervalNotifier, start: number, end: number, flags: number): Co<{ ret: number; range: HmmRange }> {
  for (;;) {
    const seq = yield* mmuIntervalReadBegin(sub);
    const range = hmmRangeInit(sub, start, end, seq, flags);
    yield* sub.mm.mmapLock.downRead();
    const ret = yield* hmmRangeFault(range);
    sub.mm.mmapLock.upRead();
    if (ret !== -EBUSY) return { ret, range };
  }
}

test('rule 47, mm/hmm.c (hmm_vma_handle_pmd, hmm_pfn_to_map_order; 5.10 3b50a6e536d2): a PMD-mapped THP reports map order 9 on every page, in bits 53+ of the pfn word; PTE-mapped pages and linux-5.8 report 0', (t) => {
  for (const name of ['linux-6.x', 'linux-5.8'] as const) {
    const r = profiled(name);
    runMain(t, r, function* () {
      const a = yield* thpBuffer(r.p, 1);
      const head = headAt(r.p.mm, a);
      ok(yield* r.p.mmap(BASE + 4 * M2, 4 * P, RW, ANON | MAP_FIXED), 'mmap');
      ok(yield* r.p.store(BASE + 4 * M2, fill(1, 4)), 'store');
      const sub = yield* subscribe(r.p.mm);
      // A sub-range of the THP: the order still describes the whole 2 MiB mapping.
      let w = yield* walk(sub, a + 10 * P, a + 14 * P, HMM_PFN_REQ_FAULT);
      t.is(w.ret, 0);
      const rec = hmmPfnRecord(w.range, 1);
      t.is(rec.pfn, head + 11);
      t.true(rec.valid && rec.write);
      const want = name === 'linux-6.x' ? 9 : 0;
      t.is(rec.order, want, `${name}: order of page 11`);
      t.is((hmmPfnEncode(rec) >> 53n) & 31n, BigInt(want));
      w = yield* walk(sub, BASE + 4 * M2, BASE + 4 * M2 + P, HMM_PFN_REQ_FAULT);
      t.is(hmmPfnRecord(w.range, 0).order, 0, 'a 4 KiB PTE: order 0');
    });
  }
});

test('rule 47, mm/hmm.c (hmm_vma_walk_hole -> hmm_vma_fault -> do_huge_pmd_anonymous_page): faulting an empty THP-eligible block through hmm_range_fault maps a THP and reports order 9; a write request on a read-only shared THP splits it (do_huge_pmd_wp_page) and the page comes back order 0', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(BASE, M2, RW, ANON | MAP_FIXED), 'mmap');
    ok(yield* r.p.madvise(a, M2, MADV_HUGEPAGE), 'madvise');
    const sub = yield* subscribe(r.p.mm);
    let w = yield* walk(sub, a, a + 2 * P, HMM_PFN_REQ_FAULT);
    t.is(w.ret, 0);
    t.true(hugeAt(r.p.mm, a));
    t.deepEqual(Array.from(w.range.order), [9, 9]);
    t.is(w.range.flags[0]! & (HMM_PFN_VALID | HMM_PFN_WRITE), HMM_PFN_VALID | HMM_PFN_WRITE);
    const child = yield* r.p.fork();
    if (typeof child === 'number') return t.fail('fork');
    w = yield* walk(sub, a, a + P, HMM_PFN_REQ_FAULT);
    t.is(w.range.flags[0]! & HMM_PFN_WRITE, 0, 'read-only after fork, still order 9');
    t.is(w.range.order[0], 9);
    w = yield* walk(sub, a, a + P, HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE);
    t.is(w.ret, 0);
    t.is(w.range.order[0], 0, 'split by the write fault, then a 4 KiB copy');
    t.false(hugeAt(r.p.mm, a));
  });
});
