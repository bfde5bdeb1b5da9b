import type { Co } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import { EAGAIN, EBUSY, ENOMEM } from './errno.ts';
import { PAGE_SIZE, vpn } from './constants.ts';
import { makePte, pteFlags, pteFrame, ptePresent } from './page-table.ts';
import {
  PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_LOCKED, PG_MOVABLE_ZONE, PG_PRIVATE, PG_SWAPBACKED, PG_UPTODATE, ZERO_PFN,
} from './page-frames.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';

export type MigrateReason = 'numa' | 'compaction' | 'longterm-pin' | 'test';

/**
 * migrate_pages for one small folio (rule 73). Every mapping gets the CLEAR of
 * try_to_migrate_one first (21e), whatever happens next. A maybe-pinned exclusive
 * anonymous page fails at the share step (rule 71) and its PTE is put back at once.
 * Otherwise the PTEs become migration entries and the move fails with -EAGAIN when the
 * folio holds references beyond the expected ones (a pin, a plain GUP reference, a
 * driver's page reference), and the old PTEs come back without a notification
 * (installing PTEs never notifies, rule 18). On success the data moves to a new frame.
 * Returns 0 or -EAGAIN / -EBUSY / -ENOMEM.
 */
export function* migratePage(kernel: Kernel, frame: number, reason: MigrateReason): Co<number> {
  const { phys } = kernel;
  if (frame === ZERO_PFN || !phys.isAllocated(frame)) return -EBUSY;
  // The folio lock (migrate_folio_unmap, asynchronous mode): a folio another path holds
  // locked (reclaim, writeback, another migration) is not migrated now.
  if (phys.has(frame, PG_LOCKED)) return -EAGAIN;
  const generation = phys.generation[frame];
  phys.set(frame, PG_LOCKED);
  try {
    return yield* migrateLockedPage(kernel, frame, reason);
  } finally {
    if (phys.isAllocated(frame) && phys.generation[frame] === generation) phys.clear(frame, PG_LOCKED);
  }
}

function* migrateLockedPage(kernel: Kernel, frame: number, reason: MigrateReason): Co<number> {
  const { phys, sim, lru } = kernel;
  // Isolation takes a reference (folio_isolate_lru): a munmap racing the CLEARs below
  // cannot free the folio under the migration.
  phys.get(frame);
  const mappings = [...phys.mappingsOf(frame)];
  const anonExclusive = phys.has(frame, PG_ANON) && phys.has(frame, PG_ANON_EXCLUSIVE);
  const saved: { mm: MmStruct; addr: number; pte: number }[] = [];
  let ret = 0;
  for (const { mm, addr } of mappings) {
    const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, addr, addr + PAGE_SIZE);
    yield* mmuNotifierInvalidateRangeStart(range);
    if (anonExclusive && phys.maybeDmaPinned(frame)) {
      // folio_try_share_anon_rmap fails: PTE restored, walk stops (rules 71, 73).
      yield* mmuNotifierInvalidateRangeEnd(range);
      ret = -EBUSY;
      break;
    }
    const pte = mm.pageTable.get(vpn(addr));
    if (ptePresent(pte) && pteFrame(pte) === frame) {
      mm.pageTable.clear(vpn(addr));
      saved.push({ mm, addr, pte });
    }
    yield* mmuNotifierInvalidateRangeEnd(range);
  }
  // References migration expects: one per mapping (held by the saved PTEs), the page
  // cache's, its own, and nothing else.
  const expected = saved.length + (phys.mappingFile[frame]! >= 0 ? 1 : 0) + 1;
  if (ret === 0 && phys.refcount[frame] !== expected) ret = -EAGAIN;
  if (ret === 0 && expected === 1) {
    // Unmapped and freed by its owner while the CLEARs ran: nothing left to move.
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
    for (const s of saved) s.mm.pageTable.set(vpn(s.addr), s.pte);
    phys.put(frame);
    sim.emit({ type: 'migrate', frame, to: -1, reason, ret, node: kernel.node });
    return ret;
  }
  phys.copyPage(target, frame);
  phys.set(target, phys.flags[frame]! & (PG_ANON | PG_ANON_EXCLUSIVE | PG_DIRTY | PG_PRIVATE | PG_SWAPBACKED | PG_UPTODATE));
  const file = phys.mappingFile[frame]!;
  if (file >= 0) {
    const f = kernel.fileById(file);
    const index = phys.index[frame]!;
    phys.mappingFile[target] = file;
    phys.index[target] = index;
    f?.pageCache.set(index, target);
    phys.get(target); // the page cache's reference moves to the new folio
  }
  for (const s of saved) {
    phys.rmapRemove(frame, s.mm, s.addr);
    phys.rmapAdd(target, s.mm, s.addr);
    phys.get(target);
    s.mm.pageTable.set(vpn(s.addr), makePte(target, pteFlags(s.pte)));
  }
  // Drop the allocation reference of the target and every reference to the old folio.
  phys.put(target);
  lru.remove(frame);
  lru.add(target);
  phys.mappingFile[frame] = -1;
  phys.put(frame, phys.refcount[frame]!);
  sim.emit({ type: 'migrate', frame, to: target, reason, ret: 0, node: kernel.node });
  return 0;
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
