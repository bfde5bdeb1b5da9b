/**
 * The page LRU that reclaim scans, oldest first: a doubly linked list threaded through
 * typed arrays indexed by frame number, like the kernel's `folio->lru` list_head embedded
 * in each folio (mm/swap.c folio_add_lru, lru_add; mm/vmscan.c isolate_lru_folios takes
 * from the tail of the inactive list). Add, remove, rotate and "oldest" are O(1).
 *
 * Why not a JS Set (insertion order): V8 leaves a hole for every deleted entry until the
 * table is rehashed, and reading the first entry walks over the holes in front of it, so a
 * scan that rotates the oldest page to the tail over and over cost O(pages) per step
 * (30 µs per step at 100k pages, bench/README.md issue 22 item 5).
 */
const NONE = -1;

export class Lru {
  // Read only for frames on the list (onList), so a fresh slot needs no sentinel.
  private next = new Int32Array(0);
  private prev = new Int32Array(0);
  private onList = new Uint8Array(0);
  private head = NONE;
  private tail = NONE;
  private count = 0;

  add(frame: number): void {
    if (this.has(frame)) return;
    this.grow(frame);
    this.prev[frame] = this.tail;
    this.next[frame] = NONE;
    if (this.tail === NONE) this.head = frame;
    else this.next[this.tail] = frame;
    this.tail = frame;
    this.count++;
    this.onList[frame] = 1;
  }

  remove(frame: number): void {
    if (!this.has(frame)) return;
    const p = this.prev[frame]!;
    const n = this.next[frame]!;
    if (p === NONE) this.head = n;
    else this.next[p] = n;
    if (n === NONE) this.tail = p;
    else this.prev[n] = p;
    this.onList[frame] = 0;
    this.count--;
  }

  /** Move to the tail (most recently used). */
  rotate(frame: number): void {
    if (!this.has(frame) || this.tail === frame) return;
    this.remove(frame);
    this.add(frame);
  }

  has(frame: number): boolean {
    return frame >= 0 && frame < this.onList.length && this.onList[frame] === 1;
  }

  get size(): number {
    return this.count;
  }

  /** The oldest page, or -1 when the list is empty. */
  oldest(): number {
    return this.head;
  }

  /** Oldest first. */
  *[Symbol.iterator](): IterableIterator<number> {
    for (let f = this.head; f !== NONE; f = this.next[f]!) yield f;
  }

  private grow(frame: number): void {
    if (frame < this.onList.length) return;
    let size = Math.max(1024, this.onList.length);
    while (size <= frame) size *= 2;
    const next = new Int32Array(size);
    const prev = new Int32Array(size);
    const onList = new Uint8Array(size);
    next.set(this.next);
    prev.set(this.prev);
    onList.set(this.onList);
    [this.next, this.prev, this.onList] = [next, prev, onList];
  }
}
