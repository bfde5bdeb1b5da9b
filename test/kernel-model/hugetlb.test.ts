/**
 * hugetlb (kernel-model/hugetlb.ts): MAP_HUGETLB mappings from a reserved pool of 2 MiB
 * pages, huge-page aligned DONTNEED (spec/kernel.md rule 21c), CLEAR on COW (hugetlb_wp),
 * CLEAR over the VMA at fork (rule 21i), no splitting, and hmm_range_fault's order (rule 47).
 */
import test from 'ava';
import {
  EBUSY, EFAULT, EINVAL, ENOMEM, MADV_DONTNEED, MADV_FREE, MAP_ANONYMOUS, MAP_FIXED, MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED,
  PMD_SIZE, PROFILES, PROT_READ, PROT_WRITE, TASK_SIZE, FOLL_LONGTERM, FOLL_WRITE,
  MmuIntervalNotifier, hmmPfnRecord, hmmRangeFault, hmmRangeInit, HMM_PFN_REQ_FAULT,
  mmuIntervalNotifierInsert, mmuIntervalReadBegin, mmuIntervalSetSeq, pinUserPagesFast, unpinUserPages,
  pteFrame, ZERO_CPU_COSTS, vpn, type Co, type MmStruct, type Process,
} from '../../kernel-model/index.ts';
import { P, bytes, fill, lines, ok, pair, rig, runMain, type Rig } from './_helpers.ts';

const RW = PROT_READ | PROT_WRITE;
const HUGE = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
const M2 = PMD_SIZE;

const headAt = (mm: MmStruct, addr: number): number => pteFrame(mm.pageTable.getPmd(vpn(addr)));

function hugeRig(pool: number, profile: keyof typeof PROFILES = 'linux-6.x'): Rig {
  const r = rig({ profile: PROFILES[profile] });
  r.k.hugetlb.setNrHugepages(pool);
  return r;
}

function* touched(p: Process, pages: number): Co<number> {
  const a = ok(yield* p.mmap(0, pages * M2, RW, HUGE), 'mmap(MAP_HUGETLB)');
  for (let i = 0; i < pages; i++) ok(yield* p.store(a + i * M2, fill(0x60 + i, 8)), 'store');
  return a;
}

test('mmap(MAP_HUGETLB) (mm/hugetlb.c hugetlb_reserve_pages): the length is rounded up to 2 MiB, the address is 2 MiB aligned, the pages are reserved up front (-ENOMEM past the pool) and a fault maps one huge entry with nothing sent', (t) => {
  const r = hugeRig(3);
  runMain(t, r, function* () {
    t.is(yield* r.p.mmap(0, 4 * M2, RW, HUGE), -ENOMEM, 'four pages wanted, three in the pool');
    t.is(yield* r.p.mmap(0, M2, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB), -EINVAL, 'shared hugetlb is not modelled');
    t.is(yield* r.p.mmap(0x7e0000001000, M2, RW, HUGE | MAP_FIXED), -EINVAL, 'MAP_FIXED at an unaligned address');
    const a = ok(yield* r.p.mmap(0, M2 + P, RW, HUGE), 'mmap');
    t.is(a % M2, 0);
    t.is(r.p.mm.vmas[0]!.end - a, 2 * M2, 'rounded up to two huge pages');
    t.is(r.k.hugetlb.resvHugepages, 2);
    ok(yield* r.p.store(a + 5 * P, fill(7, 4)), 'store');
    t.true(r.p.mm.pageTable.pmdHuge(vpn(a)));
    t.is(r.k.hugetlb.resvHugepages, 1, 'the fault consumed a reservation');
    t.is(r.k.phys.order[headAt(r.p.mm, a)], 9);
    t.deepEqual(lines(r.events), []);
  });
});

test('rule 21c, mm/madvise.c (madvise_dontneed_free_valid_vma): MADV_DONTNEED on hugetlb needs a huge-page aligned start (-EINVAL), rounds the end down (a shorter request frees and sends nothing), and zaps whole huge pages with one CLEAR; the page goes back to the pool', (t) => {
  const r = hugeRig(2);
  runMain(t, r, function* () {
    const a = yield* touched(r.p, 2);
    r.events.length = 0;
    t.is(yield* r.p.madvise(a + P, P, MADV_DONTNEED), -EINVAL, 'unaligned start');
    t.is(yield* r.p.madvise(a, M2 - P, MADV_DONTNEED), 0, 'shorter than a huge page: nothing');
    t.deepEqual(lines(r.events), []);
    t.true(r.p.mm.pageTable.pmdHuge(vpn(a)), 'never split');
    t.is(yield* r.p.madvise(a, M2 + 5 * P, MADV_DONTNEED), 0);
    t.deepEqual(lines(r.events), pair('CLEAR', a, a + M2), 'the end rounded down to the first huge page');
    t.false(r.p.mm.pageTable.pmdHuge(vpn(a)));
    t.true(r.p.mm.pageTable.pmdHuge(vpn(a + M2)));
    t.is(r.k.hugetlb.freeHugepages, 1, 'back in the pool, not in the page allocator');
    t.is(yield* r.p.madvise(a, M2, MADV_FREE), -EINVAL, 'MADV_FREE is refused on hugetlb');
    t.deepEqual(Array.from(bytes(yield* r.p.load(a, 4), 'load')), [0, 0, 0, 0], 'refaulted from the pool, zeroed');
  });
});

test('profile: linux-5.15 refuses MADV_DONTNEED on hugetlb with -EINVAL (allowed from 5.18, 90e7e7f5ef3f)', (t) => {
  const r = hugeRig(1, 'linux-5.15');
  runMain(t, r, function* () {
    const a = yield* touched(r.p, 1);
    t.is(yield* r.p.madvise(a, M2, MADV_DONTNEED), -EINVAL);
    t.true(r.p.mm.pageTable.pmdHuge(vpn(a)));
  });
});

test('hugetlb_vm_op_split (mm/hugetlb.c): munmap or mprotect that would cut a huge page fails with -EINVAL and changes nothing; aligned munmap sends one UNMAP', (t) => {
  const r = hugeRig(2);
  runMain(t, r, function* () {
    const a = yield* touched(r.p, 2);
    r.events.length = 0;
    t.is(yield* r.p.munmap(a + P, P), -EINVAL);
    t.is(yield* r.p.mprotect(a, M2 + P, PROT_READ), -EINVAL);
    t.deepEqual(lines(r.events), []);
    t.is(yield* r.p.munmap(a + M2, M2), 0);
    t.deepEqual(lines(r.events), pair('UNMAP', a + M2, a + 2 * M2));
    t.is(r.k.hugetlb.freeHugepages, 1);
  });
});

test('rules 21d/21i, mm/hugetlb.c (copy_hugetlb_page_range, hugetlb_wp): fork sends CLEAR (not PROTECTION_PAGE) over the whole VMA; a write to the shared huge page copies all 2 MiB with one CLEAR over it; the last sharer reuses its page silently; SIGBUS (-EFAULT) when the pool is empty', (t) => {
  const r = hugeRig(3);
  runMain(t, r, function* () {
    const a = yield* touched(r.p, 2);
    const head = headAt(r.p.mm, a);
    r.events.length = 0;
    const child = yield* r.p.fork();
    if (typeof child === 'number') return t.fail('fork');
    t.deepEqual(lines(r.events, r.p.mm), pair('CLEAR', a, a + 2 * M2));
    t.is(headAt(child.mm, a), head);
    r.events.length = 0;
    ok(yield* r.p.store(a + 9 * P, fill(1, 4)), 'store');
    t.deepEqual(lines(r.events, r.p.mm), pair('CLEAR', a, a + M2));
    t.not(headAt(r.p.mm, a), head);
    t.true(r.p.mm.pageTable.pmdHuge(vpn(a)), 'still one huge entry: hugetlb never splits');
    t.deepEqual(Array.from(bytes(yield* child.load(a + 9 * P, 4), 'load')), [0, 0, 0, 0]);
    t.deepEqual(Array.from(bytes(yield* r.p.load(a, 4), 'load')), [0x60, 0x60, 0x60, 0x60], 'the copy has all the bytes');
    r.events.length = 0;
    ok(yield* child.store(a, fill(2, 4)), 'child store');
    t.deepEqual(lines(r.events, child.mm), [], 'the child is the last sharer: reused in place');
    t.is(yield* r.p.store(a + M2, fill(3, 4)), -EFAULT, 'no free huge page for the second copy: SIGBUS');
  });
});

test('no page-table lock in the model (commit 798b1cc): hugetlb_wp (mm/hugetlb.c, huge_ptep_clear_flush) settles the copied page\'s entry before the TLB flush\'s CPU time: a second writer during the flush finds it writable, no second copy, the old page put once', (t) => {
  const r = rig({ profile: PROFILES['linux-6.x'], cpuCosts: { ...ZERO_CPU_COSTS, tlbFlushNs: 10_000 } });
  r.k.hugetlb.setNrHugepages(3);
  runMain(t, r, function* () {
    const a = yield* touched(r.p, 1);
    const head = headAt(r.p.mm, a);
    const child = yield* r.p.fork();
    if (typeof child === 'number') return t.fail('fork');
    const other = r.p.spawnThread('other', function* () {
      yield* r.k.sim.sleep(1_000);
      ok(yield* r.p.store(a + 7 * P, fill(7, 4)), 'store during the flush');
    });
    ok(yield* r.p.store(a + 5 * P, fill(5, 4)), 'store');
    yield* r.k.sim.join(other);
    t.not(headAt(r.p.mm, a), head);
    t.is(r.k.phys.folioRefCount(head), 1, 'the child\'s reference only');
    t.is(r.k.hugetlb.freeHugepages, 1, 'one copy taken from the pool of three');
    t.deepEqual(Array.from(bytes(yield* r.p.load(a + 5 * P, 1), 'load')), [5]);
    t.deepEqual(Array.from(bytes(yield* r.p.load(a + 7 * P, 1), 'load')), [7]);
    t.deepEqual(Array.from(bytes(yield* child.load(a + 7 * P, 4), 'load')), [0, 0, 0, 0]);
  });
});

test('rule 67 for hugetlb (hugetlb_try_dup_anon_rmap): fork copies a maybe-pinned huge page for the child at once; exact pin counts on the 2 MiB folio', (t) => {
  const r = hugeRig(3);
  runMain(t, r, function* () {
    const a = yield* touched(r.p, 1);
    const head = headAt(r.p.mm, a);
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(r.p.mm, a, 3, FOLL_WRITE | FOLL_LONGTERM, pages), 3);
    t.is(r.k.phys.folioPincount(head), 3);
    t.is(r.k.phys.folioRefCount(head), 4);
    const child = yield* r.p.fork();
    if (typeof child === 'number') return t.fail('fork');
    t.is(headAt(r.p.mm, a), head, 'the parent keeps the pinned page');
    t.not(headAt(child.mm, a), head, 'the child got a copy');
    t.true((r.p.mm.pageTable.getPmd(vpn(a)) & 2) !== 0, 'still writable in the parent');
    unpinUserPages(r.k, pages);
    t.is(r.k.phys.folioRefCount(head), 1);
  });
});

test('rule 47, mm/hmm.c (hmm_vma_walk_hugetlb_entry): hmm_range_fault faults a hugetlb page in and reports the hstate order (9) on each page', (t) => {
  const r = hugeRig(1);
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, M2, RW, HUGE), 'mmap');
    const sub = new MmuIntervalNotifier('hugetlb-test');
    ok(yield* mmuIntervalNotifierInsert(sub, r.p.mm, 0, TASK_SIZE, { invalidate: (s, _r, seq) => (mmuIntervalSetSeq(s, seq), true) }), 'insert');
    let ret = -EBUSY;
    let range = hmmRangeInit(sub, a + 4 * P, a + 6 * P, 0, HMM_PFN_REQ_FAULT);
    while (ret === -EBUSY) {
      range = hmmRangeInit(sub, a + 4 * P, a + 6 * P, yield* mmuIntervalReadBegin(sub), HMM_PFN_REQ_FAULT);
      yield* r.p.mm.mmapLock.downRead();
      ret = yield* hmmRangeFault(range);
      r.p.mm.mmapLock.upRead();
    }
    t.is(ret, 0);
    const head = headAt(r.p.mm, a);
    t.deepEqual([hmmPfnRecord(range, 0).pfn, hmmPfnRecord(range, 1).pfn], [head + 4, head + 5]);
    t.deepEqual(Array.from(range.order), [9, 9]);
  });
});
