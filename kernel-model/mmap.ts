import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import type { File } from './file.ts';
import { Vma, VM_HUGETLB, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_MAYEXEC, VM_SHARED, protToVmFlags } from './vma.ts';
import { EFAULT, EINVAL, ENOMEM } from './errno.ts';
import {
  MAP_ANONYMOUS, MAP_FIXED, MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE,
  MMAP_BASE, PAGE_SIZE, TASK_SIZE, isPageAligned, pageAlignUp, vpn,
} from './constants.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { zapPteRange } from './memory.ts';
import { flushTlbMmRange, gatherPage, tlbFinishMmu, zapPteRangeWork, type GatheredSpan } from './tlb.ts';
import { isDevicePrivateEntry, isMigrationEntry, pteFrame, pteHas, ptePresent, PTE_SWAP } from './page-table.ts';
import { devicePageRmapMove } from './memremap.ts';
import { migrationEntryMoved } from './migrate.ts';
import { HPAGE_PMD_NR, HPAGE_PMD_SIZE, splitHugePmd, vmaAdjustTransHuge } from './huge-memory.ts';
import { HUGETLB_PAGE_SIZE, hugetlbSplitReservations, hugetlbUnreserve, hugetlbVmaReserved, isVmHugetlbPage } from './hugetlb.ts';

export { MMAP_BASE } from './constants.ts';
const MIN_ADDR = 0x10000;

/** Insert a VMA keeping the list sorted (the caller made room). */
export function insertVma(mm: MmStruct, vma: Vma): void {
  const i = mm.vmaIndexAtOrAfter(vma.start);
  mm.vmas.splice(i, 0, vma);
  vma.file?.mappings.add(vma);
}

function removeVma(mm: MmStruct, vma: Vma): void {
  const i = mm.vmas.indexOf(vma);
  if (i >= 0) mm.vmas.splice(i, 1);
  vma.file?.mappings.delete(vma);
}

/** Split VMAs so that `start` and `end` are VMA boundaries; returns the VMAs inside. */
export function splitVmasAt(mm: MmStruct, start: number, end: number): Vma[] {
  for (const addr of [start, end]) {
    const v = mm.findVma(addr);
    if (v && v.start < addr) {
      const tail = v.splitAt(addr);
      mm.vmas.splice(mm.vmas.indexOf(v) + 1, 0, tail);
      if (isVmHugetlbPage(v)) hugetlbSplitReservations(v, tail);
    }
  }
  return mm.vmasIn(start, end);
}

/**
 * hugetlb_vm_op_split: a hugetlb VMA may only be cut on a huge-page boundary. -EINVAL when
 * `start` or `end` falls inside a huge page of one (munmap, mprotect, mremap), else 0.
 */
export function hugetlbSplitCheck(mm: MmStruct, start: number, end: number): number {
  for (const addr of [start, end]) {
    const v = mm.findVma(addr);
    if (v && v.start < addr && isVmHugetlbPage(v) && addr % HUGETLB_PAGE_SIZE !== 0) return -EINVAL;
  }
  return 0;
}

/**
 * __split_vma's first step for the cuts at `start` and `end`: vma_adjust_trans_huge splits
 * a huge PMD straddling a cut (a CLEAR over its block, before the caller's own range).
 */
export function* splitVmasAtHuge(mm: MmStruct, start: number, end: number, why: string): Co<Vma[]> {
  yield* vmaAdjustTransHuge(mm, [start, end], why);
  return splitVmasAt(mm, start, end);
}

/** get_unmapped_area, top-down from the mm's mmap_base; honours a free hint. Returns -ENOMEM. */
export function getUnmappedArea(mm: MmStruct, hint: number, len: number): number {
  if (hint && isPageAligned(hint) && hint >= MIN_ADDR && hint + len <= TASK_SIZE && mm.vmasIn(hint, hint + len).length === 0) return hint;
  const base = mm.mmapBase;
  let top = base;
  // Start at the first VMA ending above the base: one straddling it bounds the first gap.
  for (let i = Math.min(mm.vmaIndexAtOrAfter(base), mm.vmas.length - 1); i >= -1; i--) {
    const v = mm.vmas[i];
    const bottom = v ? v.end : MIN_ADDR;
    if (v && v.start >= top) continue;
    if (top - Math.max(bottom, MIN_ADDR) >= len) return top - len;
    if (!v) break;
    top = Math.min(top, v.start);
  }
  return -ENOMEM;
}

/**
 * The region-unmap path shared by munmap, MAP_FIXED, mremap shrink and source unmap:
 * one UNMAP over the aligned request, holes included, around the zap of every VMA in it
 * (rule 21a); nothing is sent when no VMA is touched. Pages are freed after the end.
 */
export function* doMunmap(mm: MmStruct, start: number, end: number): Co<number> {
  if (mm.vmasIn(start, end).length === 0) return 0;
  if (hugetlbSplitCheck(mm, start, end) < 0) return -EINVAL;
  const vmas = yield* splitVmasAtHuge(mm, start, end, 'munmap (__split_vma)');
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.UNMAP, start, end);
  yield* mmuNotifierInvalidateRangeStart(range);
  const toFree: number[] = [];
  let span: GatheredSpan = null;
  for (const vma of vmas) span = zapPteRange(mm, vma, vma.start, vma.end, toFree, span);
  yield* zapPteRangeWork(mm, span);
  yield* mmuNotifierInvalidateRangeEnd(range);
  for (const vma of vmas) {
    if (isVmHugetlbPage(vma)) hugetlbUnreserve(mm, vma, vma.start, vma.end);
    removeVma(mm, vma);
  }
  yield* tlbFinishMmu(mm, span, toFree);
  return 0;
}

/** mmap(2). Returns the address or -errno. Caller holds mmap_lock for write. */
export function* doMmap(mm: MmStruct, addr: number, length: number, prot: number, flags: number, file: File | null, offset: number): Co<number> {
  const type = flags & (MAP_SHARED | MAP_PRIVATE);
  if (length <= 0 || !Number.isFinite(length)) return -EINVAL;
  if (type !== MAP_SHARED && type !== MAP_PRIVATE) return -EINVAL;
  if (!isPageAligned(offset) || offset < 0) return -EINVAL;
  const anon = (flags & MAP_ANONYMOUS) !== 0;
  if (!anon && !file) return -EINVAL; // EBADF in Linux: no file descriptor
  const hugetlb = (flags & MAP_HUGETLB) !== 0;
  if (hugetlb && (!anon || type === MAP_SHARED)) {
    // hugetlbfs files and shared hugetlb mappings are not modelled (hugetlb.ts).
    mm.kernel.sim.emit({ type: 'note', text: 'mmap: MAP_HUGETLB is modelled for private anonymous mappings only' });
    return -EINVAL;
  }
  // ksys_mmap_pgoff: a MAP_HUGETLB length is rounded up to the huge page size.
  const len = hugetlb ? Math.ceil(length / HUGETLB_PAGE_SIZE) * HUGETLB_PAGE_SIZE : pageAlignUp(length);
  if (len > TASK_SIZE) return -ENOMEM;
  let start: number;
  if (flags & MAP_FIXED) {
    if (!isPageAligned(addr) || (hugetlb && addr % HUGETLB_PAGE_SIZE !== 0)) return -EINVAL;
    if (addr < MIN_ADDR || addr + len > TASK_SIZE) return -ENOMEM;
    start = addr;
    const r = yield* doMunmap(mm, start, start + len);
    if (r < 0) return r;
  } else if (hugetlb) {
    // hugetlb_get_unmapped_area: a huge-page aligned address.
    const hint = addr % HUGETLB_PAGE_SIZE === 0 ? addr : 0;
    const found = getUnmappedArea(mm, hint, len + HUGETLB_PAGE_SIZE - PAGE_SIZE);
    if (found < 0) return found;
    start = found === hint && hint !== 0 ? hint : Math.ceil(found / HUGETLB_PAGE_SIZE) * HUGETLB_PAGE_SIZE;
  } else {
    start = getUnmappedArea(mm, addr, len);
    if (start < 0) return start;
  }
  if (hugetlb && !mm.kernel.hugetlb.reserve(len / HUGETLB_PAGE_SIZE)) {
    // hugetlb_reserve_pages: not enough free huge pages for the whole mapping.
    mm.kernel.sim.emit({ type: 'note', text: `mmap: ${len / HUGETLB_PAGE_SIZE} huge pages wanted, ${mm.kernel.hugetlb.freeHugepages - mm.kernel.hugetlb.resvHugepages} free unreserved` });
    return -ENOMEM;
  }
  let backing = anon ? null : file;
  if (anon && type === MAP_SHARED) backing = mm.kernel.createShmem(len);
  const vmFlags = protToVmFlags(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | (type === MAP_SHARED ? VM_SHARED | VM_MAYSHARE : 0) | (hugetlb ? VM_HUGETLB : 0);
  const vma = new Vma(mm, start, start + len, vmFlags, backing, anon ? 0 : offset / PAGE_SIZE);
  insertVma(mm, vma);
  if (hugetlb) hugetlbVmaReserved(vma);
  return start;
}

/** munmap(2): EINVAL for an unaligned start, a zero length or a range past TASK_SIZE. */
export function* doMunmapSyscall(mm: MmStruct, addr: number, length: number): Co<number> {
  if (!isPageAligned(addr) || length <= 0 || !Number.isFinite(length)) return -EINVAL;
  const len = pageAlignUp(length);
  if (addr + len > TASK_SIZE) return -EINVAL;
  return yield* doMunmap(mm, addr, addr + len);
}

/**
 * mremap(2): shrink (UNMAP of the tail), grow in place, or move. A move sends one UNMAP
 * over the old range around the page-table move, then unmaps the source the ordinary
 * way, a second UNMAP (rule 21b). With MREMAP_FIXED the destination is unmapped first.
 */
export function* doMremap(mm: MmStruct, oldAddr: number, oldLength: number, newLength: number, flags: number, newAddr: number): Co<number> {
  if (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP)) return -EINVAL;
  if (flags & MREMAP_FIXED && !(flags & MREMAP_MAYMOVE)) return -EINVAL;
  if (flags & MREMAP_DONTUNMAP && !(flags & MREMAP_MAYMOVE)) return -EINVAL;
  if (!isPageAligned(oldAddr) || newLength <= 0) return -EINVAL;
  const oldLen = pageAlignUp(oldLength);
  const newLen = pageAlignUp(newLength);
  const vma = mm.findVma(oldAddr);
  if (!vma || oldAddr + oldLen > vma.end) return -EFAULT;
  if (isVmHugetlbPage(vma)) {
    // mremap of hugetlb: huge-page aligned addresses and lengths only (mremap_to /
    // vma_to_resize with hugetlb's split rule); growing in place is refused (-EINVAL).
    if (oldAddr % HUGETLB_PAGE_SIZE || oldLen % HUGETLB_PAGE_SIZE || newLen % HUGETLB_PAGE_SIZE) return -EINVAL;
    if (newLen > oldLen && !(flags & MREMAP_MAYMOVE)) return -EINVAL;
  }
  if (flags & MREMAP_FIXED) {
    if (!isPageAligned(newAddr)) return -EINVAL;
    if (newAddr < oldAddr + oldLen && oldAddr < newAddr + newLen) return -EINVAL;
    if (newAddr + newLen > TASK_SIZE) return -EINVAL;
    yield* doMunmap(mm, newAddr, newAddr + newLen);
    return yield* moveVma(mm, vma, oldAddr, oldLen, newAddr, newLen, flags);
  }
  if (newLen <= oldLen) {
    if (newLen < oldLen) yield* doMunmap(mm, oldAddr + newLen, oldAddr + oldLen);
    return oldAddr;
  }
  const end = oldAddr + oldLen;
  if (end === vma.end && end + (newLen - oldLen) <= TASK_SIZE && mm.vmasIn(end, oldAddr + newLen).length === 0) {
    vma.end = oldAddr + newLen;
    return oldAddr;
  }
  if (!(flags & MREMAP_MAYMOVE)) return -ENOMEM;
  const dest = getUnmappedArea(mm, 0, newLen);
  if (dest < 0) return dest;
  return yield* moveVma(mm, vma, oldAddr, oldLen, dest, newLen, flags);
}

function* moveVma(mm: MmStruct, vma: Vma, oldAddr: number, oldLen: number, newAddr: number, newLen: number, flags: number): Co<number> {
  const { phys } = mm.kernel;
  const [src] = (yield* splitVmasAtHuge(mm, oldAddr, oldAddr + oldLen, 'mremap (__split_vma)')) as [Vma];
  const moved = new Vma(mm, newAddr, newAddr + newLen, src.flags, src.file, src.file ? src.pgoff : 0);
  moved.anonVma = src.anonVma;
  insertVma(mm, moved);
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.UNMAP, oldAddr, oldAddr + oldLen);
  yield* mmuNotifierInvalidateRangeStart(range);
  const shift = newAddr - oldAddr;
  let span: GatheredSpan = null;
  // move_page_tables: a huge PMD moves whole (move_pgt_entry(HPAGE_PMD)) when the extent is
  // a whole block at both ends (get_extent); otherwise it is split first (CLEAR over its
  // block, nested in the move's UNMAP) and its PTEs move one by one.
  const moveEnd = oldAddr + Math.min(oldLen, newLen);
  for (const slot of mm.pageTable.hugeSlotsIn(vpn(oldAddr), vpn(moveEnd))) {
    const haddr = slot * HPAGE_PMD_SIZE;
    const whole = haddr >= oldAddr && haddr + HPAGE_PMD_SIZE <= moveEnd && shift % HPAGE_PMD_SIZE === 0;
    if (!whole) {
      yield* splitHugePmd(mm, haddr, 'move_page_tables');
      continue;
    }
    const entry = mm.pageTable.getPmd(vpn(haddr));
    if (entry === 0) continue; // gone while an earlier split's notifier ran
    mm.pageTable.setPmd(vpn(haddr), 0);
    mm.pageTable.setPmd(vpn(haddr + shift), entry);
    phys.rmapRemovePmd(pteFrame(entry), mm, haddr);
    phys.rmapAddPmd(pteFrame(entry), mm, haddr + shift);
    span = gatherPage(gatherPage(span, haddr), haddr + (HPAGE_PMD_NR - 1) * PAGE_SIZE);
  }
  for (const [v, pte] of mm.pageTable.entriesIn(vpn(oldAddr), vpn(moveEnd))) {
    mm.pageTable.clear(v);
    mm.pageTable.set(v + shift / PAGE_SIZE, pte);
    if (ptePresent(pte)) span = gatherPage(span, v * PAGE_SIZE);
    if (isMigrationEntry(pte)) migrationEntryMoved(mm.kernel, pteFrame(pte), mm, v * PAGE_SIZE, v * PAGE_SIZE + shift);
    else if (isDevicePrivateEntry(pte)) devicePageRmapMove(mm.kernel, pteFrame(pte), mm, v * PAGE_SIZE, v * PAGE_SIZE + shift);
    else if (!pteHas(pte, PTE_SWAP)) {
      phys.rmapRemove(pteFrame(pte), mm, v * PAGE_SIZE);
      phys.rmapAdd(pteFrame(pte), mm, v * PAGE_SIZE + shift);
    }
  }
  // move_ptes: flush_tlb_range over the old addresses when a present PTE moved (tlb.ts).
  if (span) yield* flushTlbMmRange(mm, span.start, span.end);
  yield* mmuNotifierInvalidateRangeEnd(range);
  void vma;
  if (flags & MREMAP_DONTUNMAP) return newAddr;
  yield* doMunmap(mm, oldAddr, oldAddr + oldLen);
  return newAddr;
}
