import type { Co } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import type { File } from './file.ts';
import type { Vma } from './vma.ts';
import { VM_WRITE } from './vma.ts';
import { EAGAIN, EFAULT } from './errno.ts';
import { PAGE_SIZE, vpn } from './constants.ts';
import { PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_WRITE, isMigrationEntry, makePte, pteFlags, pteFrame, pteHas, ptePresent } from './page-table.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_LOCKED, PG_PRIVATE, PG_SWAPBACKED, PG_UPTODATE } from './page-frames.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { maybeMkwrite, notifyPageChange } from './memory.ts';
import { zapPteRange } from './memory.ts';
import { GFP_HIGHUSER_MOVABLE, allocPages } from './page-alloc.ts';
import { gatherPage, tlbFinishMmu, zapPteRangeWork, type GatheredSpan } from './tlb.ts';
import { migrationEntryDropped } from './migrate.ts';
import { PG_DMA_PINNED, gupReferences, proposal, waitForDmaIdle } from './variant.ts';

/**
 * filemap_get_folio / read_cache_folio: the page-cache page for `index`, read from disk
 * on a miss. The page cache holds one reference. Returns the frame or -ENOMEM.
 */
export function findOrReadPage(kernel: Kernel, file: File, index: number): number {
  const cached = file.pageCache.get(index);
  if (cached !== undefined) return cached;
  const { phys } = kernel;
  const f = phys.allocPage();
  if (f < 0) return f;
  const bytes = file.disk.get(index);
  if (bytes) phys.write(f, 0, bytes);
  phys.mappingFile[f] = file.id;
  phys.index[f] = index;
  phys.set(f, PG_UPTODATE | (file.shmem ? PG_SWAPBACKED : 0));
  file.pageCache.set(index, f);
  kernel.lru.add(f);
  return f;
}

/**
 * do_read_fault / do_cow_fault / do_shared_fault for a missing PTE in a file VMA. A
 * private write gets an anonymous copy at once (no notification: the PTE was empty); a
 * shared write goes through page_mkwrite, which attaches the filesystem's buffers and
 * dirties the page; a read maps the page-cache page, read-only unless it is shmem (which
 * needs no write notification).
 */
export function* filemapFault(mm: MmStruct, vma: Vma, page: number, write: boolean): Co<number> {
  const { kernel } = mm;
  const { phys } = kernel;
  const file = vma.file as File;
  const index = vma.fileIndex(page);
  if (index >= file.pages) return -EFAULT; // SIGBUS beyond EOF
  const f = findOrReadPage(kernel, file, index);
  if (f < 0) return f;
  const v = vpn(page);
  if (!vma.shared) {
    if (!write) {
      phys.get(f);
      phys.rmapAdd(f, mm, page);
      mm.pageTable.set(v, makePte(f, PTE_PRESENT | PTE_ACCESSED));
      return 0;
    }
    // do_cow_fault's copy may reclaim (page-alloc.ts); the page-cache page stays referenced.
    phys.get(f);
    const nf = yield* allocPages(kernel, GFP_HIGHUSER_MOVABLE);
    phys.put(f);
    if (nf < 0) return nf;
    if (mm.pageTable.get(v) !== 0) {
      // Something was mapped here while reclaim ran: let the fault be retried.
      phys.put(nf);
      return 0;
    }
    phys.copyPage(nf, f);
    phys.set(nf, PG_ANON | PG_SWAPBACKED | PG_ANON_EXCLUSIVE);
    vma.anonVma = true;
    phys.rmapAdd(nf, mm, page);
    kernel.lru.add(nf);
    mm.pageTable.set(v, makePte(nf, PTE_PRESENT | maybeMkwrite(vma) | PTE_ACCESSED | PTE_DIRTY));
    return 0;
  }
  if (write) {
    // page_mkwrite may sleep on the folio lock: map the page only if it is still the file's
    // page at `index` and nobody mapped something here meanwhile; otherwise retry the fault.
    const r = yield* pageMkwrite(mm, vma, f);
    if (r === -EAGAIN) return 0;
    if (r < 0) return r;
    if (file.pageCache.get(index) !== f || mm.pageTable.get(v) !== 0) {
      kernel.sim.emit({ type: 'race-guard', node: kernel.node, fn: 'do_shared_fault', what: 'page-changed', frame: f });
      return 0;
    }
    phys.get(f);
    phys.rmapAdd(f, mm, page);
    mm.pageTable.set(v, makePte(f, PTE_PRESENT | PTE_WRITE | PTE_ACCESSED | PTE_DIRTY));
  } else {
    phys.get(f);
    phys.rmapAdd(f, mm, page);
    const w = file.shmem && vma.flags & VM_WRITE ? PTE_WRITE : 0;
    mm.pageTable.set(v, makePte(f, PTE_PRESENT | PTE_ACCESSED | w));
  }
  return 0;
}

/** How often a task waiting for a folio lock looks again (virtual ns; the model has no per-folio wait queue). */
const FOLIO_LOCK_POLL_NS = 500;

/**
 * folio_lock: sleep until PG_LOCKED is clear, then set it. Pair with `folioUnlock`. A wait
 * is traced (a race-guard record naming `fn`, the caller): the interleavings the folio lock
 * orders (writeback against page_mkwrite, reclaim against a swap-in) show there.
 */
export function* folioLock(kernel: Kernel, frame: number, fn = 'folio_lock'): Co {
  const { phys, sim } = kernel;
  if (phys.has(frame, PG_LOCKED)) sim.emit({ type: 'race-guard', node: kernel.node, fn, what: 'folio-lock-wait', frame });
  while (phys.has(frame, PG_LOCKED)) yield* sim.sleep(FOLIO_LOCK_POLL_NS);
  phys.set(frame, PG_LOCKED);
}

export function folioUnlock(kernel: Kernel, frame: number): void {
  kernel.phys.clear(frame, PG_LOCKED);
}

/**
 * ->page_mkwrite (block_page_mkwrite): attach the filesystem's private state (buffers)
 * and dirty the page before the first write through a shared mapping. Under the folio
 * lock, as the filesystems do: a write fault that races writeback's
 * clear_page_dirty_for_io waits for it, and dirties the page after it was cleaned.
 */
export function* pageMkwrite(mm: MmStruct, _vma: Vma, frame: number): Co<number> {
  const { kernel } = mm;
  const { phys } = kernel;
  const generation = phys.generation[frame];
  yield* folioLock(kernel, frame, 'do_page_mkwrite');
  // Truncated, reclaimed or freed while this fault slept on the lock (the kernel's
  // `folio->mapping` check): -EAGAIN, and the fault is retried.
  if (!phys.isAllocated(frame) || phys.generation[frame] !== generation || phys.mappingFile[frame]! < 0) {
    kernel.sim.emit({ type: 'race-guard', node: kernel.node, fn: 'do_page_mkwrite', what: 'folio-gone', frame });
    folioUnlock(kernel, frame);
    return -EAGAIN;
  }
  if (phys.mappingFile[frame]! >= 0) phys.set(frame, PG_PRIVATE);
  folioMarkDirty(kernel, frame, 'page_mkwrite');
  folioUnlock(kernel, frame);
  return 0;
}

/**
 * folio_mark_dirty / set_page_dirty. A file page whose filesystem state was dropped
 * (cleaned by writeback, buffers released) cannot be dirtied safely: in 2018 this was the
 * ext4 crash reached from put_user_pages after DMA. Recorded as its own trace event.
 */
export function folioMarkDirty(kernel: Kernel, frame: number, caller: string): void {
  const { phys } = kernel;
  const file = phys.mappingFile[frame]!;
  const inode = file >= 0 ? kernel.fileById(file) : undefined;
  if (inode && !inode.shmem && !phys.has(frame, PG_PRIVATE) && !phys.has(frame, PG_DIRTY)) {
    kernel.sim.emit({ type: 'dirty-without-buffers', frame, caller, node: kernel.node });
  }
  // __mark_inode_dirty: the inode's dirtied_when is set when it goes from clean to dirty.
  if (inode && !inode.shmem && inode.dirtiedWhenNs < 0) inode.dirtiedWhenNs = kernel.sim.now();
  phys.set(frame, PG_DIRTY);
}

/**
 * folio_mkclean: write-protect and clean every PTE mapping a file page, one
 * PROTECTION_PAGE invalidation per mapping (rule 76), regardless of pins. Returns
 * whether any PTE was dirty (the dirty bit moves to the page).
 */
export function* folioMkclean(kernel: Kernel, file: File, index: number, frame: number): Co<boolean> {
  let dirty = false;
  // The callbacks may sleep, and meanwhile an mprotect or munmap may split the VMAs: walk
  // the live mapping set again after each page (the kernel holds i_mmap_rwsem across the
  // rmap walk, which splits take too), visiting each (mm, address) once.
  const visited = new Set<string>();
  const atStart = new Set(file.mappings);
  for (;;) {
    const vma = [...file.mappings].find((v) => {
      if (!v.shared) return false;
      const a = v.addrOfIndex(index);
      return a >= v.start && a < v.end && !visited.has(`${v.mm.id}:${a}`);
    });
    if (!vma) break;
    const addr = vma.addrOfIndex(index);
    visited.add(`${vma.mm.id}:${addr}`);
    const mm = vma.mm;
    const pte = mm.pageTable.get(vpn(addr));
    if (!ptePresent(pte) || pteFrame(pte) !== frame) continue;
    if (!atStart.has(vma)) kernel.sim.emit({ type: 'race-guard', node: kernel.node, fn: 'folio_mkclean', what: 'vma-split-during-walk', frame });
    yield* notifyPageChange(mm, MmuNotifyEvent.PROTECTION_PAGE, addr, () => {
      const cur = mm.pageTable.get(vpn(addr));
      // The callbacks may sleep: a concurrent munmap or fault may have changed the PTE
      // meanwhile (the kernel re-walks under the PTE lock, page_vma_mkclean_one).
      if (!ptePresent(cur) || pteFrame(cur) !== frame) {
        kernel.sim.emit({ type: 'race-guard', node: kernel.node, fn: 'page_vma_mkclean_one', what: 'pte-changed', frame });
        return;
      }
      if (pteHas(cur, PTE_DIRTY)) dirty = true;
      mm.pageTable.set(vpn(addr), makePte(frame, pteFlags(cur) & ~(PTE_WRITE | PTE_DIRTY)));
    });
  }
  return dirty;
}

/**
 * Write back one dirty page-cache page: clear_page_dirty_for_io (folio_mkclean), then
 * write the bytes to disk. `dropBuffers` models a later try_to_release_folio
 * (reclaim or the filesystem dropping the buffers of a now-clean page). `locked`: the
 * caller (reclaim's pageout) already holds the folio lock.
 */
export function* writebackPage(kernel: Kernel, file: File, index: number, dropBuffers: boolean, locked = false): Co<boolean> {
  const frame = file.pageCache.get(index);
  if (frame === undefined || file.shmem) return false;
  const { phys } = kernel;
  // Writeback visits only pages tagged dirty: a clean page is not cleaned again (no
  // PROTECTION_PAGE for it), however often fsync or the flusher runs.
  if (!phys.has(frame, PG_DIRTY)) return false;
  // gup-dirty-forever (seed 002, Jérôme Glisse's steps 3..N): a page with GUP references is
  // never cleaned; it stays dirty, and fsync returns without writing it.
  if (proposal(kernel).gupDirtyForever && gupReferences(kernel, frame) > 0) {
    kernel.sim.emit({ type: 'proposal', node: kernel.node, what: 'writeback-skipped', frame, caller: 'writeback' });
    return false;
  }
  // folio_lock around clear_page_dirty_for_io: a page_mkwrite racing the clean waits, so a
  // PTE made writable again always belongs to a page that is dirty again.
  if (!locked) yield* folioLock(kernel, frame, 'folio_clear_dirty_for_io');
  if (!phys.has(frame, PG_DIRTY) || file.pageCache.get(index) !== frame) {
    if (!locked) folioUnlock(kernel, frame);
    return false;
  }
  yield* folioMkclean(kernel, file, index, frame);
  phys.clear(frame, PG_DIRTY);
  file.disk.set(index, phys.read(frame, 0, PAGE_SIZE));
  // Traced when the page is clean and on disk, before a buffer release that may wait.
  kernel.sim.emit({ type: 'writeback', file: file.id, index, frame, node: kernel.node });
  if (dropBuffers) yield* releaseBuffers(kernel, frame);
  if (!locked) folioUnlock(kernel, frame);
  return true;
}

/**
 * try_to_release_folio for a page writeback just cleaned: the filesystem drops its
 * buffers. Under hubbard-flag (seed 000) a flagged page keeps them; under
 * wait-for-dma-idle (seed 003) the release first waits until the page holds only the page
 * cache's and its mappings' references, and then drops them only if nothing dirtied the
 * page meanwhile (a dirty page's buffers are never released).
 */
function* releaseBuffers(kernel: Kernel, frame: number): Co {
  const { phys } = kernel;
  const p = proposal(kernel);
  if (p.dmaPinnedFlag && phys.has(frame, PG_DMA_PINNED)) {
    kernel.sim.emit({ type: 'proposal', node: kernel.node, what: 'kept-flagged', frame, caller: 'try_to_release_folio' });
    return;
  }
  if (p.waitForDmaIdle) {
    const generation = phys.generation[frame];
    yield* waitForDmaIdle(kernel, frame, () => 1 + phys.mapcount[frame]!, 'try_to_release_folio');
    if (!phys.isAllocated(frame) || phys.generation[frame] !== generation || phys.has(frame, PG_DIRTY)) return;
  }
  phys.clear(frame, PG_PRIVATE);
}

/** Write back every dirty page of a file (fsync, msync MS_SYNC, the flusher). */
export function* writebackFile(kernel: Kernel, file: File, dropBuffers = false): Co<number> {
  let n = 0;
  for (const index of [...file.pageCache.keys()].sort((a, b) => a - b)) {
    if (yield* writebackPage(kernel, file, index, dropBuffers)) n++;
  }
  // The inode leaves the dirty list once no page is dirty (dirtied_when is reset when it
  // is dirtied again); pages kept dirty keep it on the list with its old time.
  const { phys } = kernel;
  if (![...file.pageCache.values()].some((f) => phys.has(f, PG_DIRTY))) file.dirtiedWhenNs = -1;
  return n;
}

/**
 * unmap_mapping_range + truncate_inode_pages for page indexes [first, last]: one CLEAR
 * per VMA mapping the file range, over that VMA's overlap (rule 21c), then the pages
 * leave the page cache (and the disk, for a truncate or hole punch). `last` may be
 * Infinity (truncate: to the end of every VMA). `evenCows` also zaps the private COW
 * copies in the range, as truncation does (POSIX: access past EOF is SIGBUS) and hole
 * punch does not.
 */
export function* truncatePages(kernel: Kernel, file: File, first: number, last: number, evenCows = false): Co {
  const { phys } = kernel;
  // The callbacks may sleep, and meanwhile an mprotect or munmap may split the VMAs: walk
  // the live mapping set again after each VMA (the kernel holds i_mmap_rwsem across
  // unmap_mapping_range, which splits take too), visiting each VMA piece once.
  const visited = new Set<Vma>();
  const atStart = new Set(file.mappings);
  for (;;) {
    const vma = [...file.mappings].find((v) => !visited.has(v));
    if (!vma) break;
    visited.add(vma);
    const s = Math.max(vma.start, vma.addrOfIndex(first));
    const e = Math.min(vma.end, vma.addrOfIndex(last + 1));
    if (s >= e) continue;
    if (!atStart.has(vma)) kernel.sim.emit({ type: 'race-guard', node: kernel.node, fn: 'unmap_mapping_range', what: 'vma-split-during-walk', frame: -1 });
    const mm = vma.mm;
    const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, s, e);
    yield* mmuNotifierInvalidateRangeStart(range);
    const toFree: number[] = [];
    let span: GatheredSpan = null;
    if (evenCows) span = zapPteRange(mm, vma, s, e, toFree);
    else for (const [v, pte] of mm.pageTable.entriesIn(vpn(s), vpn(e))) {
      const f = pteFrame(pte);
      if (isMigrationEntry(pte) && phys.mappingFile[f] === file.id) {
        // zap_nonpresent_ptes drops a file folio's migration entry (should_zap_folio).
        mm.pageTable.clear(v);
        migrationEntryDropped(kernel, f, mm, v * PAGE_SIZE);
        continue;
      }
      // A private COW copy is anonymous and survives a hole punch.
      if (!ptePresent(pte) || phys.mappingFile[f] !== file.id) continue;
      mm.pageTable.clear(v);
      span = gatherPage(span, v * PAGE_SIZE);
      phys.rmapRemove(f, mm, v * PAGE_SIZE);
      toFree.push(f);
    }
    yield* zapPteRangeWork(mm, span);
    yield* mmuNotifierInvalidateRangeEnd(range);
    yield* tlbFinishMmu(mm, span, toFree);
  }
  for (const [index, f] of [...file.pageCache]) {
    if (index < first || index > last) continue;
    // wait-for-dma-idle (seed 003): truncate waits until the page cache's is the only
    // reference left, i.e. no DMA can still reach the page, before it lets go.
    if (proposal(kernel).waitForDmaIdle) {
      phys.get(f);
      yield* waitForDmaIdle(kernel, f, () => 2, 'truncate_inode_pages');
      phys.put(f);
      if (file.pageCache.get(index) !== f) continue;
    }
    file.pageCache.delete(index);
    phys.mappingFile[f] = -1;
    phys.clear(f, PG_DIRTY | PG_PRIVATE);
    kernel.lru.remove(f);
    phys.put(f);
  }
  for (const index of [...file.disk.keys()]) if (index >= first && index <= last) file.disk.delete(index);
}
