import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import type { Vma } from './vma.ts';
import { VM_IO, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_PFNMAP, VM_READ, VM_SHARED, VM_WRITE } from './vma.ts';
import { EBUSY, EFAULT, EINTR, EINVAL, ENOMEM } from './errno.ts';
import { PAGE_SIZE, isPageAligned, vpn } from './constants.ts';
import { PTE_DIRTY, PTE_PROTNONE, PTE_WRITE, pteFrame, pteHas, ptePresent, pteWith } from './page-table.ts';
import { GUP_PIN_COUNTING_BIAS, PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_LOCKED, PG_MOVABLE_ZONE, PG_ZONE_DEVICE, ZERO_PFN } from './page-frames.ts';
import { migrateDeviceCoherentFolio } from './migrate-device.ts';
import { isDeviceCoherentPage } from './memremap.ts';
import { FAULT_FLAG_REMOTE, FAULT_FLAG_UNSHARE, FAULT_FLAG_WRITE, handleMmFault } from './memory.ts';
import { folioMarkDirty } from './filemap.ts';
import { migratePage } from './migrate.ts';
import { requireInterface } from './profile.ts';
import type { Kernel } from './kernel.ts';
import { proposal, proposalGupGrab, proposalGupRelease } from './variant.ts';

export const FOLL_WRITE = 0x01;
export const FOLL_GET = 0x04;
export const FOLL_FORCE = 0x10;
export const FOLL_LONGTERM = 0x100;
export const FOLL_PCI_P2PDMA = 0x400;
/** Internal flags a caller may not pass (rule 54). */
export const FOLL_TOUCH = 0x02;
export const FOLL_REMOTE = 0x2000;
export const FOLL_PIN = 0x40000;
export const FOLL_FAST_ONLY = 0x80000;
export const FOLL_TRIED = 0x800;
export const FOLL_UNLOCKABLE = 0x100000;
export const FOLL_MADV_POPULATE = 0x200000;
const INTERNAL = FOLL_TOUCH | FOLL_REMOTE | FOLL_PIN | FOLL_FAST_ONLY | FOLL_TRIED | FOLL_UNLOCKABLE | FOLL_MADV_POPULATE;

/**
 * get_user_pages (FOLL_GET): a plain reference on each page of [start, start + n pages),
 * faulting as needed. Caller holds mmap_lock for read (the `Fast` variant takes it).
 * Returns the number of pages grabbed (possibly short, rule 64) or -errno.
 *
 * @example
 *   const pages: number[] = [];
 *   const n = yield* getUserPagesFast(mm, buf, 4, FOLL_WRITE, pages);
 */
export function* getUserPages(mm: MmStruct, start: number, nrPages: number, gupFlags: number, pages: number[]): Co<number> {
  if (gupFlags & INTERNAL) return invalid(mm, `get_user_pages: internal flag passed (0x${(gupFlags & INTERNAL).toString(16)})`);
  return yield* gupLocked(mm, start, nrPages, gupFlags | FOLL_GET, pages);
}

/**
 * get_user_pages_remote: FOLL_GET references on another process's pages (what ODP faulted
 * with until 5.10). The caller holds that mm's mmap_lock for read, as for getUserPages.
 */
export function* getUserPagesRemote(mm: MmStruct, start: number, nrPages: number, gupFlags: number, pages: number[]): Co<number> {
  if (gupFlags & INTERNAL) return invalid(mm, `get_user_pages_remote: internal flag passed (0x${(gupFlags & INTERNAL).toString(16)})`);
  return yield* gupLocked(mm, start, nrPages, gupFlags | FOLL_GET | FOLL_REMOTE, pages);
}

/** pin_user_pages (FOLL_PIN): pins with GUP_PIN_COUNTING_BIAS (rule 55). */
export function* pinUserPages(mm: MmStruct, start: number, nrPages: number, gupFlags: number, pages: number[]): Co<number> {
  const { profile, sim } = mm.kernel;
  const refused = (m: string) => sim.emit({ type: 'interface-refused', api: 'pin_user_pages', message: m });
  if (requireInterface(profile, 'follPin', 'pin_user_pages', refused) < 0) return -EINVAL;
  if (gupFlags & (INTERNAL | FOLL_GET)) return invalid(mm, 'pin_user_pages: FOLL_GET or an internal flag passed');
  const n = yield* gupLocked(mm, start, nrPages, gupFlags | FOLL_PIN, pages);
  if (n > 0) yield* sim.cpu(n * mm.kernel.cpuCosts.pinPerPageNs); // cpu-costs.ts pinPerPageNs
  return n;
}

/**
 * get_user_pages_fast: the lockless walk first (gupFastWalk), then the slow path under
 * mmap_lock for whatever it did not take (mm/gup.c internal_get_user_pages_fast).
 */
export function* getUserPagesFast(mm: MmStruct, start: number, nrPages: number, gupFlags: number, pages: number[]): Co<number> {
  if (gupFlags & INTERNAL) return invalid(mm, `get_user_pages_fast: internal flag passed (0x${(gupFlags & INTERNAL).toString(16)})`);
  return yield* internalGupFast(mm, start, nrPages, gupFlags | FOLL_GET, pages);
}

/** pin_user_pages_fast (what ib_umem_get calls): the lockless walk, then the slow path. */
export function* pinUserPagesFast(mm: MmStruct, start: number, nrPages: number, gupFlags: number, pages: number[]): Co<number> {
  const { profile, sim } = mm.kernel;
  const refused = (m: string) => sim.emit({ type: 'interface-refused', api: 'pin_user_pages', message: m });
  if (requireInterface(profile, 'follPin', 'pin_user_pages', refused) < 0) return -EINVAL;
  if (gupFlags & (INTERNAL | FOLL_GET)) return invalid(mm, 'pin_user_pages_fast: FOLL_GET or an internal flag passed');
  const n = yield* internalGupFast(mm, start, nrPages, gupFlags | FOLL_PIN, pages);
  if (n > 0) yield* sim.cpu(n * mm.kernel.cpuCosts.pinPerPageNs); // cpu-costs.ts pinPerPageNs
  return n;
}

/**
 * internal_get_user_pages_fast: after the argument checks, the lockless walk takes what
 * the page table already allows; the rest goes through the slow path with mmap_lock held
 * for read. A slow-path error after some fast pages returns the fast count.
 */
function* internalGupFast(mm: MmStruct, start: number, nrPages: number, flags: number, pages: number[]): Co<number> {
  const bad = gupArgsError(mm, start, nrPages, flags);
  if (bad < 0) return bad;
  if (nrPages === 0) return 0;
  // mm_set_has_pinned_flag before the walk (a458b76a4171): fork must see it.
  if (flags & FOLL_PIN) mm.hasPinned = true;
  const fast: number[] = [];
  const n = gupFastWalk(mm, start, nrPages, flags, fast);
  pages.push(...fast);
  if (n === nrPages) return n;
  yield* mm.mmapLock.downRead();
  let r: number;
  try {
    r = yield* gupLocked(mm, start + n * PAGE_SIZE, nrPages - n, flags, pages);
  } finally {
    mm.mmapLock.upRead();
  }
  if (r < 0) return n > 0 ? n : r;
  return n + r;
}

/**
 * The lockless walk of get/pin_user_pages_fast (mm/gup.c gup_pte_range under
 * local_irq_save, lockless_pages_from_mm): no mmap_lock, no VMA checks, no faults, no
 * sleeping. It takes leading pages whose PTE is present, not PROT_NONE, not special (the
 * zero page is), writable when the request writes (5.8: for every lookup, its forced COW
 * break needs the slow path), pinnable for FOLL_LONGTERM, not in need of unsharing, and
 * stops at the first that is not. FOLL_TOUCH is not in its flags: nothing is dirtied.
 *
 * For FOLL_PIN from 5.11 (57efa1fe5957) it reads mm->write_protect_seq first (odd: fork
 * is copying, take nothing) and again after the walk (moved: unpin all, take nothing), so
 * a pin can never slip between fork's page_maybe_dma_pinned check and its write-protect.
 * Returns the number of pages taken.
 */
export function gupFastWalk(mm: MmStruct, start: number, nrPages: number, flags: number, got: number[]): number {
  const { kernel } = mm;
  const { phys, profile, sim } = kernel;
  const seqCheck = profile.writeProtectSeq && (flags & FOLL_PIN) !== 0;
  const seq = mm.writeProtectSeq;
  if (seqCheck && seq & 1) {
    sim.emit({ type: 'note', text: `gup_fast: mm${mm.id}'s write_protect_seq is odd (fork is copying): slow path` });
    return 0;
  }
  const write = (flags & FOLL_WRITE) !== 0 || profile.gupForceCowBreak;
  const taken: number[] = [];
  for (let i = 0; i < nrPages; i++) {
    const addr = start + i * PAGE_SIZE;
    const pte = mm.pageTable.get(vpn(addr));
    if (!ptePresent(pte) || pteHas(pte, PTE_PROTNONE) || (write && !pteHas(pte, PTE_WRITE))) break;
    const f = pteFrame(pte);
    if (f === ZERO_PFN) break;
    // try_grab_folio_fast: a FOLL_LONGTERM page that is not long-term pinnable (ZONE_MOVABLE,
    // device-coherent) is left to the slow path, which migrates it.
    if ((flags & FOLL_LONGTERM) && !folioIsLongtermPinnable(kernel, f)) break;
    if ((flags & FOLL_LONGTERM) && (flags & FOLL_WRITE) && profile.refuseLongtermFileWrite && phys.mappingFile[f]! >= 0) break;
    // VM_IO/VM_PFNMAP mappings have special PTEs (pte_special): gup_fast leaves them to the slow path.
    const vma = mm.findVma(addr);
    if (!vma || vma.flags & (VM_IO | VM_PFNMAP) || mustUnshare(kernel, vma, f, flags)) break;
    grabPage(kernel, f, flags);
    taken.push(f);
  }
  if (seqCheck && mm.writeProtectSeq !== seq) {
    sim.emit({ type: 'note', text: `gup_fast: mm${mm.id}'s write_protect_seq moved during the walk: unpin, slow path` });
    for (const f of taken) releasePage(kernel, f, flags);
    return 0;
  }
  if (taken.length > 0) {
    sim.emit({
      type: 'gup', node: kernel.node, mm: mm.id, addr: start, frames: taken.slice(),
      pin: (flags & FOLL_PIN) !== 0, longterm: (flags & FOLL_LONGTERM) !== 0, write: (flags & FOLL_WRITE) !== 0,
    });
  }
  got.push(...taken);
  return taken.length;
}

/** try_grab_page: a pin (the bias, or _pincount on a large folio) or a plain reference. */
function grabPage(kernel: Kernel, f: number, flags: number): void {
  const { phys } = kernel;
  proposalGupGrab(kernel, f);
  if (flags & FOLL_PIN) phys.pin(f);
  else phys.get(f);
}

function releasePage(kernel: Kernel, f: number, flags: number): void {
  const { phys } = kernel;
  proposalGupRelease(kernel, f);
  if (flags & FOLL_PIN) phys.unpin(f);
  else phys.put(f);
}

function invalid(mm: MmStruct, why: string): number {
  mm.kernel.sim.emit({ type: 'note', text: why });
  return -EINVAL;
}

/** is_valid_gup_args (rule 54): 0, or -EINVAL with a note. */
function gupArgsError(mm: MmStruct, start: number, nrPages: number, flags: number): number {
  const { profile } = mm.kernel;
  if ((flags & FOLL_GET) && (flags & FOLL_PIN)) return invalid(mm, 'FOLL_GET and FOLL_PIN are mutually exclusive');
  if (profile.follPin && (flags & FOLL_LONGTERM) && !(flags & FOLL_PIN)) return invalid(mm, 'FOLL_LONGTERM requires FOLL_PIN');
  if ((flags & FOLL_LONGTERM) && (flags & FOLL_PCI_P2PDMA)) return invalid(mm, 'FOLL_LONGTERM with FOLL_PCI_P2PDMA');
  if (!isPageAligned(start) || nrPages < 0) return -EINVAL;
  return 0;
}

function* gupLocked(mm: MmStruct, start: number, nrPages: number, flags: number, pages: number[]): Co<number> {
  const { kernel } = mm;
  const bad = gupArgsError(mm, start, nrPages, flags);
  if (bad < 0) return bad;
  if (nrPages === 0) return 0;
  if (flags & FOLL_PIN) mm.hasPinned = true; // MMF_HAS_PINNED, never cleared (rule 57)
  for (let attempt = 0; ; attempt++) {
    const got: number[] = [];
    const r = yield* gupPages(kernel, mm, start, nrPages, flags, got);
    if (got.length > 0) {
      kernel.sim.emit({
        type: 'gup', node: kernel.node, mm: mm.id, addr: start, frames: got.slice(),
        pin: (flags & FOLL_PIN) !== 0, longterm: (flags & FOLL_LONGTERM) !== 0, write: (flags & FOLL_WRITE) !== 0,
      });
    }
    if (r <= 0 || !(flags & FOLL_LONGTERM) || !(flags & FOLL_PIN)) {
      pages.push(...got);
      return r;
    }
    // Long-term pins may not stay on pages that are not long-term pinnable (ZONE_MOVABLE,
    // device-coherent memory): unpin everything, migrate the offenders, pin again (rule
    // 62; mm/gup.c check_and_migrate_movable_pages: collect_longterm_unpinnable_folios,
    // migrate_longterm_unpinnable_folios, -EAGAIN and __gup_longterm_locked pins again).
    const offenders = [...new Set(got.filter((f) => !folioIsLongtermPinnable(kernel, f)))];
    if (offenders.length === 0) {
      pages.push(...got);
      return r;
    }
    if (attempt >= 2) {
      unpinUserPages(kernel, got);
      return -ENOMEM;
    }
    // A device-coherent folio is not on the LRU: its pin becomes a plain reference
    // (folio_get, gup_put_folio: "Migration will fail if the folio is pinned") and
    // migrate_device_coherent_folio moves it to a system page, consuming that reference.
    const coherent = offenders.filter((f) => isDeviceCoherentPage(kernel, f));
    for (const f of coherent) kernel.phys.get(f);
    unpinUserPages(kernel, got);
    for (let c = 0; c < coherent.length; c++) {
      if ((yield* migrateDeviceCoherentFolio(kernel, coherent[c]!)) < 0) {
        for (const f of coherent.slice(c + 1)) kernel.phys.put(f);
        return -EBUSY;
      }
    }
    for (const f of offenders) {
      if (kernel.phys.has(f, PG_ZONE_DEVICE)) continue;
      const m = yield* migratePage(kernel, f, 'longterm-pin');
      if (m < 0) return m === -EBUSY ? -EBUSY : -ENOMEM;
    }
  }
}

/**
 * folio_is_longterm_pinnable (include/linux/mm.h): the zero page may be pinned; a
 * device-coherent folio never ("Coherent device memory must always allow eviction", 6.0);
 * otherwise any folio outside ZONE_MOVABLE (and CMA, which the model folds into it).
 */
export function folioIsLongtermPinnable(kernel: Kernel, f: number): boolean {
  if (f === ZERO_PFN) return true;
  if (isDeviceCoherentPage(kernel, f)) return false;
  return !kernel.phys.has(f, PG_MOVABLE_ZONE);
}

/**
 * can_follow_write_pte: a FOLL_FORCE write to a read-only private mapping may use a
 * read-only PTE once COW gave this mm its own exclusive anonymous page (rule 58); the
 * write fault leaves that PTE read-only (maybe_mkwrite), so this is how GUP gets past it.
 */
function canFollowWritePte(kernel: Kernel, vma: Vma, frame: number, flags: number, forcedCowBreak: boolean): boolean {
  const { phys } = kernel;
  // 5.8 dropped the FOLL_FORCE test (FOLL_COW alone) so that a forced COW break of a
  // read-only private mapping could follow its new page (17839856fd58).
  if (!(flags & FOLL_FORCE || forcedCowBreak) || (vma.flags & (VM_SHARED | VM_MAYSHARE)) || !(vma.flags & VM_MAYWRITE) || (vma.flags & VM_WRITE)) return false;
  return frame !== ZERO_PFN && phys.has(frame, PG_ANON) && phys.has(frame, PG_ANON_EXCLUSIVE);
}

/** gup_must_unshare: a read-only pin of a page it could not observe writes to (rule 61). */
function mustUnshare(kernel: Kernel, vma: Vma, frame: number, flags: number): boolean {
  const { phys, profile } = kernel;
  if (!(flags & FOLL_PIN) || (flags & FOLL_WRITE)) return false;
  // Seed 001's two read-pin semantics (variant.ts): #1 pins what the page table maps, #2
  // first unshares anything the process could COW away from, the zero page included.
  const readPin = proposal(kernel).readPin;
  if (readPin === 'shared') return false;
  if (readPin === 'exclusive') return vma.cow && (frame === ZERO_PFN || !phys.has(frame, PG_ANON) || !phys.has(frame, PG_ANON_EXCLUSIVE));
  if (frame !== ZERO_PFN && phys.has(frame, PG_ANON)) return profile.anonExclusive && !phys.has(frame, PG_ANON_EXCLUSIVE);
  // Non-anonymous page (page cache or the zero page) in a COW mapping: long-term only, 6.2+.
  return profile.unshareAnyCow && (flags & FOLL_LONGTERM) !== 0 && vma.cow;
}

/**
 * should_force_cow_break (mm/gup.c, 5.8 only: added by 17839856fd58 "gup: document and
 * work around 'COW can break either way' issue", removed in 5.9 by a308c71bf1e6 "mm/gup:
 * Remove enfornced COW mechanism"): `is_cow_mapping(vma->vm_flags) && (flags & (FOLL_GET |
 * FOLL_PIN))`. __get_user_pages then adds FOLL_WRITE to the lookup flags (not to the ones
 * check_vma_flags saw), so a read pin of a private mapping write-faults: the zero page or
 * a COW-shared page is replaced by a private copy before it is pinned, and the page is
 * dirtied by follow_page_pte's FOLL_TOUCH|FOLL_WRITE.
 */
export function shouldForceCowBreak(kernel: Kernel, vma: Vma, flags: number): boolean {
  return kernel.profile.gupForceCowBreak && vma.cow && (flags & (FOLL_GET | FOLL_PIN)) !== 0;
}

function* gupPages(kernel: Kernel, mm: MmStruct, start: number, nrPages: number, flags: number, got: number[]): Co<number> {
  const { phys, profile, sim } = kernel;
  for (let i = 0; i < nrPages; i++) {
    const addr = start + i * PAGE_SIZE;
    const partial = (err: number) => (i > 0 ? i : err);
    const rate = kernel.faultInjection.signalRate;
    if (rate > 0 && sim.rng('fault-inject:signal').chance(rate)) return partial(-EINTR);
    const vma = mm.findVma(addr);
    if (!vma) return partial(-EFAULT);
    const vmaErr = checkVmaFlags(kernel, vma, flags);
    if (vmaErr < 0) return partial(vmaErr);
    const forced = !(flags & FOLL_WRITE) && shouldForceCowBreak(kernel, vma, flags);
    const write = (flags & FOLL_WRITE) !== 0 || forced;
    let frame = -1;
    for (let tries = 0; tries < 4; tries++) {
      yield* sim.preemptPoint('gup pte read');
      const pte = mm.pageTable.get(vpn(addr));
      const present = ptePresent(pte) && !pteHas(pte, PTE_PROTNONE);
      const writable = pteHas(pte, PTE_WRITE) || canFollowWritePte(kernel, vma, pteFrame(pte), flags, forced);
      if (present && (!write || writable) && !mustUnshare(kernel, vma, pteFrame(pte), flags)) {
        frame = pteFrame(pte);
        // FOLL_TOUCH|FOLL_WRITE: mark the page dirty if the PTE was not (rule 60).
        if (write && !pteHas(pte, PTE_DIRTY)) {
          mm.pageTable.set(vpn(addr), pteWith(pte, PTE_DIRTY));
          if (phys.mappingFile[frame]! >= 0) folioMarkDirty(kernel, frame, 'follow_page_pte');
          else phys.set(frame, PG_DIRTY);
        } else if (write && proposal(kernel).dirtyAtGup && phys.mappingFile[frame]! >= 0 && !phys.has(frame, PG_DIRTY)) {
          // dirty-at-gup (seed 002): set_page_dirty at GUP time whatever the PTE said.
          folioMarkDirty(kernel, frame, 'get_user_pages (dirty-at-gup)');
        }
        break;
      }
      const fflags = FAULT_FLAG_REMOTE | (write ? FAULT_FLAG_WRITE : present ? FAULT_FLAG_UNSHARE : 0);
      const r = yield* handleMmFault(mm, vma, addr, fflags);
      if (r < 0) return partial(r === -ENOMEM ? -ENOMEM : -EFAULT);
    }
    if (frame < 0) return partial(-EFAULT);
    grabPage(kernel, frame, flags);
    if (flags & FOLL_PIN) {
      if (profile.anonExclusive && frame !== ZERO_PFN && phys.has(frame, PG_ANON) && !phys.has(frame, PG_ANON_EXCLUSIVE)) {
        sim.emit({ type: 'note', text: `pinned anonymous frame ${frame} is not exclusive (rule 61 violated by the model)` });
      }
    }
    got.push(frame);
  }
  return nrPages;
}

/** check_vma_flags (rule 58). */
function checkVmaFlags(kernel: Kernel, vma: Vma, flags: number): number {
  const write = (flags & FOLL_WRITE) !== 0;
  if (vma.flags & (VM_IO | VM_PFNMAP)) return -EFAULT;
  if (write) {
    const dirtyTracked = vma.file !== null && !vma.file.shmem && (vma.flags & VM_SHARED) !== 0;
    if (dirtyTracked && (flags & FOLL_PIN) && (flags & FOLL_LONGTERM) && kernel.profile.refuseLongtermFileWrite) return -EFAULT;
    if (!(vma.flags & VM_WRITE)) {
      if (!(flags & FOLL_FORCE)) return -EFAULT;
      if (vma.flags & VM_SHARED) return -EFAULT; // forced writes only break COW in private mappings
    }
  } else if (!(vma.flags & VM_READ)) {
    if (!(flags & FOLL_FORCE) || !(vma.flags & VM_MAYREAD)) return -EFAULT;
  }
  return 0;
}

/** put_page for FOLL_GET references. */
export function putUserPages(kernel: Kernel, pages: readonly number[]): void {
  for (const f of pages) {
    proposalGupRelease(kernel, f);
    kernel.phys.put(f);
  }
  if (pages.length > 0) kernel.sim.emit({ type: 'gup-release', node: kernel.node, frames: pages.slice(), pin: false });
}

/** unpin_user_pages: reverse a FOLL_PIN exactly; the zero page is not counted (rule 55). */
export function unpinUserPages(kernel: Kernel, pages: readonly number[]): void {
  const { phys } = kernel;
  // gup_put_folio: exact _pincount on a large folio (mm/gup.c), the bias on a small one.
  for (const f of pages) {
    if (f === ZERO_PFN) continue;
    proposalGupRelease(kernel, f);
    phys.unpin(f);
  }
  if (pages.length > 0) kernel.sim.emit({ type: 'gup-release', node: kernel.node, frames: pages.slice(), pin: true });
}

/**
 * unpin_user_pages_dirty_lock (rule 63): for each page not already dirty, lock it, dirty
 * it through the filesystem's hook, unlock, then unpin.
 */
export function unpinUserPagesDirtyLock(kernel: Kernel, pages: readonly number[], makeDirty: boolean): void {
  const { phys } = kernel;
  const atGup = proposal(kernel).dirtyAtGup;
  for (const f of pages) {
    if (makeDirty && atGup && f !== ZERO_PFN && phys.mappingFile[f]! >= 0) releaseNotDirtied(kernel, f, 'unpin_user_pages_dirty_lock');
    else if (makeDirty && f !== ZERO_PFN && !phys.has(f, PG_DIRTY)) {
      // (Never waits: a folio locked by reclaim or migration keeps its holder's lock.)
      const held = phys.has(f, PG_LOCKED);
      if (!held) phys.set(f, PG_LOCKED);
      folioMarkDirty(kernel, f, 'unpin_user_pages_dirty_lock');
      if (!held) phys.clear(f, PG_LOCKED);
    }
    unpinUserPages(kernel, [f]);
  }
}

/** The pre-5.6 equivalent for FOLL_GET users: set_page_dirty_lock then put_page. */
export function putUserPagesDirty(kernel: Kernel, pages: readonly number[], makeDirty: boolean): void {
  const atGup = proposal(kernel).dirtyAtGup;
  for (const f of pages) {
    if (makeDirty && atGup && f !== ZERO_PFN && kernel.phys.mappingFile[f]! >= 0) releaseNotDirtied(kernel, f, 'set_page_dirty_lock');
    else if (makeDirty && f !== ZERO_PFN && !kernel.phys.has(f, PG_DIRTY)) folioMarkDirty(kernel, f, 'set_page_dirty_lock');
    proposalGupRelease(kernel, f);
    kernel.phys.put(f);
  }
  if (pages.length > 0) kernel.sim.emit({ type: 'gup-release', node: kernel.node, frames: pages.slice(), pin: false });
}

/**
 * dirty-at-gup (seed 002, Andrea Arcangeli's idea relayed by Jérôme Glisse): the page was
 * dirtied when GUP took it, so the release calls no set_page_dirty; a file page cleaned
 * meanwhile stays clean (Dave Chinner's objection).
 */
function releaseNotDirtied(kernel: Kernel, f: number, caller: string): void {
  kernel.sim.emit({ type: 'proposal', node: kernel.node, what: 'release-not-dirtied', frame: f, caller });
}

/**
 * Charge `npages` to the mm's pinned_vm against RLIMIT_MEMLOCK, as ib_umem_get does with
 * account_locked_vm: -ENOMEM past the limit.
 */
export function accountPinnedVm(mm: MmStruct, npages: number): number {
  if (mm.pinnedVm + npages > mm.memlockLimitPages) return -ENOMEM;
  mm.pinnedVm += npages;
  return 0;
}

export function unaccountPinnedVm(mm: MmStruct, npages: number): void {
  mm.pinnedVm = Math.max(0, mm.pinnedVm - npages);
}
