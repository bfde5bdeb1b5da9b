import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import type { Vma } from './vma.ts';
import { EBUSY, EFAULT, EINVAL, EOPNOTSUPP } from './errno.ts';
import { PAGE_SIZE, vpn } from './constants.ts';
import {
  PTE_DEVICE_EXCLUSIVE, PTE_DIRTY, PTE_PRESENT, PTE_WRITE, isDeviceExclusiveEntry, makePte, pteFrame, pteHas, ptePresent,
} from './page-table.ts';
import { PG_ANON, PG_DIRTY, PG_HUGETLB, PG_LOCKED } from './page-frames.ts';
import { VM_WRITE } from './vma.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { flushTlbPage } from './tlb.ts';
import { FOLL_WRITE, getUserPagesRemote } from './gup.ts';
import { requireInterface } from './profile.ts';

/**
 * Device-exclusive access (mm/rmap.c make_device_exclusive; mm/memory.c
 * remove_device_exclusive_entry, restore_exclusive_pte; spec/kernel.md rule 53): a device
 * that needs atomic access to a page has the CPU mapping replaced by a device-exclusive
 * entry; the next CPU access restores the PTE, with an EXCLUSIVE invalidation that tells
 * the device its exclusive access is gone.
 */

/** The locked, referenced page make_device_exclusive hands back, or -errno. */
export interface DeviceExclusiveResult {
  /** The folio (a small page here): locked, with the GUP reference the caller drops. */
  folio: number;
}

/**
 * make_device_exclusive(mm, addr, owner, &folio) as in 6.15+: GUP the page writable
 * (get_user_page_vma_remote with FOLL_GET | FOLL_WRITE; an entry already exclusive for
 * some device is restored by that fault first, with its EXCLUSIVE invalidation); refuse a
 * page that is not anonymous or is hugetlb (-EOPNOTSUPP); lock it (a page locked
 * elsewhere: -EBUSY here, the kernel sleeps in folio_lock_killable); inside an EXCLUSIVE
 * invalidation carrying `owner` (mmu_notifier_range_init_owner) check the PTE still maps
 * the page writable (else retry from the GUP), clear and flush it (its dirty bit goes to
 * the folio) and install a device-exclusive entry, which keeps the mapping and reference.
 * The caller gets the folio locked and referenced and must unlock and put it. Requires
 * the mmap lock. Refused on profiles before 5.14 (make_device_exclusive_range).
 */
export function* makeDeviceExclusive(mm: MmStruct, addr: number, owner: unknown): Co<DeviceExclusiveResult | number> {
  const { kernel } = mm;
  const { phys } = kernel;
  if (requireInterface(kernel.profile, 'makeDeviceExclusive', 'make_device_exclusive', (m) => kernel.sim.emit({ type: 'note', text: m })) < 0) return -EINVAL;
  if (!mm.mmapLock.heldByCurrent('any')) kernel.sim.emit({ type: 'note', text: 'make_device_exclusive called without the mmap lock held (mmap_assert_locked)' });
  addr = Math.floor(addr / PAGE_SIZE) * PAGE_SIZE;
  for (let tries = 0; ; tries++) {
    if (tries === 8) return -EBUSY; // the kernel retries without bound; the model gives up
    const pages: number[] = [];
    const n = yield* getUserPagesRemote(mm, addr, 1, FOLL_WRITE, pages);
    if (n < 0) return n;
    if (n !== 1) return -EFAULT;
    const f = pages[0] as number;
    const vma = mm.findVma(addr) as Vma;
    if (!phys.has(f, PG_ANON) || phys.has(phys.folioHead(f), PG_HUGETLB) || phys.isLarge(phys.folioHead(f))) {
      phys.put(f);
      return -EOPNOTSUPP;
    }
    if (phys.has(f, PG_LOCKED)) {
      phys.put(f);
      return -EBUSY;
    }
    phys.set(f, PG_LOCKED);
    const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.EXCLUSIVE, addr, addr + PAGE_SIZE, { owner });
    yield* mmuNotifierInvalidateRangeStart(range);
    // The second walk (folio_walk_start), checked and changed in one step.
    const v = vpn(addr);
    const pte = mm.pageTable.get(v);
    if (mm.findVma(addr) !== vma || !ptePresent(pte) || pteFrame(pte) !== f || !pteHas(pte, PTE_WRITE) || mm.pageTable.pmdHuge(v)) {
      yield* mmuNotifierInvalidateRangeEnd(range);
      phys.clear(f, PG_LOCKED);
      phys.put(f);
      continue;
    }
    if (pteHas(pte, PTE_DIRTY)) phys.set(f, PG_DIRTY);
    mm.pageTable.set(v, makePte(f, PTE_DEVICE_EXCLUSIVE | PTE_WRITE));
    yield* flushTlbPage(mm, addr); // ptep_clear_flush, after the entry is settled
    yield* mmuNotifierInvalidateRangeEnd(range);
    return { folio: f };
  }
}

/**
 * remove_device_exclusive_entry (do_swap_page's is_device_exclusive_entry branch): take a
 * reference and the folio lock (a locked folio makes the fault retry), then inside an
 * EXCLUSIVE invalidation with no owner restore the PTE if it is still the entry the fault
 * saw (restore_exclusive_pte: old, writable and dirty-if-the-folio-is when the VMA is
 * writable). Returns 0; the access is then retried.
 */
export function* removeDeviceExclusiveEntry(mm: MmStruct, vma: Vma, addr: number, orig: number): Co<number> {
  const { kernel } = mm;
  const { phys } = kernel;
  const f = pteFrame(orig);
  if (!phys.isAllocated(f)) return 0;
  if (phys.has(f, PG_LOCKED)) {
    yield* kernel.sim.sleep(1000); // folio_lock_or_retry: the access is retried (1 µs, assumed)
    return 0;
  }
  phys.get(f);
  phys.set(f, PG_LOCKED);
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.EXCLUSIVE, addr, addr + PAGE_SIZE, { owner: null });
  yield* mmuNotifierInvalidateRangeStart(range);
  const v = vpn(addr);
  if (mm.pageTable.get(v) === orig && isDeviceExclusiveEntry(orig)) {
    const write = (vma.flags & VM_WRITE) !== 0;
    const dirty = write && phys.has(f, PG_DIRTY) ? PTE_DIRTY : 0;
    mm.pageTable.set(v, makePte(f, PTE_PRESENT | (write ? PTE_WRITE : 0) | dirty));
  }
  yield* mmuNotifierInvalidateRangeEnd(range);
  phys.clear(f, PG_LOCKED);
  phys.put(f);
  return 0;
}

/**
 * copy_nonpresent_pte's device-exclusive branch (fork): the parent's entry is restored to
 * a present PTE first (try_restore_exclusive_pte, no notification) and then copied like
 * any present PTE. Returns the restored PTE.
 */
export function restoreExclusivePteForFork(mm: MmStruct, vma: Vma, addr: number, orig: number): number {
  const { phys } = mm.kernel;
  const f = pteFrame(orig);
  const write = (vma.flags & VM_WRITE) !== 0;
  const pte = makePte(f, PTE_PRESENT | (write ? PTE_WRITE : 0) | (write && phys.has(f, PG_DIRTY) ? PTE_DIRTY : 0));
  mm.pageTable.set(vpn(addr), pte);
  return pte;
}
