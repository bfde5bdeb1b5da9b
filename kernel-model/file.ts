import type { Vma } from './vma.ts';

/**
 * An inode with a page cache and a backing store (the bytes "on disk"). Shared anonymous
 * memory is a `shmem` file: it has a page cache but no disk and needs no dirty tracking.
 */
export class File {
  /** Page index -> frame of the cached page. */
  readonly pageCache = new Map<number, number>();
  /** Page index -> bytes on disk (absent: a hole, reads as zeros). */
  readonly disk = new Map<number, Uint8Array>();
  /** VMAs mapping this file (i_mmap). */
  readonly mappings = new Set<Vma>();
  /**
   * inode->dirtied_when: when the inode went from clean to dirty (virtual ns), -1 while
   * clean. The flusher writes back an inode once it is older than dirty_expire_interval.
   */
  dirtiedWhenNs = -1;

  constructor(
    readonly id: number,
    readonly name: string,
    /** Size in bytes. */
    public size: number,
    readonly shmem = false,
  ) {}

  /** Pages past EOF fault with SIGBUS (here: -EFAULT). */
  get pages(): number {
    return Math.ceil(this.size / 4096);
  }

  /** Bytes on disk of one page (zeros for a hole). */
  diskPage(index: number): Uint8Array {
    return this.disk.get(index)?.slice() ?? new Uint8Array(4096);
  }
}
