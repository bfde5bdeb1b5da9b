/**
 * Broken ODP driver: pages the device could write are forgotten at invalidation without
 * being marked dirty.
 *
 * Real-world bug: rdma C8. `ib_umem_odp_unmap_dma_pages` calls `set_page_dirty` on the
 * head page of every page it had mapped writable, because the device's writes set no
 * dirty bit anywhere the kernel looks: the CPU PTE may be clean (a page freed with
 * MADV_FREE is clean and writable until reclaim) and nothing else records the write.
 * Without it, reclaim discards a "clean" lazily-freed page, or drops a clean page-cache
 * page, together with the bytes the NIC wrote. (The pinned-page analogue is rule 63 and
 * the 2018 `put_user_pages` thread.)
 *
 * Caught by: lost-write (at the end of the run the device's bytes are not in the
 * process's memory or the file).
 *
 * The change: the reference `UmemOdp.unmapPages` without the dirtying.
 */
import { UmemOdp } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class NoDirtyAtUnmapUmemOdp extends UmemOdp {
  protected override unmapPages(indices: Iterable<number>): void {
    // BUG: no folio_mark_dirty / PG_DIRTY for pages mapped writable (rdma C8).
    for (const idx of indices) this.pages.delete(idx);
  }
}

export function noDirtyAtUnmapStrategy(): OdpStrategy {
  return odpStrategy({ name: 'no-dirty-at-unmap' }, NoDirtyAtUnmapUmemOdp);
}
