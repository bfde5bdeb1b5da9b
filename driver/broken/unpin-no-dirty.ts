/**
 * Broken pinned driver: deregistration unpins without dirtying, although the device may
 * have written the pages.
 *
 * Real-world bug: kernel rule 63 and the 2018 linux-mm thread ("mm: gup: don't unmap or
 * drop filesystem buffers", John Hubbard; seed 2018) that led to
 * `unpin_user_pages_dirty_lock`. The NIC's writes set no dirty bit; the release is the
 * only moment the kernel can learn of them. A driver that passes `dirty = false` (or calls
 * plain `put_page`) leaves written pages clean: reclaim discards a clean lazily-freed
 * anonymous page, and writeback skips a clean page-cache page, together with the device's
 * bytes.
 *
 * Caught by: lost-write.
 *
 * The change: the `UmemGup` seam of the reference with `release` always passing
 * `dirty = false`.
 */
import type { UmemStrategy } from '../umem.ts';
import { IB_UMEM_GUP, pinnedStrategy } from '../umem-pinned.ts';

export function unpinNoDirtyStrategy(): UmemStrategy {
  return pinnedStrategy({
    ...IB_UMEM_GUP,
    // BUG: the device may have written these pages; they must be dirtied (rule 63).
    release: (kernel, how, frames, _dirty) => IB_UMEM_GUP.release(kernel, how, frames, false),
  });
}
