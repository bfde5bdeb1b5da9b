import { ENOMEM } from './errno.ts';
import { PAGE_SIZE } from './constants.ts';
import type { Simulation } from './sim/index.ts';
import type { MmStruct } from './mm.ts';

/** Page flags (struct page / folio flags), one bit each in `PhysicalMemory.flags`. */
export const PG_DIRTY = 1 << 0;
export const PG_WRITEBACK = 1 << 1;
export const PG_LOCKED = 1 << 2;
export const PG_UPTODATE = 1 << 3;
export const PG_ANON = 1 << 4;
export const PG_SWAPBACKED = 1 << 5;
export const PG_ANON_EXCLUSIVE = 1 << 6;
/** Filesystem private state (buffer heads) attached: dropped from clean pages by reclaim/writeback. */
export const PG_PRIVATE = 1 << 7;
export const PG_LRU = 1 << 8;
export const PG_ACTIVE = 1 << 9;
export const PG_REFERENCED = 1 << 10;
/** MADV_FREE'd anonymous page: reclaim may drop it without swapping if still clean. */
export const PG_LAZYFREE = 1 << 11;
/** In ZONE_MOVABLE (or CMA): not long-term pinnable (rule 62). */
export const PG_MOVABLE_ZONE = 1 << 12;
export const PG_SWAPCACHE = 1 << 13;
/** Allocated (not on the free list). */
export const PG_ALLOCATED = 1 << 14;
/** A KSM page (`folio_test_ksm`): merged, write-protected everywhere, never reused by a write fault. */
export const PG_KSM = 1 << 15;

/** Where a frame is mapped: for reclaim, migration and writeback (the rmap). */
export interface RmapItem {
  mm: MmStruct;
  addr: number;
}

/** GUP_PIN_COUNTING_BIAS: a FOLL_PIN on a small folio adds this to the refcount (rule 55). */
export const GUP_PIN_COUNTING_BIAS = 1024;

/** The shared zero page is frame 0: never freed, never counted by pin or unpin (rule 55). */
export const ZERO_PFN = 0;

/**
 * Physical memory: frame metadata in typed arrays indexed by frame number (not an object
 * per frame), with a folio order per frame (0 today; large folios can come without a
 * redesign). Contents are allocated lazily: a frame whose bytes were never written reads
 * as zeros and costs no memory.
 */
export class PhysicalMemory {
  readonly refcount: Int32Array;
  readonly mapcount: Int32Array;
  /** Exact pin count for large folios (`_pincount`); small folios use the bias instead. */
  readonly pincount: Int32Array;
  readonly flags: Uint32Array;
  readonly order: Uint8Array;
  /** File id of a page-cache page, or -1 (anonymous or free). */
  readonly mappingFile: Int32Array;
  /** Page index in the file, or the swap slot of a swap-cache page. */
  readonly index: Float64Array;
  /** Allocation generation: bumps every time a frame is handed out again. */
  readonly generation: Uint32Array;
  private readonly contents = new Map<number, Uint8Array>();
  private readonly rmap = new Map<number, RmapItem[]>();
  private readonly free: number[] = [];
  private freeHead = 0;
  /** Seeded fault injection: probability that an allocation fails with -ENOMEM. */
  allocFailureRate = 0;
  /** Frames in use (including the zero page). */
  used = 1;
  /**
   * Whether the kernel tracks pins at all (FOLL_PIN and folio_maybe_dma_pinned, 5.7). The
   * kernel sets it from its profile; before that nothing could tell a pinned page.
   */
  pinTracking = true;

  constructor(private readonly sim: Simulation, readonly frames: number, readonly reuseFreedFirst: boolean, readonly node = 'node0') {
    this.refcount = new Int32Array(frames);
    this.mapcount = new Int32Array(frames);
    this.pincount = new Int32Array(frames);
    this.flags = new Uint32Array(frames);
    this.order = new Uint8Array(frames);
    this.mappingFile = new Int32Array(frames).fill(-1);
    this.index = new Float64Array(frames);
    this.generation = new Uint32Array(frames);
    this.flags[ZERO_PFN] = PG_ALLOCATED | PG_UPTODATE;
    this.refcount[ZERO_PFN] = 1;
    // Free list in ascending order: with FIFO reuse the lowest never-used frame comes first.
    for (let f = frames - 1; f >= 1; f--) this.free.push(f);
  }

  get freeFrames(): number {
    return this.free.length - (this.reuseFreedFirst ? 0 : this.freeHead);
  }

  /** alloc_page(): a zeroed frame with refcount 1, or -ENOMEM. */
  allocPage(): number {
    if (this.allocFailureRate > 0 && this.sim.rng('fault-inject:alloc').chance(this.allocFailureRate)) return -ENOMEM;
    let f: number | undefined;
    if (this.reuseFreedFirst) f = this.free.pop();
    else if (this.freeHead < this.free.length) {
      // FIFO: oldest freed first. Compact the array now and then so it does not grow forever.
      f = this.free[this.freeHead++];
      if (this.freeHead > 4096 && this.freeHead * 2 > this.free.length) {
        this.free.splice(0, this.freeHead);
        this.freeHead = 0;
      }
    }
    if (f === undefined) return -ENOMEM;
    this.refcount[f] = 1;
    this.mapcount[f] = 0;
    this.pincount[f] = 0;
    this.flags[f] = PG_ALLOCATED | PG_UPTODATE | (this.flags[f]! & PG_MOVABLE_ZONE);
    this.mappingFile[f] = -1;
    this.index[f] = 0;
    this.generation[f]!++;
    this.used++;
    this.sim.emit({ type: 'page-alloc', frame: f, node: this.node });
    return f;
  }

  isAllocated(f: number): boolean {
    return (this.flags[f]! & PG_ALLOCATED) !== 0;
  }

  /** get_page / folio_get. */
  get(f: number, n = 1): void {
    if (f === ZERO_PFN) return;
    this.refcount[f]! += n;
  }

  /** put_page / folio_put: the last reference frees the frame. */
  put(f: number, n = 1): void {
    if (f === ZERO_PFN) return;
    const r = (this.refcount[f]! -= n);
    if (r < 0) throw new Error(`page refcount underflow on frame ${f}`);
    if (r === 0) this.freeFrame(f);
  }

  private freeFrame(f: number): void {
    this.flags[f] = this.flags[f]! & PG_MOVABLE_ZONE;
    this.mappingFile[f] = -1;
    this.mapcount[f] = 0;
    this.pincount[f] = 0;
    this.contents.delete(f);
    this.rmap.delete(f);
    this.free.push(f);
    this.used--;
    this.sim.emit({ type: 'page-free', frame: f, node: this.node });
  }

  has(f: number, flag: number): boolean {
    return (this.flags[f]! & flag) !== 0;
  }

  set(f: number, flag: number): void {
    this.flags[f]! |= flag;
  }

  clear(f: number, flag: number): void {
    this.flags[f]! &= ~flag;
  }

  // ---- contents ---------------------------------------------------------------------

  read(f: number, offset: number, length: number): Uint8Array {
    const page = this.contents.get(f);
    const out = new Uint8Array(length);
    if (page) out.set(page.subarray(offset, offset + length));
    return out;
  }

  write(f: number, offset: number, bytes: Uint8Array): void {
    // A write to the zero page (frame 0) corrupts it for everyone, as on real hardware;
    // the CPU paths never do it (they COW), so only a buggy device mapping can.
    let page = this.contents.get(f);
    if (!page) this.contents.set(f, (page = new Uint8Array(PAGE_SIZE)));
    page.set(bytes, offset);
  }

  /** The whole page, or undefined when it is all zeros and was never written. */
  pageBytes(f: number): Uint8Array | undefined {
    return this.contents.get(f);
  }

  copyPage(dst: number, src: number): void {
    const page = this.contents.get(src);
    if (page) this.contents.set(dst, page.slice());
    else this.contents.delete(dst);
  }

  zeroPage(f: number): void {
    this.contents.delete(f);
  }

  /** Bytes of page contents actually allocated (for memory benchmarks). */
  get contentPages(): number {
    return this.contents.size;
  }

  // ---- rmap -------------------------------------------------------------------------

  /** Record a new PTE mapping of f (mapcount += 1). The zero page is not tracked. */
  rmapAdd(f: number, mm: MmStruct, addr: number): void {
    if (f === ZERO_PFN) return;
    let list = this.rmap.get(f);
    if (!list) this.rmap.set(f, (list = []));
    list.push({ mm, addr });
    this.mapcount[f]!++;
  }

  rmapRemove(f: number, mm: MmStruct, addr: number): void {
    if (f === ZERO_PFN) return;
    const list = this.rmap.get(f);
    if (!list) return;
    const i = list.findIndex((r) => r.mm === mm && r.addr === addr);
    if (i < 0) return;
    list.splice(i, 1);
    if (list.length === 0) this.rmap.delete(f);
    this.mapcount[f]!--;
  }

  mappingsOf(f: number): readonly RmapItem[] {
    return this.rmap.get(f) ?? [];
  }

  // ---- pins (rules 55, 56) ------------------------------------------------------------

  /**
   * folio_maybe_dma_pinned: exact for large folios, refcount >= bias for small (rule 56).
   * Always false on a kernel without pin tracking (before 5.7 no caller could ask).
   */
  maybeDmaPinned(f: number): boolean {
    if (f === ZERO_PFN || !this.pinTracking) return false;
    if (this.order[f]! > 0) return this.pincount[f]! > 0;
    return this.refcount[f]! >= GUP_PIN_COUNTING_BIAS;
  }
}
