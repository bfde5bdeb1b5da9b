/**
 * The page LRU that reclaim scans: a list in insertion order (JS Sets iterate in
 * insertion order), with O(1) add, remove and rotate-to-tail.
 */
export class Lru {
  private readonly pages = new Set<number>();

  add(frame: number): void {
    this.pages.add(frame);
  }

  remove(frame: number): void {
    this.pages.delete(frame);
  }

  /** Move to the tail (most recently used). */
  rotate(frame: number): void {
    if (this.pages.delete(frame)) this.pages.add(frame);
  }

  has(frame: number): boolean {
    return this.pages.has(frame);
  }

  get size(): number {
    return this.pages.size;
  }

  /** Oldest first. */
  [Symbol.iterator](): IterableIterator<number> {
    return this.pages.values();
  }
}
