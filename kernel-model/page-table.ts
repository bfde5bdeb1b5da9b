/**
 * A process page table: four levels of 512 entries (48-bit VA, as x86-64), so a walk over
 * a huge sparse range visits only the tables that exist. Leaf entries are packed numbers:
 * `frame * 64 + bits`, 0 meaning none. A swap entry keeps its slot in the frame field.
 */
export const PTE_PRESENT = 1;
export const PTE_WRITE = 2;
export const PTE_ACCESSED = 4;
export const PTE_DIRTY = 8;
/** Non-present swap entry: the frame field is a swap slot. */
export const PTE_SWAP = 16;
/** Present but inaccessible (PROT_NONE / NUMA hint): hmm reports it as not valid (rule 46). */
export const PTE_PROTNONE = 32;

const BITS = 64;

export const pteFrame = (pte: number): number => Math.floor(pte / BITS);
export const pteFlags = (pte: number): number => pte % BITS;
export const makePte = (frame: number, flags: number): number => frame * BITS + flags;
export const ptePresent = (pte: number): boolean => (pte % BITS & PTE_PRESENT) !== 0;
export const pteWrite = (pte: number): boolean => (pte % BITS & PTE_WRITE) !== 0;
export const pteHas = (pte: number, flag: number): boolean => (pte % BITS & flag) !== 0;
export const pteWith = (pte: number, set: number, clear = 0): number =>
  makePte(pteFrame(pte), (pteFlags(pte) | set) & ~clear);

type Leaf = Float64Array;
type Dir<T> = (T | undefined)[];

export class PageTable {
  private readonly root: Dir<Dir<Dir<Leaf>>> = new Array(512);
  /** Non-zero leaf entries (present or swap): a process's RSS plus swap entries. */
  entries = 0;

  get(vpn: number): number {
    const l1 = this.leaf(vpn, false);
    return l1 ? (l1[vpn % 512] as number) : 0;
  }

  set(vpn: number, pte: number): void {
    const l1 = this.leaf(vpn, true) as Leaf;
    const i = vpn % 512;
    const old = l1[i] as number;
    if (old === 0 && pte !== 0) this.entries++;
    else if (old !== 0 && pte === 0) this.entries--;
    l1[i] = pte;
  }

  clear(vpn: number): number {
    const l1 = this.leaf(vpn, false);
    if (!l1) return 0;
    const i = vpn % 512;
    const old = l1[i] as number;
    if (old !== 0) {
      l1[i] = 0;
      this.entries--;
    }
    return old;
  }

  /** Visit every non-zero entry with startVpn <= vpn < endVpn, in address order. */
  forEach(startVpn: number, endVpn: number, fn: (vpn: number, pte: number) => void): void {
    if (endVpn <= startVpn) return;
    const span3 = 512 * 512 * 512;
    const span2 = 512 * 512;
    for (let i4 = Math.floor(startVpn / span3); i4 <= Math.floor((endVpn - 1) / span3) && i4 < 512; i4++) {
      const l3 = this.root[i4];
      if (!l3) continue;
      const b4 = i4 * span3;
      const lo3 = Math.max(0, Math.floor((startVpn - b4) / span2));
      const hi3 = Math.min(511, Math.floor((endVpn - 1 - b4) / span2));
      for (let i3 = lo3; i3 <= hi3; i3++) {
        const l2 = l3[i3];
        if (!l2) continue;
        const b3 = b4 + i3 * span2;
        const lo2 = Math.max(0, Math.floor((startVpn - b3) / 512));
        const hi2 = Math.min(511, Math.floor((endVpn - 1 - b3) / 512));
        for (let i2 = lo2; i2 <= hi2; i2++) {
          const l1 = l2[i2];
          if (!l1) continue;
          const b2 = b3 + i2 * 512;
          const lo1 = Math.max(0, startVpn - b2);
          const hi1 = Math.min(511, endVpn - 1 - b2);
          for (let i1 = lo1; i1 <= hi1; i1++) {
            const pte = l1[i1] as number;
            if (pte !== 0) fn(b2 + i1, pte);
          }
        }
      }
    }
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
    const l3 = this.root[Math.floor(vpn / (512 * 512 * 512))];
    return !!l3 && !!l3[Math.floor(vpn / (512 * 512)) % 512];
  }

  private leaf(vpn: number, create: boolean): Leaf | undefined {
    const i4 = Math.floor(vpn / (512 * 512 * 512));
    const i3 = Math.floor(vpn / (512 * 512)) % 512;
    const i2 = Math.floor(vpn / 512) % 512;
    let l3 = this.root[i4];
    if (!l3) {
      if (!create) return undefined;
      this.root[i4] = l3 = new Array(512);
    }
    let l2 = l3[i3];
    if (!l2) {
      if (!create) return undefined;
      l3[i3] = l2 = new Array(512);
    }
    let l1 = l2[i2];
    if (!l1) {
      if (!create) return undefined;
      l2[i2] = l1 = new Float64Array(512);
    }
    return l1;
  }
}
