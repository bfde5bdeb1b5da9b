import type { Co } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import { PAGE_SIZE, vpn } from './constants.ts';
import { PTE_ACCESSED, PTE_DIRTY, PTE_SWAP, makePte, pteFlags, pteFrame, pteHas, ptePresent } from './page-table.ts';
import {
  PG_ACTIVE, PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_KSM, PG_LAZYFREE, PG_LOCKED, PG_PRIVATE, PG_SWAPCACHE, PG_WRITEBACK, PG_ZONE_DEVICE, ZERO_PFN,
} from './page-frames.ts';
import { MmuNotifyEvent } from './mmu-notifier-range.ts';
import { mmuNotifierClearFlushYoung } from './mmu-notifier.ts';
import { notifyPageChange } from './memory.ts';
import { folioMarkDirty, writebackPage } from './filemap.ts';
import { splitHugePage } from './huge-memory.ts';
import { PG_DMA_PINNED, proposal } from './variant.ts';

export interface ReclaimStats {
  scanned: number;
  reclaimed: number;
  swappedOut: number;
  keptPinned: number;
  keptYoung: number;
  writtenBack: number;
}

export type ReclaimOutcome = 'freed' | 'young' | 'pinned' | 'busy' | 'writeback' | 'kept';

/**
 * shrink_folio_list for one page: the LRU's oldest page is aged by the accessed bits
 * in every PTE mapping it, OR-ed with the classic subscribers' young callbacks (rule 37);
 * a referenced page gets a second chance. Otherwise it is unmapped with a CLEAR per
 * mapping (21e, try_to_unmap) and freed: anonymous pages to swap (not when maybe-pinned,
 * rule 72), clean file pages dropped with their buffers. A dirty file page is unmapped
 * first and then written back (pageout), and freed by a later pass (mm/vmscan.c
 * shrink_folio_list). A maybe-pinned page that was unmapped anyway (a file page) is kept
 * on the active list before any pageout (d824ec2a1546, 6.4).
 * The NIC sets no accessed bits: pages busy only with DMA age out, faithfully.
 */
export function* shrinkPage(kernel: Kernel, frame: number, stats: ReclaimStats, ignoreReferences = false): Co<ReclaimOutcome> {
  const { phys, lru, sim } = kernel;
  if (frame !== ZERO_PFN && phys.isAllocated(frame) && phys.isLarge(phys.folioHead(frame))) {
    // A large folio: shrink_folio_list splits it (split_folio_to_list) when it cannot go
    // whole; the model never swaps a THP out whole, so it always splits, and a folio that
    // cannot be split (a pin, any extra reference: can_split_folio) stays, activated.
    // A pinned THP is 512 pages reclaim cannot touch, counted as such.
    const head = phys.folioHead(frame);
    const pins = phys.folioPincount(head);
    if ((yield* splitHugePage(kernel, head)) < 0) {
      stats.scanned++;
      lru.rotate(head);
      if (pins > 0) stats.keptPinned += phys.folioNrPages(head);
      sim.emit({ type: 'reclaim', frame: head, outcome: pins > 0 ? 'pinned' : 'busy', node: kernel.node });
      return pins > 0 ? 'pinned' : 'busy';
    }
  }
  const live = frame !== ZERO_PFN && phys.isAllocated(frame);
  // shrink_folio_list works on locked folios: a folio another path holds locked (a
  // migration, writeback, another reclaimer) is skipped (folio_trylock).
  if (live && phys.has(frame, PG_LOCKED)) {
    stats.scanned++;
    lru.rotate(frame);
    sim.emit({ type: 'reclaim', frame, outcome: 'busy', node: kernel.node });
    return 'busy';
  }
  const generation = phys.generation[frame];
  if (live) phys.set(frame, PG_LOCKED);
  try {
    return yield* shrinkLockedPage(kernel, frame, stats, ignoreReferences);
  } finally {
    if (live && phys.isAllocated(frame) && phys.generation[frame] === generation) phys.clear(frame, PG_LOCKED);
  }
}

function* shrinkLockedPage(kernel: Kernel, frame: number, stats: ReclaimStats, ignoreReferences: boolean): Co<ReclaimOutcome> {
  const { phys, lru, swap, sim } = kernel;
  stats.scanned++;
  if (frame === ZERO_PFN || !phys.isAllocated(frame)) {
    lru.remove(frame);
    return 'kept';
  }
  const outcome = (o: ReclaimOutcome): ReclaimOutcome => {
    sim.emit({ type: 'reclaim', frame, outcome: o, node: kernel.node });
    return o;
  };
  // folio_referenced
  let young = false;
  for (const { mm, addr } of [...phys.mappingsOf(frame)]) {
    const v = vpn(addr);
    const pte = mm.pageTable.get(v);
    if (ptePresent(pte) && pteHas(pte, PTE_ACCESSED)) {
      young = true;
      mm.pageTable.set(v, makePte(pteFrame(pte), pteFlags(pte) & ~PTE_ACCESSED));
    }
    if (yield* mmuNotifierClearFlushYoung(mm, addr, addr + PAGE_SIZE)) young = true;
  }
  if (young && !ignoreReferences) {
    lru.rotate(frame);
    stats.keptYoung++;
    return outcome('young');
  }
  // hubbard-flag (seed 000): try_to_unmap leaves a flagged page alone, however long ago
  // its last GUP reference went: the page is kept mapped and unreclaimable until freed.
  if (proposal(kernel).dmaPinnedFlag && phys.has(frame, PG_DMA_PINNED)) {
    lru.rotate(frame);
    stats.keptPinned++;
    sim.emit({ type: 'proposal', node: kernel.node, what: 'kept-flagged', frame, caller: 'try_to_unmap' });
    return outcome('pinned');
  }
  const anon = phys.has(frame, PG_ANON);
  if (anon && !phys.has(frame, PG_SWAPCACHE) && phys.maybeDmaPinned(frame)) {
    lru.rotate(frame);
    stats.keptPinned++;
    return outcome('pinned');
  }
  const lazyFree = anon && phys.has(frame, PG_LAZYFREE) && !phys.has(frame, PG_DIRTY);
  // add_to_swap: the swap cache takes a reference and a slot shared by every mapping.
  let slot = -1;
  if (anon && !lazyFree) {
    const existing = swap.slotOf(frame);
    if (existing >= 0) slot = existing;
    else {
      slot = swap.store(phys.pageBytes(frame)?.slice(), 0);
      swap.setCachedFrame(slot, frame);
      phys.set(frame, PG_SWAPCACHE);
      phys.get(frame);
    }
  }
  // try_to_unmap: one CLEAR per mapping; the PTEs' dirty bits move to the folio.
  let unmappedAll = true;
  for (const { mm, addr } of [...phys.mappingsOf(frame)]) {
    const ok = yield* unmapOne(kernel, mm, addr, frame, slot);
    if (!ok) unmappedAll = false;
  }
  if (!unmappedAll) {
    lru.rotate(frame);
    return outcome('busy');
  }
  if (phys.maybeDmaPinned(frame)) {
    // Recent kernels put a maybe-pinned folio back on the active list after unmapping.
    phys.set(frame, PG_ACTIVE);
    lru.rotate(frame);
    stats.keptPinned++;
    return outcome('pinned');
  }
  if (!anon && phys.has(frame, PG_DIRTY)) {
    // pageout() of a dirty file folio, now that try_to_unmap moved every PTE's dirty bit to
    // it: the write starts and the folio is kept until it ends (PAGE_SUCCESS with the folio
    // under writeback: `goto keep`); a later pass frees it. No PROTECTION_PAGE: folio_mkclean
    // finds no mapping left.
    const file = kernel.fileById(phys.mappingFile[frame]!);
    if (file && !file.shmem) {
      yield* writebackPage(kernel, file, phys.index[frame]!, false, true);
      stats.writtenBack++;
      lru.rotate(frame);
      return outcome('writeback');
    }
  }
  if (!anon) {
    // try_to_release_folio drops the buffers before __remove_mapping checks references.
    phys.clear(frame, PG_PRIVATE);
    const file = kernel.fileById(phys.mappingFile[frame]!);
    if (phys.refcount[frame] === 1 && file && !phys.has(frame, PG_WRITEBACK)) {
      if (file.shmem) return outcome('kept'); // shmem swap is not modelled: keep it
      file.pageCache.delete(phys.index[frame]!);
      phys.mappingFile[frame] = -1;
      lru.remove(frame);
      phys.put(frame);
      stats.reclaimed++;
      return outcome('freed');
    }
    lru.rotate(frame);
    return outcome('busy');
  }
  if (lazyFree) {
    if (phys.refcount[frame] === 0) {
      stats.reclaimed++;
      return outcome('freed');
    }
    return outcome('busy');
  }
  // __remove_mapping: only the swap cache's reference may remain. pageout() writes the page
  // to its slot now, after every PTE is gone: stores made while the CLEARs ran (a CPU
  // write, or DMA a secondary MMU let finish before its callback returned) are kept.
  if (phys.refcount[frame] === 1) {
    swap.rewrite(slot, phys.pageBytes(frame)?.slice());
    swap.setCachedFrame(slot, -1);
    phys.clear(frame, PG_SWAPCACHE);
    lru.remove(frame);
    phys.put(frame);
    stats.reclaimed++;
    stats.swappedOut++;
    return outcome('freed');
  }
  lru.rotate(frame);
  return outcome('busy');
}

/** try_to_unmap_one for one mapping: CLEAR around replacing the PTE (rules 21e, 71). */
function* unmapOne(kernel: Kernel, mm: MmStruct, addr: number, frame: number, slot: number): Co<boolean> {
  const { phys, swap } = kernel;
  let ok = true;
  yield* notifyPageChange(mm, MmuNotifyEvent.CLEAR, addr, () => {
    const v = vpn(addr);
    const pte = mm.pageTable.get(v);
    if (!ptePresent(pte) || pteFrame(pte) !== frame) return;
    if (phys.has(frame, PG_ANON) && phys.has(frame, PG_ANON_EXCLUSIVE) && phys.maybeDmaPinned(frame)) {
      ok = false; // the share step fails: the PTE stays as it was (rule 71)
      return;
    }
    // MADV_FREE check of try_to_unmap_one, made after the CLEAR's start: a lazily-freed page
    // that was written again (a dirty PTE, or a secondary MMU's set_page_dirty from its
    // callback, rdma C8) is not discarded; it stays mapped and becomes swap-backed again.
    if (slot < 0 && phys.has(frame, PG_ANON) && phys.has(frame, PG_LAZYFREE) && (phys.has(frame, PG_DIRTY) || pteHas(pte, PTE_DIRTY))) {
      // Clean when reclaim chose to discard it; dirtied since (PG_DIRTY: a callback's set_page_dirty).
      const what = phys.has(frame, PG_DIRTY) ? 'lazyfree-folio-redirtied' : 'lazyfree-pte-dirty';
      kernel.sim.emit({ type: 'race-guard', node: kernel.node, fn: 'try_to_unmap_one', what, frame });
      phys.clear(frame, PG_LAZYFREE);
      phys.set(frame, PG_DIRTY);
      ok = false;
      return;
    }
    if (slot < 0 && phys.has(frame, PG_KSM)) {
      // A lazyfree KSM page is discarded from every mapping, including those of processes
      // that never called MADV_FREE: madvise_free_pte_range (mm/madvise.c) lazyfrees a
      // dirty folio it maps alone, and does not exclude KSM folios, while ksmd's
      // try_to_merge_two_pages has made it the stable page (mm/ksm.c) but not yet mapped it
      // into the second mm (replace_page, after that mm's write_protect_page, whose
      // notifier may sleep). A kernel race the model keeps, recorded per mapping.
      kernel.sim.emit({ type: 'race-guard', node: kernel.node, fn: 'try_to_unmap_one', what: 'lazyfree-ksm-discard', frame, mm: mm.id, addr });
    }
    // "Set the dirty flag on the folio now the pte is gone" (try_to_unmap_one).
    if (pteHas(pte, PTE_DIRTY) && phys.mappingFile[frame]! >= 0) folioMarkDirty(kernel, frame, 'try_to_unmap_one');
    if (slot >= 0) {
      swap.dup(slot);
      mm.pageTable.set(v, makePte(slot, PTE_SWAP));
    } else {
      mm.pageTable.clear(v);
    }
    phys.rmapRemove(frame, mm, addr);
    phys.clear(frame, PG_ANON_EXCLUSIVE);
    phys.put(frame);
  });
  return ok;
}

/**
 * Reclaim up to `target` more pages, scanning the LRU oldest first (at most twice round).
 * `stats` accumulates across calls (kswapd keeps one for its lifetime), so the goal is
 * counted from what it held on entry.
 */
export function* shrinkLru(kernel: Kernel, target: number, stats: ReclaimStats = newReclaimStats()): Co<ReclaimStats> {
  const budget = kernel.lru.size * 2;
  const goal = stats.reclaimed + target;
  for (let scanned = 0; stats.reclaimed < goal && scanned < budget; scanned++) {
    const frame = kernel.lru.oldest();
    if (frame < 0) break;
    yield* shrinkPage(kernel, frame, stats);
  }
  return stats;
}

export function newReclaimStats(): ReclaimStats {
  return { scanned: 0, reclaimed: 0, swappedOut: 0, keptPinned: 0, keptYoung: 0, writtenBack: 0 };
}

/**
 * MADV_PAGEOUT: reclaim the pages mapped in [start, end) now, references ignored. A folio
 * another mapping also maps is left alone: mm/madvise.c madvise_cold_or_pageout_pte_range
 * skips it ("Do not interfere with other mappings of this folio": 12e967fd8e4e "mm: do not
 * allow MADV_PAGEOUT for CoW pages", 5.5, in 5.4 stable; `folio_maybe_mapped_shared` for a
 * large folio today), and so does the zero page (vm_normal_folio). Paging out a page a KSM
 * merge or a fork shares would take it from processes that never asked.
 */
export function* reclaimRange(mm: MmStruct, start: number, end: number): Co {
  const stats = newReclaimStats();
  const { phys } = mm.kernel;
  for (const [, pte] of mm.pageTable.entriesIn(vpn(start), vpn(end))) {
    if (pteHas(pte, PTE_SWAP) || !ptePresent(pte)) continue;
    const frame = pteFrame(pte);
    if (frame === ZERO_PFN || !phys.isAllocated(frame)) continue;
    if (mappedShared(mm.kernel, frame)) {
      const what = phys.has(frame, PG_KSM) ? 'ksm-mapped-shared' : 'mapped-shared';
      mm.kernel.sim.emit({ type: 'race-guard', node: mm.kernel.node, fn: 'madvise_cold_or_pageout_pte_range', what, frame });
      continue;
    }
    // A device-coherent page is not on the LRU: folio_isolate_lru fails and it is skipped.
    if (phys.has(frame, PG_ZONE_DEVICE)) continue;
    yield* shrinkPage(mm.kernel, frame, stats, true);
  }
}

/** Whether any page of `frame`'s folio is mapped more than once (folio_maybe_mapped_shared). */
function mappedShared(kernel: Kernel, frame: number): boolean {
  const { phys } = kernel;
  const head = phys.folioHead(frame);
  const n = phys.folioNrPages(head);
  for (let f = head; f < head + n; f++) if (phys.mapcount[f]! > 1) return true;
  return false;
}

export interface KswapdOptions {
  /** Wake when free frames fall below this many. */
  lowWatermark: number;
  /** Reclaim until this many frames are free. */
  highWatermark: number;
  /** How often kswapd checks the watermarks (virtual ns). */
  periodNs: number;
}

/**
 * kswapd: a kernel thread that checks the watermarks periodically and reclaims from the
 * LRU when free memory is low. Runs forever (runs are bounded by their limits).
 */
export function startKswapd(kernel: Kernel, opts: Partial<KswapdOptions> = {}): ReclaimStats {
  const frames = kernel.phys.frames;
  const o: KswapdOptions = {
    lowWatermark: opts.lowWatermark ?? Math.max(8, Math.floor(frames / 32)),
    highWatermark: opts.highWatermark ?? Math.max(16, Math.floor(frames / 16)),
    periodNs: opts.periodNs ?? 1_000_000,
  };
  const stats = newReclaimStats();
  kernel.sim.spawn('kswapd0', function* () {
    for (;;) {
      yield* kernel.sim.sleep(o.periodNs);
      if (kernel.phys.freeFrames >= o.lowWatermark) continue;
      yield* shrinkLru(kernel, o.highWatermark - kernel.phys.freeFrames, stats);
    }
  }, { kind: 'kthread', node: kernel.node });
  return stats;
}
