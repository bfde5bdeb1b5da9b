/**
 * hugetlb (mm/hugetlb.c): private anonymous MAP_HUGETLB mappings backed by 2 MiB pages from
 * a pool reserved up front (/proc/sys/vm/nr_hugepages), with hugetlb's own rules:
 * - a mapping is a whole number of huge pages, at a huge-page aligned address; a VMA is
 *   never cut inside a huge page (hugetlb_vm_op_split: -EINVAL), so munmap, mprotect and
 *   mremap of an unaligned part fail;
 * - a huge page is never split: zaps cover whole pages (__unmap_hugepage_range), and
 *   MADV_DONTNEED needs an aligned start and rounds the end down (rule 21c);
 * - a write to a shared (COW) private huge page copies all 2 MiB into a new one, with one
 *   CLEAR over the huge page (hugetlb_wp); an exclusive one is reused in place;
 * - fork copies the page tables with a CLEAR over the whole VMA, not PROTECTION_PAGE (rule
 *   21i), and copies maybe-pinned pages for the child at once (hugetlb_try_dup_anon_rmap).
 * [read, excerpt] mm/hugetlb.c (hugetlb_fault, hugetlb_no_page, hugetlb_wp,
 * unmap_hugepage_range, copy_hugetlb_page_range, hugetlb_vm_op_split); spec rules 21c, 21i.
 *
 * Not modelled: shared hugetlb mappings (hugetlbfs files, PMD sharing), 1 GiB pages,
 * surplus pages (nr_overcommit_hugepages), hugetlb migration.
 */
import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import type { PhysicalMemory } from './page-frames.ts';
import { VM_HUGETLB, VM_SHARED, VM_WRITE, type Vma } from './vma.ts';
import { EFAULT, ENOMEM } from './errno.ts';
import { PMD_SIZE, vpn } from './constants.ts';
import { PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_WRITE, makePte, pteFlags, pteFrame, pteHas } from './page-table.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE, PG_HUGETLB } from './page-frames.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { flushTlbMmRange } from './tlb.ts';
import { HPAGE_PMD_NR, HPAGE_PMD_ORDER, pmdAlignDown, setFolioFlags } from './huge-memory.ts';

/** The default hstate on x86-64: 2 MiB. */
export const HUGETLB_PAGE_SIZE = PMD_SIZE;
export const HUGETLB_PAGE_ORDER = HPAGE_PMD_ORDER;

/**
 * The pool of 2 MiB pages (one hstate). `setNrHugepages` takes them from physical memory
 * at once, as writing nr_hugepages does; a page freed by its last user goes back to the
 * pool, not to the page allocator (free_huge_folio). mmap reserves pages for the whole
 * mapping (hugetlb_reserve_pages), so a fault never finds the pool empty unless the
 * reservation was skipped.
 */
export class HugetlbPool {
  private readonly freeList: number[] = [];
  /** nr_hugepages. */
  nrHugepages = 0;
  /** resv_hugepages: reserved by mappings, not yet faulted. */
  resvHugepages = 0;

  constructor(private readonly phys: PhysicalMemory) {
    phys.hugetlbFree = (head) => this.freeList.push(head);
  }

  /** free_hugepages. */
  get freeHugepages(): number {
    return this.freeList.length;
  }

  /** echo n > /proc/sys/vm/nr_hugepages: grow (as far as memory allows) or shrink the free part. Returns the new size. */
  setNrHugepages(n: number): number {
    while (this.nrHugepages < n) {
      const head = this.phys.allocFolio(HUGETLB_PAGE_ORDER);
      if (head < 0) break;
      this.phys.set(head, PG_HUGETLB);
      this.freeList.push(head);
      this.nrHugepages++;
    }
    while (this.nrHugepages > n && this.freeList.length > this.resvHugepages) {
      const head = this.freeList.pop() as number;
      this.phys.clear(head, PG_HUGETLB);
      this.phys.put(head);
      this.nrHugepages--;
    }
    return this.nrHugepages;
  }

  /** hugetlb_reserve_pages: false (mmap fails with -ENOMEM) when the free pages do not cover it. */
  reserve(pages: number): boolean {
    if (this.freeList.length - this.resvHugepages < pages) return false;
    this.resvHugepages += pages;
    return true;
  }

  unreserve(pages: number): void {
    this.resvHugepages = Math.max(0, this.resvHugepages - pages);
  }

  /** alloc_hugetlb_folio: a page from the pool (zeroed), consuming a reservation; -ENOMEM when empty. */
  alloc(reserved: boolean): number {
    if (!reserved && this.freeList.length <= this.resvHugepages) return -ENOMEM;
    const head = this.freeList.shift();
    if (head === undefined) return -ENOMEM;
    if (reserved) this.unreserve(1);
    this.phys.refcount[head] = 1;
    for (let f = head; f < head + HPAGE_PMD_NR; f++) this.phys.zeroPage(f);
    return head;
  }
}

/** Pages still reserved by each hugetlb VMA (a private mapping's resv_map), per VMA. */
const reservations = new WeakMap<Vma, Set<number>>();

/** Record the reservation of a new hugetlb VMA: one per huge page. */
export function hugetlbVmaReserved(vma: Vma): void {
  const s = new Set<number>();
  for (let a = vma.start; a < vma.end; a += HUGETLB_PAGE_SIZE) s.add(a);
  reservations.set(vma, s);
}

/** A hugetlb VMA goes (or a part of it): its unused reservations go back (hugetlb_vm_op_close). */
export function hugetlbUnreserve(mm: MmStruct, vma: Vma, start: number, end: number): void {
  const s = reservations.get(vma);
  if (!s) return;
  let n = 0;
  for (const a of [...s]) {
    if (a >= start && a < end) {
      s.delete(a);
      n++;
    }
  }
  mm.kernel.hugetlb.unreserve(n);
}

/** When a hugetlb VMA is split at an aligned address, the tail takes its reservations. */
export function hugetlbSplitReservations(head: Vma, tail: Vma): void {
  const s = reservations.get(head);
  if (!s) return;
  const t = new Set<number>();
  for (const a of [...s]) {
    if (a >= tail.start) {
      s.delete(a);
      t.add(a);
    }
  }
  reservations.set(tail, t);
}

export const isVmHugetlbPage = (vma: Vma): boolean => (vma.flags & VM_HUGETLB) !== 0;

/**
 * hugetlb_fault: an empty entry gets a page from the pool (hugetlb_no_page), mapped
 * writable only for a write fault (a private mapping's read fault maps read-only, and a
 * later write goes through hugetlb_wp, which reuses the exclusive page in place). A write
 * to a read-only entry is hugetlb_wp. Populating sends no notification (rule 18). Returns 0
 * or -EFAULT (VM_FAULT_SIGBUS: pool empty).
 */
export function* hugetlbFault(mm: MmStruct, vma: Vma, addr: number, write: boolean, unshare: boolean): Co<number> {
  const { kernel } = mm;
  const { phys, hugetlb } = kernel;
  const haddr = pmdAlignDown(addr);
  const v = vpn(haddr);
  const entry = mm.pageTable.getPmd(v);
  if (entry === 0) {
    const s = reservations.get(vma);
    const reserved = s?.has(haddr) ?? false;
    const head = hugetlb.alloc(reserved);
    if (head < 0) {
      kernel.sim.emit({ type: 'note', text: `hugetlb: no free huge page for mm${mm.id} at 0x${haddr.toString(16)} (SIGBUS)` });
      return -EFAULT;
    }
    s?.delete(haddr);
    setFolioFlags(kernel, head, PG_ANON | PG_ANON_EXCLUSIVE);
    vma.anonVma = true;
    phys.rmapAddPmd(head, mm, haddr);
    mm.pageTable.setPmd(v, makePte(head, PTE_PRESENT | PTE_ACCESSED | (write && vma.flags & VM_WRITE ? PTE_WRITE | PTE_DIRTY : 0)));
    kernel.sim.emit({ type: 'thp', op: 'hugetlb-fault', mm: mm.id, addr: haddr, frame: head, node: kernel.node });
    return 0;
  }
  if ((write || unshare) && !pteHas(entry, PTE_WRITE)) return yield* hugetlbWp(mm, vma, haddr, unshare);
  mm.pageTable.setPmd(v, makePte(pteFrame(entry), pteFlags(entry) | PTE_ACCESSED | (write ? PTE_DIRTY : 0)));
  return 0;
}

/**
 * hugetlb_wp: reuse an exclusive page in place (PageAnonExclusive, or mapped once with no
 * other reference), else copy the whole huge page into a new one from the pool, with a
 * CLEAR over [haddr, haddr + 2 MiB) around the replacement. -EFAULT (SIGBUS) when the pool
 * has no page for the copy.
 */
export function* hugetlbWp(mm: MmStruct, vma: Vma, haddr: number, unshare: boolean): Co<number> {
  const { kernel } = mm;
  const { phys, hugetlb } = kernel;
  const v = vpn(haddr);
  const entry = mm.pageTable.getPmd(v);
  const old = pteFrame(entry);
  if (vma.flags & VM_SHARED) return 0;
  const exclusive = kernel.profile.anonExclusive ? phys.has(old, PG_ANON_EXCLUSIVE) : phys.mapcount[old] === 1 && phys.folioRefCount(old) === 1;
  if (exclusive || (phys.mapcount[old] === 1 && phys.folioRefCount(old) === 1)) {
    setFolioFlags(kernel, old, PG_ANON_EXCLUSIVE);
    if (!unshare) mm.pageTable.setPmd(v, makePte(old, pteFlags(entry) | PTE_ACCESSED | PTE_DIRTY | (vma.flags & VM_WRITE ? PTE_WRITE : 0)));
    return 0;
  }
  const nh = hugetlb.alloc(false);
  if (nh < 0) {
    kernel.sim.emit({ type: 'note', text: `hugetlb_wp: no huge page for the copy in mm${mm.id} at 0x${haddr.toString(16)} (SIGBUS)` });
    return -EFAULT;
  }
  for (let i = 0; i < HPAGE_PMD_NR; i++) phys.copyPage(nh + i, old + i);
  setFolioFlags(kernel, nh, PG_ANON | PG_ANON_EXCLUSIVE);
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, haddr, haddr + HUGETLB_PAGE_SIZE);
  yield* mmuNotifierInvalidateRangeStart(range);
  if (mm.pageTable.getPmd(v) === entry) {
    phys.rmapRemovePmd(old, mm, haddr);
    phys.rmapAddPmd(nh, mm, haddr);
    mm.pageTable.setPmd(v, makePte(nh, PTE_PRESENT | PTE_ACCESSED | (unshare ? 0 : PTE_DIRTY | (vma.flags & VM_WRITE ? PTE_WRITE : 0))));
    // huge_ptep_clear_flush's flush (tlb.ts), spent after the entry is replaced: the model
    // has no page-table lock, so nothing may run between the re-check and the change.
    yield* flushTlbMmRange(mm, haddr, haddr + HUGETLB_PAGE_SIZE);
    yield* mmuNotifierInvalidateRangeEnd(range);
    phys.put(old);
  } else {
    yield* mmuNotifierInvalidateRangeEnd(range);
    phys.put(nh);
  }
  kernel.sim.emit({ type: 'thp', op: 'hugetlb-cow', mm: mm.id, addr: haddr, frame: nh, node: kernel.node });
  return 0;
}
