/**
 * A device page table for one MR (the mlx5 MTT, the rxe pfn list): per page absent,
 * read-only or read-write, plus a frame number. Every installed entry also records its
 * generation (a NIC-wide counter bumped at each install) and the virtual time it was
 * installed, so that an access can name the translation it used (DESIGN "Sanitizer").
 *
 * Sparse: entries live in 8-entry chunks of typed arrays, allocated on first install and
 * freed when their last entry is cleared, so a terabyte-sized (or implicit) MR costs memory
 * only for the pages it touched.
 *
 * @example
 *   const pt = new DevicePageTable(2 ** 28);          // a 1 TiB MR of 4 KiB pages
 *   pt.set(123_456_789, 42, PTE_READ_WRITE, 1, 0);    // one chunk allocated
 *   pt.bytes;                                         // under 1 KiB, not 2 GiB
 */

export const DEVICE_PAGE_SHIFT = 12;
export const DEVICE_PAGE_SIZE = 1 << DEVICE_PAGE_SHIFT;

/** Per-page permission: absent, read-only, read-write (rdma B1). */
export const PTE_ABSENT = 0;
export const PTE_READ = 1;
export const PTE_READ_WRITE = 2;
export type PtePerm = typeof PTE_ABSENT | typeof PTE_READ | typeof PTE_READ_WRITE;

/**
 * Entries per chunk. Chunk arithmetic uses division, not shifts: page indices of a huge MR
 * exceed 2^31. Sized by measurement (bench/README.md, implicit.ts): a page touched alone
 * costs its whole chunk, 168 bytes at 8 entries against 672 at 32 (48 MiB less for the
 * implicit benchmark's 100k scattered pages); a dense MR pays a map entry per 8 pages.
 */
const CHUNK_PAGES = 8;
/** Bytes per chunk: perm (1) + frame (4) + generation (8) + installedAt (8) per entry. */
const CHUNK_BYTES = CHUNK_PAGES * (1 + 4 + 8 + 8);

/** What a lookup fills in (a caller-owned scratch object: lookups allocate nothing). */
export interface Translation {
  frame: number;
  perm: number;
  generation: number;
  installedAt: number;
  /** Whether it came from the translation cache rather than a table walk. */
  fromCache: boolean;
}

export function newTranslation(): Translation {
  return { frame: -1, perm: PTE_ABSENT, generation: 0, installedAt: 0, fromCache: false };
}

/**
 * Chunk storage: the entries of chunks live in shared blocks of typed arrays rather than in
 * four small arrays per chunk (four ArrayBuffers, their backing stores and wrappers: some
 * 800 bytes of overhead on 672 of entries, per page when pages are scattered). A chunk is a
 * slot, `block * BLOCK_CHUNKS + offset`; blocks grow from 4 to BLOCK_CHUNKS chunks, so a
 * small MR stays small; slots of freed chunks are reused.
 */
const BLOCK_CHUNKS = 1024;
const FIRST_BLOCK_CHUNKS = 4;

class Block {
  readonly perm: Uint8Array;
  readonly frame: Int32Array;
  readonly generation: Float64Array;
  readonly installedAt: Float64Array;
  /** Present entries per chunk of the block. */
  readonly present: Uint8Array;

  constructor(readonly chunks: number) {
    this.perm = new Uint8Array(chunks * CHUNK_PAGES);
    this.frame = new Int32Array(chunks * CHUNK_PAGES);
    this.generation = new Float64Array(chunks * CHUNK_PAGES);
    this.installedAt = new Float64Array(chunks * CHUNK_PAGES);
    this.present = new Uint8Array(chunks);
  }
}

/** Pages a huge (2 MiB) device entry covers: one MTT entry for a 2 MiB page. */
export const DEVICE_HUGE_PAGES = 512;

/** A huge entry: one translation for DEVICE_HUGE_PAGES pages from `frame` (its first frame). */
interface HugeEntry {
  frame: number;
  perm: number;
  generation: number;
  installedAt: number;
}

export class DevicePageTable {
  /**
   * Huge entries, keyed by index / DEVICE_HUGE_PAGES (aligned in the MR's page index):
   * a device that maps a 2 MiB page with one entry (an MR whose page size is 2 MiB, mlx5
   * with an ODP umem of page_shift 21). One object per 2 MiB, never 512 small entries.
   */
  private readonly huge = new Map<number, HugeEntry>();
  /** Chunk key (index / CHUNK_PAGES) -> slot. */
  private readonly chunks = new Map<number, number>();
  private readonly blocks: Block[] = [];
  /** Slots of freed chunks (their entries are all absent). */
  private readonly freeSlots: number[] = [];
  /** Next never-used offset in the last block. */
  private nextOffset = 0;
  private presentCount = 0;

  /** `pages`: how many pages the MR spans (may be huge; nothing is allocated for it). */
  /** Bumped by every change of an entry: lets an observer (lab inspect) reuse what it read last time. */
  version = 0;

  constructor(readonly pages: number) {}

  /** Pages with a present entry (a huge entry counts its every page). */
  get presentPages(): number {
    return this.presentCount + this.huge.size * DEVICE_HUGE_PAGES;
  }

  /** Huge entries installed. */
  get hugeEntries(): number {
    return this.huge.size;
  }

  /** The huge entry covering `index`, if any. */
  private hugeAt(index: number): HugeEntry | undefined {
    return this.huge.size > 0 ? this.huge.get(Math.floor(index / DEVICE_HUGE_PAGES)) : undefined;
  }

  /**
   * Install (or overwrite) a huge entry for pages [first, first + DEVICE_HUGE_PAGES) from
   * `frame`: `first` must be a multiple of DEVICE_HUGE_PAGES (RangeError otherwise, as for
   * `set`: the NIC checks its commands' arguments first). Small entries under it go.
   */
  setHuge(first: number, frame: number, perm: typeof PTE_READ | typeof PTE_READ_WRITE, generation: number, now: number): void {
    if (!(first >= 0 && first < this.pages) || first % DEVICE_HUGE_PAGES !== 0) throw new RangeError(`huge device entry at page ${first} is not 2 MiB aligned inside [0, ${this.pages})`);
    for (let i = first; i < first + DEVICE_HUGE_PAGES; i += CHUNK_PAGES) {
      if (this.chunks.has(Math.floor(i / CHUNK_PAGES))) for (let j = i; j < i + CHUNK_PAGES; j++) this.clearSmall(j);
    }
    this.huge.set(first / DEVICE_HUGE_PAGES, { frame, perm, generation, installedAt: now });
    this.version++;
  }

  /** Chunks allocated. */
  get chunkCount(): number {
    return this.chunks.size;
  }

  /** Memory held by the entries, in bytes. */
  get bytes(): number {
    return this.chunks.size * CHUNK_BYTES;
  }

  private newSlot(): number {
    const reused = this.freeSlots.pop();
    if (reused !== undefined) return reused;
    let b = this.blocks.length - 1;
    if (b < 0 || this.nextOffset === (this.blocks[b] as Block).chunks) {
      b++;
      this.blocks.push(new Block(Math.min(BLOCK_CHUNKS, FIRST_BLOCK_CHUNKS * 2 ** Math.min(b, 20))));
      this.nextOffset = 0;
    }
    return b * BLOCK_CHUNKS + this.nextOffset++;
  }

  /** The permission of a page (PTE_ABSENT when nothing is installed). */
  perm(index: number): number {
    const h = this.hugeAt(index);
    if (h) return h.perm;
    const slot = this.chunks.get(Math.floor(index / CHUNK_PAGES));
    if (slot === undefined) return PTE_ABSENT;
    return (this.blocks[Math.floor(slot / BLOCK_CHUNKS)] as Block).perm[(slot % BLOCK_CHUNKS) * CHUNK_PAGES + (index % CHUNK_PAGES)] as number;
  }

  /** Fill `out` from the entry at `index`; false (and `out` untouched) when absent. */
  lookup(index: number, out: Translation): boolean {
    const h = this.hugeAt(index);
    if (h) {
      out.perm = h.perm;
      out.frame = h.frame + (index % DEVICE_HUGE_PAGES);
      out.generation = h.generation;
      out.installedAt = h.installedAt;
      out.fromCache = false;
      return true;
    }
    const slot = this.chunks.get(Math.floor(index / CHUNK_PAGES));
    if (slot === undefined) return false;
    const b = this.blocks[Math.floor(slot / BLOCK_CHUNKS)] as Block;
    const i = (slot % BLOCK_CHUNKS) * CHUNK_PAGES + (index % CHUNK_PAGES);
    const perm = b.perm[i] as number;
    if (perm === PTE_ABSENT) return false;
    out.perm = perm;
    out.frame = b.frame[i] as number;
    out.generation = b.generation[i] as number;
    out.installedAt = b.installedAt[i] as number;
    out.fromCache = false;
    return true;
  }

  /** The generation of the entry at `index`, or -1 when absent. */
  generationOf(index: number): number {
    const h = this.hugeAt(index);
    if (h) return h.generation;
    const slot = this.chunks.get(Math.floor(index / CHUNK_PAGES));
    if (slot === undefined) return -1;
    const b = this.blocks[Math.floor(slot / BLOCK_CHUNKS)] as Block;
    const i = (slot % BLOCK_CHUNKS) * CHUNK_PAGES + (index % CHUNK_PAGES);
    return b.perm[i] === PTE_ABSENT ? -1 : (b.generation[i] as number);
  }

  /** The frame of the entry at `index`, or -1 when absent. */
  frameOf(index: number): number {
    const h = this.hugeAt(index);
    if (h) return h.frame + (index % DEVICE_HUGE_PAGES);
    const slot = this.chunks.get(Math.floor(index / CHUNK_PAGES));
    if (slot === undefined) return -1;
    const b = this.blocks[Math.floor(slot / BLOCK_CHUNKS)] as Block;
    const i = (slot % BLOCK_CHUNKS) * CHUNK_PAGES + (index % CHUNK_PAGES);
    return b.perm[i] === PTE_ABSENT ? -1 : (b.frame[i] as number);
  }

  /** Install (or overwrite) an entry. */
  set(index: number, frame: number, perm: typeof PTE_READ | typeof PTE_READ_WRITE, generation: number, now: number): void {
    if (!(index >= 0 && index < this.pages)) throw new RangeError(`device page ${index} outside [0, ${this.pages})`);
    // A small entry inside a huge one replaces it (the MTT holds one size per entry).
    if (this.huge.size > 0 && this.huge.delete(Math.floor(index / DEVICE_HUGE_PAGES))) this.version++;
    const key = Math.floor(index / CHUNK_PAGES);
    let slot = this.chunks.get(key);
    if (slot === undefined) this.chunks.set(key, (slot = this.newSlot()));
    const b = this.blocks[Math.floor(slot / BLOCK_CHUNKS)] as Block;
    const c = slot % BLOCK_CHUNKS;
    const i = c * CHUNK_PAGES + (index % CHUNK_PAGES);
    if (b.perm[i] === PTE_ABSENT) {
      b.present[c]!++;
      this.presentCount++;
    }
    b.perm[i] = perm;
    b.frame[i] = frame;
    b.generation[i] = generation;
    b.installedAt[i] = now;
    this.version++;
  }

  /**
   * Clear an entry; returns whether it was present. Frees the chunk when it empties. A page
   * of a huge entry clears the whole huge entry (a device cannot drop part of one entry).
   */
  clear(index: number): boolean {
    if (this.huge.size > 0 && this.huge.delete(Math.floor(index / DEVICE_HUGE_PAGES))) {
      this.version++;
      return true;
    }
    return this.clearSmall(index);
  }

  private clearSmall(index: number): boolean {
    const key = Math.floor(index / CHUNK_PAGES);
    const slot = this.chunks.get(key);
    if (slot === undefined) return false;
    const b = this.blocks[Math.floor(slot / BLOCK_CHUNKS)] as Block;
    const c = slot % BLOCK_CHUNKS;
    const i = c * CHUNK_PAGES + (index % CHUNK_PAGES);
    if (b.perm[i] === PTE_ABSENT) return false;
    b.perm[i] = PTE_ABSENT;
    b.frame[i] = 0;
    this.version++;
    this.presentCount--;
    if (--b.present[c]! === 0) {
      this.chunks.delete(key);
      this.freeSlots.push(slot);
    }
    return true;
  }

  /** Clear [first, first + count); returns how many were present. Skips empty chunks. */
  clearRange(first: number, count: number): number {
    let cleared = 0;
    if (this.huge.size > 0) {
      // Huge entries the range touches go whole, counted by their pages.
      for (let k = Math.floor(first / DEVICE_HUGE_PAGES); k * DEVICE_HUGE_PAGES < first + count; k++) {
        if (this.huge.delete(k)) {
          cleared += DEVICE_HUGE_PAGES;
          this.version++;
        }
      }
    }
    let index = first;
    const end = first + count;
    while (index < end) {
      const key = Math.floor(index / CHUNK_PAGES);
      const chunkEnd = Math.min(end, (key + 1) * CHUNK_PAGES);
      if (this.chunks.has(key)) {
        for (let i = index; i < chunkEnd; i++) if (this.clearSmall(i)) cleared++;
      }
      index = chunkEnd;
    }
    return cleared;
  }

  /** Visit present entries in ascending page order. */
  forEachPresent(visit: (index: number, frame: number, perm: number, generation: number, installedAt: number) => void): void {
    // Chunks and huge entries never overlap: walk both in order of their first page.
    const items: [number, number][] = [...this.chunks.keys()].map((k) => [k * CHUNK_PAGES, k]);
    for (const k of this.huge.keys()) items.push([k * DEVICE_HUGE_PAGES, -1 - k]);
    items.sort((a, b) => a[0] - b[0]);
    for (const [, key] of items) {
      if (key < 0) {
        const k = -1 - key;
        const h = this.huge.get(k);
        if (!h) continue;
        for (let i = 0; i < DEVICE_HUGE_PAGES; i++) visit(k * DEVICE_HUGE_PAGES + i, h.frame + i, h.perm, h.generation, h.installedAt);
        continue;
      }
      // The chunk may have been freed (and its slot reused) by an earlier visit.
      const slot = this.chunks.get(key);
      if (slot === undefined) continue;
      const b = this.blocks[Math.floor(slot / BLOCK_CHUNKS)] as Block;
      const base = (slot % BLOCK_CHUNKS) * CHUNK_PAGES;
      for (let i = 0; i < CHUNK_PAGES; i++) {
        const perm = b.perm[base + i] as number;
        if (perm !== PTE_ABSENT) visit(key * CHUNK_PAGES + i, b.frame[base + i] as number, perm, b.generation[base + i] as number, b.installedAt[base + i] as number);
      }
    }
  }

}
