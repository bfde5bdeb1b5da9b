import type { Kernel } from './kernel.ts';
import { RwSemaphore } from './sim/index.ts';
import { PageTable } from './page-table.ts';
import { MMAP_BASE } from './constants.ts';
import type { Vma } from './vma.ts';
import type { MmuNotifierSubscriptions } from './mmu-notifier.ts';

/**
 * `struct mm_struct`: an address space shared by the threads of a process.
 *
 * Two counts, as in Linux: `users` (mm_users: address-space users; the last `mmput` runs
 * `exit_mmap`, in the context of whoever drops it, which may be a driver holding an mm
 * reference) and `count` (mm_count: keeps the struct, and its notifier subscriptions,
 * alive after exit_mmap).
 */
export class MmStruct {
  users = 1;
  count = 1;
  readonly mmapLock: RwSemaphore;
  /** VMAs sorted by start, non-overlapping. */
  vmas: Vma[] = [];
  readonly pageTable = new PageTable();
  /** MMF_HAS_PINNED: set by the first FOLL_PIN on this mm, never cleared (rule 57). */
  hasPinned = false;
  /** Pages charged against RLIMIT_MEMLOCK by pinning drivers (`pinned_vm`). */
  pinnedVm = 0;
  /** RLIMIT_MEMLOCK in pages; Infinity for unlimited (CAP_IPC_LOCK). */
  memlockLimitPages = Infinity;
  /** Lazily created at the first registration (rule 1); lives until the last mmdrop. */
  notifierSubscriptions: MmuNotifierSubscriptions | null = null;
  /** exit_mmap has run: no VMAs, no pages, notifiers released. */
  exited = false;
  /** write_protect_seq: odd while fork copies page tables (GUP-fast backs off). */
  writeProtectSeq = 0;
  /**
   * Where top-down get_unmapped_area starts (mm->mmap_base). MMAP_BASE unless the kernel
   * randomizes the address space (arch_pick_mmap_layout, mm/util.c); fork copies it.
   */
  mmapBase = MMAP_BASE;
  /** mm->start_brk and mm->brk (kernel-model/brk.ts); 0 until the loader sets a heap up. */
  startBrk = 0;
  brk = 0;

  constructor(readonly kernel: Kernel, readonly id: number) {
    // A contended hand-off costs the waiter its wake-up (cpu-costs.ts mmapLockHandoffNs).
    this.mmapLock = new RwSemaphore(kernel.sim, `mmap_lock(mm${id})`, 'mmap_lock', () => kernel.cpuCosts.mmapLockHandoffNs);
  }

  /** The VMA containing addr, or undefined. O(log n). */
  findVma(addr: number): Vma | undefined {
    const i = this.vmaIndexAtOrAfter(addr);
    const v = this.vmas[i];
    return v && v.start <= addr && addr < v.end ? v : undefined;
  }

  /** Index of the first VMA whose end is above addr. */
  vmaIndexAtOrAfter(addr: number): number {
    let lo = 0;
    let hi = this.vmas.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.vmas[mid] as Vma).end <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** VMAs overlapping [start, end), in address order. */
  vmasIn(start: number, end: number): Vma[] {
    const out: Vma[] = [];
    for (let i = this.vmaIndexAtOrAfter(start); i < this.vmas.length; i++) {
      const v = this.vmas[i] as Vma;
      if (v.start >= end) break;
      out.push(v);
    }
    return out;
  }

  /** mmget_not_zero: take an address-space reference unless the mm is exiting. */
  mmgetNotZero(): boolean {
    if (this.users === 0) return false;
    this.users++;
    return true;
  }

  mmgrab(): void {
    this.count++;
  }

  mmdrop(): void {
    this.count--;
  }
}
