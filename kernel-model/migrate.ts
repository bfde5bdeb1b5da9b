import type { Co } from './sim/index.ts';
import { WaitQueue } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import type { RmapItem } from './page-frames.ts';
import { EAGAIN, EBUSY, ENOMEM } from './errno.ts';
import { PAGE_SIZE, vpn } from './constants.ts';
import {
  PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_PROTNONE, PTE_WRITE,
  isMigrationEntry, makeMigrationEntry, makePte, pteFlags, pteFrame, pteHas, ptePresent,
} from './page-table.ts';
import {
  PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_LOCKED, PG_MOVABLE_ZONE, PG_PRIVATE, PG_SWAPBACKED, PG_UPTODATE, PG_ZONE_DEVICE, ZERO_PFN,
} from './page-frames.ts';
import { VM_EXEC, VM_READ, VM_WRITE } from './vma.ts';
import { MmuNotifyEvent } from './mmu-notifier-range.ts';
import { splitHugePage } from './huge-memory.ts';
import { notifyPageChange } from './memory.ts';
import { folioMarkDirty } from './filemap.ts';
import { devicePageLocked, isDevicePfn } from './memremap.ts';

export type MigrateReason = 'numa' | 'compaction' | 'longterm-pin' | 'test';

/**
 * Where each folio under migration has migration entries: the model's stand-in for the
 * anon_vma / i_mmap walk remove_migration_ptes does (rmap_walk_locked). The entries move
 * with mremap (move_ptes), are copied by fork (copy_nonpresent_pte) and dropped by zaps;
 * the restore acts only where this folio's entry is still in place.
 */
interface MigrationState {
  entries: Map<number, RmapItem[]>;
  /** The folio wait table migration_entry_wait sleeps on (folio_put_wait_locked). */
  unlocked: WaitQueue;
}

const states = new WeakMap<Kernel, MigrationState>();

function stateOf(kernel: Kernel): MigrationState {
  let s = states.get(kernel);
  if (!s) states.set(kernel, (s = { entries: new Map(), unlocked: new WaitQueue(kernel.sim, 'folio_wait_table') }));
  return s;
}

/** fork's copy_nonpresent_pte copied a migration entry into `mm` at `addr`. */
export function migrationEntryAdded(kernel: Kernel, frame: number, mm: MmStruct, addr: number): void {
  const list = stateOf(kernel).entries.get(frame);
  if (list) list.push({ mm, addr });
}

/** mremap's move_ptes moved a migration entry. */
export function migrationEntryMoved(kernel: Kernel, frame: number, mm: MmStruct, from: number, to: number): void {
  const item = stateOf(kernel).entries.get(frame)?.find((r) => r.mm === mm && r.addr === from);
  if (item) item.addr = to;
}

/** A zap cleared a migration entry (zap_nonpresent_ptes): nothing is restored there. */
export function migrationEntryDropped(kernel: Kernel, frame: number, mm: MmStruct, addr: number): void {
  const list = stateOf(kernel).entries.get(frame);
  const i = list ? list.findIndex((r) => r.mm === mm && r.addr === addr) : -1;
  if (list && i >= 0) list.splice(i, 1);
}

/**
 * migration_entry_wait (mm/migrate.c): a fault that found a migration entry sleeps until
 * the folio is unlocked, that is until the migration has put PTEs back, then the fault is
 * retried. Called with the mmap lock held for read, as the kernel does.
 */
export function* migrationEntryWait(mm: MmStruct, v: number): Co {
  const { kernel } = mm;
  const pte = mm.pageTable.get(v);
  if (!isMigrationEntry(pte)) return;
  const frame = pteFrame(pte);
  const generation = kernel.phys.generation[frame];
  const locked = () => isDevicePfn(frame)
    ? devicePageLocked(kernel, frame)
    : kernel.phys.isAllocated(frame) && kernel.phys.generation[frame] === generation && kernel.phys.has(frame, PG_LOCKED);
  yield* stateOf(kernel).unlocked.waitEvent(() => mm.pageTable.get(v) !== pte || !locked());
  if (mm.pageTable.get(v) === pte) {
    // remove_migration_ptes restores every entry before folio_unlock: one left behind is a
    // model bug, and a real kernel would spin on it forever.
    throw new Error(`migration entry for frame ${frame} left at ${v * PAGE_SIZE} in mm${mm.id} after the migration ended`);
  }
}

/**
 * migrate_vma (migrate-device.ts) tracks its migration entries here too, so faults wait
 * on them, zaps drop them and fork copies them exactly as for migrate_pages: start a
 * folio's list (the caller holds the folio lock) ...
 */
export function migrationEntriesBegin(kernel: Kernel, frame: number): RmapItem[] {
  const s = stateOf(kernel);
  let list = s.entries.get(frame);
  if (!list) s.entries.set(frame, (list = []));
  return list;
}

/** ... and end it once the entries are restored and the folio is unlocked: waiters retry. */
export function migrationEntriesEnd(kernel: Kernel, frame: number): void {
  const s = stateOf(kernel);
  s.entries.delete(frame);
  s.unlocked.wakeUpAll();
}

/** Releases from 5.14 unmap for migration with try_to_migrate(); earlier ones with try_to_unmap(TTU_MIGRATION). */
export function migrationUnmapFunction(release: string): 'try_to_migrate_one' | 'try_to_unmap_one(TTU_MIGRATION)' {
  const [major = 0, minor = 0] = release.split('.').map((x) => Number.parseInt(x, 10));
  return major > 5 || (major === 5 && minor >= 14) ? 'try_to_migrate_one' : 'try_to_unmap_one(TTU_MIGRATION)';
}

/**
 * migrate_pages for one small folio (rule 73). Every mapping gets the CLEAR of the
 * unmap step (21e) and, unless the walk stops, a migration entry in place of its PTE
 * (try_to_migrate_one since 5.14, try_to_unmap_one with TTU_MIGRATION before; the entries
 * and the CLEAR are the same). A CPU fault on an entry waits for the migration to end
 * (migration_entry_wait). A maybe-pinned exclusive anonymous page fails at the share step
 * (rule 71). The move fails with -EAGAIN when the folio holds references beyond the
 * expected ones (folio_migrate_mapping: a pin, a plain GUP reference, a driver's page
 * reference). Either way remove_migration_ptes then turns the entries still in place back
 * into PTEs, of the new folio or of the old one, without a notification (installing PTEs
 * never notifies, rule 18); an entry a zap dropped meanwhile (munmap, MAP_FIXED) stays
 * gone. Returns 0 or -EAGAIN / -EBUSY / -ENOMEM.
 */
export function* migratePage(kernel: Kernel, frame: number, reason: MigrateReason): Co<number> {
  const { phys } = kernel;
  if (frame === ZERO_PFN || !phys.isAllocated(frame)) return -EBUSY;
  // A device-coherent (ZONE_DEVICE) page is not on the LRU, so folio_isolate_lru fails and
  // migrate_pages never sees it; only migrate_vma / migrate_device_* move it (3218f8712d6b
  // "mm: handling Non-LRU pages returned by vm_normal_pages").
  if (phys.has(frame, PG_ZONE_DEVICE)) return -EBUSY;
  if (frame !== ZERO_PFN && phys.isAllocated(frame) && phys.isLarge(phys.folioHead(frame))) {
    // A large folio: migrate_pages splits it when it cannot move whole (the model never
    // moves a THP whole); a folio that cannot be split (pinned, extra references) fails
    // with -EBUSY, for all its pages at once.
    const r = yield* splitHugePage(kernel, frame);
    if (r < 0) {
      kernel.sim.emit({ type: 'migrate', frame, to: -1, reason, ret: -EBUSY, node: kernel.node });
      return -EBUSY;
    }
    if (!phys.isAllocated(frame)) return -EBUSY;
  }
  // The folio lock (migrate_folio_unmap, asynchronous mode): a folio another path holds
  // locked (reclaim, writeback, another migration) is not migrated now.
  if (phys.has(frame, PG_LOCKED)) return -EAGAIN;
  const generation = phys.generation[frame];
  phys.set(frame, PG_LOCKED);
  const state = stateOf(kernel);
  state.entries.set(frame, []);
  try {
    return yield* migrateLockedPage(kernel, frame, reason);
  } finally {
    state.entries.delete(frame);
    if (phys.isAllocated(frame) && phys.generation[frame] === generation) phys.clear(frame, PG_LOCKED);
    state.unlocked.wakeUpAll();
  }
}

function* migrateLockedPage(kernel: Kernel, frame: number, reason: MigrateReason): Co<number> {
  const { phys, sim, lru } = kernel;
  const entries = stateOf(kernel).entries.get(frame) as RmapItem[];
  // Isolation takes a reference (folio_isolate_lru): a munmap racing the CLEARs below
  // cannot free the folio under the migration.
  phys.get(frame);
  const mappings = [...phys.mappingsOf(frame)];
  const anonExclusive = phys.has(frame, PG_ANON) && phys.has(frame, PG_ANON_EXCLUSIVE);
  let ret = 0;
  for (const { mm, addr } of mappings) {
    let stop = false;
    yield* notifyPageChange(mm, MmuNotifyEvent.CLEAR, addr, () => {
      if (anonExclusive && phys.maybeDmaPinned(frame)) {
        // folio_try_share_anon_rmap fails: the PTE stays, the walk stops (rules 71, 73).
        stop = true;
        return;
      }
      const v = vpn(addr);
      const pte = mm.pageTable.get(v);
      if (!ptePresent(pte) || pteFrame(pte) !== frame) {
        // Zapped while the callbacks ran (munmap, MAP_FIXED): the isolation reference holds the folio.
        sim.emit({ type: 'race-guard', node: kernel.node, fn: 'try_to_migrate_one', what: 'pte-gone', frame });
        return;
      }
      // The dirty bit moves to the folio now that the PTE goes (folio_mark_dirty).
      if (pteHas(pte, PTE_DIRTY)) {
        if (phys.mappingFile[frame]! >= 0) folioMarkDirty(kernel, frame, 'try_to_migrate_one');
        else phys.set(frame, PG_DIRTY);
      }
      mm.pageTable.set(v, makeMigrationEntry(frame, pteFlags(pte)));
      phys.rmapRemove(frame, mm, addr);
      phys.put(frame);
      entries.push({ mm, addr });
    });
    if (stop) {
      ret = -EBUSY;
      break;
    }
  }
  const file = phys.mappingFile[frame]!;
  // folio_migrate_mapping: the isolation reference and the page cache's, nothing else
  // (the mappings' references went with the PTEs).
  const expected = 1 + (file >= 0 ? 1 : 0);
  if (ret === 0 && phys.refcount[frame] !== expected) ret = -EAGAIN;
  if (ret === 0 && entries.length === 0 && file < 0 && phys.refcount[frame] === 1) {
    // Unmapped and freed by its owner while the CLEARs ran: nothing left to move.
    sim.emit({ type: 'race-guard', node: kernel.node, fn: 'migrate_pages', what: 'freed-by-owner', frame });
    lru.remove(frame);
    phys.put(frame);
    sim.emit({ type: 'migrate', frame, to: -1, reason, ret: 0, node: kernel.node });
    return 0;
  }
  let target = -1;
  if (ret === 0) {
    target = reason === 'longterm-pin' ? allocNonMovable(kernel) : phys.allocPage();
    if (target < 0) ret = -ENOMEM;
  }
  if (ret < 0) {
    removeMigrationPtes(kernel, frame, frame, entries);
    phys.put(frame);
    sim.emit({ type: 'migrate', frame, to: -1, reason, ret, node: kernel.node });
    return ret;
  }
  phys.copyPage(target, frame);
  phys.set(target, phys.flags[frame]! & (PG_ANON | PG_ANON_EXCLUSIVE | PG_DIRTY | PG_PRIVATE | PG_SWAPBACKED | PG_UPTODATE));
  if (file >= 0) {
    const f = kernel.fileById(file);
    const index = phys.index[frame]!;
    phys.mappingFile[target] = file;
    phys.index[target] = index;
    // The page-cache slot is replaced only if it still holds this folio (a truncate may
    // have removed it meanwhile).
    if (f?.pageCache.get(index) === frame) f.pageCache.set(index, target);
    phys.get(target); // the page cache's reference moves to the new folio
  }
  removeMigrationPtes(kernel, frame, target, entries);
  // Drop the allocation reference of the target and every reference to the old folio.
  phys.put(target);
  lru.remove(frame);
  lru.add(target);
  phys.mappingFile[frame] = -1;
  phys.put(frame, phys.refcount[frame]!);
  sim.emit({ type: 'migrate', frame, to: target, reason, ret: 0, node: kernel.node });
  return 0;
}

/**
 * remove_migration_ptes(src, dst): for every place the rmap walk finds this folio's
 * migration entry still installed (page_vma_mapped_walk matches the entry's pfn), a
 * present PTE of `dst` with the VMA's current protection, writable if the entry was.
 * Entries a zap dropped, or that a new mapping replaced, are left alone.
 */
function removeMigrationPtes(kernel: Kernel, src: number, dst: number, entries: readonly RmapItem[]): void {
  const { phys } = kernel;
  for (const { mm, addr } of entries) {
    const v = vpn(addr);
    const pte = mm.pageTable.get(v);
    if (!isMigrationEntry(pte) || pteFrame(pte) !== src) continue;
    const vma = mm.findVma(addr);
    if (!vma) continue;
    const noAccess = (vma.flags & (VM_READ | VM_WRITE | VM_EXEC)) === 0;
    const write = pteHas(pte, PTE_WRITE) && (vma.flags & VM_WRITE) !== 0;
    const bits = PTE_PRESENT | (write ? PTE_WRITE : 0) | (pteFlags(pte) & (PTE_ACCESSED | PTE_DIRTY)) | (noAccess ? PTE_PROTNONE : 0);
    phys.rmapAdd(dst, mm, addr);
    phys.get(dst);
    mm.pageTable.set(v, makePte(dst, bits));
  }
}

function allocNonMovable(kernel: Kernel): number {
  const { phys } = kernel;
  const skipped: number[] = [];
  let f = phys.allocPage();
  while (f >= 0 && phys.has(f, PG_MOVABLE_ZONE)) {
    skipped.push(f);
    f = phys.allocPage();
  }
  for (const s of skipped) phys.put(s);
  return f;
}
