import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import { Vma, VM_MAYEXEC, VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE } from './vma.ts';
import { EINVAL, ENOMEM } from './errno.ts';
import { PAGE_SIZE, TASK_SIZE, isPageAligned, pageAlignUp } from './constants.ts';
import { doMunmap, insertVma } from './mmap.ts';

/**
 * The program break: `brk(2)` and glibc's `sbrk(3)` on top of it.
 *
 * The kernel keeps `mm->start_brk` (set by the ELF loader, fs/binfmt_elf.c `set_brk`) and
 * `mm->brk`, the break the program asked for (not page aligned). SYSCALL_DEFINE1(brk) in
 * mm/mmap.c works on the page-aligned values:
 * - a break below `start_brk` (including 0, the usual "where is it?" query) is refused;
 * - equal aligned values: only `mm->brk` changes, no VMA and no page table do;
 * - shrinking is always allowed when a VMA lies in [newbrk, oldbrk): it goes through
 *   `do_vmi_align_munmap`, the munmap path, so drivers see one MMU_NOTIFY_UNMAP over
 *   [newbrk, oldbrk) (kernel rule 21a) and the pages are freed after the end;
 * - growing fails when any VMA lies in [oldbrk, newbrk + PAGE_SIZE) (the guard page
 *   `vm_start_gap` leaves) or the break would pass TASK_SIZE (`check_brk_limits` asks
 *   get_unmapped_area for a MAP_FIXED range); otherwise `do_brk_flags` extends the heap's
 *   anonymous VMA when it ends at oldbrk, or creates one. No notifier is involved: the new
 *   range had no pages.
 * The syscall never returns an errno: it returns the new break on success and the old one
 * when refused (glibc's wrapper turns "less than asked" into ENOMEM). Not modelled:
 * RLIMIT_DATA, mlock's populate (VM_LOCKED def_flags), CONFIG_COMPAT_BRK, userfaultfd.
 */

/** VM_DATA_DEFAULT_FLAGS on x86-64 (VM_DATA_FLAGS_TSK_EXEC without the exec bit): rw, may rwx. */
const BRK_VMA_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC;

/** A break address as the model accepts it: a finite non-negative integer below 2^64. */
function badAddress(a: number): boolean {
  return !Number.isSafeInteger(a) || a < 0;
}

/**
 * What the ELF loader leaves behind (`set_brk` in fs/binfmt_elf.c: `mm->start_brk =
 * mm->brk = end`): the heap starts empty at `start`. -EINVAL for an unaligned or negative
 * start or one past TASK_SIZE (model's bad input; the loader computes it), -ENOMEM when a
 * VMA already covers it.
 */
export function setBrkBase(mm: MmStruct, start: number): number {
  if (badAddress(start) || !isPageAligned(start) || start >= TASK_SIZE) return -EINVAL;
  if (mm.findVma(start)) return -ENOMEM;
  mm.startBrk = start;
  mm.brk = start;
  return 0;
}

/**
 * SYSCALL_DEFINE1(brk) (mm/mmap.c): the new break, or the old one when refused. Caller
 * holds mmap_lock for write (the shrink path drops it early in Linux; no one can observe
 * the difference here). -EINVAL only for a value no `unsigned long` can hold (model's bad
 * input: a negative, fractional or unsafe number).
 */
export function* doBrk(mm: MmStruct, brk: number): Co<number> {
  if (badAddress(brk)) return -EINVAL;
  const origbrk = mm.brk;
  if (mm.startBrk === 0 || brk < mm.startBrk) return origbrk;
  const newbrk = pageAlignUp(brk);
  const oldbrk = pageAlignUp(mm.brk);
  if (newbrk === oldbrk) {
    mm.brk = brk;
    return brk;
  }
  if (brk <= mm.brk) {
    // vma_find(&vmi, oldbrk) from newbrk: the heap VMA must intersect what goes away.
    const brkvma = mm.vmasIn(newbrk, oldbrk)[0];
    if (!brkvma || brkvma.start >= oldbrk) return origbrk;
    mm.brk = brk;
    // do_vmi_align_munmap: the ordinary munmap path, one MMU_NOTIFY_UNMAP over [newbrk, oldbrk).
    const r = yield* doMunmap(mm, newbrk, oldbrk);
    if (r < 0) {
      mm.brk = origbrk;
      return origbrk;
    }
    return brk;
  }
  // check_brk_limits: get_unmapped_area(MAP_FIXED) fails past TASK_SIZE.
  if (newbrk > TASK_SIZE) return origbrk;
  // Only a VMA within the guard page after the new break refuses the growth.
  if (mm.vmasIn(oldbrk, Math.min(newbrk + PAGE_SIZE, TASK_SIZE)).length > 0) return origbrk;
  // do_brk_flags: expand the heap VMA that ends at oldbrk (vma_prev_limit from start_brk), or add one.
  const prev = mm.findVma(oldbrk - 1);
  if (prev && prev.end === oldbrk && prev.start >= mm.startBrk && prev.anonymous && !prev.shared && prev.flags === BRK_VMA_FLAGS) {
    prev.end = newbrk;
  } else {
    insertVma(mm, new Vma(mm, oldbrk, newbrk, BRK_VMA_FLAGS, null, 0));
  }
  mm.brk = brk;
  return brk;
}

/**
 * glibc's `sbrk(3)` (misc/sbrk.c over `__brk`): move the break by `increment` bytes and
 * return the old break, or -ENOMEM when the kernel refused (the break it returned is not
 * the one asked for). -EINVAL for a non-integer increment (model's bad input).
 */
export function* sbrk(brkSyscall: (addr: number) => Co<number>, current: number, increment: number): Co<number> {
  if (!Number.isSafeInteger(increment)) return -EINVAL;
  if (increment === 0) return current;
  const want = current + increment;
  if (want < 0) return -ENOMEM;
  const got = yield* brkSyscall(want);
  if (got < 0) return got;
  return got === want ? current : -ENOMEM;
}
