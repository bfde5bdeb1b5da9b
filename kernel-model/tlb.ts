/**
 * TLB flushes, and through them the secondary TLBs of devices that share the CPU page
 * tables (IOMMU SVA: intel-svm, arm-smmu-v3-sva, amd_iommu_v2).
 *
 * Since 6.6 ("mmu_notifiers: rename invalidate_range notifier", Alistair Popple) the
 * architecture's flush calls `mmu_notifier_arch_invalidate_secondary_tlbs(mm, start, end)`
 * at its end: x86 `flush_tlb_mm_range` (arch/x86/mm/tlb.c), arm64
 * `__flush_tlb_range_nosync`, riscv `__flush_tlb_range`, powerpc radix. So a subscriber
 * hears of exactly the span the CPU flushed, whenever the CPU flushed, whether or not a
 * start/end pair was around it, and hears nothing when no PTE was cleared (an UNMAP of an
 * unpopulated range flushes nothing). Before 6.6 the callback was `invalidate_range`, called
 * from `mmu_notifier_invalidate_range_end` and the `*_clear_flush_notify` helpers; the
 * model's older profiles do not call it at all (no subscriber in the model uses it).
 *
 * The model's flush points: a single PTE cleared or replaced (`ptep_clear_flush`, which
 * ends in `flush_tlb_page` -> `flush_tlb_mm_range`), and `tlb_finish_mmu` after a zap
 * (the gathered span, flushed before the gathered pages are freed).
 * [read] arch/x86/mm/tlb.c (flush_tlb_mm_range); include/linux/mmu_notifier.h
 * (mmu_notifier_arch_invalidate_secondary_tlbs); spec rule 38.
 */
import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import type { KernelProfile } from './profile.ts';
import { PAGE_SIZE, PMD_SIZE } from './constants.ts';
import { mmuNotifierArchInvalidateSecondaryTlbs } from './mmu-notifier.ts';

/** 6.6: the TLB-flush code calls arch_invalidate_secondary_tlbs (read off the profile's release). */
export function secondaryTlbsFlushedByArch(profile: KernelProfile): boolean {
  const [major = 0, minor = 0] = profile.release.split('.').map((n) => Number.parseInt(n, 10));
  return major > 6 || (major === 6 && minor >= 6);
}

/**
 * `flush_tlb_mm_range`: the CPU TLBs of `mm` over [start, end) are flushed, then (6.6+)
 * every classic subscriber's `arch_invalidate_secondary_tlbs` runs, under the page-table
 * lock (atomic context).
 *
 * @example
 *   mm.pageTable.clear(vpn(addr)); yield* flushTlbMmRange(mm, addr, addr + PAGE_SIZE);
 */
export function* flushTlbMmRange(mm: MmStruct, start: number, end: number): Co {
  if (end <= start) return;
  // flush_tlb_mm_range with its shootdown IPIs (cpu-costs.ts tlbFlushNs).
  yield* mm.kernel.sim.cpu(mm.kernel.cpuCosts.tlbFlushNs);
  if (!secondaryTlbsFlushedByArch(mm.kernel.profile)) return;
  yield* mmuNotifierArchInvalidateSecondaryTlbs(mm, start, end);
}

/** `flush_tlb_page` (ptep_clear_flush's flush): one page. */
export function* flushTlbPage(mm: MmStruct, addr: number): Co {
  const page = addr - (addr % PAGE_SIZE);
  yield* flushTlbMmRange(mm, page, page + PAGE_SIZE);
}

/**
 * The span of PTEs a zap cleared (`struct mmu_gather`'s start/end), or null when none.
 * `hugeEntries` counts the huge PMD entries inside it (zap_huge_pmd, hugetlb's
 * __unmap_hugepage_range), each one entry to clear although it widens the span by 2 MiB.
 */
export type GatheredSpan = { start: number; end: number; hugeEntries?: number } | null;

/** Widen a gathered span by one page (`tlb_remove_tlb_entry`). */
export function gatherPage(span: GatheredSpan, addr: number): GatheredSpan {
  const end = addr + PAGE_SIZE;
  if (!span) return { start: addr, end };
  return { start: Math.min(span.start, addr), end: Math.max(span.end, end), hugeEntries: span.hugeEntries };
}

/**
 * Widen a gathered span by a huge entry's 2 MiB block (`tlb_remove_pmd_tlb_entry`, or
 * hugetlb's `tlb_remove_huge_tlb_entry`): the flush covers the block, the zap work is one
 * entry (see tlbFinishMmu).
 */
export function gatherHugePmd(span: GatheredSpan, haddr: number): GatheredSpan {
  const wide = gatherPage(gatherPage(span, haddr), haddr + PMD_SIZE - PAGE_SIZE) as { start: number; end: number; hugeEntries?: number };
  return { ...wide, hugeEntries: (span?.hugeEntries ?? 0) + 1 };
}

/**
 * The CPU time zap_pte_range spends clearing the gathered span (cpu-costs.ts zapPerPageNs).
 * The kernel clears PTEs between invalidate_range_start and invalidate_range_end
 * (zap_page_range_single, unmap_vmas, __oom_reap_task_mm all call unmap_single_vma /
 * unmap_page_range inside the pair), so callers charge this after their zap and before
 * mmuNotifierInvalidateRangeEnd: a subscriber sees the window stay open that long.
 * A huge entry in the span counts as ONE entry, not 512: zap_huge_pmd (mm/huge_memory.c)
 * clears the PMD with one pmdp_huge_get_and_clear_full, removes one rmap
 * (folio_remove_rmap_pmd) and gathers one folio (tlb_remove_page_size), with no per-page
 * loop; hugetlb's __unmap_hugepage_range likewise clears one huge_ptep per huge page.
 */
export function* zapPteRangeWork(mm: MmStruct, span: GatheredSpan): Co {
  if (!span) return;
  const slots = (span.end - span.start) / PAGE_SIZE - (span.hugeEntries ?? 0) * (PMD_SIZE / PAGE_SIZE - 1);
  yield* mm.kernel.sim.cpu(slots * mm.kernel.cpuCosts.zapPerPageNs);
}

/**
 * `tlb_finish_mmu`: flush what the zap gathered (nothing when it cleared no PTE), then
 * free the gathered pages: a secondary TLB is invalidated before a page it may still
 * translate to goes back to the allocator. The flush covers a huge entry's whole 2 MiB
 * (tlb_remove_pmd_tlb_entry widens the range by HPAGE_PMD_SIZE). In the kernel it runs
 * after invalidate_range_end (zap_page_range_single: end, then tlb_finish_mmu).
 */
export function* tlbFinishMmu(mm: MmStruct, span: GatheredSpan, toFree: readonly number[]): Co {
  if (span) yield* flushTlbMmRange(mm, span.start, span.end);
  for (const f of toFree) mm.kernel.phys.put(f);
}
