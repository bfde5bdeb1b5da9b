/**
 * Anonymous transparent huge pages (mm/huge_memory.c): a 2 MiB folio mapped by one PMD
 * entry, and every path that has to turn it back into 512 PTEs first.
 *
 * What the model keeps of a PMD-mapped THP is one huge entry in the page table
 * (page-table.ts), one rmap item on the head frame and the folio's refcount and exact
 * pincount on the head (page-frames.ts): nothing per page but what the frame arrays
 * already hold (mapcount, flags).
 *
 * Splits that a secondary MMU hears of (spec/kernel.md rule 21f): `__split_huge_pmd` sends
 * CLEAR over the 2 MiB block around the address, before it even checks the PMD is still
 * huge, and splits it into PTEs mapping the same pages (no page changes, so no flush of the
 * pages is owed beyond the PMD's). It is called from
 * - zap_pmd_range, for a huge PMD a zap covers only in part (MADV_DONTNEED), nested in the
 *   zap's own range; a zap covering the whole block removes the PMD (zap_huge_pmd);
 * - vma_adjust_trans_huge (__split_vma), when munmap, mprotect, mremap or madvise cut a VMA
 *   inside a block the VMA covers: before the operation's own range starts;
 * - change_pmd_range, move_page_tables: a range that covers the block only in part;
 * - do_huge_pmd_wp_page: a write to a shared THP (5.8+: split, then COW of one 4 KiB page);
 * - copy_huge_pmd at fork, for a maybe-pinned THP (5.9+: then the PTE rule copies early).
 * [read, excerpt] mm/huge_memory.c (__split_huge_pmd, __split_huge_pmd_locked,
 * do_huge_pmd_anonymous_page, do_huge_pmd_wp_page, copy_huge_pmd, zap_huge_pmd,
 * vma_adjust_trans_huge), mm/memory.c (zap_pmd_range, __handle_mm_fault).
 *
 * Modelling choices (assumed, said so where they apply): no huge zero page (as with
 * /sys/kernel/mm/transparent_hugepage/use_zero_page = 0, so a read fault allocates a THP
 * too); vma_adjust_trans_huge sends its CLEAR only where a huge PMD is mapped (the kernel
 * sends it whenever the VMA covers the block and a PUD exists, huge or not), so models
 * without THPs keep their event streams; page tables are never freed, so a slot that once
 * had a PTE table never gets a THP at fault (khugepaged may still collapse it).
 */
import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import type { Kernel } from './kernel.ts';
import { VM_HUGEPAGE, VM_HUGETLB, VM_NOHUGEPAGE, VM_SHARED, VM_WRITE, type Vma } from './vma.ts';
import { EAGAIN, EBUSY, EINVAL, ENOMEM } from './errno.ts';
import { PAGE_SIZE, PMD_SIZE, vpn } from './constants.ts';
import {
  PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_PROTNONE, PTE_SWAP, PTE_WRITE, isMigrationEntry, makePte, pteFlags, pteFrame, pteHas, ptePresent,
} from './page-table.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_KSM, PG_SWAPBACKED, PG_SWAPCACHE, ZERO_PFN } from './page-frames.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { flushTlbMmRange, gatherHugePmd, type GatheredSpan } from './tlb.ts';

/** HPAGE_PMD_ORDER on x86-64: PMD_SHIFT - PAGE_SHIFT. */
export const HPAGE_PMD_ORDER = 9;
export const HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER;
export const HPAGE_PMD_SIZE = PMD_SIZE;
/** What a huge-PMD handler answers when the PTE path must take over (VM_FAULT_FALLBACK). */
export const VM_FAULT_FALLBACK = 1;

/** /sys/kernel/mm/transparent_hugepage/enabled. */
export type ThpEnabled = 'always' | 'madvise' | 'never';

/**
 * The THP sysfs knobs the model reads. `enabled` defaults to `madvise` (assumed: what most
 * distributions ship; upstream's Kconfig default is TRANSPARENT_HUGEPAGE_ALWAYS), so a
 * mapping gets THPs only after MADV_HUGEPAGE unless a test or scenario says `always`.
 * khugepaged's limits are the kernel's defaults (mm/khugepaged.c: max_ptes_none =
 * HPAGE_PMD_NR - 1, max_ptes_shared = HPAGE_PMD_NR / 2).
 */
export class TransparentHugepage {
  enabled: ThpEnabled = 'madvise';
  maxPtesNone = HPAGE_PMD_NR - 1;
  maxPtesShared = HPAGE_PMD_NR / 2;
  /** Counters as in /proc/vmstat (thp_fault_alloc, thp_split_pmd, thp_collapse_alloc, ...). */
  readonly stats = { faultAlloc: 0, faultFallback: 0, splitPmd: 0, collapseAlloc: 0, collapseFailed: 0, splitPage: 0, splitPageFailed: 0 };
}

export const pmdAlignDown = (a: number): number => Math.floor(a / PMD_SIZE) * PMD_SIZE;

/** transhuge_vma_suitable: the whole aligned block lies inside the VMA. */
export function thpSuitable(vma: Vma, haddr: number): boolean {
  return haddr >= vma.start && haddr + HPAGE_PMD_SIZE <= vma.end;
}

/**
 * thp_vma_allowable_order(PMD_ORDER) for an anonymous private VMA at fault or collapse
 * time: not VM_NOHUGEPAGE, and `always`, or `madvise` with VM_HUGEPAGE (MADV_HUGEPAGE).
 * Shared anonymous memory is shmem, whose THPs (shmem_enabled) the model does not have.
 */
export function thpVmaAllowable(kernel: Kernel, vma: Vma): boolean {
  if (vma.file || vma.flags & (VM_SHARED | VM_HUGETLB | VM_NOHUGEPAGE)) return false;
  const mode = kernel.transparentHugepage.enabled;
  return mode === 'always' || (mode === 'madvise' && (vma.flags & VM_HUGEPAGE) !== 0);
}

/** Flags a huge entry gets at fault: mk_huge_pmd, pmd_mkdirty, maybe_pmd_mkwrite. */
function freshPmdFlags(vma: Vma): number {
  return PTE_PRESENT | PTE_ACCESSED | PTE_DIRTY | (vma.flags & VM_WRITE ? PTE_WRITE : 0);
}

/** Set page flags on every frame of a large folio (flags are per page in the model's arrays). */
export function setFolioFlags(kernel: Kernel, head: number, flags: number): void {
  const { phys } = kernel;
  const n = phys.folioNrPages(head);
  for (let f = head; f < head + n; f++) phys.set(f, flags);
}

/**
 * do_huge_pmd_anonymous_page: a fault on an empty PMD slot of a THP-eligible VMA allocates
 * a 2 MiB folio and maps it with one entry, with no notification (populating, rule 18).
 * Returns 0, or VM_FAULT_FALLBACK when the block does not fit the VMA or no 2 MiB of
 * contiguous memory is free (THP_FAULT_FALLBACK): the PTE path then maps one 4 KiB page.
 */
export function* doHugePmdAnonymousPage(mm: MmStruct, vma: Vma, addr: number): Co<number> {
  const { kernel } = mm;
  const { phys, transparentHugepage: thp } = kernel;
  const haddr = pmdAlignDown(addr);
  if (!thpSuitable(vma, haddr)) return VM_FAULT_FALLBACK;
  const head = phys.allocFolio(HPAGE_PMD_ORDER);
  if (head < 0) {
    thp.stats.faultFallback++;
    kernel.sim.emit({ type: 'note', text: `thp: no 2 MiB folio free for mm${mm.id} at 0x${haddr.toString(16)}: 4 KiB fallback` });
    return VM_FAULT_FALLBACK;
  }
  // vma_alloc_folio may have slept (compaction); another thread may have mapped the slot.
  if (!mm.pageTable.pmdNone(vpn(haddr))) {
    phys.put(head);
    return 0;
  }
  setFolioFlags(kernel, head, PG_ANON | PG_SWAPBACKED | PG_ANON_EXCLUSIVE);
  vma.anonVma = true;
  phys.rmapAddPmd(head, mm, haddr);
  kernel.lru.add(head);
  mm.pageTable.setPmd(vpn(haddr), makePte(head, freshPmdFlags(vma)));
  thp.stats.faultAlloc++;
  kernel.sim.emit({ type: 'thp', op: 'fault-alloc', mm: mm.id, addr: haddr, frame: head, node: kernel.node });
  return 0;
}

/**
 * __split_huge_pmd_locked for an anonymous THP: the huge entry becomes 512 PTEs with its
 * write, dirty and young bits, each mapping its page of the folio; each PTE mapping holds a
 * folio reference (folio_ref_add(HPAGE_PMD_NR - 1)); the folio stays large (a later
 * split_huge_page or the deferred-split shrinker would break it up).
 */
function splitHugePmdLocked(mm: MmStruct, haddr: number): void {
  const { phys } = mm.kernel;
  const entry = mm.pageTable.getPmd(vpn(haddr));
  if (entry === 0) return;
  const head = pteFrame(entry);
  mm.pageTable.splitPmdEntries(vpn(haddr) / HPAGE_PMD_NR);
  phys.rmapPmdToPtes(head, mm, haddr);
  phys.get(head, HPAGE_PMD_NR - 1);
  mm.kernel.transparentHugepage.stats.splitPmd++;
  mm.kernel.sim.emit({ type: 'thp', op: 'split-pmd', mm: mm.id, addr: haddr, frame: head, node: mm.kernel.node });
}

/**
 * __split_huge_pmd: CLEAR over [addr & PMD_MASK, + 2 MiB) around the split, sent before the
 * PMD is looked at (rule 21f). `why` names the caller in the trace.
 */
export function* splitHugePmd(mm: MmStruct, addr: number, why: string): Co {
  const haddr = pmdAlignDown(addr);
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, haddr, haddr + HPAGE_PMD_SIZE);
  yield* mmuNotifierInvalidateRangeStart(range);
  yield* mm.kernel.sim.preemptPoint('pmd write');
  if (mm.pageTable.pmdHuge(vpn(haddr))) {
    mm.kernel.sim.emit({ type: 'note', text: `__split_huge_pmd(mm${mm.id}, 0x${haddr.toString(16)}) from ${why}` });
    splitHugePmdLocked(mm, haddr);
    // pmdp_invalidate: the PMD's TLB entry goes before the PTE table is installed. The
    // model has no page-table lock, so the split is settled (synchronously, right after the
    // pmdHuge check) before the flush's CPU time: a task running during the flush sees PTEs.
    yield* flushTlbMmRange(mm, haddr, haddr + HPAGE_PMD_SIZE);
  }
  yield* mmuNotifierInvalidateRangeEnd(range);
}

/**
 * zap_pmd_range's test for the huge PMDs of [start, end) in one VMA: those the range covers
 * only in part are split (a CLEAR nested in the caller's range); whole ones are left for
 * zapPteRange, which removes them with zap_huge_pmd. Call after the caller's range start.
 */
export function* splitPartialHugePmds(mm: MmStruct, start: number, end: number, why: string): Co {
  for (const slot of mm.pageTable.hugeSlotsIn(vpn(start), vpn(end))) {
    const haddr = slot * HPAGE_PMD_SIZE;
    if (start <= haddr && haddr + HPAGE_PMD_SIZE <= end) continue;
    if (mm.findVma(haddr)?.flags! & VM_HUGETLB) continue; // hugetlb never splits
    yield* splitHugePmd(mm, haddr, why);
  }
}

/**
 * vma_adjust_trans_huge / split_huge_pmd_if_needed: before a VMA is cut at `addr`, a huge
 * PMD whose block contains the unaligned `addr` and lies inside the VMA is split (CLEAR
 * over its block, before the operation's own range). See the file comment for the one
 * difference from the kernel (no CLEAR where no huge PMD is mapped).
 */
export function* vmaAdjustTransHuge(mm: MmStruct, addrs: readonly number[], why: string): Co {
  for (const addr of addrs) {
    if (addr % HPAGE_PMD_SIZE === 0) continue;
    const vma = mm.findVma(addr);
    if (!vma || vma.flags & VM_HUGETLB) continue;
    const haddr = pmdAlignDown(addr);
    if (!thpSuitable(vma, haddr) || !mm.pageTable.pmdHuge(vpn(haddr))) continue;
    yield* splitHugePmd(mm, haddr, why);
  }
}

/**
 * zap_huge_pmd: a huge entry the zap covers whole goes at once: the PMD mapping's rmap item
 * and its one folio reference (put by the caller after the TLB flush), the span gathered.
 * Returns the widened span.
 */
export function zapHugePmd(mm: MmStruct, vma: Vma, haddr: number, toFree: number[], span: GatheredSpan): GatheredSpan {
  const { phys } = mm.kernel;
  const entry = mm.pageTable.getPmd(vpn(haddr));
  if (entry === 0) return span;
  mm.pageTable.setPmd(vpn(haddr), 0);
  const head = pteFrame(entry);
  if (pteHas(entry, PTE_DIRTY) && !(vma.flags & VM_HUGETLB)) phys.set(head, PG_DIRTY);
  phys.rmapRemovePmd(head, mm, haddr);
  toFree.push(head);
  // One entry of zap work for the 2 MiB block, flushed whole (tlb.ts gatherHugePmd).
  return gatherHugePmd(span, haddr);
}

/**
 * A fault on an address a huge PMD maps (__handle_mm_fault's pmd_trans_huge branch):
 * a write to a read-only entry goes to do_huge_pmd_wp_page, so does an unshare (a
 * read-only pin of a COW-shared THP, 5.19+); anything else only marks it young
 * (huge_pmd_set_accessed). Returns 0, -errno, or VM_FAULT_FALLBACK after a split.
 */
export function* hugePmdFault(mm: MmStruct, vma: Vma, addr: number, write: boolean, unshare: boolean): Co<number> {
  const v = vpn(addr);
  const entry = mm.pageTable.getPmd(v);
  if (entry === 0) return VM_FAULT_FALLBACK;
  if (pteHas(entry, PTE_PROTNONE)) {
    // do_huge_pmd_numa_page is not modelled: split and let the PTE path restore the page.
    yield* splitHugePmd(mm, addr, 'do_huge_pmd_numa_page');
    return VM_FAULT_FALLBACK;
  }
  if ((write && !pteHas(entry, PTE_WRITE)) || (unshare && !pteHas(entry, PTE_WRITE))) return yield* doHugePmdWpPage(mm, vma, addr, unshare);
  mm.pageTable.setPmd(v, makePte(pteFrame(entry), pteFlags(entry) | PTE_ACCESSED | (write ? PTE_DIRTY : 0)));
  return 0;
}

/**
 * do_huge_pmd_wp_page. From 5.8 (3917c80280c9, "thp: change CoW semantics for anon-THP"):
 * an exclusive THP is reused in place (PageAnonExclusive from 5.19, else the folio's
 * refcount is 1, or its mapcount under the older rule), otherwise the PMD is split (CLEAR
 * over 2 MiB) and the fault falls back to the PTE path, which copies one 4 KiB page (a
 * second, one-page CLEAR). Before 5.8 the whole 2 MiB was copied into a new THP, with one
 * CLEAR over the block (`thpCowCopiesHuge`); a failed allocation fell back to a split.
 */
export function* doHugePmdWpPage(mm: MmStruct, vma: Vma, addr: number, unshare: boolean): Co<number> {
  const { kernel } = mm;
  const { phys, profile } = kernel;
  const haddr = pmdAlignDown(addr);
  const v = vpn(haddr);
  const entry = mm.pageTable.getPmd(v);
  const head = pteFrame(entry);
  const page = head + (vpn(addr) - v);
  if (vma.flags & VM_SHARED) return VM_FAULT_FALLBACK; // no shared anonymous THPs in the model
  let reuse: boolean;
  switch (profile.cowReuse) {
    case 'anon-exclusive':
      reuse = phys.has(page, PG_ANON_EXCLUSIVE) || (phys.folioRefCount(head) === 1 && !phys.has(head, PG_SWAPCACHE));
      break;
    case 'refcount':
      reuse = phys.folioRefCount(head) === 1;
      break;
    case 'mapcount':
      reuse = phys.mapcount[page] === 1;
      break;
  }
  if (reuse && !phys.has(head, PG_KSM)) {
    setFolioFlags(kernel, head, PG_ANON_EXCLUSIVE);
    if (!unshare) mm.pageTable.setPmd(v, makePte(head, pteFlags(entry) | PTE_ACCESSED | PTE_DIRTY | (vma.flags & VM_WRITE ? PTE_WRITE : 0)));
    return 0;
  }
  if (profile.thpCowCopiesHuge && !unshare) {
    const nh = phys.allocFolio(HPAGE_PMD_ORDER);
    if (nh >= 0) {
      for (let i = 0; i < HPAGE_PMD_NR; i++) phys.copyPage(nh + i, head + i);
      setFolioFlags(kernel, nh, PG_ANON | PG_SWAPBACKED | PG_ANON_EXCLUSIVE);
      const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, haddr, haddr + HPAGE_PMD_SIZE);
      yield* mmuNotifierInvalidateRangeStart(range);
      if (mm.pageTable.getPmd(v) === entry) {
        phys.rmapRemovePmd(head, mm, haddr);
        phys.rmapAddPmd(nh, mm, haddr);
        kernel.lru.add(nh);
        mm.pageTable.setPmd(v, makePte(nh, freshPmdFlags(vma)));
        // pmdp_huge_clear_flush's flush (tlb.ts). The kernel flushes before set_pmd_at, under
        // the PMD lock; the model has no page-table lock, so the entry is replaced right
        // after the re-check and the flush's CPU time is spent after it (as wp_page_copy).
        yield* flushTlbMmRange(mm, haddr, haddr + HPAGE_PMD_SIZE);
        yield* mmuNotifierInvalidateRangeEnd(range);
        phys.put(head);
      } else {
        yield* mmuNotifierInvalidateRangeEnd(range);
        phys.put(nh);
      }
      kernel.sim.emit({ type: 'thp', op: 'cow-copy', mm: mm.id, addr: haddr, frame: nh, node: kernel.node });
      return 0;
    }
  }
  yield* splitHugePmd(mm, haddr, 'do_huge_pmd_wp_page');
  return VM_FAULT_FALLBACK;
}

/**
 * copy_huge_pmd at fork, for a COW VMA: the PMD is shared write-protected with the child
 * (one more folio reference, mapcount and rmap item), unless the folio may be DMA-pinned
 * in an mm with MMF_HAS_PINNED (5.9, "mm/thp: Split huge pmds/puds if they're pinned when
 * fork()"; `forkCopiesPinned`): then the parent's PMD is split (a CLEAR nested in fork's
 * PROTECTION_PAGE range) and the caller copies its PTEs, where the maybe-pinned pages are
 * copied for the child at once (rule 68). Returns whether the caller must copy PTEs.
 */
export function* copyHugePmd(parent: MmStruct, child: MmStruct, haddr: number, cow: boolean): Co<boolean> {
  const { phys, profile } = parent.kernel;
  const v = vpn(haddr);
  const entry = parent.pageTable.getPmd(v);
  if (entry === 0) return true;
  const head = pteFrame(entry);
  if (cow && profile.forkCopiesPinned && parent.hasPinned && phys.maybeDmaPinned(head)) {
    yield* splitHugePmd(parent, haddr, 'copy_huge_pmd (maybe pinned)');
    return true;
  }
  phys.get(head);
  phys.rmapAddPmd(head, child, haddr);
  if (cow) {
    const n = HPAGE_PMD_NR;
    for (let f = head; f < head + n; f++) phys.clear(f, PG_ANON_EXCLUSIVE);
    const ro = makePte(head, pteFlags(entry) & ~PTE_WRITE);
    parent.pageTable.setPmd(v, ro);
    child.pageTable.setPmd(v, makePte(head, (pteFlags(entry) & ~(PTE_WRITE | PTE_ACCESSED)) | PTE_PRESENT));
  } else child.pageTable.setPmd(v, entry);
  return false;
}

/**
 * change_huge_pmd: mprotect over a whole huge PMD changes its protection in place.
 * Returns whether the entry changed.
 */
export function changeHugePmd(mm: MmStruct, haddr: number, want: number, canWrite: boolean): boolean {
  const v = vpn(haddr);
  const entry = mm.pageTable.getPmd(v);
  if (entry === 0) return false;
  let flags = pteFlags(entry);
  if (!(want & VM_WRITE)) flags &= ~PTE_WRITE;
  else if (!(flags & PTE_WRITE) && canWrite) flags |= PTE_WRITE;
  if (want === 0) flags |= PTE_PROTNONE;
  else flags &= ~PTE_PROTNONE;
  const next = makePte(pteFrame(entry), flags);
  if (next === entry) return false;
  mm.pageTable.setPmd(v, next);
  return true;
}

/**
 * split_huge_page (split_folio_to_list) of an anonymous THP mapped only by PTEs: refused
 * with -EBUSY (can_split_folio) while anything beyond its mappings and the caller's own
 * `extraRefs` holds it, a pin most of all; PMD mappings are split first (unmap_folio with
 * TTU_SPLIT_HUGE_PMD, a CLEAR each). Each page then keeps the references of its own
 * mappings; unmapped pages are freed. Reclaim and migration call this before working on
 * a page of a large folio, as shrink_folio_list and migrate_pages do when the folio cannot
 * go whole. Returns 0 or -EBUSY.
 */
export function* splitHugePage(kernel: Kernel, frame: number, extraRefs = 0): Co<number> {
  const { phys, transparentHugepage: thp } = kernel;
  const head = phys.folioHead(frame);
  if (!phys.isLarge(head)) return 0;
  if (phys.has(head, PG_SWAPCACHE)) return -EBUSY;
  // can_split_folio, before anything is unmapped: one reference per page-table mapping
  // (a PMD mapping is one, each PTE one) plus the caller's.
  const mappings = (): number => {
    const pmds = phys.pmdMappingsOf(head).length;
    let sum = 0;
    for (let f = head; f < head + HPAGE_PMD_NR; f++) sum += phys.mapcount[f]!;
    return pmds + sum - pmds * HPAGE_PMD_NR;
  };
  const canSplit = (): boolean => phys.folioPincount(head) === 0 && phys.folioRefCount(head) === mappings() + extraRefs;
  if (canSplit()) {
    for (const r of [...phys.pmdMappingsOf(head)]) yield* splitHugePmd(r.mm, r.addr, 'split_huge_page');
    if (!phys.isLarge(head)) return 0; // freed meanwhile
  }
  const mapped = mappings();
  if (!canSplit() || phys.pmdMappingsOf(head).length > 0) {
    thp.stats.splitPageFailed++;
    kernel.sim.emit({ type: 'note', text: `split_huge_page(${head}): refused, extra references (refcount ${phys.folioRefCount(head)}, mapped ${mapped}, pins ${phys.folioPincount(head)})` });
    return -EBUSY;
  }
  kernel.lru.remove(head);
  phys.splitFolio(head, (f) => phys.mapcount[f]! + (f === frame ? extraRefs : 0));
  for (let f = head; f < head + HPAGE_PMD_NR; f++) if (phys.isAllocated(f) && phys.mapcount[f]! > 0) kernel.lru.add(f);
  thp.stats.splitPage++;
  kernel.sim.emit({ type: 'thp', op: 'split-page', mm: 0, addr: 0, frame: head, node: kernel.node });
  return 0;
}

/**
 * khugepaged's collapse of one 2 MiB block (hpage_collapse_scan_pmd, then
 * collapse_huge_page): the VMA must be THP-eligible and cover the block, the block must be
 * PTE-mapped with at most max_ptes_none empty (or zero-page) entries, no swap entries
 * (the model does not swap them in: SCAN_EXCEED_SWAP_PTE), anonymous pages only, at most
 * max_ptes_shared of them shared, and no page held by anyone but its mappings
 * (SCAN_PAGE_COUNT: a pinned page stops it). Then, with mmap_lock for write, a CLEAR over
 * the block around pmdp_collapse_flush (rule 21f), the pages copied into a new THP, the old
 * ones freed, and one huge entry installed. Returns 0, -EINVAL (not eligible), -EAGAIN
 * (a scan check failed), -EBUSY (a page is held) or -ENOMEM.
 * [read, excerpt] mm/khugepaged.c (collapse_huge_page, __collapse_huge_page_isolate,
 * hpage_collapse_scan_pmd)
 */
export function* collapseHugePage(mm: MmStruct, addr: number): Co<number> {
  const { kernel } = mm;
  const { phys, transparentHugepage: thp, sim } = kernel;
  const haddr = pmdAlignDown(addr);
  const fail = (ret: number, why: string): number => {
    thp.stats.collapseFailed++;
    sim.emit({ type: 'note', text: `khugepaged: no collapse of mm${mm.id} 0x${haddr.toString(16)}: ${why}` });
    return ret;
  };
  // The allocation comes first, without the mmap lock (khugepaged's alloc_charge_folio).
  const nh = phys.allocFolio(HPAGE_PMD_ORDER);
  if (nh < 0) return fail(-ENOMEM, 'no 2 MiB folio free');
  yield* mm.mmapLock.downWrite();
  try {
    const vma = mm.findVma(haddr);
    const v = vpn(haddr);
    const bad = (): number | null => {
      if (!vma || !thpVmaAllowable(kernel, vma) || !thpSuitable(vma, haddr)) return fail(-EINVAL, 'VMA not eligible (SCAN_VMA_CHECK)');
      if (mm.pageTable.pmdHuge(v)) return fail(-EINVAL, 'already PMD-mapped (SCAN_PMD_MAPPED)');
      let none = 0;
      let shared = 0;
      for (let i = 0; i < HPAGE_PMD_NR; i++) {
        const pte = mm.pageTable.get(v + i);
        if (pte === 0 || (ptePresent(pte) && pteFrame(pte) === ZERO_PFN)) {
          if (++none > thp.maxPtesNone) return fail(-EAGAIN, 'too many empty PTEs (SCAN_EXCEED_NONE_PTE)');
          continue;
        }
        if (pteHas(pte, PTE_SWAP)) return fail(-EAGAIN, 'swap entry (SCAN_EXCEED_SWAP_PTE)');
        if (isMigrationEntry(pte) || !ptePresent(pte) || pteHas(pte, PTE_PROTNONE)) return fail(-EAGAIN, 'PTE not present (SCAN_PTE_NON_PRESENT)');
        const f = pteFrame(pte);
        if (!phys.has(f, PG_ANON) || phys.has(f, PG_KSM)) return fail(-EAGAIN, 'not an anonymous page (SCAN_PAGE_ANON)');
        if (phys.mapcount[f]! > 1 && ++shared > thp.maxPtesShared) return fail(-EAGAIN, 'too many shared pages (SCAN_EXCEED_SHARED_PTE)');
        // __collapse_huge_page_isolate: only the mappings may hold a page (a pin, a GUP
        // reference, the swap cache all do more).
        const h = phys.folioHead(f);
        let maps = 0;
        for (let t = h; t < h + phys.folioNrPages(h); t++) maps += phys.mapcount[t]!;
        if (phys.folioRefCount(h) !== maps) return fail(-EBUSY, `page ${f} has extra references (SCAN_PAGE_COUNT)`);
      }
      return null;
    };
    // The scan's checks ran under the mmap write lock; the notifier start may sleep, and
    // what holds no mmap lock (GUP-fast, reclaim's rmap walk) may run meanwhile, so the
    // checks run again right after it, with no yield before the table changes
    // (__collapse_huge_page_isolate runs after the range start too). The model has no
    // page-table lock: the PTEs are cleared, the copy made and the huge entry installed in
    // one step, and pmdp_collapse_flush's flush is spent after (the kernel flushes, ends the
    // range, then installs the PMD with set_pmd_at; with faults shut out by the write lock
    // nothing can tell the two apart, and a secondary MMU still hears the CLEAR around both).
    const scan = bad();
    if (scan !== null) {
      phys.put(nh);
      return scan;
    }
    const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, haddr, haddr + HPAGE_PMD_SIZE);
    yield* mmuNotifierInvalidateRangeStart(range);
    const r = bad();
    if (r !== null) {
      yield* mmuNotifierInvalidateRangeEnd(range);
      phys.put(nh);
      return r;
    }
    let dirty = false;
    const toFree: number[] = [];
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      const pte = mm.pageTable.get(v + i);
      if (pte === 0) continue;
      mm.pageTable.clear(v + i);
      const f = pteFrame(pte);
      if (f === ZERO_PFN) continue;
      phys.copyPage(nh + i, f);
      dirty ||= pteHas(pte, PTE_DIRTY) || phys.has(f, PG_DIRTY);
      phys.rmapRemove(f, mm, haddr + i * PAGE_SIZE);
      toFree.push(f);
    }
    setFolioFlags(kernel, nh, PG_ANON | PG_SWAPBACKED | PG_ANON_EXCLUSIVE);
    phys.rmapAddPmd(nh, mm, haddr);
    kernel.lru.add(nh);
    mm.pageTable.setPmd(v, makePte(nh, PTE_PRESENT | PTE_ACCESSED | (dirty ? PTE_DIRTY : 0) | (vma!.flags & VM_WRITE ? PTE_WRITE : 0)));
    // pmdp_collapse_flush: the old PTEs' TLB entries go before their pages are freed.
    yield* flushTlbMmRange(mm, haddr, haddr + HPAGE_PMD_SIZE);
    yield* mmuNotifierInvalidateRangeEnd(range);
    for (const f of toFree) phys.put(f);
    thp.stats.collapseAlloc++;
    sim.emit({ type: 'thp', op: 'collapse', mm: mm.id, addr: haddr, frame: nh, node: kernel.node });
    return 0;
  } finally {
    mm.mmapLock.upWrite();
  }
}

/**
 * khugepaged's scan of one mm (khugepaged_scan_mm_slot): every THP-eligible VMA block not
 * yet PMD-mapped is tried. Returns the number of blocks collapsed. A scenario or test calls
 * it where the real daemon would have woken (every scan_sleep_millisecs, 10 s by default).
 */
export function* khugepagedScanMm(mm: MmStruct): Co<number> {
  let collapsed = 0;
  const blocks: number[] = [];
  for (const vma of mm.vmas) {
    if (!thpVmaAllowable(mm.kernel, vma)) continue;
    for (let h = Math.ceil(vma.start / HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE; h + HPAGE_PMD_SIZE <= vma.end; h += HPAGE_PMD_SIZE) {
      if (!mm.pageTable.pmdHuge(vpn(h)) && mm.pageTable.entriesIn(vpn(h), vpn(h) + HPAGE_PMD_NR).length > 0) blocks.push(h);
    }
  }
  for (const h of blocks) if ((yield* collapseHugePage(mm, h)) === 0) collapsed++;
  return collapsed;
}

/** madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE): hugepage_madvise's VMA flags. */
export function hugepageMadvise(vma: Vma, huge: boolean): number {
  if (vma.flags & VM_HUGETLB) return 0;
  if (huge) vma.flags = (vma.flags | VM_HUGEPAGE) & ~VM_NOHUGEPAGE;
  else vma.flags = (vma.flags | VM_NOHUGEPAGE) & ~VM_HUGEPAGE;
  return 0;
}

export { EINVAL };
