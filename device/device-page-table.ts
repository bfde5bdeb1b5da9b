/**
 * A device page table for one MR (the mlx5 MTT, the rxe pfn list): per page absent,
 * read-only or read-write, plus a frame number. Every installed entry also records its
 * generation (a NIC-wide counter bumped at each install) and the virtual time it was
 * installed, so that an access can name the translation it used (DESIGN "Sanitizer").
 *
 * Sparse: entries live in 32-entry chunks of typed arrays, allocated on first install and
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

/** Entries per chunk. Chunk arithmetic uses division, not shifts: page indices of a huge MR exceed 2^31. */
const CHUNK_PAGES = 32;
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

class Chunk {
  readonly perm = new Uint8Array(CHUNK_PAGES);
  readonly frame = new Int32Array(CHUNK_PAGES);
  readonly generation = new Float64Array(CHUNK_PAGES);
  readonly installedAt = new Float64Array(CHUNK_PAGES);
  present = 0;
}

export class DevicePageTable {
  private readonly chunks = new Map<number, Chunk>();
  private presentCount = 0;

  /** `pages`: how many pages the MR spans (may be huge; nothing is allocated for it). */
  constructor(readonly pages: number) {}

  /** Pages with a present entry. */
  get presentPages(): number {
    return this.presentCount;
  }

  /** Chunks allocated. */
  get chunkCount(): number {
    return this.chunks.size;
  }

  /** Memory held by the entries, in bytes. */
  get bytes(): number {
    return this.chunks.size * CHUNK_BYTES;
  }

  /** The permission of a page (PTE_ABSENT when nothing is installed). */
  perm(index: number): number {
    const c = this.chunks.get(Math.floor(index / CHUNK_PAGES));
    return c ? (c.perm[index % CHUNK_PAGES] as number) : PTE_ABSENT;
  }

  /** Fill `out` from the entry at `index`; false (and `out` untouched) when absent. */
  lookup(index: number, out: Translation): boolean {
    const c = this.chunks.get(Math.floor(index / CHUNK_PAGES));
    if (!c) return false;
    const i = index % CHUNK_PAGES;
    const perm = c.perm[i] as number;
    if (perm === PTE_ABSENT) return false;
    out.perm = perm;
    out.frame = c.frame[i] as number;
    out.generation = c.generation[i] as number;
    out.installedAt = c.installedAt[i] as number;
    out.fromCache = false;
    return true;
  }

  /** The generation of the entry at `index`, or -1 when absent. */
  generationOf(index: number): number {
    const c = this.chunks.get(Math.floor(index / CHUNK_PAGES));
    if (!c) return -1;
    const i = index % CHUNK_PAGES;
    return c.perm[i] === PTE_ABSENT ? -1 : (c.generation[i] as number);
  }

  /** The frame of the entry at `index`, or -1 when absent. */
  frameOf(index: number): number {
    const c = this.chunks.get(Math.floor(index / CHUNK_PAGES));
    if (!c) return -1;
    const i = index % CHUNK_PAGES;
    return c.perm[i] === PTE_ABSENT ? -1 : (c.frame[i] as number);
  }

  /** Install (or overwrite) an entry. */
  set(index: number, frame: number, perm: typeof PTE_READ | typeof PTE_READ_WRITE, generation: number, now: number): void {
    if (!(index >= 0 && index < this.pages)) throw new RangeError(`device page ${index} outside [0, ${this.pages})`);
    const key = Math.floor(index / CHUNK_PAGES);
    let c = this.chunks.get(key);
    if (!c) this.chunks.set(key, (c = new Chunk()));
    const i = index % CHUNK_PAGES;
    if (c.perm[i] === PTE_ABSENT) {
      c.present++;
      this.presentCount++;
    }
    c.perm[i] = perm;
    c.frame[i] = frame;
    c.generation[i] = generation;
    c.installedAt[i] = now;
  }

  /** Clear an entry; returns whether it was present. Frees the chunk when it empties. */
  clear(index: number): boolean {
    const key = Math.floor(index / CHUNK_PAGES);
    const c = this.chunks.get(key);
    if (!c) return false;
    const i = index % CHUNK_PAGES;
    if (c.perm[i] === PTE_ABSENT) return false;
    c.perm[i] = PTE_ABSENT;
    c.frame[i] = 0;
    this.presentCount--;
    if (--c.present === 0) this.chunks.delete(key);
    return true;
  }

  /** Clear [first, first + count); returns how many were present. Skips empty chunks. */
  clearRange(first: number, count: number): number {
    let cleared = 0;
    let index = first;
    const end = first + count;
    while (index < end) {
      const key = Math.floor(index / CHUNK_PAGES);
      const chunkEnd = Math.min(end, (key + 1) * CHUNK_PAGES);
      if (this.chunks.has(key)) {
        for (let i = index; i < chunkEnd; i++) if (this.clear(i)) cleared++;
      }
      index = chunkEnd;
    }
    return cleared;
  }

  /** Visit present entries in ascending page order. */
  forEachPresent(visit: (index: number, frame: number, perm: number, generation: number, installedAt: number) => void): void {
    const keys = [...this.chunks.keys()].sort((a, b) => a - b);
    for (const key of keys) {
      const c = this.chunks.get(key) as Chunk;
      for (let i = 0; i < CHUNK_PAGES; i++) {
        const perm = c.perm[i] as number;
        if (perm !== PTE_ABSENT) visit(key * CHUNK_PAGES + i, c.frame[i] as number, perm, c.generation[i] as number, c.installedAt[i] as number);
      }
    }
  }
}
