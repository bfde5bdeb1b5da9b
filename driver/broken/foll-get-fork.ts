/**
 * Broken pinned driver: `ib_umem_get` written for the pre-FOLL_PIN API, taking plain
 * `get_user_pages(FOLL_WRITE | FOLL_FORCE)` references, on a kernel whose fork protects
 * only FOLL_PIN pins; then the process forks and writes its buffer.
 *
 * Real-world bug: kernel hazard H8 and the 2020 `has_pinned` thread (Jason Gunthorpe,
 * Linus Torvalds, Peter Xu's series; the 2020 seed discussion). Since 5.9 fork gives the
 * child a copy of every anonymous page that `folio_maybe_dma_pinned` reports in an mm
 * with MMF_HAS_PINNED (rules 57, 66, 67), so the parent keeps the page the NIC uses. A FOLL_GET reference sets neither the
 * flag nor the pin bias: fork COW-shares the page, the parent's next write breaks COW into
 * a new page, and the NIC keeps reading and writing the old one, now the child's. Drivers
 * that were not converted to `pin_user_pages` (5.6-5.8 era code: GUP flags of
 * `umemGupFlags` under linux-5.8, FOLL_WRITE|FOLL_FORCE, without FOLL_LONGTERM, which
 * needs FOLL_PIN) relied on `ibv_fork_init`/MADV_DONTFORK instead (rdma H2).
 *
 * Profile: linux-6.x. Under linux-5.8 itself fork did not copy pinned pages yet (5.9), so
 * the reference pinned strategy is exactly as incoherent there: the difference only shows
 * on a kernel that offers the fix.
 *
 * Caught by: pinned-incoherence (a warning) whose trail shows the process's own COW break
 * after the fork: the one-page CLEAR of the write fault's wp_page_copy, and the MR's frame, an
 * anonymous page fork left not exclusive, copied away (not an unshare, a NUMA migration or a
 * fault after MADV_DONTNEED), which the reference strategy never produces on linux-6.x.
 *
 * The change: the `UmemGup` seam of the reference with `how` = get and the flags without
 * FOLL_LONGTERM.
 */
import { FOLL_FORCE, FOLL_WRITE } from '../../kernel-model/index.ts';
import type { UmemStrategy } from '../umem.ts';
import { IB_UMEM_GUP, pinnedStrategy } from '../umem-pinned.ts';

export function follGetForkStrategy(): UmemStrategy {
  return pinnedStrategy({
    ...IB_UMEM_GUP,
    // BUG: a plain reference, invisible to fork's folio_maybe_dma_pinned (rules 55-57, 67).
    how: () => 'get',
    flags: (_kernel, writable) => FOLL_WRITE | (writable ? 0 : FOLL_FORCE),
  });
}
