import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import { Vma, VM_DONTCOPY } from './vma.ts';
import { insertVma } from './mmap.ts';
import { PAGE_SIZE, ULONG_MAX } from './constants.ts';
import { flushTlbMmRange } from './tlb.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { PTE_DIRTY, PTE_PRESENT, PTE_SWAP, PTE_WRITE, PTE_ACCESSED, isDeviceExclusiveEntry, isDevicePrivateEntry, isMigrationEntry, makeDevicePrivateEntry, makePte, pteFlags, pteFrame, pteHas } from './page-table.ts';
import { devicePageGet, devicePageRmapAdd, pagePgmap } from './memremap.ts';
import { restoreExclusivePteForFork } from './device-exclusive.ts';
import { migrationEntryAdded } from './migrate.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE, PG_SWAPBACKED, ZERO_PFN } from './page-frames.ts';
import { HPAGE_PMD_NR, HPAGE_PMD_SIZE, copyHugePmd, setFolioFlags } from './huge-memory.ts';
import { isVmHugetlbPage } from './hugetlb.ts';

/**
 * dup_mmap: copy the parent's VMAs into `child`, skipping VM_DONTCOPY ones (rule 69).
 * Page tables are copied only for VMAs that need it (an anon_vma exists, rule 21i); a
 * copied COW VMA gets a PROTECTION_PAGE invalidation over the whole VMA on the parent
 * (rule 66), with write_protect_seq held. Per anonymous page (rule 67): an exclusive,
 * maybe-pinned page in an mm with MMF_HAS_PINNED is copied for the child at once;
 * otherwise it becomes COW-shared, read-only in both. Returns 0 or -ENOMEM.
 */
export function* dupMmap(parent: MmStruct, child: MmStruct): Co<number> {
  const { phys, profile, swap, lru } = parent.kernel;
  for (const vma of parent.vmas) {
    if (vma.flags & VM_DONTCOPY) continue;
    const copy = new Vma(child, vma.start, vma.end, vma.flags, vma.file, vma.pgoff);
    copy.anonVma = vma.anonVma;
    insertVma(child, copy);
    if (!vma.anonVma) continue;
    const cow = vma.cow;
    let range = null;
    const hugetlb = isVmHugetlbPage(vma);
    if (cow) {
      // copy_hugetlb_page_range sends CLEAR over the whole VMA, copy_page_range PROTECTION_PAGE (rule 21i).
      range = mmuNotifierRangeInit(parent, hugetlb ? MmuNotifyEvent.CLEAR : MmuNotifyEvent.PROTECTION_PAGE, vma.start, vma.end);
      yield* mmuNotifierInvalidateRangeStart(range);
      // raw_write_seqcount_begin(&src_mm->write_protect_seq) in copy_page_range (5.11, 57efa1fe5957).
      if (profile.writeProtectSeq) parent.writeProtectSeq++;
    }
    // copy_pmd_range: huge entries first (copy_huge_pmd, or copy_hugetlb_page_range); a
    // maybe-pinned THP is split and copied as PTEs below (huge-memory.ts).
    for (const slot of parent.pageTable.hugeSlotsIn(vma.start / PAGE_SIZE, vma.end / PAGE_SIZE)) {
      const haddr = slot * HPAGE_PMD_SIZE;
      if (!hugetlb) {
        yield* copyHugePmd(parent, child, haddr, cow);
        continue;
      }
      const r = copyHugetlbEntry(parent, child, haddr, cow);
      if (r < 0) {
        if (range) yield* mmuNotifierInvalidateRangeEnd(range);
        return r;
      }
    }
    // A snapshot of the slots: the copy may stop at a preemption point (below).
    const slots = [...parent.pageTable.entriesIn(vma.start / PAGE_SIZE, vma.end / PAGE_SIZE)].map(([v]) => v);
    for (let idx = 0; idx < slots.length; idx++) {
      const v = slots[idx] as number;
      if (parent.pageTable.pmdHuge(v)) continue; // copied whole above
      let pte = parent.pageTable.get(v);
      // copy_nonpresent_pte: a device-exclusive entry is restored first, then copied as the
      // present PTE it was (the device loses its exclusive access when it next faults).
      if (isDeviceExclusiveEntry(pte)) pte = restoreExclusivePteForFork(parent, vma, v * PAGE_SIZE, pte);
      if (pte === 0) continue;
      const addr = v * PAGE_SIZE;
      if (pteHas(pte, PTE_SWAP)) {
        swap.dup(pteFrame(pte));
        child.pageTable.set(v, pte);
        continue;
      }
      if (isMigrationEntry(pte)) {
        // copy_nonpresent_pte: the child gets the entry too (a writable one becomes readable
        // in both for a COW mapping), and remove_migration_ptes will restore it there.
        const entry = cow ? makePte(pteFrame(pte), pteFlags(pte) & ~PTE_WRITE) : pte;
        if (cow) phys.clear(pteFrame(pte), PG_ANON_EXCLUSIVE);
        parent.pageTable.set(v, entry);
        child.pageTable.set(v, entry);
        migrationEntryAdded(parent.kernel, pteFrame(pte), child, addr);
        continue;
      }
      if (isDevicePrivateEntry(pte)) {
        // copy_nonpresent_pte (mm/memory.c): the child shares the device page (a reference
        // and an rmap; folio_try_dup_anon_rmap_pte cannot fail, device pages are never
        // pinned, and the page is no longer exclusive); in a COW mapping a writable entry
        // becomes readable in both, so the first CPU write migrates it back and copies.
        const dpfn = pteFrame(pte);
        devicePageGet(parent.kernel, dpfn);
        devicePageRmapAdd(parent.kernel, dpfn, child, addr);
        const m = pagePgmap(parent.kernel, dpfn);
        if (m) m.anonExclusive[m.index(dpfn)] = 0;
        const entry = cow && pteHas(pte, PTE_WRITE) ? makeDevicePrivateEntry(dpfn, false) : pte;
        parent.pageTable.set(v, entry);
        child.pageTable.set(v, entry);
        continue;
      }
      const f = pteFrame(pte);
      if (f === ZERO_PFN) {
        child.pageTable.set(v, pte);
        continue;
      }
      const anon = phys.has(f, PG_ANON);
      const exclusive = profile.anonExclusive ? phys.has(f, PG_ANON_EXCLUSIVE) : true;
      if (anon && cow && profile.forkCopiesPinned && parent.hasPinned && exclusive && phys.maybeDmaPinned(f)) {
        // page_needs_cow_for_dma (5.9: 70e806e4e645 with mm->has_pinned; MMF_HAS_PINNED
        // since a458b76a4171; folio_needs_cow_for_dma today): the child gets the copy, the
        // parent keeps the pinned page.
        const nf = phys.allocPage();
        if (nf < 0) {
          if (range) yield* mmuNotifierInvalidateRangeEnd(range);
          return nf;
        }
        phys.copyPage(nf, f);
        phys.set(nf, PG_ANON | PG_SWAPBACKED | PG_ANON_EXCLUSIVE);
        phys.rmapAdd(nf, child, addr);
        lru.add(nf);
        child.pageTable.set(v, makePte(nf, pteFlags(pte) | PTE_PRESENT));
        continue;
      }
      if (anon && cow && profile.forkCopiesPinned && pteHas(pte, PTE_WRITE)) {
        // Between page_needs_cow_for_dma's "not pinned" and ptep_set_wrprotect, a lockless
        // gup_fast on another CPU can still read the writable PTE and pin the page; only
        // mm->write_protect_seq (5.11, 57efa1fe5957) sends it to the slow path. The page
        // table lock keeps everyone else out: a PTE changed meanwhile is copied again.
        yield* parent.kernel.sim.preemptPoint('copy_present_pte');
        if (parent.pageTable.get(v) !== pte) {
          idx--;
          continue;
        }
      }
      phys.get(f);
      phys.rmapAdd(f, child, addr);
      if (cow) {
        phys.clear(f, PG_ANON_EXCLUSIVE);
        const ro = makePte(f, pteFlags(pte) & ~PTE_WRITE);
        parent.pageTable.set(v, ro);
        child.pageTable.set(v, makePte(f, pteFlags(pte) & ~(PTE_WRITE | PTE_DIRTY | PTE_ACCESSED) | PTE_PRESENT));
      } else {
        child.pageTable.set(v, pte);
      }
    }
    if (range) {
      if (profile.writeProtectSeq) parent.writeProtectSeq++;
      yield* mmuNotifierInvalidateRangeEnd(range);
    }
  }
  // dup_mmap ends with flush_tlb_mm(oldmm): the whole parent mm (secondary TLBs, tlb.ts).
  yield* flushTlbMmRange(parent, 0, ULONG_MAX);
  return 0;
}

/**
 * copy_hugetlb_page_range for one huge page of a private hugetlb VMA: shared read-only
 * with the child (COW), unless the page may be DMA-pinned in an mm with MMF_HAS_PINNED:
 * then hugetlb_try_dup_anon_rmap fails and the child gets its own copy at once (5.9
 * semantics, as for small pages, rule 67). Returns 0 or -ENOMEM (no huge page for the copy).
 */
function copyHugetlbEntry(parent: MmStruct, child: MmStruct, haddr: number, cow: boolean): number {
  const { phys, profile, hugetlb } = parent.kernel;
  const v = haddr / PAGE_SIZE;
  const entry = parent.pageTable.getPmd(v);
  const head = pteFrame(entry);
  if (cow && profile.forkCopiesPinned && parent.hasPinned && phys.maybeDmaPinned(head)) {
    const nh = hugetlb.alloc(false);
    if (nh < 0) return -12;
    for (let i = 0; i < HPAGE_PMD_NR; i++) phys.copyPage(nh + i, head + i);
    setFolioFlags(parent.kernel, nh, PG_ANON | PG_ANON_EXCLUSIVE);
    phys.rmapAddPmd(nh, child, haddr);
    child.pageTable.setPmd(v, makePte(nh, pteFlags(entry)));
    return 0;
  }
  phys.get(head);
  phys.rmapAddPmd(head, child, haddr);
  if (cow) {
    for (let f = head; f < head + HPAGE_PMD_NR; f++) phys.clear(f, PG_ANON_EXCLUSIVE);
    parent.pageTable.setPmd(v, makePte(head, pteFlags(entry) & ~PTE_WRITE));
    child.pageTable.setPmd(v, makePte(head, pteFlags(entry) & ~PTE_WRITE));
  } else child.pageTable.setPmd(v, entry);
  return 0;
}
