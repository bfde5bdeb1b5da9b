import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import { VM_DONTCOPY, VM_IO } from './vma.ts';
import { EINVAL, ENOMEM } from './errno.ts';
import { MADV_DOFORK, MADV_DONTFORK, MADV_DONTNEED, MADV_FREE, MADV_HUGEPAGE, MADV_MERGEABLE, MADV_NOHUGEPAGE, MADV_PAGEOUT, MADV_REMOVE, MADV_UNMERGEABLE, PAGE_SIZE, isPageAligned, pageAlignUp, vpn } from './constants.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { zapPteRange } from './memory.ts';
import { gatherPage, tlbFinishMmu, zapPteRangeWork, type GatheredSpan } from './tlb.ts';
import { splitVmasAt, splitVmasAtHuge } from './mmap.ts';
import { PTE_DIRTY, PTE_ACCESSED, pteFrame, pteHas, ptePresent, PTE_SWAP, makePte, pteFlags } from './page-table.ts';
import { PG_ANON, PG_DIRTY, PG_LAZYFREE } from './page-frames.ts';
import { truncatePages } from './filemap.ts';
import { ksmMergeable, ksmUnmergeable } from './ksm.ts';
import { hugepageMadvise, splitPartialHugePmds } from './huge-memory.ts';
import { HUGETLB_PAGE_SIZE, isVmHugetlbPage } from './hugetlb.ts';

/** Pages reclaim should try now (MADV_PAGEOUT); reclaim installs the handler. */
export type PageoutHook = (mm: MmStruct, start: number, end: number) => Co<void>;

/**
 * madvise(2). DONTNEED and FREE send one CLEAR per VMA over the request clipped to it
 * (rule 21c); FREE only on anonymous VMAs, and it only marks pages lazy-free; DONTFORK
 * and DOFORK set and clear VM_DONTCOPY (rule 69). A range with unmapped holes applies to
 * the mapped parts and returns -ENOMEM, as Linux does.
 */
export function* doMadvise(mm: MmStruct, addr: number, length: number, advice: number): Co<number> {
  if (!isPageAligned(addr) || length < 0) return -EINVAL;
  const known = [MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_DONTFORK, MADV_DOFORK, MADV_PAGEOUT, MADV_MERGEABLE, MADV_UNMERGEABLE, MADV_HUGEPAGE, MADV_NOHUGEPAGE];
  if (!known.includes(advice)) return -EINVAL;
  const len = pageAlignUp(length);
  if (len === 0) return 0;
  const end = addr + len;
  let hole = false;
  let cursor = addr;
  for (const v of mm.vmasIn(addr, end)) {
    if (v.start > cursor) hole = true;
    cursor = v.end;
  }
  if (cursor < end) hole = true;
  const vmas = mm.vmasIn(addr, end);
  if (advice === MADV_FREE && vmas.some((v) => v.file)) return -EINVAL;
  if (advice === MADV_DOFORK && vmas.some((v) => v.flags & VM_IO)) return -EINVAL;
  const { phys, profile } = mm.kernel;
  if (advice === MADV_FREE && vmas.some(isVmHugetlbPage)) return -EINVAL;
  if (advice === MADV_DONTNEED && vmas.some(isVmHugetlbPage) && !profile.hugetlbDontneed) return -EINVAL;
  if (advice === MADV_HUGEPAGE || advice === MADV_NOHUGEPAGE) {
    // hugepage_madvise: VM_HUGEPAGE / VM_NOHUGEPAGE on the VMA pieces (mm/khugepaged.c).
    for (const v of splitVmasAt(mm, addr, end)) hugepageMadvise(v, advice === MADV_HUGEPAGE);
  } else if (advice === MADV_MERGEABLE || advice === MADV_UNMERGEABLE) {
    // ksm_madvise (mm/ksm.c): per VMA piece; unsuitable VMAs are left alone without error.
    for (const v of splitVmasAt(mm, addr, end)) {
      if (advice === MADV_MERGEABLE) ksmMergeable(v);
      else {
        const r = yield* ksmUnmergeable(v, v.start, v.end);
        if (r < 0) return r;
      }
    }
  } else if (advice === MADV_DONTFORK || advice === MADV_DOFORK) {
    for (const v of yield* splitVmasAtHuge(mm, addr, end, 'madvise (__split_vma)')) {
      if (advice === MADV_DONTFORK) v.flags |= VM_DONTCOPY;
      else v.flags &= ~VM_DONTCOPY;
    }
  } else if (advice === MADV_PAGEOUT) {
    yield* mm.kernel.pageout(mm, addr, end);
  } else if (advice === MADV_REMOVE) {
    for (const v of vmas) {
      if (!v.file || !v.shared) return -EINVAL;
      const s = Math.max(addr, v.start);
      const e = Math.min(end, v.end);
      yield* truncatePages(mm.kernel, v.file, v.fileIndex(s), v.fileIndex(e) - 1);
    }
  } else {
    for (const v of vmas) {
      const s = Math.max(addr, v.start);
      let e = Math.min(end, v.end);
      if (isVmHugetlbPage(v)) {
        // madvise_dontneed_free_valid_vma: an aligned start, the end rounded down to a huge
        // page, so a shorter request frees (and sends) nothing (rule 21c).
        if (s % HUGETLB_PAGE_SIZE !== 0) return -EINVAL;
        e = Math.floor(e / HUGETLB_PAGE_SIZE) * HUGETLB_PAGE_SIZE;
        if (e <= s) continue;
      }
      const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, s, e);
      yield* mmuNotifierInvalidateRangeStart(range);
      // zap_pmd_range / madvise_free_pmd_range: a THP the range covers in part is split
      // (a CLEAR over its block, nested in this one, huge-memory.ts).
      yield* splitPartialHugePmds(mm, s, e, advice === MADV_DONTNEED ? 'zap_pmd_range' : 'madvise_free_pmd_range');
      const toFree: number[] = [];
      let span: GatheredSpan = null;
      if (advice === MADV_DONTNEED) span = zapPteRange(mm, v, s, e, toFree);
      else {
        for (const [pv, pte] of mm.pageTable.entriesIn(vpn(s), vpn(e))) {
          if (pteHas(pte, PTE_SWAP) || !ptePresent(pte)) continue;
          const f = pteFrame(pte);
          if (!phys.has(f, PG_ANON) || phys.mapcount[f] !== 1) continue;
          phys.set(f, PG_LAZYFREE);
          phys.clear(f, PG_DIRTY);
          mm.pageTable.set(pv, makePte(f, pteFlags(pte) & ~(PTE_DIRTY | PTE_ACCESSED)));
          span = gatherPage(span, pv * PAGE_SIZE); // madvise_free_pte_range: tlb_remove_tlb_entry
        }
      }
      yield* zapPteRangeWork(mm, span);
      yield* mmuNotifierInvalidateRangeEnd(range);
      yield* tlbFinishMmu(mm, span, toFree);
    }
  }
  return hole ? -ENOMEM : 0;
}
