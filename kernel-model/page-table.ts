/**
 * PTE encoding: packed numbers `frame * 512 + bits`, 0 meaning none. A swap entry keeps its
 * slot in the frame field; a migration entry keeps the frame being migrated.
 */
export const PTE_PRESENT = 1;
export const PTE_WRITE = 2;
export const PTE_ACCESSED = 4;
export const PTE_DIRTY = 8;
/** Non-present swap entry: the frame field is a swap slot. */
export const PTE_SWAP = 16;
/** Present but inaccessible (PROT_NONE / NUMA hint): hmm reports it as not valid (rule 46). */
export const PTE_PROTNONE = 32;
/**
 * Non-present migration entry (include/linux/swapops.h, make_{readable,writable}_migration_entry):
 * the frame field is the folio under migration, PTE_WRITE says whether the entry is a
 * writable one, PTE_ACCESSED / PTE_DIRTY the young and dirty bits it remembers.
 */
export const PTE_MIGRATION = 64;
/**
 * Non-present device-private entry (include/linux/swapops.h,
 * make_{readable,writable}_device_private_entry): the frame field is the device page's pfn
 * (memremap.ts, above every system frame), PTE_WRITE says whether the entry is a writable
 * one. A CPU access faults into the pgmap's migrate_to_ram (mm/memory.c do_swap_page).
 */
export const PTE_DEVICE_PRIVATE = 128;
/**
 * Non-present device-exclusive entry (mm/rmap.c make_device_exclusive,
 * make_device_exclusive_entry): the frame field is the system page a device holds for
 * atomic access. As since 6.15 it keeps the page's mapping (rmap) and reference; a CPU
 * access restores the PTE (mm/memory.c remove_device_exclusive_entry).
 */
export const PTE_DEVICE_EXCLUSIVE = 256;

const BITS = 512;

export const pteFrame = (pte: number): number => Math.floor(pte / BITS);
export const pteFlags = (pte: number): number => pte % BITS;
export const makePte = (frame: number, flags: number): number => frame * BITS + flags;
export const ptePresent = (pte: number): boolean => (pte % BITS & PTE_PRESENT) !== 0;
export const pteWrite = (pte: number): boolean => (pte % BITS & PTE_WRITE) !== 0;
export const pteHas = (pte: number, flag: number): boolean => (pte % BITS & flag) !== 0;
export const isMigrationEntry = (pte: number): boolean => (pte % BITS & PTE_MIGRATION) !== 0;
export const makeMigrationEntry = (frame: number, flags: number): number =>
  makePte(frame, PTE_MIGRATION | (flags & (PTE_WRITE | PTE_ACCESSED | PTE_DIRTY)));
export const isDevicePrivateEntry = (pte: number): boolean => (pte % BITS & PTE_DEVICE_PRIVATE) !== 0;
export const isDeviceExclusiveEntry = (pte: number): boolean => (pte % BITS & PTE_DEVICE_EXCLUSIVE) !== 0;
export const makeDevicePrivateEntry = (pfn: number, writable: boolean): number =>
  makePte(pfn, PTE_DEVICE_PRIVATE | (writable ? PTE_WRITE : 0));
export const pteWith = (pte: number, set: number, clear = 0): number =>
  makePte(pteFrame(pte), (pteFlags(pte) | set) & ~clear);

/**
 * Entries per leaf: small, so a page touched alone in a huge range costs little (64 bytes).
 * Sized by measurement (bench/README.md, implicit.ts): 8 rather than 32 took 19 MiB off
 * the 100k scattered pages of the implicit ODP benchmark; a dense range pays one map
 * entry per 8 pages instead of per 32.
 */
const LEAF = 8;
/** Pages per 2 MiB PMD slot. */
const PMD_PAGES = 512;
/** Pages per 1 GiB PUD slot. */
const PUD_PAGES = 512 * 512;
/** Leaves per block of entries (256 KiB), and in the first block (then doubling). */
const BLOCK_LEAVES = 1024;
const FIRST_BLOCK_LEAVES = 4;
/** Range walks longer than this many leaves use the sorted leaf index instead. */
const DIRECT_WALK_LEAVES = 65_536;

/**
 * A process page table. Leaves of LEAF entries in a map keyed by vpn / LEAF, so the table
 * costs memory only near pages that were touched (a lone page in a 128 TiB mapping costs
 * one small leaf), and a walk over a range visits only the leaves that exist: directly
 * for short ranges, through a lazily sorted index of leaf keys for huge ones (exit, a
 * 128 TiB munmap). Leaves are never freed, as page-table pages outlive a zap in Linux;
 * whether any leaf exists under a 1 GiB slot is what mprotect's PROTECTION_VMA range
 * depends on (rule 21h).
 */
export class PageTable {
  /**
   * Leaf key (vpn / LEAF) -> where its entries start in `blocks`: leaves are cut from
   * shared blocks of entries (growing from 4 to BLOCK_LEAVES leaves) rather than being an
   * array each, which would add an ArrayBuffer, its backing store and a wrapper, some 200
   * bytes, to the 256 of a leaf touched once.
   */
  private readonly leaves = new Map<number, number>();
  private readonly blocks: Float64Array[] = [];
  private nextOffset = 0;
  private sortedKeys: number[] | null = [];
  private readonly pudLeaves = new Map<number, number>();
  private readonly pmdLeaves = new Map<number, number>();
  /**
   * Huge PMD leaves (a PMD-mapped THP or a hugetlb page): PMD slot (vpn / 512) -> an entry
   * in the PTE encoding whose frame is the folio's head. One map entry per 2 MiB, never
   * 512 PTEs: `get` and the walks derive each page's entry from it. A slot is either huge
   * or a table of PTEs, as in Linux.
   */
  private readonly huge = new Map<number, number>();
  /**
   * Called when a PTE-level change lands under a huge PMD that its caller did not split
   * first: the table splits it itself (no notifier). Kernel paths split with
   * __split_huge_pmd (huge-memory.ts) before they do that; the hook lets the kernel trace it.
   */
  onImplicitSplit: ((pmdSlot: number) => void) | null = null;
  /** Non-zero leaf entries (present or swap): a process's RSS plus swap entries. */
  entries = 0;
  /** Bumped by every change of an entry: lets an observer (lab inspect) reuse what it read last time. */
  version = 0;

  get(vpn: number): number {
    if (this.huge.size > 0) {
      const h = this.huge.get(Math.floor(vpn / PMD_PAGES));
      if (h !== undefined) return makePte(pteFrame(h) + (vpn % PMD_PAGES), pteFlags(h));
    }
    const slot = this.leaves.get(Math.floor(vpn / LEAF));
    if (slot === undefined) return 0;
    return (this.blocks[Math.floor(slot / BLOCK_LEAVES)] as Float64Array)[(slot % BLOCK_LEAVES) * LEAF + (vpn % LEAF)] as number;
  }

  private newLeaf(): number {
    let b = this.blocks.length - 1;
    if (b < 0 || this.nextOffset * LEAF === (this.blocks[b] as Float64Array).length) {
      b++;
      this.blocks.push(new Float64Array(Math.min(BLOCK_LEAVES, FIRST_BLOCK_LEAVES * 2 ** Math.min(b, 20)) * LEAF));
      this.nextOffset = 0;
    }
    return b * BLOCK_LEAVES + this.nextOffset++;
  }

  set(vpn: number, pte: number): void {
    if (this.huge.size > 0) {
      const pmd = Math.floor(vpn / PMD_PAGES);
      const h = this.huge.get(pmd);
      if (h !== undefined) {
        // pmd_mkyoung / pmd_mkdirty / pmdp_test_and_clear_young (touch_pmd): a change of
        // only the accessed and dirty bits of a page lands on the huge entry itself.
        const cur = makePte(pteFrame(h) + (vpn % PMD_PAGES), pteFlags(h));
        if (pte !== 0 && pteFrame(pte) === pteFrame(cur) && ((pteFlags(pte) ^ pteFlags(cur)) & ~(PTE_ACCESSED | PTE_DIRTY)) === 0) {
          const next = makePte(pteFrame(h), pteFlags(pte));
          if (next !== h) {
            this.huge.set(pmd, next);
            this.version++;
          }
          return;
        }
        this.splitPmdEntries(pmd);
        this.onImplicitSplit?.(pmd);
      }
    }
    const key = Math.floor(vpn / LEAF);
    let slot = this.leaves.get(key);
    if (slot === undefined) {
      if (pte === 0) return;
      slot = this.newLeaf();
      this.leaves.set(key, slot);
      this.sortedKeys = null;
      const pud = Math.floor(vpn / PUD_PAGES);
      this.pudLeaves.set(pud, (this.pudLeaves.get(pud) ?? 0) + 1);
      const pmd = Math.floor(vpn / PMD_PAGES);
      this.pmdLeaves.set(pmd, (this.pmdLeaves.get(pmd) ?? 0) + 1);
    }
    const l = this.blocks[Math.floor(slot / BLOCK_LEAVES)] as Float64Array;
    const i = (slot % BLOCK_LEAVES) * LEAF + (vpn % LEAF);
    const old = l[i] as number;
    if (old === 0 && pte !== 0) this.entries++;
    else if (old !== 0 && pte === 0) this.entries--;
    if (old !== pte) this.version++;
    l[i] = pte;
  }

  clear(vpn: number): number {
    if (this.huge.size > 0) {
      const pmd = Math.floor(vpn / PMD_PAGES);
      if (this.huge.has(pmd)) {
        this.splitPmdEntries(pmd);
        this.onImplicitSplit?.(pmd);
      }
    }
    const slot = this.leaves.get(Math.floor(vpn / LEAF));
    if (slot === undefined) return 0;
    const l = this.blocks[Math.floor(slot / BLOCK_LEAVES)] as Float64Array;
    const i = (slot % BLOCK_LEAVES) * LEAF + (vpn % LEAF);
    const old = l[i] as number;
    if (old !== 0) {
      l[i] = 0;
      this.entries--;
      this.version++;
    }
    return old;
  }

  // ---- huge PMD entries ---------------------------------------------------------------

  /** The huge PMD entry of vpn's 2 MiB slot (frame = the folio's head), or 0. */
  getPmd(vpn: number): number {
    return this.huge.size > 0 ? this.huge.get(Math.floor(vpn / PMD_PAGES)) ?? 0 : 0;
  }

  /** pmd_trans_huge / pmd_leaf: is vpn's slot mapped by a huge entry? */
  pmdHuge(vpn: number): boolean {
    return this.huge.size > 0 && this.huge.has(Math.floor(vpn / PMD_PAGES));
  }

  /** Install (entry != 0) or remove (0) the huge entry of vpn's slot; the slot's PTEs must be none. */
  setPmd(vpn: number, entry: number): void {
    const pmd = Math.floor(vpn / PMD_PAGES);
    const old = this.huge.get(pmd);
    if (entry === 0) {
      if (old === undefined) return;
      this.huge.delete(pmd);
      this.entries -= PMD_PAGES;
      this.version++;
      return;
    }
    if (old === undefined) this.entries += PMD_PAGES;
    if (old !== entry) this.version++;
    this.huge.set(pmd, entry);
  }

  /**
   * __split_huge_pmd_locked's page-table side: the huge entry becomes 512 PTEs carrying its
   * flags, each mapping its page of the folio. No notification: the caller sent it.
   */
  splitPmdEntries(pmdSlot: number): void {
    const h = this.huge.get(pmdSlot);
    if (h === undefined) return;
    this.huge.delete(pmdSlot);
    this.entries -= PMD_PAGES;
    const base = pmdSlot * PMD_PAGES;
    for (let i = 0; i < PMD_PAGES; i++) this.set(base + i, makePte(pteFrame(h) + i, pteFlags(h)));
  }

  /** Slots (vpn / 512) with a huge entry overlapping [startVpn, endVpn), ascending. */
  hugeSlotsIn(startVpn: number, endVpn: number): number[] {
    if (this.huge.size === 0 || endVpn <= startVpn) return [];
    const first = Math.floor(startVpn / PMD_PAGES);
    const last = Math.floor((endVpn - 1) / PMD_PAGES);
    const out: number[] = [];
    if (last - first < this.huge.size) {
      for (let p = first; p <= last; p++) if (this.huge.has(p)) out.push(p);
      return out;
    }
    for (const p of this.huge.keys()) if (p >= first && p <= last) out.push(p);
    return out.sort((a, b) => a - b);
  }

  /** Huge entries mapped, in total. */
  get hugeEntries(): number {
    return this.huge.size;
  }

  /** Visit every non-zero entry with startVpn <= vpn < endVpn, in address order. */
  forEach(startVpn: number, endVpn: number, fn: (vpn: number, pte: number) => void): void {
    if (endVpn <= startVpn) return;
    const slots = this.hugeSlotsIn(startVpn, endVpn);
    if (slots.length === 0) return this.forEachLeaf(startVpn, endVpn, fn);
    // Huge entries are walked as the pages they map, in order with the PTE leaves around them.
    let cur = startVpn;
    for (const p of slots) {
      const hs = p * PMD_PAGES;
      const he = hs + PMD_PAGES;
      if (cur < hs) this.forEachLeaf(cur, hs, fn);
      const h = this.huge.get(p) as number;
      const from = Math.max(hs, cur);
      const to = Math.min(he, endVpn);
      for (let v = from; v < to; v++) fn(v, makePte(pteFrame(h) + (v - hs), pteFlags(h)));
      cur = to;
    }
    if (cur < endVpn) this.forEachLeaf(cur, endVpn, fn);
  }

  private forEachLeaf(startVpn: number, endVpn: number, fn: (vpn: number, pte: number) => void): void {
    if (endVpn <= startVpn) return;
    const first = Math.floor(startVpn / LEAF);
    const last = Math.floor((endVpn - 1) / LEAF);
    const visit = (key: number, slot: number) => {
      const l = this.blocks[Math.floor(slot / BLOCK_LEAVES)] as Float64Array;
      const at = (slot % BLOCK_LEAVES) * LEAF;
      const base = key * LEAF;
      const lo = Math.max(0, startVpn - base);
      const hi = Math.min(LEAF - 1, endVpn - 1 - base);
      for (let i = lo; i <= hi; i++) {
        const pte = l[at + i] as number;
        if (pte !== 0) fn(base + i, pte);
      }
    };
    if (last - first < DIRECT_WALK_LEAVES || last - first < this.leaves.size) {
      for (let key = first; key <= last; key++) {
        const slot = this.leaves.get(key);
        if (slot !== undefined) visit(key, slot);
      }
      return;
    }
    const keys = this.sorted();
    let lo = 0;
    let hi = keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((keys[mid] as number) < first) lo = mid + 1;
      else hi = mid;
    }
    for (let k = lo; k < keys.length && (keys[k] as number) <= last; k++) {
      const key = keys[k] as number;
      visit(key, this.leaves.get(key) as number);
    }
  }

  private sorted(): number[] {
    if (!this.sortedKeys) this.sortedKeys = [...this.leaves.keys()].sort((a, b) => a - b);
    return this.sortedKeys;
  }

  /** Collect the non-zero entries of a range (safe to modify the table afterwards). */
  entriesIn(startVpn: number, endVpn: number): [number, number][] {
    const out: [number, number][] = [];
    this.forEach(startVpn, endVpn, (v, p) => out.push([v, p]));
    return out;
  }

  /**
   * Whether a page-table page exists under the 1 GiB (PUD) slot of `vpn`: mprotect's
   * PROTECTION_VMA starts at the first populated PUD slot (rule 21h).
   */
  pudPopulated(vpn: number): boolean {
    if ((this.pudLeaves.get(Math.floor(vpn / PUD_PAGES)) ?? 0) > 0) return true;
    if (this.huge.size === 0) return false;
    const pud = Math.floor(vpn / PUD_PAGES);
    for (const p of this.huge.keys()) if (Math.floor(p / (PUD_PAGES / PMD_PAGES)) === pud) return true;
    return false;
  }

  /**
   * Whether a page-table page exists under the 2 MiB (PMD) slot of `vpn`: where none does,
   * walkers see pmd_none and treat the whole slot as one hole (hmm_vma_walk_hole).
   */
  pmdPopulated(vpn: number): boolean {
    return this.pmdHuge(vpn) || (this.pmdLeaves.get(Math.floor(vpn / PMD_PAGES)) ?? 0) > 0;
  }

  /**
   * pmd_none for a fault: no huge entry and no PTE table under vpn's slot. Only then may a
   * fault install a huge entry (do_huge_pmd_anonymous_page, hugetlb_fault).
   */
  pmdNone(vpn: number): boolean {
    return !this.pmdPopulated(vpn);
  }
}
