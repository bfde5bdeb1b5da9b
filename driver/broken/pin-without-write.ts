/**
 * Broken pinned driver: a writable MR is pinned without FOLL_WRITE.
 *
 * Real-world bug: why ib_umem_get asked FOLL_WRITE (and FOLL_FORCE for a read-only MR)
 * for every registration until 6.2 (kernel rules 54, 58, 61; rdma H1). A pin without
 * FOLL_WRITE takes whatever the page table holds for a read: the shared zero page for
 * never-written anonymous memory, the page still shared copy-on-write with a child after
 * fork. Before 5.19's GUP unsharing (rule 61) nothing replaced such a page with an
 * exclusive one, so the NIC, which writes through the pin, writes the zero page (every
 * process's unwritten memory) or the child's memory.
 *
 * Caught by: shared-page-write (a device write into the zero page or a COW-shared page);
 * pinned-incoherence usually reports the same MR too (the process writes a page of its
 * own that the device does not see).
 *
 * The change: the `flags` of the GUP seam (`UmemGup`, driver/umem-pinned.ts) without
 * FOLL_WRITE; on linux-5.8, where GUP does not unshare.
 */
import { FOLL_LONGTERM } from '../../kernel-model/index.ts';
import type { UmemStrategy } from '../umem.ts';
import { IB_UMEM_GUP, pinnedStrategy } from '../umem-pinned.ts';

export function pinWithoutWriteStrategy(): UmemStrategy {
  return pinnedStrategy({
    ...IB_UMEM_GUP,
    // BUG: a read-intent pin for a device that writes (rules 54, 61).
    flags: () => FOLL_LONGTERM,
  });
}
