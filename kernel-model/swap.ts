import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import type { Vma } from './vma.ts';
import { vpn } from './constants.ts';
import { PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_WRITE, makePte, pteFrame } from './page-table.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE, PG_KSM, PG_SWAPBACKED, PG_SWAPCACHE } from './page-frames.ts';
import { VM_WRITE } from './vma.ts';
import { GFP_HIGHUSER_MOVABLE, allocPages } from './page-alloc.ts';
import { folioLock, folioUnlock } from './filemap.ts';

/**
 * A swap area: slots holding the bytes of swapped-out anonymous pages, shared by the
 * PTEs that reference them (after fork a slot can be referenced twice).
 */
export class SwapArea {
  private readonly slots = new Map<number, { bytes: Uint8Array | undefined; refs: number; frame: number }>();
  private readonly byFrame = new Map<number, number>();
  private nextSlot = 1;

  /**
   * @param dropCached releases a frame still held by the swap cache when its slot goes.
   * @param mayDrop whether that frame may be dropped now: free_swap_and_cache (mm/swapfile.c)
   *   frees the swap-cache folio only if folio_trylock succeeds; a folio someone holds
   *   locked (reclaim between try_to_unmap and __remove_mapping, a swap-in) stays in the
   *   swap cache, its slot kept for the cache alone, and the lock holder removes it.
   */
  constructor(
    private readonly dropCached: (frame: number) => void = () => undefined,
    private readonly mayDrop: (frame: number) => boolean = () => true,
  ) {}

  /** Store a page's bytes (undefined for an all-zero page); returns the slot. */
  store(bytes: Uint8Array | undefined, refs: number): number {
    const slot = this.nextSlot++;
    this.slots.set(slot, { bytes, refs, frame: -1 });
    return slot;
  }

  /** Write a page's current bytes to its slot again (pageout of a swap-cache page). */
  rewrite(slot: number, bytes: Uint8Array | undefined): void {
    const s = this.slots.get(slot);
    if (s) s.bytes = bytes;
  }

  /** The frame still in the swap cache for this slot, or -1. */
  cachedFrame(slot: number): number {
    return this.slots.get(slot)?.frame ?? -1;
  }

  /**
   * Put a frame in the swap cache for `slot` (frame -1 removes it). A slot no PTE refers
   * to any more goes with its cache (put_swap_folio: the cache's hold was the last).
   */
  setCachedFrame(slot: number, frame: number): void {
    const s = this.slots.get(slot);
    if (!s) return;
    if (s.frame >= 0) this.byFrame.delete(s.frame);
    s.frame = frame;
    if (frame >= 0) this.byFrame.set(frame, slot);
    else if (s.refs <= 0) this.slots.delete(slot);
  }

  /** The slot whose swap cache holds this frame, or -1. */
  slotOf(frame: number): number {
    return this.byFrame.get(frame) ?? -1;
  }

  bytes(slot: number): Uint8Array | undefined {
    return this.slots.get(slot)?.bytes;
  }

  refs(slot: number): number {
    return this.slots.get(slot)?.refs ?? 0;
  }

  dup(slot: number): void {
    const s = this.slots.get(slot);
    if (s) s.refs++;
  }

  free(slot: number): void {
    const s = this.slots.get(slot);
    if (s && --s.refs <= 0) {
      if (s.frame >= 0 && !this.mayDrop(s.frame)) return;
      this.slots.delete(slot);
      if (s.frame >= 0) {
        this.byFrame.delete(s.frame);
        this.dropCached(s.frame);
      }
    }
  }

  get used(): number {
    return this.slots.size;
  }
}

/**
 * do_swap_page (mm/memory.c): bring a swapped-out anonymous page back, from the swap cache
 * or into a new frame. The page is exclusive when this was the slot's only user and no
 * one else maps it (never a KSM page); a write then maps it writable at once, otherwise the
 * write faults again into do_wp_page.
 */
export function* swapIn(mm: MmStruct, vma: Vma, page: number, write: boolean): Co<number> {
  const { phys, swap, lru } = mm.kernel;
  const v = vpn(page);
  const pte = mm.pageTable.get(v);
  const slot = pteFrame(pte);
  let exclusive = swap.refs(slot) === 1;
  let f = swap.cachedFrame(slot);
  let locked = false;
  if (f >= 0 && phys.isAllocated(f) && phys.has(f, PG_SWAPCACHE)) {
    // do_swap_page takes a reference on the swap-cache folio, then its lock
    // (folio_lock_or_retry). Reclaim holds that lock from try_to_unmap to
    // __remove_mapping (shrink_folio_list), and the reference makes __remove_mapping's
    // refcount check fail, so the page stays in the swap cache. Once locked: if it left
    // the swap cache or the swap PTE changed meanwhile, the fault is retried (do_swap_page's
    // `!folio_test_swapcache` -> out_page, `!pte_same` -> out_nomap). Without the lock,
    // a swap-in during reclaim's CLEAR (the callbacks take time) took the page out of
    // the swap cache, and reclaim, seeing one reference, freed the page just mapped.
    phys.get(f);
    yield* folioLock(mm.kernel, f);
    locked = true;
    if (!phys.has(f, PG_SWAPCACHE) || swap.cachedFrame(slot) !== f || mm.pageTable.get(v) !== pte) {
      folioUnlock(mm.kernel, f);
      phys.put(f);
      return 0;
    }
    exclusive = swap.refs(slot) === 1;
    // Still in the swap cache (reclaim could not free it): map the same page again. It is
    // not ours alone if it is a KSM page (do_swap_page takes exclusivity only for
    // !folio_test_ksm; ksm_might_need_to_copy maps a stable KSM page as it is, and the
    // write goes to do_wp_page, which copies), nor if other PTEs still map it (its swap PTE
    // was not marked exclusive: try_to_unmap_one sets pte_swp_exclusive only for a
    // PageAnonExclusive page, and the folio's refcount is above one).
    if (phys.has(f, PG_KSM) || phys.mapcount[f]! > 0) exclusive = false;
    if (exclusive) {
      swap.setCachedFrame(slot, -1);
      phys.clear(f, PG_SWAPCACHE);
      phys.put(f); // the swap cache's reference
    }
  } else {
    // swapin_readahead's allocation may reclaim (page-alloc.ts): re-check the swap PTE after.
    f = yield* allocPages(mm.kernel, GFP_HIGHUSER_MOVABLE);
    if (f < 0) return f;
    // The read from the swap device (swap_read_folio), a major fault; a swap-cache hit
    // above has none (cpu-costs.ts swapInIoNs). Like the allocation, it sleeps: the swap
    // PTE is checked again after it (do_swap_page's pte_same under the PTL).
    yield* mm.kernel.sim.cpu(mm.kernel.cpuCosts.swapInIoNs);
    if (mm.pageTable.get(v) !== pte) {
      phys.put(f);
      return 0;
    }
    const bytes = swap.bytes(slot);
    if (bytes) phys.write(f, 0, bytes);
    lru.add(f);
  }
  phys.set(f, PG_ANON | PG_SWAPBACKED | (exclusive ? PG_ANON_EXCLUSIVE : 0));
  swap.free(slot);
  phys.rmapAdd(f, mm, page);
  const w = write && exclusive && (vma.flags & VM_WRITE) !== 0;
  mm.pageTable.set(v, makePte(f, PTE_PRESENT | PTE_ACCESSED | (w ? PTE_WRITE | PTE_DIRTY : 0)));
  if (locked) folioUnlock(mm.kernel, f);
  yield* mm.kernel.sim.preemptPoint('swap-in');
  return 0;
}
