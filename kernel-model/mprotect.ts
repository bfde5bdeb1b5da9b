import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import { VM_EXEC, VM_MAYWRITE, VM_READ, VM_WRITE, protToVmFlags, type Vma } from './vma.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_KSM, PG_SWAPBACKED, PG_ZONE_DEVICE, ZERO_PFN } from './page-frames.ts';
import { EACCES, EINVAL, ENOMEM } from './errno.ts';
import { PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, isPageAligned, pageAlignUp, vpn } from './constants.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { PTE_DIRTY, PTE_PROTNONE, PTE_WRITE, isDeviceExclusiveEntry, isDevicePrivateEntry, isMigrationEntry, pteFlags, pteFrame, pteHas, PTE_SWAP, makePte } from './page-table.ts';
import { hugetlbSplitCheck, splitVmasAtHuge } from './mmap.ts';
import { changeHugePmd, splitPartialHugePmds } from './huge-memory.ts';
import { isVmHugetlbPage } from './hugetlb.ts';
import { flushTlbMmRange, gatherPage, type GatheredSpan } from './tlb.ts';

const PUD_PAGES = 512 * 512;
const P4D_PAGES = 512 * 512 * 512;

/**
 * mprotect(2). Each VMA piece whose flags change gets change_protection: a
 * PROTECTION_VMA invalidation from the first populated 1 GiB (PUD) slot to the end of
 * the piece, per 512 GiB chunk, whatever the direction of the change (rule 21h).
 */
export function* doMprotect(mm: MmStruct, addr: number, length: number, prot: number): Co<number> {
  if (!isPageAligned(addr) || length < 0) return -EINVAL;
  if (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) return -EINVAL;
  const len = pageAlignUp(length);
  if (len === 0) return 0;
  const end = addr + len;
  // The whole range must be mapped.
  let cursor = addr;
  for (const v of mm.vmasIn(addr, end)) {
    if (v.start > cursor) return -ENOMEM;
    cursor = v.end;
  }
  if (cursor < end) return -ENOMEM;
  const want = protToVmFlags(prot);
  for (const v of mm.vmasIn(addr, end)) {
    if (want & VM_WRITE && v.shared && !(v.flags & VM_MAYWRITE)) return -EACCES;
  }
  if (hugetlbSplitCheck(mm, addr, end) < 0) return -EINVAL;
  for (const vma of yield* splitVmasAtHuge(mm, addr, end, 'mprotect (__split_vma)')) {
    const newFlags = (vma.flags & ~(VM_READ | VM_WRITE | VM_EXEC)) | want;
    if (newFlags === vma.flags) continue;
    vma.flags = newFlags;
    yield* changeProtection(mm, vma, vma.start, vma.end, want);
  }
  return 0;
}

/**
 * Whether change_pte_range may make a present, read-only PTE writable when write
 * permission comes back. A shared mapping without write notification (shmem) has a
 * writable vm_page_prot, so pte_modify does it, on every kernel. Otherwise only with
 * MM_CP_TRY_CHANGE_WRITABLE (6.0, 64fe24a3e05e) and can_change_pte_writable: an exclusive
 * anonymous page in a private mapping (dirty or not since d8488773 in 6.2), a dirty PTE in
 * a dirty-tracked shared one. Everything else comes back through write faults.
 */
export function canChangePteWritable(mm: MmStruct, vma: Vma, pte: number): boolean {
  const { phys, profile } = mm.kernel;
  if (vma.shared) {
    const writenotify = vma.file !== null && !vma.file.shmem;
    if (!writenotify) return true;
    return profile.mprotectTryChangeWritable && pteHas(pte, PTE_DIRTY);
  }
  if (!profile.mprotectTryChangeWritable) return false;
  const f = pteFrame(pte);
  return f !== ZERO_PFN && phys.has(f, PG_ANON) && phys.has(f, PG_ANON_EXCLUSIVE);
}

/**
 * change_protection over [start, end) of one VMA. With `protNuma` (MM_CP_PROT_NUMA, from
 * change_prot_numa) present PTEs become NUMA hints (PAGE_NONE) except those
 * change_pte_range skips: already PROT_NONE, the zero page, KSM and zone-device pages, shared or
 * maybe-pinned pages of COW mappings, dirty pages of the file LRU (mm/mprotect.c
 * change_pte_range, folio_is_file_lru: shmem is hinted dirty or not). Returns the PTEs changed.
 */
export function* changeProtection(mm: MmStruct, vma: Vma, start: number, end: number, want: number, protNuma = false): Co<number> {
  const { phys } = mm.kernel;
  let updated = 0;
  const sv = vpn(start);
  const ev = vpn(end);
  for (let chunk = Math.floor(sv / P4D_PAGES) * P4D_PAGES; chunk < ev; chunk += P4D_PAGES) {
    const lo = Math.max(sv, chunk);
    const hi = Math.min(ev, chunk + P4D_PAGES);
    let first = -1;
    for (let pud = Math.floor(lo / PUD_PAGES) * PUD_PAGES; pud < hi; pud += PUD_PAGES) {
      if (mm.pageTable.pudPopulated(pud)) {
        first = Math.max(lo, pud);
        break;
      }
    }
    if (first < 0) continue;
    const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.PROTECTION_VMA, first * PAGE_SIZE, hi * PAGE_SIZE);
    yield* mmuNotifierInvalidateRangeStart(range);
    let span: GatheredSpan = null;
    // change_pmd_range: a huge entry the range covers in part is split (CLEAR over its
    // block, nested); a whole one changes in place (change_huge_pmd), NUMA hints included.
    if (!isVmHugetlbPage(vma)) yield* splitPartialHugePmds(mm, first * PAGE_SIZE, hi * PAGE_SIZE, 'change_pmd_range');
    for (const slot of mm.pageTable.hugeSlotsIn(first, hi)) {
      const haddr = slot * 512 * PAGE_SIZE;
      const head = pteFrame(mm.pageTable.getPmd(slot * 512));
      if (protNuma && (vma.cow && (phys.maybeDmaPinned(head) || phys.mapcount[head]! > 1))) continue;
      const canWrite = !protNuma && !vma.shared && mm.kernel.profile.mprotectTryChangeWritable && phys.has(head, PG_ANON_EXCLUSIVE);
      if (changeHugePmd(mm, haddr, protNuma ? 0 : want, canWrite)) {
        span = gatherPage(gatherPage(span, haddr), haddr + 511 * PAGE_SIZE);
        updated++;
      }
    }
    for (const [v, pte] of mm.pageTable.entriesIn(first, hi)) {
      if (mm.pageTable.pmdHuge(v)) continue;
      if (pteHas(pte, PTE_SWAP)) continue;
      if (protNuma) {
        const f = pteFrame(pte);
        if (isMigrationEntry(pte) || isDevicePrivateEntry(pte) || isDeviceExclusiveEntry(pte) || pteHas(pte, PTE_PROTNONE) || f === ZERO_PFN || phys.has(f, PG_KSM)) continue;
        // change_pte_range skips folio_is_zone_device folios (device-coherent pages; 3218f8712d6b).
        if (phys.has(f, PG_ZONE_DEVICE)) continue;
        if (vma.cow && (phys.maybeDmaPinned(f) || phys.mapcount[f]! > 1)) continue;
        // folio_is_file_lru && folio_test_dirty: a dirty page of the file LRU (not shmem,
        // which is swap-backed and sits on the anon LRU).
        if (phys.mappingFile[f]! >= 0 && !phys.has(f, PG_SWAPBACKED) && phys.has(f, PG_DIRTY)) continue;
        mm.pageTable.set(v, makePte(f, (pteFlags(pte) & ~PTE_WRITE) | PTE_PROTNONE));
        span = gatherPage(span, v * PAGE_SIZE);
        updated++;
        continue;
      }
      if (isMigrationEntry(pte) || isDevicePrivateEntry(pte) || isDeviceExclusiveEntry(pte)) {
        // change_pte_range: a writable migration entry, or a writable device-private entry
        // (is_writable_device_private_entry), becomes a readable one when write permission
        // goes; the restore then takes the VMA's new protection (a device-exclusive entry
        // is restored with the VMA's protection too, restore_exclusive_pte).
        if (!(want & VM_WRITE) && pteHas(pte, PTE_WRITE)) mm.pageTable.set(v, makePte(pteFrame(pte), pteFlags(pte) & ~PTE_WRITE));
        continue;
      }
      let flags = pteFlags(pte);
      if (!(want & VM_WRITE)) flags &= ~PTE_WRITE;
      else if (!(flags & PTE_WRITE) && canChangePteWritable(mm, vma, pte)) flags |= PTE_WRITE;
      if (want === 0) flags |= PTE_PROTNONE;
      else flags &= ~PTE_PROTNONE;
      const next = makePte(pteFrame(pte), flags);
      if (next !== pte) {
        span = gatherPage(span, v * PAGE_SIZE);
        updated++;
      }
      mm.pageTable.set(v, next);
    }
    // change_protection's tlb_flush_pte_range / flush_tlb_range of what changed (tlb.ts).
    if (span) yield* flushTlbMmRange(mm, span.start, span.end);
    yield* mmuNotifierInvalidateRangeEnd(range);
  }
  return updated;
}
