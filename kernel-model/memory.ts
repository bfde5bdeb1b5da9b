import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import type { Vma } from './vma.ts';
import { VM_WRITE, VM_SHARED } from './vma.ts';
import { EAGAIN, EFAULT, ENOMEM } from './errno.ts';
import { PAGE_SIZE, PMD_SIZE, pageAlignDown, vpn } from './constants.ts';
import {
  PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_PROTNONE, PTE_SWAP, PTE_WRITE,
  isDeviceExclusiveEntry, isDevicePrivateEntry, isMigrationEntry, makePte, pteFrame, pteHas, ptePresent,
} from './page-table.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_KSM, PG_PRIVATE, PG_SWAPBACKED, PG_SWAPCACHE, PG_WRITEBACK, ZERO_PFN } from './page-frames.ts';
import type { Kernel } from './kernel.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidatePage, mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { filemapFault, folioMarkDirty, pageMkwrite } from './filemap.ts';
import { swapIn } from './swap.ts';
import { GFP_HIGHUSER_MOVABLE, allocPages } from './page-alloc.ts';
import { flushTlbPage, gatherPage, type GatheredSpan } from './tlb.ts';
import { migrationEntryDropped, migrationEntryWait } from './migrate.ts';
import { numaHintingFault } from './numa-balancing.ts';
import { VM_FAULT_FALLBACK, doHugePmdAnonymousPage, hugePmdFault, thpVmaAllowable, zapHugePmd } from './huge-memory.ts';
import { hugetlbFault, isVmHugetlbPage } from './hugetlb.ts';
import { canChangePteWritable } from './mprotect.ts';
import { removeDeviceExclusiveEntry } from './device-exclusive.ts';
import { devicePageGet, devicePagePut, devicePageRmapRemove, devicePageTrylock, devicePageUnlock, pagePgmap } from './memremap.ts';

export const FAULT_FLAG_WRITE = 1;
/** Break COW sharing without making the PTE writable (read-only pins, rule 61). */
export const FAULT_FLAG_UNSHARE = 2;
export const FAULT_FLAG_REMOTE = 4;

/**
 * handle_mm_fault: make the PTE for addr satisfy the access, as do_anonymous_page,
 * do_fault, do_swap_page and do_wp_page do. Called with mmap_lock held for read.
 * Returns 0 or -errno (-EFAULT standing in for SIGSEGV/SIGBUS, -ENOMEM for OOM).
 *
 * Populating an empty PTE or upgrading one in place sends no notification (rule 18);
 * replacing the page (COW, unshare) sends a one-page CLEAR around the change (rule 21d).
 *
 * A fault that finds the PTE changed under it returns and the access faults again (the
 * kernel goes back to user space, which retries the instruction). That is a loop here, not
 * a recursive call: retries can go on for as long as another thread keeps changing the
 * PTE (a NUMA scan re-marking a page whose migration keeps failing), and nested
 * generators would grow the stack with every one.
 */
export function* handleMmFault(mm: MmStruct, vma: Vma, addr: number, flags: number): Co<number> {
  for (;;) {
    const r = yield* handleMmFaultOnce(mm, vma, addr, flags);
    if (r !== FAULT_AGAIN) return r;
  }
}

/** handleMmFaultOnce's "the PTE changed: fault again" (not an errno; never escapes). */
const FAULT_AGAIN = -0x1_0000;

function* handleMmFaultOnce(mm: MmStruct, vma: Vma, addr: number, flags: number): Co<number> {
  const { kernel } = mm;
  const { phys, sim } = kernel;
  const write = (flags & FAULT_FLAG_WRITE) !== 0;
  const unshare = (flags & FAULT_FLAG_UNSHARE) !== 0;
  const page = pageAlignDown(addr);
  const v = vpn(page);
  // The CPU cost of the fault itself (cpu-costs.ts pageFaultNs), once per handle_mm_fault.
  yield* sim.cpu(kernel.cpuCosts.pageFaultNs);
  if (isVmHugetlbPage(vma)) {
    // hugetlb_fault: huge entries only, never a PTE (hugetlb.ts).
    const r = yield* hugetlbFault(mm, vma, addr, write, unshare);
    sim.emit({ type: 'fault', mm: mm.id, addr: page, write, kind: 'hugetlb', ret: r, node: kernel.node });
    return r;
  }
  if (mm.pageTable.pmdHuge(v)) {
    // __handle_mm_fault's pmd_trans_huge branch: do_huge_pmd_wp_page or huge_pmd_set_accessed;
    // a fallback (after a split) continues at PTE level below.
    const r = yield* hugePmdFault(mm, vma, addr, write, unshare);
    if (r !== VM_FAULT_FALLBACK) {
      sim.emit({ type: 'fault', mm: mm.id, addr: page, write, kind: 'huge-pmd', ret: r, node: kernel.node });
      return r;
    }
  } else if (!vma.file && mm.pageTable.pmdNone(v) && thpVmaAllowable(kernel, vma)) {
    // create_huge_pmd -> do_huge_pmd_anonymous_page on pmd_none (huge-memory.ts).
    const r = yield* doHugePmdAnonymousPage(mm, vma, addr);
    if (r !== VM_FAULT_FALLBACK) {
      sim.emit({ type: 'fault', mm: mm.id, addr: page, write, kind: 'thp', ret: r, node: kernel.node });
      return r;
    }
  }
  yield* sim.preemptPoint('pte read');
  let pte = mm.pageTable.get(v);
  let kind = 'none';
  let ret = 0;
  if (isMigrationEntry(pte)) {
    // do_swap_page on a migration entry: migration_entry_wait, then the access is retried
    // (here at once, on whatever PTE the migration left).
    yield* migrationEntryWait(mm, v);
    sim.emit({ type: 'fault', mm: mm.id, addr: page, write, kind: 'migration-wait', ret: 0, node: kernel.node });
    return FAULT_AGAIN;
  }

  if (isDeviceExclusiveEntry(pte)) {
    // do_swap_page's is_device_exclusive_entry branch: restore the PTE (device-exclusive.ts);
    // the access is then retried.
    ret = yield* removeDeviceExclusiveEntry(mm, vma, page, pte);
    sim.emit({ type: 'fault', mm: mm.id, addr: page, write, kind: 'device-exclusive', ret, node: kernel.node });
    return ret;
  }
  if (isDevicePrivateEntry(pte)) {
    // do_swap_page's is_device_private_entry branch (mm/memory.c): with the entry still the
    // one the fault saw, trylock the device page, take a reference, and let its pgmap's
    // migrate_to_ram bring it back (it runs migrate_vma_* with the page as fault_page);
    // a page locked by someone else (a migration under way) makes the fault return and
    // the access retry. A failed migrate_to_ram is VM_FAULT_SIGBUS.
    kind = 'device-private';
    const dpfn = pteFrame(pte);
    const pgmap = pagePgmap(kernel, dpfn);
    // (memremap_pages refuses a device-private pgmap without migrate_to_ram.)
    if (!pgmap || !pgmap.ops.migrateToRam) ret = -EFAULT;
    else if (devicePageTrylock(kernel, dpfn)) {
      devicePageGet(kernel, dpfn);
      ret = yield* pgmap.ops.migrateToRam({ mm, vma, address: page, page: dpfn, flags });
      devicePageUnlock(kernel, dpfn);
      devicePagePut(kernel, dpfn);
    } else {
      // The access is retried once the faulting thread runs again: model that as a short
      // sleep (1 µs, assumed) so the holder of the page lock can finish.
      yield* kernel.sim.sleep(1000);
    }
    sim.emit({ type: 'fault', mm: mm.id, addr: page, write, kind, ret, node: kernel.node });
    return ret;
  }

  if (pte !== 0 && pteHas(pte, PTE_SWAP)) {
    kind = 'swap-in';
    ret = yield* swapIn(mm, vma, page, write);
  } else if (!ptePresent(pte)) {
    if (vma.file) {
      kind = 'file';
      ret = yield* filemapFault(mm, vma, page, write);
    } else if (!write) {
      // Read of never-touched anonymous memory maps the shared zero page read-only.
      kind = 'zero-page';
      mm.pageTable.set(v, makePte(ZERO_PFN, PTE_PRESENT | PTE_ACCESSED));
    } else {
      kind = 'anon';
      // do_anonymous_page: vma_alloc_zeroed_movable_folio may reclaim (page-alloc.ts).
      const f = yield* allocPages(kernel, GFP_HIGHUSER_MOVABLE);
      if (f < 0) ret = f;
      else if (mm.pageTable.get(v) !== pte) {
        // vmf_pte_changed: another thread mapped the page while reclaim ran.
        phys.put(f);
      } else {
        phys.set(f, PG_ANON | PG_SWAPBACKED | PG_ANON_EXCLUSIVE);
        vma.anonVma = true;
        phys.rmapAdd(f, mm, page);
        kernel.lru.add(f);
        mm.pageTable.set(v, makePte(f, PTE_PRESENT | maybeMkwrite(vma) | PTE_ACCESSED | PTE_DIRTY));
      }
    }
  } else if (pteHas(pte, PTE_PROTNONE)) {
    // NUMA-hint or PROT_NONE entry: the VMA check above already allowed the access, so
    // this is a hinting fault: restore the normal protection.
    kind = 'numa-hint';
    // do_numa_page: a misplaced page migrates first (numa-balancing.ts); the new PTE then
    // comes from remove_migration_ptes, and a write still to do faults again.
    if (yield* numaHintingFault(mm, page)) {
      pte = mm.pageTable.get(v);
      sim.emit({ type: 'fault', mm: mm.id, addr: page, write, kind: 'numa-migrate', ret: 0, node: kernel.node });
      return 0;
    }
    pte = mm.pageTable.get(v);
    if (!ptePresent(pte) || !pteHas(pte, PTE_PROTNONE)) {
      // do_numa_page after a failed migration: !pte_same, so return and fault again.
      sim.emit({ type: 'race-guard', node: kernel.node, fn: 'do_numa_page', what: 'pte-changed', frame: ptePresent(pte) ? pteFrame(pte) : -1 });
      return FAULT_AGAIN;
    }
    const f = pteFrame(pte);
    const w = numaRestoreWritable(mm, vma, pte, write);
    // pte_modify keeps the dirty bit, pte_mkyoung; a write through a writable PTE dirties it.
    const dirty = pteHas(pte, PTE_DIRTY) || (w && write) ? PTE_DIRTY : 0;
    mm.pageTable.set(v, makePte(f, PTE_PRESENT | PTE_ACCESSED | (w ? PTE_WRITE : 0) | dirty));
    if (write && !w && vma.shared && vma.file && !vma.file.shmem && (vma.flags & VM_WRITE) && !dirty) {
      // A clean PTE of a shared file page stays read-only (numaRestoreWritable): the write
      // goes through do_wp_page and page_mkwrite, needed most after writeback dropped the buffers.
      const what = kernel.phys.has(f, PG_PRIVATE) ? 'hint-kept-readonly' : 'hint-kept-readonly-no-buffers';
      sim.emit({ type: 'race-guard', node: kernel.node, fn: 'do_numa_page', what, frame: f });
    }
    if (write && !w) ret = yield* doWpPage(mm, vma, page, false);
  } else if (write && !pteHas(pte, PTE_WRITE)) {
    kind = 'wp';
    ret = yield* doWpPage(mm, vma, page, false);
  } else if (unshare && !pteHas(pte, PTE_WRITE)) {
    kind = 'unshare';
    ret = yield* doWpPage(mm, vma, page, true);
  } else {
    kind = 'spurious';
  }
  pte = mm.pageTable.get(v);
  if (ret === 0 && ptePresent(pte)) mm.pageTable.set(v, pte + (pteHas(pte, PTE_ACCESSED) ? 0 : PTE_ACCESSED));
  sim.emit({ type: 'fault', mm: mm.id, addr: page, write, kind, ret, node: kernel.node });
  return ret;
}

/**
 * Whether do_numa_page (mm/memory.c, numa_rebuild_single_mapping) puts a NUMA hint back
 * writable. From 6.x (the savedwrite bit replaced by can_change_pte_writable):
 * `pte_write(pte_modify(old_pte, vma->vm_page_prot))`, true only for a shared mapping
 * without write notification (shmem, shared anonymous), or, when
 * vma_wants_manual_pte_write_upgrade, can_change_pte_writable: an exclusive anonymous page
 * of a private mapping, or a dirty PTE of a dirty-tracked shared one. A clean PTE of a
 * shared file mapping stays read-only, whatever the access: folio_mkclean cleaned it, and
 * the next write must go through do_wp_page and ->page_mkwrite, which gives the page its
 * buffers back and dirties it. Earlier kernels restored the saved write bit
 * (pte_savedwrite), which the model's hints do not keep: a write access stands in for it,
 * under the same conditions.
 */
function numaRestoreWritable(mm: MmStruct, vma: Vma, pte: number, write: boolean): boolean {
  if (!(vma.flags & VM_WRITE)) return false;
  if (mm.kernel.profile.mprotectTryChangeWritable) return canChangePteWritable(mm, vma, pte);
  if (!write) return false;
  if (vma.shared) return !vma.file || vma.file.shmem || pteHas(pte, PTE_DIRTY);
  return mm.kernel.phys.has(pteFrame(pte), PG_ANON_EXCLUSIVE);
}

/**
 * maybe_mkwrite: a write fault makes the PTE writable only if the VMA is. A FOLL_FORCE
 * write (rule 58) to a read-only private mapping breaks COW but leaves the PTE read-only;
 * GUP then follows it through can_follow_write_pte.
 */
export function maybeMkwrite(vma: Vma): number {
  return vma.flags & VM_WRITE ? PTE_WRITE : 0;
}

/**
 * do_wp_page: a write (or unshare) to a present read-only PTE. Shared mappings are made
 * writable in place after page_mkwrite; an exclusive anonymous page is reused in place;
 * anything else is copied (wp_page_copy) with a one-page CLEAR.
 */
function* doWpPage(mm: MmStruct, vma: Vma, page: number, unshare: boolean): Co<number> {
  const { phys, profile } = mm.kernel;
  const v = vpn(page);
  const pte = mm.pageTable.get(v);
  const f = pteFrame(pte);
  if (vma.flags & VM_SHARED) {
    if (unshare) return 0;
    const r = yield* pageMkwrite(mm, vma, f);
    // page_mkwrite may sleep on the folio lock: if the page went, or the PTE changed
    // meanwhile (reclaim, truncate), leave it and let the fault be retried (pte_same).
    if (r === 0 && mm.pageTable.get(v) !== pte) {
      mm.kernel.sim.emit({ type: 'race-guard', node: mm.kernel.node, fn: 'do_wp_page', what: 'pte-changed', frame: f });
      return 0;
    }
    if (r === -EAGAIN) return 0;
    if (r < 0) return r;
    mm.pageTable.set(v, makePte(f, PTE_PRESENT | PTE_WRITE | PTE_ACCESSED | PTE_DIRTY));
    return 0;
  }
  if (f !== ZERO_PFN && phys.has(f, PG_ANON)) {
    // A KSM page is never reused in place (do_wp_page / wp_can_reuse_anon_folio: folio_test_ksm).
    if (!phys.has(f, PG_KSM) && wpCanReuseAnonPage(mm.kernel, f)) {
      // Ours alone, by the profile's rule: reuse in place, no notification (rule 18).
      phys.set(f, PG_ANON_EXCLUSIVE);
      if (!unshare) mm.pageTable.set(v, makePte(f, PTE_PRESENT | maybeMkwrite(vma) | PTE_ACCESSED | PTE_DIRTY));
      return 0;
    }
  } else if (unshare && f !== ZERO_PFN && !profile.unshareAnyCow) {
    // Before 6.2 only anonymous pages were unshared for read-only pins.
    return 0;
  }
  return yield* wpPageCopy(mm, vma, page, unshare);
}

/**
 * The reuse decision of do_wp_page for an anonymous page, as each kernel made it:
 * - `mapcount` (until 5.8, mm/memory.c do_wp_page -> mm/swapfile.c reuse_swap_page()):
 *   reuse when the page's mapcount plus its swap count is at most one. References do not
 *   count, so a page GUP holds (FOLL_GET or FOLL_PIN) that only we map is reused in place:
 *   a pinned page stays the process's page after mprotect(READ)+mprotect(RW), or after a
 *   fork whose child exited first. A swap-cache page reused this way leaves the swap
 *   cache, dirty (delete_from_swap_cache, SetPageDirty).
 * - `refcount` (5.9, 09854ba94c6a "mm: do_wp_page() simplification"): reuse only when
 *   page_count is 1 and mapcount is 1, "copy unless we hold the only reference": any GUP
 *   reference, pin or get, forces a copy.
 * - `anon-exclusive` (5.19): PageAnonExclusive says so, or the refcount rule does.
 */
export function wpCanReuseAnonPage(kernel: Kernel, f: number): boolean {
  const { phys, profile, swap } = kernel;
  switch (profile.cowReuse) {
    case 'mapcount': {
      const slot = phys.has(f, PG_SWAPCACHE) ? swap.slotOf(f) : -1;
      const count = phys.mapcount[f]! + (slot >= 0 ? swap.refs(slot) : 0);
      if (count === 1 && slot >= 0 && !phys.has(f, PG_WRITEBACK)) {
        swap.setCachedFrame(slot, -1);
        phys.clear(f, PG_SWAPCACHE);
        phys.set(f, PG_DIRTY);
        phys.put(f); // the swap cache's reference
      }
      return count <= 1;
    }
    case 'refcount':
      return phys.refcount[f] === 1 && phys.mapcount[f] === 1;
    case 'anon-exclusive':
      return phys.has(f, PG_ANON_EXCLUSIVE) || (phys.refcount[f] === 1 && phys.mapcount[f] === 1);
  }
}

/**
 * wp_page_copy: give this mm its own exclusive copy of the page (or a zeroed page in place
 * of the zero page). The CLEAR is sent after the new page is ready and before the PTE is
 * replaced (rule 21d).
 */
export function* wpPageCopy(mm: MmStruct, vma: Vma, page: number, unshare: boolean): Co<number> {
  const { phys } = mm.kernel;
  const v = vpn(page);
  const old = mm.pageTable.get(v);
  const oldFrame = pteFrame(old);
  // do_wp_page holds a reference on the old page while the copy is allocated (which may
  // reclaim, and reclaim may unmap the old page meanwhile: the PTE check below sees it).
  phys.get(oldFrame);
  const nf = yield* allocPages(mm.kernel, GFP_HIGHUSER_MOVABLE);
  if (nf < 0) {
    phys.put(oldFrame);
    return nf;
  }
  if (oldFrame !== ZERO_PFN) phys.copyPage(nf, oldFrame);
  phys.put(oldFrame);
  phys.set(nf, PG_ANON | PG_SWAPBACKED | PG_ANON_EXCLUSIVE);
  vma.anonVma = true;
  if (mm.kernel.profile.invalidatePageAfterClear) {
    // linux-3.0: ptep_clear_flush_notify, the notification after the new PTE is in.
    phys.rmapRemove(oldFrame, mm, page);
    phys.rmapAdd(nf, mm, page);
    mm.kernel.lru.add(nf);
    mm.pageTable.set(v, makePte(nf, unshare ? PTE_PRESENT | PTE_ACCESSED : PTE_PRESENT | maybeMkwrite(vma) | PTE_ACCESSED | PTE_DIRTY));
    yield* mmuNotifierInvalidatePage(mm, page);
    phys.put(oldFrame);
    return 0;
  }
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, page, page + PAGE_SIZE);
  yield* mmuNotifierInvalidateRangeStart(range);
  yield* mm.kernel.sim.preemptPoint('pte write');
  if (mm.pageTable.get(v) === old) {
    phys.rmapRemove(oldFrame, mm, page);
    phys.rmapAdd(nf, mm, page);
    mm.kernel.lru.add(nf);
    const bits = unshare ? PTE_PRESENT | PTE_ACCESSED : PTE_PRESENT | maybeMkwrite(vma) | PTE_ACCESSED | PTE_DIRTY;
    mm.pageTable.set(v, makePte(nf, bits));
    // ptep_clear_flush's flush (tlb.ts). The kernel flushes before set_pte_at, all under the
    // page-table lock; the model has no PTL, so the PTE is replaced first and the flush's
    // CPU time is spent after: a task that runs during it sees the new PTE, as a CPU
    // spinning on the PTL would once it got the lock.
    if (ptePresent(old)) yield* flushTlbPage(mm, page);
    yield* mmuNotifierInvalidateRangeEnd(range);
    phys.put(oldFrame);
  } else {
    // The PTE changed under us: nothing replaced, but the pair was still sent (rule 21d).
    yield* mmuNotifierInvalidateRangeEnd(range);
    phys.put(nf);
  }
  return 0;
}

/**
 * Change one page's PTE under the notifier protocol of the profile's kernel: a start/end
 * pair around the change (every kernel since 3.x for ranges, and for single pages since
 * 4.13), or, on linux-3.0, the change first and `invalidate_page` after it
 * (ptep_clear_flush_notify), so a secondary MMU hears of it only once the CPU has moved on.
 */
export function* notifyPageChange(mm: MmStruct, event: MmuNotifyEvent, addr: number, change: () => void): Co {
  if (mm.kernel.profile.invalidatePageAfterClear) {
    change();
    yield* mmuNotifierInvalidatePage(mm, addr);
    return;
  }
  const range = mmuNotifierRangeInit(mm, event, addr, addr + PAGE_SIZE);
  yield* mmuNotifierInvalidateRangeStart(range);
  const v = vpn(addr);
  const before = mm.pageTable.get(v);
  change();
  // ptep_clear_flush: a present PTE that was cleared or changed is flushed (tlb.ts).
  if (ptePresent(before) && mm.pageTable.get(v) !== before) yield* flushTlbPage(mm, addr);
  yield* mmuNotifierInvalidateRangeEnd(range);
}

/**
 * zap_pte_range over [start, end) of one VMA: clear the PTEs, move dirty bits to the
 * pages, drop the mappings. The pages' references are returned to the caller, which puts
 * them after the invalidation ends (the tlb_finish_mmu order of rule 11). Returns the span
 * of present PTEs cleared (what the mmu_gather will flush, tlb.ts), widened from `span`.
 */
export function zapPteRange(mm: MmStruct, vma: Vma, start: number, end: number, toFree: number[], span: GatheredSpan = null): GatheredSpan {
  const { phys, swap } = mm.kernel;
  // zap_pmd_range: a huge entry the range covers whole goes with zap_huge_pmd; callers split
  // those it covers in part first (splitPartialHugePmds), with the notifier.
  for (const slot of mm.pageTable.hugeSlotsIn(vpn(start), vpn(end))) {
    const haddr = slot * PMD_SIZE;
    if (start <= haddr && haddr + PMD_SIZE <= end) span = zapHugePmd(mm, vma, haddr, toFree, span);
  }
  for (const [v, pte] of mm.pageTable.entriesIn(vpn(start), vpn(end))) {
    mm.pageTable.clear(v);
    if (pteHas(pte, PTE_SWAP)) {
      swap.free(pteFrame(pte));
      continue;
    }
    if (isMigrationEntry(pte)) {
      // zap_nonpresent_ptes: a migration entry holds no reference and no mapcount; it just
      // goes, and remove_migration_ptes will find nothing here to restore.
      migrationEntryDropped(mm.kernel, pteFrame(pte), mm, v * PAGE_SIZE);
      continue;
    }
    if (isDevicePrivateEntry(pte)) {
      // zap_nonpresent_ptes: a device-private entry drops its rmap and its reference (no
      // TLB entry to wait for: the CPU never mapped it); the last put frees the page to the
      // driver (page_free).
      devicePageRmapRemove(mm.kernel, pteFrame(pte), mm, v * PAGE_SIZE);
      devicePagePut(mm.kernel, pteFrame(pte));
      continue;
    }
    if (ptePresent(pte)) span = gatherPage(span, v * PAGE_SIZE);
    const f = pteFrame(pte);
    if (f === ZERO_PFN) continue;
    if (pteHas(pte, PTE_DIRTY) && vma.file && !vma.file.shmem) folioMarkDirty(mm.kernel, f, 'zap_pte_range');
    phys.rmapRemove(f, mm, v * PAGE_SIZE);
    toFree.push(f);
  }
  return span;
}

/**
 * Check the VMA allows the access (the SIGSEGV cases) and fault the page in if its PTE
 * does not. Returns the frame, or -EFAULT / -ENOMEM. Called with mmap_lock held.
 */
export function* faultInPage(mm: MmStruct, addr: number, write: boolean, extraFlags = 0): Co<number> {
  const vma = mm.findVma(addr);
  if (!vma) return -EFAULT;
  const needed = write ? VM_WRITE : 0x1;
  if ((vma.flags & needed) === 0) return -EFAULT;
  const v = vpn(addr);
  yield* mm.kernel.sim.preemptPoint('pte read');
  let pte = mm.pageTable.get(v);
  const satisfied = (p: number) => ptePresent(p) && !pteHas(p, PTE_PROTNONE) && (!write || pteHas(p, PTE_WRITE));
  let flags = (write ? FAULT_FLAG_WRITE : 0) | extraFlags;
  // A swap-in or a NUMA-hint fault may leave a write still to do: fault again, as the
  // kernel's retry does, a bounded number of times.
  for (let tries = 0; !satisfied(pte) || flags & FAULT_FLAG_UNSHARE; tries++) {
    if (tries === 4) return -ENOMEM;
    const r = yield* handleMmFault(mm, vma, addr, flags);
    if (r < 0) return r;
    flags &= ~FAULT_FLAG_UNSHARE;
    pte = mm.pageTable.get(v);
  }
  return pteFrame(pte);
}
