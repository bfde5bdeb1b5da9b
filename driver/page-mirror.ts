/**
 * The driver's mirror of what one ODP umem gave the device: page index -> frame * 2 +
 * writable. It behaves as a Map of those numbers (get, set, has, delete, size, keys, entries,
 * iteration, all in insertion order) but keeps a few entries in one small array and
 * becomes a Map only beyond SMALL_ENTRIES: an implicit MR has a umem per 1 GiB slot touched,
 * and with pages scattered over 128 TiB most of them mirror one or two pages, for which a
 * Map's hash table (some 350 bytes) would be most of the child's cost.
 *
 * @example
 *   const m = new PageMirror();
 *   m.set(7, 42 * 2 + 1);
 *   m.get(7);                 // 85
 *   [...m.keys()];            // [7]
 */

/** Entries kept in the small array; one more turns the mirror into a Map. */
const SMALL_ENTRIES = 8;
/** The small form of an empty mirror (shared: never written, only replaced). */
const NONE: number[] = [];

export class PageMirror implements Iterable<[number, number]> {
  /** Small form: [key0, value0, key1, value1, ...] in insertion order; null once a Map. */
  private small: number[] | null = NONE;
  private map: Map<number, number> | null = null;

  get size(): number {
    return this.small ? this.small.length / 2 : (this.map as Map<number, number>).size;
  }

  private find(key: number): number {
    const s = this.small as number[];
    for (let i = 0; i < s.length; i += 2) if (s[i] === key) return i;
    return -1;
  }

  get(key: number): number | undefined {
    if (!this.small) return (this.map as Map<number, number>).get(key);
    const i = this.find(key);
    return i < 0 ? undefined : this.small[i + 1];
  }

  has(key: number): boolean {
    return this.small ? this.find(key) >= 0 : (this.map as Map<number, number>).has(key);
  }

  set(key: number, value: number): this {
    const s = this.small;
    if (!s) {
      (this.map as Map<number, number>).set(key, value);
      return this;
    }
    const i = this.find(key);
    if (i >= 0) {
      s[i + 1] = value;
    } else if (s.length < 2 * SMALL_ENTRIES) {
      // A new array of the exact size (push would reserve room for 16 more elements).
      this.small = s.length === 0 ? [key, value] : s.concat(key, value);
    } else {
      const m = new Map<number, number>();
      for (let j = 0; j < s.length; j += 2) m.set(s[j] as number, s[j + 1] as number);
      m.set(key, value);
      this.map = m;
      this.small = null;
    }
    return this;
  }

  delete(key: number): boolean {
    if (!this.small) return (this.map as Map<number, number>).delete(key);
    const i = this.find(key);
    if (i < 0) return false;
    this.small.splice(i, 2);
    return true;
  }

  /** Keys in insertion order (the small form iterates a snapshot). */
  *keys(): IterableIterator<number> {
    if (!this.small) {
      yield* (this.map as Map<number, number>).keys();
      return;
    }
    const s = this.small.slice();
    for (let i = 0; i < s.length; i += 2) yield s[i] as number;
  }

  *entries(): IterableIterator<[number, number]> {
    if (!this.small) {
      yield* (this.map as Map<number, number>).entries();
      return;
    }
    const s = this.small.slice();
    for (let i = 0; i < s.length; i += 2) yield [s[i] as number, s[i + 1] as number];
  }

  [Symbol.iterator](): IterableIterator<[number, number]> {
    return this.entries();
  }
}
