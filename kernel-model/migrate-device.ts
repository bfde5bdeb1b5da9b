import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import type { Vma } from './vma.ts';
import type { Kernel } from './kernel.ts';
import type { RmapItem } from './page-frames.ts';
import { EBUSY, EINVAL } from './errno.ts';
import { PAGE_SIZE, vpn } from './constants.ts';
import {
  PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_PROTNONE, PTE_WRITE,
  isDevicePrivateEntry, isMigrationEntry, makeDevicePrivateEntry, makeMigrationEntry, makePte, pteFlags, pteFrame, pteHas, ptePresent,
} from './page-table.ts';
import {
  PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_LOCKED, PG_SWAPBACKED, PG_SWAPCACHE, PG_UPTODATE, PG_ZONE_DEVICE, ZERO_PFN,
} from './page-frames.ts';
import { GFP_USER, allocPages } from './page-alloc.ts';
import { VM_EXEC, VM_IO, VM_PFNMAP, VM_READ, VM_WRITE } from './vma.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { flushTlbMmRange, flushTlbPage, gatherPage, type GatheredSpan } from './tlb.ts';
import { isVmHugetlbPage } from './hugetlb.ts';
import { splitHugePage } from './huge-memory.ts';
import { notifyPageChange } from './memory.ts';
import { migrationEntriesBegin, migrationEntriesEnd } from './migrate.ts';
import { requireInterface } from './profile.ts';
import {
  MemoryType, devicePageGet, devicePageLocked, devicePageMappings, devicePagePut, devicePageRefcount,
  devicePageRmapAdd, devicePageRmapRemove, devicePageTrylock, devicePageUnlock, isDeviceCoherentPage, isDevicePfn,
  isZoneDevicePage, pagePgmap,
} from './memremap.ts';

/**
 * Device memory migration (mm/migrate_device.c): migrate_vma_setup / migrate_vma_pages /
 * migrate_vma_finalize, the three steps a driver takes to move a range of anonymous memory
 * between system pages and its device pages, device-private or device-coherent (spec/kernel.md
 * rules 51, 52), and migrate_device_range / migrate_device_coherent_folio, which move device
 * pages back to system memory by pfn.
 */

/** enum migrate_vma_direction (include/linux/migrate.h). */
export const MIGRATE_VMA_SELECT_SYSTEM = 1 << 0;
export const MIGRATE_VMA_SELECT_DEVICE_PRIVATE = 1 << 1;
export const MIGRATE_VMA_SELECT_DEVICE_COHERENT = 1 << 2;

/** The low bits of a src/dst entry (include/linux/migrate.h), the pfn above MIGRATE_PFN_SHIFT. */
export const MIGRATE_PFN_VALID = 1 << 0;
export const MIGRATE_PFN_MIGRATE = 1 << 1;
export const MIGRATE_PFN_WRITE = 1 << 3;
export const MIGRATE_PFN_SHIFT = 6;
const MIGRATE_PFN_UNIT = 2 ** MIGRATE_PFN_SHIFT;

/** migrate_pfn(pfn): the entry a driver stores in dst for a page it allocated. */
export const migratePfn = (pfn: number): number => pfn * MIGRATE_PFN_UNIT + MIGRATE_PFN_VALID;
/** migrate_pfn_to_page: the pfn of an entry, or -1 when it has no page (not VALID). */
export const migratePfnToPage = (mpfn: number): number =>
  mpfn % MIGRATE_PFN_UNIT & MIGRATE_PFN_VALID ? Math.floor(mpfn / MIGRATE_PFN_UNIT) : -1;
export const migratePfnFlags = (mpfn: number): number => mpfn % MIGRATE_PFN_UNIT;
const withoutFlag = (mpfn: number, flag: number): number => (migratePfnFlags(mpfn) & flag ? mpfn - flag : mpfn);

/** `struct migrate_vma`: filled by the driver, then by migrate_vma_setup. */
export interface MigrateVma {
  vma: Vma | null;
  start: number;
  end: number;
  /** One entry per page of [start, end): set by setup; dst by the driver. */
  src: Float64Array;
  dst: Float64Array;
  /** Pages walked, and pages collected for migration (set by setup). */
  npages: number;
  cpages: number;
  /** The owner put in the MIGRATE invalidation, and matched against pgmap->owner. */
  pgmapOwner: unknown;
  flags: number;
  /** The locked device page migrate_to_ram was called for, or -1. */
  faultPage: number;
}

/** A migrate_vma for [start, end) of `vma` with src/dst arrays sized for the range. */
export function migrateVmaInit(vma: Vma | null, start: number, end: number, pgmapOwner: unknown, flags: number, faultPage = -1): MigrateVma {
  const n = Math.max(0, Math.floor((end - start) / PAGE_SIZE));
  return { vma, start, end, src: new Float64Array(n), dst: new Float64Array(n), npages: 0, cpages: 0, pgmapOwner, flags, faultPage };
}

/** VM_SPECIAL as far as the model has its flags (VM_IO | VM_PFNMAP; no VM_DONTEXPAND/VM_MIXEDMAP). */
const VM_SPECIAL = VM_IO | VM_PFNMAP;

// ---- folio helpers over both kinds of page -----------------------------------------------

function pageGet(kernel: Kernel, pfn: number): void {
  if (isDevicePfn(pfn)) devicePageGet(kernel, pfn);
  else kernel.phys.get(pfn);
}

function pagePut(kernel: Kernel, pfn: number): void {
  if (isDevicePfn(pfn)) devicePagePut(kernel, pfn);
  else kernel.phys.put(pfn);
}

function pageTrylock(kernel: Kernel, pfn: number): boolean {
  if (isDevicePfn(pfn)) return devicePageTrylock(kernel, pfn);
  if (kernel.phys.has(pfn, PG_LOCKED)) return false;
  kernel.phys.set(pfn, PG_LOCKED);
  return true;
}

function pageUnlock(kernel: Kernel, pfn: number): void {
  if (isDevicePfn(pfn)) devicePageUnlock(kernel, pfn);
  else if (kernel.phys.isAllocated(pfn)) kernel.phys.clear(pfn, PG_LOCKED);
}

function pageMappings(kernel: Kernel, pfn: number): readonly RmapItem[] {
  return isDevicePfn(pfn) ? devicePageMappings(kernel, pfn) : kernel.phys.mappingsOf(pfn);
}

function rmapRemove(kernel: Kernel, pfn: number, mm: MmStruct, addr: number): void {
  if (isDevicePfn(pfn)) devicePageRmapRemove(kernel, pfn, mm, addr);
  else kernel.phys.rmapRemove(pfn, mm, addr);
}

/**
 * Replace the entry at (mm, addr), which maps `pfn` (a present PTE or a device-private
 * entry), by a migration entry, as migrate_vma_collect_pmd and try_to_migrate_one do; the
 * caller holds the folio lock and a reference. Synchronous: the check and the change are
 * one step (no page-table lock in the model). Returns false when the entry no longer maps
 * the page, or when an exclusive anonymous page may be pinned (folio_try_share_anon_rmap_pte).
 */
function installMigrationEntry(kernel: Kernel, pfn: number, mm: MmStruct, addr: number, entries: RmapItem[]): { done: boolean; present: boolean } {
  const { phys } = kernel;
  const v = vpn(addr);
  const pte = mm.pageTable.get(v);
  const present = ptePresent(pte);
  if (present ? pteFrame(pte) !== pfn : !(isDevicePrivateEntry(pte) && pteFrame(pte) === pfn)) return { done: false, present };
  if (!isDevicePfn(pfn)) {
    if (phys.has(pfn, PG_ANON) && phys.has(pfn, PG_ANON_EXCLUSIVE) && phys.maybeDmaPinned(pfn)) return { done: false, present };
    // The dirty flag moves to the folio now that the PTE goes (folio_mark_dirty).
    if (pteHas(pte, PTE_DIRTY)) phys.set(pfn, PG_DIRTY);
  }
  mm.pageTable.set(v, makeMigrationEntry(pfn, pteFlags(pte) & (PTE_WRITE | (present ? PTE_ACCESSED | PTE_DIRTY : 0))));
  rmapRemove(kernel, pfn, mm, addr);
  pagePut(kernel, pfn);
  entries.push({ mm, addr });
  return { done: true, present };
}

// ---- migrate_vma_setup ---------------------------------------------------------------

/**
 * migrate_vma_setup (mm/migrate_device.c). Argument checks first, each -EINVAL as the
 * source has them: no VMA, a hugetlb or VM_IO/VM_PFNMAP VMA, an empty range (nr_pages is
 * computed before start and end are masked to pages, so an unaligned range is rounded
 * down, not refused), a start or end outside the VMA, too small src/dst arrays, a fault
 * page that is not a locked device-private page. Then migrate_vma_collect: one MIGRATE
 * invalidation over [start, end) carrying `pgmapOwner` (mmu_notifier_range_init_owner,
 * rule 22), inside which each PTE is judged (migrate_vma_collect_pmd): an empty PTE of an
 * anonymous VMA, or the zero page with SELECT_SYSTEM, is offered with no source page; a
 * system page with SELECT_SYSTEM, or a device-private entry of this owner with
 * SELECT_DEVICE_PRIVATE, is locked (trylock: a locked one is skipped), referenced and
 * replaced by a migration entry; anything else is left alone. The TLB is flushed for the
 * present PTEs cleared. Then migrate_device_unmap: pages still mapped elsewhere go through
 * try_to_migrate (a CLEAR per mapping, as rmap.c's try_to_migrate_one sends), and a page
 * with references beyond the expected ones (migrate_vma_check_page: a pin, a GUP
 * reference) is restored and dropped from the set. A THP in the range is split first
 * (split_folio); one that cannot be split is skipped.
 * Returns 0 (args.cpages says how many pages can move) or -EINVAL.
 */
export function* migrateVmaSetup(args: MigrateVma): Co<number> {
  const vma = args.vma;
  if (!vma) return -EINVAL;
  const mm = vma.mm;
  const { kernel } = mm;
  if (requireInterface(kernel.profile, 'migrateVma', 'migrate_vma_setup', (m) => kernel.sim.emit({ type: 'note', text: m })) < 0) return -EINVAL;
  const nrPages = Math.floor((args.end - args.start) / PAGE_SIZE);
  args.start = Math.floor(args.start / PAGE_SIZE) * PAGE_SIZE;
  args.end = Math.floor(args.end / PAGE_SIZE) * PAGE_SIZE;
  if (isVmHugetlbPage(vma) || vma.flags & VM_SPECIAL) return -EINVAL;
  if (nrPages <= 0) return -EINVAL;
  if (args.start < vma.start || args.start >= vma.end) return -EINVAL;
  if (args.end <= vma.start || args.end > vma.end) return -EINVAL;
  if (args.src.length < nrPages || args.dst.length < nrPages) return -EINVAL;
  if (args.faultPage >= 0) {
    const pgmap = pagePgmap(kernel, args.faultPage);
    if (!pgmap || pgmap.type !== MemoryType.DEVICE_PRIVATE) return -EINVAL;
    if (!devicePageLocked(kernel, args.faultPage)) return -EINVAL;
  }
  if (!mm.mmapLock.heldByCurrent('any')) {
    kernel.sim.emit({ type: 'note', text: 'migrate_vma_setup called without the mmap lock held (rule 52)' });
  }
  args.src.fill(0, 0, nrPages);
  args.cpages = 0;
  args.npages = 0;
  yield* migrateVmaCollect(args, vma);
  if (args.cpages) yield* migrateDeviceUnmap(kernel, args.src, args.npages, args.faultPage);
  return 0;
}

function* migrateVmaCollect(args: MigrateVma, vma: Vma): Co {
  const mm = vma.mm;
  const { kernel } = mm;
  const { phys } = kernel;
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.MIGRATE, args.start, args.end, { owner: args.pgmapOwner });
  yield* mmuNotifierInvalidateRangeStart(range);
  const anon = !vma.file;
  let span: GatheredSpan = null;
  // The walk itself runs without a sleep point (the PTE lock is held over each table in
  // the kernel), so each check and the change it guards are one step.
  for (let addr = args.start; addr < args.end; addr += PAGE_SIZE) {
    const i = args.npages++;
    args.dst[i] = 0;
    args.src[i] = 0;
    const v = vpn(addr);
    // A THP, PMD-mapped or a large folio mapped by PTEs, is split first (split_folio in
    // migrate_vma_collect_pmd / migrate_vma_split_folio: "FIXME support THP"); when it
    // cannot be split the page is skipped. The split sleeps: the PTE is read after it.
    const large = (): number => {
      const pmd = mm.pageTable.getPmd(v);
      if (pmd !== 0) return pteFrame(pmd);
      const p0 = mm.pageTable.get(v);
      return ptePresent(p0) && pteFrame(p0) !== ZERO_PFN && phys.isLarge(phys.folioHead(pteFrame(p0))) ? pteFrame(p0) : -1;
    };
    const lf = large();
    if (lf >= 0) {
      if (phys.has(phys.folioHead(lf), PG_LOCKED) || (yield* splitHugePage(kernel, phys.folioHead(lf))) < 0) continue;
      if (large() >= 0) continue;
    }
    const pte = mm.pageTable.get(v);
    if (pte === 0) {
      if (anon) {
        args.src[i] = MIGRATE_PFN_MIGRATE;
        args.cpages++;
      }
      continue;
    }
    let mpfn: number;
    let pfn: number;
    if (!ptePresent(pte)) {
      // Only device-private entries matter here; swap and migration entries are left.
      if (!isDevicePrivateEntry(pte)) continue;
      pfn = pteFrame(pte);
      const pgmap = pagePgmap(kernel, pfn);
      if (!(args.flags & MIGRATE_VMA_SELECT_DEVICE_PRIVATE) || !pgmap || pgmap.owner !== args.pgmapOwner) continue;
      mpfn = migratePfn(pfn) + MIGRATE_PFN_MIGRATE + (pteHas(pte, PTE_WRITE) ? MIGRATE_PFN_WRITE : 0); // pfns pass 2^32: no bitwise OR
    } else {
      pfn = pteFrame(pte);
      if (pfn === ZERO_PFN) {
        if (args.flags & MIGRATE_VMA_SELECT_SYSTEM) {
          args.src[i] = MIGRATE_PFN_MIGRATE;
          args.cpages++;
        }
        continue;
      }
      // vm_normal_page: a system page needs SELECT_SYSTEM; a device-coherent page (mapped by
      // a present PTE like any page) needs SELECT_DEVICE_COHERENT and this caller's owner
      // (is_device_coherent_page, pgmap->owner != migrate->pgmap_owner), whatever
      // SELECT_SYSTEM says.
      if (isDeviceCoherentPage(kernel, pfn)) {
        if (!(args.flags & MIGRATE_VMA_SELECT_DEVICE_COHERENT) || pagePgmap(kernel, pfn)?.owner !== args.pgmapOwner) continue;
      } else if (!(args.flags & MIGRATE_VMA_SELECT_SYSTEM)) continue;
      // "FIXME support THP": a page of a large folio (not split above) is not collected.
      if (phys.isLarge(phys.folioHead(pfn))) continue;
      // !page->mapping: a page neither anonymous nor in a page cache is not collected.
      if (!phys.has(pfn, PG_ANON) && phys.mappingFile[pfn]! < 0) continue;
      mpfn = migratePfn(pfn) + MIGRATE_PFN_MIGRATE + (pteHas(pte, PTE_WRITE) ? MIGRATE_PFN_WRITE : 0); // pfns pass 2^32: no bitwise OR
    }
    pageGet(kernel, pfn);
    if (pfn !== args.faultPage && !pageTrylock(kernel, pfn)) {
      pagePut(kernel, pfn);
      continue;
    }
    const entries = migrationEntriesBegin(kernel, pfn);
    const r = installMigrationEntry(kernel, pfn, mm, addr, entries);
    if (!r.done) {
      // folio_try_share_anon_rmap_pte failed: the PTE stays, the page is not collected.
      if (entries.length === 0) migrationEntriesEnd(kernel, pfn);
      if (pfn !== args.faultPage) pageUnlock(kernel, pfn);
      pagePut(kernel, pfn);
      continue;
    }
    args.cpages++;
    args.src[i] = mpfn;
    if (r.present) span = gatherPage(span, addr);
  }
  // Only flush the TLB if entries were modified, after the walk (flush_tlb_range).
  if (span) yield* flushTlbMmRange(mm, span.start, span.end + PAGE_SIZE);
  yield* mmuNotifierInvalidateRangeEnd(range);
  args.end = args.start + args.npages * PAGE_SIZE;
}

/**
 * migrate_vma_check_page: false when the page has references beyond its mappings and the
 * ones migration holds (one from collect or isolation, one more for the fault page, one
 * for a device page, the page cache's for a file page).
 */
function checkPage(kernel: Kernel, pfn: number, faultPage: number): boolean {
  const { phys } = kernel;
  let extra = 1 + (pfn === faultPage ? 1 : 0);
  if (isDevicePfn(pfn)) {
    extra++;
    return devicePageRefcount(kernel, pfn) - extra <= devicePageMappings(kernel, pfn).length;
  }
  if (phys.isLarge(phys.folioHead(pfn))) return false;
  // "Page from ZONE_DEVICE have one extra reference" (a device-coherent frame).
  if (phys.has(pfn, PG_ZONE_DEVICE)) extra++;
  if (phys.mappingFile[pfn]! >= 0) extra++;
  return phys.refcount[pfn]! - extra <= phys.mapcount[pfn]!;
}

/**
 * migrate_device_unmap: isolate system pages from the LRU, try_to_migrate whatever is still
 * mapped, and put back (clearing MIGRATE) the pages that stay mapped or have extra
 * references. Returns how many entries still migrate.
 */
function* migrateDeviceUnmap(kernel: Kernel, src: Float64Array, npages: number, faultPage: number): Co<number> {
  const { lru } = kernel;
  let unmapped = 0;
  const restore: number[] = [];
  for (let i = 0; i < npages; i++) {
    const pfn = migratePfnToPage(src[i] as number);
    if (pfn < 0) {
      if (migratePfnFlags(src[i] as number) & MIGRATE_PFN_MIGRATE) unmapped++;
      continue;
    }
    // ZONE_DEVICE folios are not on the LRU: a device page (private or coherent) keeps
    // collect's reference; a system page is isolated (its reference replaces collect's).
    if (!isZoneDevicePage(kernel, pfn)) lru.remove(pfn);
    const entries = migrationEntriesBegin(kernel, pfn);
    for (const { mm, addr } of [...pageMappings(kernel, pfn)]) {
      // try_to_migrate -> try_to_migrate_one (mm/rmap.c): one CLEAR per remaining mapping,
      // device-private folios included (mmu_notifier_range_init(MMU_NOTIFY_CLEAR), no owner).
      yield* notifyPageChange(mm, MmuNotifyEvent.CLEAR, addr, () => {
        installMigrationEntry(kernel, pfn, mm, addr, entries);
      });
    }
    if (pageMappings(kernel, pfn).length > 0 || !checkPage(kernel, pfn, faultPage)) {
      src[i] = withoutFlag(src[i] as number, MIGRATE_PFN_MIGRATE);
      restore.push(i);
      continue;
    }
    unmapped++;
  }
  for (const i of restore) {
    const pfn = migratePfnToPage(src[i] as number);
    removeMigrationPtes(kernel, pfn, pfn);
    src[i] = 0;
    if (!isZoneDevicePage(kernel, pfn)) lru.add(pfn);
    if (pfn !== faultPage) pageUnlock(kernel, pfn);
    migrationEntriesEnd(kernel, pfn);
    pagePut(kernel, pfn);
  }
  return unmapped;
}

/**
 * remove_migration_ptes(src, dst): every migration entry of `src` still in place becomes a
 * mapping of `dst`: a present PTE with the VMA's protection for a system page, a
 * device-private entry for a device page, writable if the entry was and the VMA allows.
 */
function removeMigrationPtes(kernel: Kernel, src: number, dst: number): void {
  const { phys } = kernel;
  const entries = migrationEntriesBegin(kernel, src);
  for (const { mm, addr } of entries) {
    const v = vpn(addr);
    const pte = mm.pageTable.get(v);
    if (!isMigrationEntry(pte) || pteFrame(pte) !== src) continue;
    const vma = mm.findVma(addr);
    if (!vma) continue;
    const write = pteHas(pte, PTE_WRITE) && (vma.flags & VM_WRITE) !== 0;
    if (isDevicePfn(dst)) {
      devicePageRmapAdd(kernel, dst, mm, addr);
      devicePageGet(kernel, dst);
      mm.pageTable.set(v, makeDevicePrivateEntry(dst, write));
      continue;
    }
    const noAccess = (vma.flags & (VM_READ | VM_WRITE | VM_EXEC)) === 0;
    const bits = PTE_PRESENT | (write ? PTE_WRITE : 0) | (pteFlags(pte) & (PTE_ACCESSED | PTE_DIRTY)) | (noAccess ? PTE_PROTNONE : 0);
    phys.rmapAdd(dst, mm, addr);
    phys.get(dst);
    mm.pageTable.set(v, makePte(dst, bits));
  }
  entries.length = 0;
}

// ---- migrate_vma_pages ---------------------------------------------------------------

/**
 * migrate_vma_pages (__migrate_device_pages): for each entry the driver gave a destination,
 * move the struct-page state. An entry with no source page (an empty PTE or the zero
 * page) gets its page inserted now (migrate_vma_insert_page), inside one MIGRATE
 * invalidation from the first such address to the end, carrying the owner; the insert
 * loses to a CPU fault that filled the PTE meanwhile, and then MIGRATE is cleared (rule
 * 52). A source page whose references changed since setup (folio_migrate_mapping), a file
 * page going to device memory, or a swap-cache page, keeps its place (MIGRATE cleared).
 */
export function* migrateVmaPages(args: MigrateVma): Co {
  const vma = args.vma;
  if (!vma) return;
  yield* migrateDevicePagesCore(vma.mm.kernel, args.src, args.dst, args.npages, args);
}

/**
 * migrate_device_pages: migrate_vma_pages for pages collected by migrate_device_range
 * (no VMA: every entry has a source page).
 */
export function* migrateDevicePages(kernel: Kernel, src: Float64Array, dst: Float64Array, npages: number): Co {
  yield* migrateDevicePagesCore(kernel, src, dst, Math.min(npages, src.length, dst.length), null);
}

function* migrateDevicePagesCore(kernel: Kernel, src: Float64Array, dst: Float64Array, npages: number, args: MigrateVma | null): Co {
  const { phys } = kernel;
  const faultPage = args ? args.faultPage : -1;
  let range: ReturnType<typeof mmuNotifierRangeInit> | null = null;
  for (let i = 0; i < npages; i++) {
    const newpage = migratePfnToPage(dst[i] as number);
    const page = migratePfnToPage(src[i] as number);
    if (newpage < 0) {
      src[i] = withoutFlag(src[i] as number, MIGRATE_PFN_MIGRATE);
      continue;
    }
    if (page < 0) {
      if (!(migratePfnFlags(src[i] as number) & MIGRATE_PFN_MIGRATE)) continue;
      if (!args || !args.vma) continue; // VM_BUG_ON(!migrate): a device range has no holes
      const vma = args.vma;
      const addr = args.start + i * PAGE_SIZE;
      if (!range) {
        range = mmuNotifierRangeInit(vma.mm, MmuNotifyEvent.MIGRATE, addr, args.end, { owner: args.pgmapOwner });
        yield* mmuNotifierInvalidateRangeStart(range);
      }
      const flushed = migrateVmaInsertPage(args, vma, addr, newpage, i);
      if (flushed) yield* flushTlbPage(vma.mm, addr);
      continue;
    }
    // folio_is_device_private(newfolio) || folio_is_device_coherent(newfolio).
    const newIsDevice = isZoneDevicePage(kernel, newpage);
    if (newIsDevice) {
      // Only anonymous memory moves to device memory; a swap-cache page would need
      // folio_free_swap (not modelled: it stays). A device-coherent source (a system
      // frame) is anonymous memory like any other and may move to another device.
      if (isDevicePfn(page) || !phys.has(page, PG_ANON) || phys.has(page, PG_SWAPCACHE)) {
        src[i] = withoutFlag(src[i] as number, MIGRATE_PFN_MIGRATE);
        continue;
      }
    }
    // folio_migrate_mapping for an anonymous folio: exactly the reference migration holds
    // (plus the fault's for the fault page), or -EAGAIN.
    const expected = 1 + (page === faultPage ? 1 : 0);
    const refs = isDevicePfn(page) ? devicePageRefcount(kernel, page) : phys.refcount[page]!;
    if (refs !== expected) {
      src[i] = withoutFlag(src[i] as number, MIGRATE_PFN_MIGRATE);
      continue;
    }
    // folio_migrate_flags: a system destination becomes an anonymous page like the source.
    if (!newIsDevice) {
      const m = isDevicePfn(page) ? pagePgmap(kernel, page) : null;
      const exclusive = m ? m.anonExclusive[m.index(page)] === 1 : phys.has(page, PG_ANON_EXCLUSIVE);
      phys.set(newpage, PG_ANON | PG_SWAPBACKED | PG_UPTODATE | PG_DIRTY | (exclusive ? PG_ANON_EXCLUSIVE : 0));
    } else if (isDevicePfn(newpage)) {
      const m = pagePgmap(kernel, newpage)!;
      m.anonExclusive[m.index(newpage)] = phys.has(page, PG_ANON_EXCLUSIVE) ? 1 : 0;
    } else {
      // A device-coherent destination is a frame: it takes the flags as a system page does.
      phys.set(newpage, PG_ANON | PG_SWAPBACKED | PG_UPTODATE | PG_DIRTY | (phys.has(page, PG_ANON_EXCLUSIVE) ? PG_ANON_EXCLUSIVE : 0));
    }
  }
  if (range) yield* mmuNotifierInvalidateRangeEnd(range);
}

/**
 * migrate_vma_insert_page: map `page` at addr where the PTE is still none (or the zero
 * page, which is then flushed: returns true). A device-private page gets a device-private
 * entry, writable iff the VMA is; a system page a present PTE, writable and dirty iff the
 * VMA is writable. Anything else there (a CPU fault won the race) aborts: MIGRATE cleared.
 */
function migrateVmaInsertPage(args: MigrateVma, vma: Vma, addr: number, page: number, i: number): boolean {
  const mm = vma.mm;
  const { kernel } = mm;
  const { phys } = kernel;
  const abort = (): boolean => {
    args.src[i] = withoutFlag(args.src[i] as number, MIGRATE_PFN_MIGRATE);
    return false;
  };
  if (vma.file) return abort();
  if (mm.findVma(addr) !== vma) return abort();
  const v = vpn(addr);
  if (mm.pageTable.pmdHuge(v)) return abort();
  const orig = mm.pageTable.get(v);
  let flush = false;
  if (ptePresent(orig)) {
    if (pteFrame(orig) !== ZERO_PFN) return abort();
    flush = true;
  } else if (orig !== 0) return abort();
  const writable = (vma.flags & VM_WRITE) !== 0;
  vma.anonVma = true;
  if (isDevicePfn(page)) {
    const m = pagePgmap(kernel, page);
    if (!m || m.type !== MemoryType.DEVICE_PRIVATE) return abort();
    m.anonExclusive[m.index(page)] = 1; // RMAP_EXCLUSIVE
    devicePageRmapAdd(kernel, page, mm, addr);
    devicePageGet(kernel, page);
    mm.pageTable.set(v, makeDevicePrivateEntry(page, writable));
  } else {
    // A device-coherent page is mapped by a present PTE like a system page (mk_pte), but
    // is not put on the LRU ("if (!folio_is_zone_device(folio)) folio_add_lru_vma").
    if (isZoneDevicePage(kernel, page) && !isDeviceCoherentPage(kernel, page)) return abort();
    phys.set(page, PG_ANON | PG_SWAPBACKED | PG_ANON_EXCLUSIVE | PG_UPTODATE);
    phys.rmapAdd(page, mm, addr);
    if (!isZoneDevicePage(kernel, page)) kernel.lru.add(page);
    phys.get(page);
    mm.pageTable.set(v, makePte(page, PTE_PRESENT | (writable ? PTE_WRITE | PTE_DIRTY : 0)));
  }
  args.src[i] = MIGRATE_PFN_MIGRATE;
  return flush;
}

// ---- migrate_vma_finalize ------------------------------------------------------------

/**
 * migrate_vma_finalize (__migrate_device_finalize): the migration entries become mappings
 * of the new page where MIGRATE survived, of the old one otherwise (remove_migration_ptes,
 * no notification: installing never notifies, rule 18); the pages are unlocked (not the
 * fault page: do_swap_page unlocks it), system pages go back on the LRU, and the
 * references migration held are dropped, so a migrated-away source page is freed.
 */
export function* migrateVmaFinalize(args: MigrateVma): Co {
  const kernel = args.vma?.mm.kernel;
  if (!kernel) return;
  finalizeCore(kernel, args.src, args.dst, args.npages, args.faultPage);
  yield* kernel.sim.preemptPoint('migrate_vma_finalize');
}

/** migrate_device_finalize: migrate_vma_finalize for pages collected by migrate_device_range. */
export function* migrateDeviceFinalize(kernel: Kernel, src: Float64Array, dst: Float64Array, npages: number): Co {
  finalizeCore(kernel, src, dst, Math.min(npages, src.length, dst.length), -1);
  yield* kernel.sim.preemptPoint('migrate_device_finalize');
}

function finalizeCore(kernel: Kernel, src: Float64Array, dst: Float64Array, npages: number, faultPage: number): void {
  const { lru } = kernel;
  for (let i = 0; i < npages; i++) {
    let newpage = migratePfnToPage(dst[i] as number);
    const page = migratePfnToPage(src[i] as number);
    if (page < 0) {
      if (newpage >= 0) {
        pageUnlock(kernel, newpage);
        pagePut(kernel, newpage);
      }
      continue;
    }
    if (!(migratePfnFlags(src[i] as number) & MIGRATE_PFN_MIGRATE) || newpage < 0) {
      if (newpage >= 0) {
        pageUnlock(kernel, newpage);
        pagePut(kernel, newpage);
      }
      newpage = page;
    }
    if (!isZoneDevicePage(kernel, newpage)) lru.add(newpage);
    removeMigrationPtes(kernel, page, newpage);
    if (page !== faultPage) pageUnlock(kernel, page);
    migrationEntriesEnd(kernel, page);
    if (newpage !== page) {
      // The old page: off the LRU for good, and its migration references dropped.
      if (!isZoneDevicePage(kernel, page)) lru.remove(page);
      pagePut(kernel, page);
      pageUnlock(kernel, newpage);
      pagePut(kernel, newpage);
    } else {
      pagePut(kernel, page);
    }
  }
}

// ---- migrate_device_range ------------------------------------------------------------

/**
 * migrate_device_range (mm/migrate_device.c): collect device pages by pfn rather than by
 * address, for a driver evicting its memory (unbind, unload, test_hmm's RELEASE). Each pfn
 * whose page is in use (folio_get_nontail_page: a non-zero refcount) is referenced and
 * trylocked (migrate_device_pfn_lock) and offered with MIGRATE; then migrate_device_unmap
 * replaces its mappings by migration entries (try_to_migrate: a CLEAR per mapping) and
 * drops pages with extra references. The driver then allocates and copies, and calls
 * migrate_device_pages / migrate_device_finalize. Returns 0; -EINVAL when `src` cannot hold
 * npages entries or the range is not one pgmap's (the model's guard: the kernel trusts
 * its caller).
 */
export function* migrateDeviceRange(kernel: Kernel, src: Float64Array, start: number, npages: number): Co<number> {
  if (!Number.isInteger(npages) || npages <= 0 || src.length < npages) return -EINVAL;
  const pgmap = pagePgmap(kernel, start);
  if (!pgmap || !pgmap.contains(start + npages - 1)) return -EINVAL;
  for (let i = 0; i < npages; i++) {
    const pfn = start + i;
    src[i] = 0;
    // folio_get_nontail_page: a free page (refcount 0) is not taken.
    if (pageRefcount(kernel, pfn) === 0) continue;
    pageGet(kernel, pfn);
    if (!pageTrylock(kernel, pfn)) {
      pagePut(kernel, pfn);
      continue;
    }
    src[i] = migratePfn(pfn) + MIGRATE_PFN_MIGRATE;
  }
  yield* migrateDeviceUnmap(kernel, src, npages, -1);
  return 0;
}

function pageRefcount(kernel: Kernel, pfn: number): number {
  return isDevicePfn(pfn) ? devicePageRefcount(kernel, pfn) : kernel.phys.refcount[pfn]!;
}

/**
 * migrate_device_coherent_folio (mm/migrate_device.c): move one device-coherent page back
 * to system memory with no VMA, for a long-term pin (mm/gup.c
 * migrate_longterm_unpinnable_folios). The caller holds a reference, which this consumes
 * (copied to nothing: finalize drops it with the old page on success, the restore on
 * failure). Lock the page, migrate_device_unmap it (try_to_migrate: a CLEAR per mapping),
 * allocate a page (GFP_USER), migrate_device_pages, copy, migrate_device_finalize.
 * Returns 0, or -EBUSY when the page could not be unmapped (extra references: another
 * pin) or no page could be allocated. Assumed: the model trylocks where folio_lock
 * sleeps; a page locked by someone else is -EBUSY.
 */
export function* migrateDeviceCoherentFolio(kernel: Kernel, folio: number): Co<number> {
  const { phys } = kernel;
  if (!isDeviceCoherentPage(kernel, folio)) return -EINVAL;
  if (!pageTrylock(kernel, folio)) {
    phys.put(folio);
    return -EBUSY;
  }
  const src = new Float64Array([migratePfn(folio) + MIGRATE_PFN_MIGRATE]);
  const dst = new Float64Array(1);
  yield* migrateDeviceUnmap(kernel, src, 1, -1);
  if (!(migratePfnFlags(src[0] as number) & MIGRATE_PFN_MIGRATE)) return -EBUSY;
  const dpage = yield* allocPages(kernel, GFP_USER);
  if (dpage >= 0) {
    phys.set(dpage, PG_LOCKED);
    dst[0] = migratePfn(dpage);
  }
  yield* migrateDevicePages(kernel, src, dst, 1);
  if (migratePfnFlags(src[0] as number) & MIGRATE_PFN_MIGRATE) phys.copyPage(dpage, folio);
  yield* migrateDeviceFinalize(kernel, src, dst, 1);
  return migratePfnFlags(src[0] as number) & MIGRATE_PFN_MIGRATE ? 0 : -EBUSY;
}
