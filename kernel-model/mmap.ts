import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import type { File } from './file.ts';
import { Vma, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_MAYEXEC, VM_SHARED, protToVmFlags } from './vma.ts';
import { EFAULT, EINVAL, ENOMEM } from './errno.ts';
import {
  MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE,
  MMAP_BASE, PAGE_SIZE, TASK_SIZE, isPageAligned, pageAlignUp, vpn,
} from './constants.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { zapPteRange } from './memory.ts';
import { flushTlbMmRange, gatherPage, tlbFinishMmu, type GatheredSpan } from './tlb.ts';
import { isMigrationEntry, pteFrame, pteHas, ptePresent, PTE_SWAP } from './page-table.ts';
import { migrationEntryMoved } from './migrate.ts';

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
    }
  }
  return mm.vmasIn(start, end);
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
  const vmas = splitVmasAt(mm, start, end);
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.UNMAP, start, end);
  yield* mmuNotifierInvalidateRangeStart(range);
  const toFree: number[] = [];
  let span: GatheredSpan = null;
  for (const vma of vmas) span = zapPteRange(mm, vma, vma.start, vma.end, toFree, span);
  yield* mmuNotifierInvalidateRangeEnd(range);
  for (const vma of vmas) removeVma(mm, vma);
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
  const len = pageAlignUp(length);
  if (len > TASK_SIZE) return -ENOMEM;
  let start: number;
  if (flags & MAP_FIXED) {
    if (!isPageAligned(addr)) return -EINVAL;
    if (addr < MIN_ADDR || addr + len > TASK_SIZE) return -ENOMEM;
    start = addr;
    yield* doMunmap(mm, start, start + len);
  } else {
    start = getUnmappedArea(mm, addr, len);
    if (start < 0) return start;
  }
  let backing = anon ? null : file;
  if (anon && type === MAP_SHARED) backing = mm.kernel.createShmem(len);
  const vmFlags = protToVmFlags(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | (type === MAP_SHARED ? VM_SHARED | VM_MAYSHARE : 0);
  insertVma(mm, new Vma(mm, start, start + len, vmFlags, backing, anon ? 0 : offset / PAGE_SIZE));
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
  const [src] = splitVmasAt(mm, oldAddr, oldAddr + oldLen) as [Vma];
  const moved = new Vma(mm, newAddr, newAddr + newLen, src.flags, src.file, src.file ? src.pgoff : 0);
  moved.anonVma = src.anonVma;
  insertVma(mm, moved);
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.UNMAP, oldAddr, oldAddr + oldLen);
  yield* mmuNotifierInvalidateRangeStart(range);
  const shift = newAddr - oldAddr;
  let span: GatheredSpan = null;
  for (const [v, pte] of mm.pageTable.entriesIn(vpn(oldAddr), vpn(oldAddr + Math.min(oldLen, newLen)))) {
    mm.pageTable.clear(v);
    mm.pageTable.set(v + shift / PAGE_SIZE, pte);
    if (ptePresent(pte)) span = gatherPage(span, v * PAGE_SIZE);
    if (isMigrationEntry(pte)) migrationEntryMoved(mm.kernel, pteFrame(pte), mm, v * PAGE_SIZE, v * PAGE_SIZE + shift);
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
