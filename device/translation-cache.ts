import type { Translation } from './device-page-table.ts';
import { PTE_ABSENT } from './device-page-table.ts';

/** What the cache needs from an MR: a place to index its own cached pages. */
export interface CachedRegion {
  /** Page index -> cache slot, for this MR's cached pages. */
  readonly cacheSlots: Map<number, number>;
}

/**
 * The NIC's translation cache (an IOTLB-like copy of device page-table entries). What makes
 * it matter: a zap clears the page table but not the cache, so the device may keep using a
 * zapped translation until a **sync** empties the cache (rdma C5: the invalidate callback
 * may return only after the device can no longer use the old translation). Nothing else
 * empties it; when full, the oldest inserted entry is replaced (FIFO, assumed: the
 * replacement policy of real NIC caches is not published).
 *
 * Entries are kept in typed arrays indexed by slot, so lookups and inserts allocate nothing.
 * Capacity 0 disables caching: every access walks the table, and a zap takes effect at once.
 *
 * @example
 *   const tc = new TranslationCache(1024);
 *   tc.insert(mr, 7, t);        // t: a Translation just read from mr's page table
 *   tc.lookup(mr, 7, out);      // true, even after mr's entry 7 is zapped...
 *   tc.flush();                 // ...until a sync flushes the cache
 */
export class TranslationCache {
  private readonly owner: (CachedRegion | null)[];
  private readonly page: Float64Array;
  private readonly frame: Int32Array;
  private readonly perm: Uint8Array;
  private readonly generation: Float64Array;
  private readonly installedAt: Float64Array;
  private next = 0;
  private used = 0;
  hits = 0;
  misses = 0;
  flushes = 0;

  constructor(readonly capacity: number) {
    if (!(Number.isInteger(capacity) && capacity >= 0)) throw new RangeError(`translation cache capacity ${capacity}`);
    this.owner = new Array<CachedRegion | null>(capacity).fill(null);
    this.page = new Float64Array(capacity);
    this.frame = new Int32Array(capacity);
    this.perm = new Uint8Array(capacity);
    this.generation = new Float64Array(capacity);
    this.installedAt = new Float64Array(capacity);
  }

  /** Entries currently cached. */
  get size(): number {
    return this.used;
  }

  /** Fill `out` from a cached entry of (mr, page); false on a miss. Counts hits and misses. */
  lookup(mr: CachedRegion, index: number, out: Translation): boolean {
    const slot = mr.cacheSlots.get(index);
    if (slot === undefined) {
      this.misses++;
      return false;
    }
    this.hits++;
    out.frame = this.frame[slot] as number;
    out.perm = this.perm[slot] as number;
    out.generation = this.generation[slot] as number;
    out.installedAt = this.installedAt[slot] as number;
    out.fromCache = true;
    return true;
  }

  /** Cache a translation (replacing this page's old copy, or the oldest entry when full). */
  insert(mr: CachedRegion, index: number, t: Translation): void {
    if (this.capacity === 0) return;
    let slot = mr.cacheSlots.get(index);
    if (slot === undefined) {
      slot = this.next;
      this.next = (this.next + 1) % this.capacity;
      const old = this.owner[slot];
      if (old) old.cacheSlots.delete(this.page[slot] as number);
      else this.used++;
      this.owner[slot] = mr;
      this.page[slot] = index;
      mr.cacheSlots.set(index, slot);
    }
    this.frame[slot] = t.frame;
    this.perm[slot] = t.perm;
    this.generation[slot] = t.generation;
    this.installedAt[slot] = t.installedAt;
  }

  /** Visit every cached entry, oldest slot first (read-only, for inspection; counts nothing). */
  forEachEntry(visit: (owner: CachedRegion, index: number, t: Translation) => void): void {
    for (let k = 0; k < this.capacity; k++) {
      const slot = (this.next + k) % this.capacity;
      const owner = this.owner[slot];
      if (!owner) continue;
      visit(owner, this.page[slot] as number, {
        frame: this.frame[slot] as number, perm: this.perm[slot] as number, generation: this.generation[slot] as number,
        installedAt: this.installedAt[slot] as number, fromCache: true,
      });
    }
  }

  /**
   * Drop one region's entries (the effect of a per-mkey UMR on the mkey it updates, as
   * mlx5r_umr_update_xlt's UMR invalidates the HCA's cached translations of that mkey).
   * Returns how many entries were dropped.
   */
  flushRegion(mr: CachedRegion): number {
    let dropped = 0;
    for (const slot of mr.cacheSlots.values()) {
      this.owner[slot] = null;
      this.perm[slot] = PTE_ABSENT;
      dropped++;
    }
    mr.cacheSlots.clear();
    this.used -= dropped;
    return dropped;
  }

  /** Empty the cache (the effect of a sync). Returns how many entries were dropped. */
  flush(): number {
    const dropped = this.used;
    for (let slot = 0; slot < this.capacity; slot++) {
      const mr = this.owner[slot];
      if (!mr) continue;
      mr.cacheSlots.delete(this.page[slot] as number);
      this.owner[slot] = null;
      this.perm[slot] = PTE_ABSENT;
    }
    this.used = 0;
    this.next = 0;
    this.flushes++;
    return dropped;
  }
}
