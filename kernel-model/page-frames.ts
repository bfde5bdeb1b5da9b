import { ENOMEM } from './errno.ts';
import { PAGE_SIZE } from './constants.ts';
import type { Simulation } from './sim/index.ts';
import type { MmStruct } from './mm.ts';

/** What `readShared` views for a page never written: all zeros, never written itself. */
const NEVER_WRITTEN = new Uint8Array(PAGE_SIZE);

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
/** A hugetlb pool page (on the head): freed back to the pool, never to the allocator (hugetlb.ts). */
export const PG_HUGETLB = 1 << 16;
/**
 * A ZONE_DEVICE page the CPU can address (here MEMORY_DEVICE_COHERENT, memremap.ts): a
 * frame carved out of the allocator for a pgmap. Its last reference goes to the pgmap's
 * page_free (free_zone_device_folio, mm/memremap.c), never to the allocator; it is never
 * on the LRU (mm/migrate_device.c: "ZONE_DEVICE folios are not on LRU").
 */
export const PG_ZONE_DEVICE = 1 << 17;

/** Where a frame is mapped: for reclaim, migration and writeback (the rmap). */
export interface RmapItem {
  mm: MmStruct;
  addr: number;
  /**
   * A PMD mapping of a whole large folio (kept on the head frame only, so a PMD-mapped THP
   * costs one rmap item, not 512): `addr` is where the head is mapped.
   */
  pmd?: boolean;
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
  /**
   * compound_head: the head frame of the large folio a tail frame belongs to, 0 for a head
   * or a small folio (frame 0 is the zero page, never a head). Refcount, pincount and the
   * LRU are the folio's, kept on the head; mapcount and flags stay per page.
   */
  readonly headOf: Int32Array;
  /** File id of a page-cache page, or -1 (anonymous or free). */
  readonly mappingFile: Int32Array;
  /** Page index in the file, or the swap slot of a swap-cache page. */
  readonly index: Float64Array;
  /** Allocation generation: bumps every time a frame is handed out again. */
  readonly generation: Uint32Array;
  private readonly contents = new Map<number, Uint8Array>();
  /**
   * 1 while a frame's contents buffer is lent out by `readShared`: the next write copies
   * the page first (copy on write), so what was lent never changes.
   */
  private readonly lent: Uint8Array;
  private readonly rmap = new Map<number, RmapItem[]>();
  private readonly free: number[] = [];
  private freeHead = 0;
  /** Seeded fault injection: probability that an allocation fails with -ENOMEM. */
  allocFailureRate = 0;
  /** Frames in use (including the zero page). */
  used = 1;
  /** free_huge_folio: where a hugetlb page goes when its last reference is dropped. */
  hugetlbFree: ((head: number) => void) | null = null;
  /** free_zone_device_folio -> pgmap->ops->page_free: where a PG_ZONE_DEVICE page goes at refcount 0 (memremap.ts). */
  zoneDeviceFree: ((frame: number) => void) | null = null;
  /** Free frames (frames taken by a large allocation may still sit in `free`: skipped there). */
  private nFree: number;
  /** Where the next search for a free aligned block starts (allocFolio). */
  private blockCursor = 0;
  /**
   * Whether the kernel tracks pins at all (FOLL_PIN and folio_maybe_dma_pinned, 5.7). The
   * kernel sets it from its profile; before that nothing could tell a pinned page.
   */
  pinTracking = true;

  constructor(private readonly sim: Simulation, readonly frames: number, readonly reuseFreedFirst: boolean, readonly node = 'node0') {
    this.refcount = new Int32Array(frames);
    this.lent = new Uint8Array(frames);
    this.mapcount = new Int32Array(frames);
    this.pincount = new Int32Array(frames);
    this.flags = new Uint32Array(frames);
    this.order = new Uint8Array(frames);
    this.headOf = new Int32Array(frames);
    this.mappingFile = new Int32Array(frames).fill(-1);
    this.index = new Float64Array(frames);
    this.generation = new Uint32Array(frames);
    this.flags[ZERO_PFN] = PG_ALLOCATED | PG_UPTODATE;
    this.refcount[ZERO_PFN] = 1;
    // Free list in ascending order: with FIFO reuse the lowest never-used frame comes first.
    for (let f = frames - 1; f >= 1; f--) this.free.push(f);
    this.nFree = frames - 1;
  }

  get freeFrames(): number {
    return this.nFree;
  }

  /** compound_head / page_folio: the head frame of f's folio (f itself for a small folio). */
  folioHead(f: number): number {
    const h = this.headOf[f]!;
    return h === 0 ? f : h;
  }

  /** folio_nr_pages. */
  folioNrPages(f: number): number {
    return 1 << this.order[this.folioHead(f)]!;
  }

  /** folio_test_large. */
  isLarge(f: number): boolean {
    return this.order[f]! > 0;
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
    // A frame a large allocation took while it sat on the list: skip it.
    if (this.flags[f]! & PG_ALLOCATED) return this.allocPageRetry();
    this.nFree--;
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

  private allocPageRetry(): number {
    const rate = this.allocFailureRate;
    this.allocFailureRate = 0;
    try {
      return this.allocPage();
    } finally {
      this.allocFailureRate = rate;
    }
  }

  /**
   * alloc_pages(order) for a large folio (a THP or a hugetlb page): 2^order free frames
   * aligned to their size, the head with refcount 1, tails pointing at it. Frames are
   * found by a search for a free aligned block (there is no buddy allocator here), so a
   * fragmented memory fails with -ENOMEM, as a THP allocation does without compaction.
   */
  allocFolio(order: number): number {
    if (order === 0) return this.allocPage();
    if (this.allocFailureRate > 0 && this.sim.rng('fault-inject:alloc').chance(this.allocFailureRate)) return -ENOMEM;
    const n = 1 << order;
    const blocks = Math.floor(this.frames / n);
    if (blocks < 2 || this.nFree < n) return -ENOMEM;
    for (let tried = 0; tried < blocks; tried++) {
      const b = 1 + ((this.blockCursor + tried) % (blocks - 1));
      const head = b * n;
      let free = true;
      for (let f = head; f < head + n; f++) {
        if (this.flags[f]! & (PG_ALLOCATED | PG_ZONE_DEVICE)) {
          free = false;
          break;
        }
      }
      if (!free) continue;
      this.blockCursor = b;
      for (let f = head; f < head + n; f++) {
        this.refcount[f] = f === head ? 1 : 0;
        this.mapcount[f] = 0;
        this.pincount[f] = 0;
        this.flags[f] = PG_ALLOCATED | PG_UPTODATE | (this.flags[f]! & PG_MOVABLE_ZONE);
        this.mappingFile[f] = -1;
        this.index[f] = 0;
        this.order[f] = order;
        this.headOf[f] = f === head ? 0 : head;
        this.generation[f]!++;
        this.sim.emit({ type: 'page-alloc', frame: f, node: this.node });
      }
      this.used += n;
      this.nFree -= n;
      return head;
    }
    return -ENOMEM;
  }

  /**
   * split_huge_page's bookkeeping: the folio of `head` becomes 2^order small folios, each
   * with the references `refs(frame)` says it holds (its mappings, its share of the
   * caller's); a page left with none is freed. The caller checked can_split_folio.
   */
  splitFolio(head: number, refs: (f: number) => number): void {
    const n = 1 << this.order[head]!;
    for (let f = head; f < head + n; f++) {
      this.order[f] = 0;
      this.headOf[f] = 0;
      this.pincount[f] = 0;
      this.refcount[f] = refs(f);
    }
    for (let f = head; f < head + n; f++) if (this.refcount[f] === 0) this.freeFrame(f);
  }

  isAllocated(f: number): boolean {
    return (this.flags[f]! & PG_ALLOCATED) !== 0;
  }

  /** get_page / folio_get: the folio's reference (a tail's goes to its head). */
  get(f: number, n = 1): void {
    if (f === ZERO_PFN) return;
    this.refcount[this.folioHead(f)]! += n;
  }

  /** put_page / folio_put: the last reference frees the folio (every frame of a large one). */
  put(f: number, n = 1): void {
    if (f === ZERO_PFN) return;
    const h = this.folioHead(f);
    const r = (this.refcount[h]! -= n);
    if (r < 0) throw new Error(`page refcount underflow on frame ${f}`);
    if (r === 0) {
      const order = this.order[h]!;
      if (order > 0 && this.flags[h]! & PG_HUGETLB && this.hugetlbFree) {
        for (let t = h; t < h + (1 << order); t++) {
          this.flags[t] = PG_ALLOCATED | PG_UPTODATE | (this.flags[t]! & PG_MOVABLE_ZONE) | (t === h ? PG_HUGETLB : 0);
          this.mapcount[t] = 0;
          this.rmap.delete(t);
        }
        this.pincount[h] = 0;
        this.hugetlbFree(h);
      } else if (order === 0 && this.flags[h]! & PG_ZONE_DEVICE) this.freeZoneDevicePage(h);
      else if (order === 0) this.freeFrame(h);
      else {
        for (let t = h; t < h + (1 << order); t++) {
          this.order[t] = 0;
          this.headOf[t] = 0;
          this.freeFrame(t);
        }
      }
    }
  }

  /** folio_ref_count: the folio's references, read through any of its frames. */
  folioRefCount(f: number): number {
    return this.refcount[this.folioHead(f)]!;
  }

  private freeFrame(f: number): void {
    this.flags[f] = this.flags[f]! & PG_MOVABLE_ZONE;
    this.mappingFile[f] = -1;
    this.mapcount[f] = 0;
    this.pincount[f] = 0;
    this.contents.delete(f);
    this.rmap.delete(f);
    this.free.push(f);
    this.nFree++;
    this.used--;
    this.sim.emit({ type: 'page-free', frame: f, node: this.node });
  }

  /**
   * free_zone_device_folio (mm/memremap.c): the page's state is cleared (mapping, the
   * anon-exclusive bit) and it goes to its pgmap's page_free, not to the allocator. It
   * reads as free (not PG_ALLOCATED) until the driver takes it again (zoneDevicePageInit).
   */
  private freeZoneDevicePage(f: number): void {
    this.flags[f] = PG_ZONE_DEVICE;
    this.mappingFile[f] = -1;
    this.mapcount[f] = 0;
    this.pincount[f] = 0;
    this.contents.delete(f);
    this.rmap.delete(f);
    this.used--;
    this.sim.emit({ type: 'page-free', frame: f, node: this.node });
    this.zoneDeviceFree?.(f);
  }

  /**
   * Carve `npages` contiguous free frames out of the allocator for a device-coherent pgmap
   * (memremap_pages of MEMORY_DEVICE_COHERENT: the range becomes ZONE_DEVICE, its struct
   * pages start with refcount 0, memmap_init_zone_device). Assumed: the model has no
   * separate device address range, so the device's memory is taken from the top of
   * system memory, as lib/test_hmm.c takes a range reserved at boot (spm_addr_dev0/1).
   * Returns the first frame, or -ENOMEM when no such run is free.
   */
  reserveZoneDevice(npages: number): number {
    if (!Number.isInteger(npages) || npages <= 0 || npages > this.nFree) return -ENOMEM;
    let run = 0;
    let first = -1;
    for (let f = this.frames - 1; f >= 1; f--) {
      if (this.flags[f]! & (PG_ALLOCATED | PG_ZONE_DEVICE)) {
        run = 0;
        continue;
      }
      if (++run === npages) {
        first = f;
        break;
      }
    }
    if (first < 0) return -ENOMEM;
    for (let f = first; f < first + npages; f++) {
      this.flags[f] = PG_ZONE_DEVICE;
      this.refcount[f] = 0;
      this.mapcount[f] = 0;
      this.pincount[f] = 0;
      this.mappingFile[f] = -1;
      this.contents.delete(f);
    }
    // Off the free list for good (kept in order; the FIFO head restarts at 0).
    let w = 0;
    for (let r = this.freeHead; r < this.free.length; r++) {
      const f = this.free[r]!;
      if (f >= first && f < first + npages) continue;
      this.free[w++] = f;
    }
    this.free.length = w;
    this.freeHead = 0;
    this.nFree -= npages;
    return first;
  }

  /** zone_device_page_init on a PG_ZONE_DEVICE frame: one reference, locked, in use. */
  zoneDevicePageInit(f: number): void {
    this.refcount[f] = 1;
    this.mapcount[f] = 0;
    this.pincount[f] = 0;
    this.flags[f] = PG_ALLOCATED | PG_ZONE_DEVICE | PG_UPTODATE | PG_LOCKED;
    this.mappingFile[f] = -1;
    this.index[f] = 0;
    this.generation[f]!++;
    this.used++;
    this.sim.emit({ type: 'page-alloc', frame: f, node: this.node });
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

  /**
   * `length` bytes at `offset` as a snapshot that costs no copy: a view of the page's
   * buffer, which the next write of the page replaces rather than changes (see `lent`).
   * For the device's reads, a packet's payload gathered from memory, millions in a run
   * (a copy each was 15% of the traffic benchmark's CPU, bench/README.md). The caller must
   * not write into it.
   */
  readShared(f: number, offset: number, length: number): Uint8Array {
    const page = this.contents.get(f);
    if (!page) return NEVER_WRITTEN.subarray(offset, offset + length);
    this.lent[f] = 1;
    return page.subarray(offset, offset + length);
  }

  write(f: number, offset: number, bytes: Uint8Array): void {
    // A write to the zero page (frame 0) corrupts it for everyone, as on real hardware;
    // the CPU paths never do it (they COW), so only a buggy device mapping can.
    let page = this.contents.get(f);
    if (!page || this.lent[f] === 1) {
      const fresh = new Uint8Array(PAGE_SIZE);
      if (page) fresh.set(page);
      this.contents.set(f, (page = fresh));
      this.lent[f] = 0;
    }
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
    this.lent[dst] = 0;
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
    const i = list ? list.findIndex((r) => r.mm === mm && r.addr === addr && !r.pmd) : -1;
    if (i < 0 || !list) {
      // A page of a PMD mapping whose PMD the page table split on its own: the PMD item
      // becomes per-page items (as __split_huge_pmd_locked leaves PTE mappings), this one gone.
      const h = this.folioHead(f);
      const pmdAddr = addr - (f - h) * PAGE_SIZE;
      if (h !== f || this.order[h]! > 0) {
        if (this.rmapPmdToPtes(h, mm, pmdAddr)) this.rmapRemove(f, mm, addr);
      }
      return;
    }
    list.splice(i, 1);
    if (list.length === 0) this.rmap.delete(f);
    this.mapcount[f]!--;
  }

  /**
   * A PMD mapping of the large folio `head` at `addr` (page_add_anon_rmap with RMAP_COMPOUND):
   * one rmap item on the head, and every page's mapcount up by one (page_mapcount counts
   * the entire mapping for each page).
   */
  rmapAddPmd(head: number, mm: MmStruct, addr: number): void {
    let list = this.rmap.get(head);
    if (!list) this.rmap.set(head, (list = []));
    list.push({ mm, addr, pmd: true });
    const n = 1 << this.order[head]!;
    for (let f = head; f < head + n; f++) this.mapcount[f]!++;
  }

  /** Take `mm`'s PMD rmap item at `addr` off the head page's list; false when there is none. */
  private removePmdItem(head: number, mm: MmStruct, addr: number): boolean {
    const list = this.rmap.get(head);
    const i = list ? list.findIndex((r) => r.mm === mm && r.addr === addr && r.pmd) : -1;
    if (i < 0 || !list) return false;
    list.splice(i, 1);
    if (list.length === 0) this.rmap.delete(head);
    return true;
  }

  /** The PMD mapping goes (zap_huge_pmd): every page's mapcount down by one. */
  rmapRemovePmd(head: number, mm: MmStruct, addr: number): boolean {
    if (!this.removePmdItem(head, mm, addr)) return false;
    const n = 1 << this.order[head]!;
    for (let f = head; f < head + n; f++) this.mapcount[f]!--;
    return true;
  }

  /** __split_huge_pmd_locked's rmap side: the PMD item becomes one PTE item per page. */
  rmapPmdToPtes(head: number, mm: MmStruct, addr: number): boolean {
    if (!this.removePmdItem(head, mm, addr)) return false;
    const n = 1 << this.order[head]!;
    for (let f = head; f < head + n; f++) {
      let l = this.rmap.get(f);
      if (!l) this.rmap.set(f, (l = []));
      l.push({ mm, addr: addr + (f - head) * PAGE_SIZE });
    }
    return true;
  }

  /** Where f is mapped, per page: its PTE mappings and, for a large folio, the PMD mappings. */
  mappingsOf(f: number): readonly RmapItem[] {
    const own = this.rmap.get(f);
    const h = this.folioHead(f);
    if (this.order[h] === 0) return own ?? [];
    const pmds = (this.rmap.get(h) ?? []).filter((r) => r.pmd);
    if (pmds.length === 0) return own ?? [];
    const out = (own ?? []).filter((r) => !r.pmd);
    for (const r of pmds) out.push({ mm: r.mm, addr: r.addr + (f - h) * PAGE_SIZE });
    return out;
  }

  /** The PMD mappings of a large folio (on its head). */
  pmdMappingsOf(head: number): readonly RmapItem[] {
    return (this.rmap.get(head) ?? []).filter((r) => r.pmd);
  }

  // ---- pins (rules 55, 56) ------------------------------------------------------------

  /**
   * folio_maybe_dma_pinned: exact for large folios, refcount >= bias for small (rule 56).
   * Always false on a kernel without pin tracking (before 5.7 no caller could ask).
   */
  maybeDmaPinned(f: number): boolean {
    if (f === ZERO_PFN || !this.pinTracking) return false;
    const h = this.folioHead(f);
    if (this.order[h]! > 0) return this.pincount[h]! > 0;
    return this.refcount[h]! >= GUP_PIN_COUNTING_BIAS;
  }

  /**
   * try_grab_folio(FOLL_PIN) (mm/gup.c, 5.7 47e29d32afba): a large folio gets one reference
   * and one exact `_pincount`; a small one GUP_PIN_COUNTING_BIAS references (rule 55).
   */
  pin(f: number): void {
    if (f === ZERO_PFN) return;
    const h = this.folioHead(f);
    if (this.order[h]! > 0) {
      this.refcount[h]!++;
      this.pincount[h]!++;
    } else this.get(h, GUP_PIN_COUNTING_BIAS);
  }

  /** unpin_user_page / gup_put_folio(FOLL_PIN): undo `pin`. */
  unpin(f: number): void {
    if (f === ZERO_PFN) return;
    const h = this.folioHead(f);
    if (this.order[h]! > 0) {
      this.pincount[h]!--;
      this.put(h);
    } else this.put(h, GUP_PIN_COUNTING_BIAS);
  }

  /** folio_maybe_dma_pinned's exact count for a large folio (0 for a small one). */
  folioPincount(f: number): number {
    const h = this.folioHead(f);
    return this.order[h]! > 0 ? this.pincount[h]! : 0;
  }
}
