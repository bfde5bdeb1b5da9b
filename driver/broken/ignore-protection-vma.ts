/**
 * Broken ODP driver: event filtering that treats PROTECTION_VMA as harmless.
 *
 * Real-world bug: hazard H6, wrong event filtering (kernel rules 20 and 22). An author
 * who reads the event type as "only UNMAP and CLEAR take pages away" skips the work for
 * a protection change. But PROTECTION_VMA is what mprotect (and NUMA hinting) send when
 * they may lower permissions: after mprotect(PROT_READ) the device keeps a writable
 * translation of a page the process can no longer write. Rule 22 allows skipping only
 * MIGRATE (or EXCLUSIVE) events whose owner is the driver's own; mlx5 and rxe look at no
 * event at all (rdma C6).
 *
 * Caught by: stale-translation (when the invalidation ends, the device grants write where
 * the CPU PTE is read-only).
 *
 * The change: the reference's `affects` step (of `UmemOdp.invalidate`) says no to
 * PROTECTION_VMA (it runs after set_seq, so the sequence protocol itself stays intact).
 */
import { MmuNotifyEvent, type MmuNotifierRange } from '../../kernel-model/index.ts';
import { UmemOdp } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class IgnoreProtectionVmaUmemOdp extends UmemOdp {
  /** The filter: events this driver thinks cannot affect what the device may do. */
  protected override affects(range: MmuNotifierRange): boolean {
    // BUG: a protection change may remove write permission (rules 20, 22).
    return range.event !== MmuNotifyEvent.PROTECTION_VMA;
  }
}

export function ignoreProtectionVmaStrategy(): OdpStrategy {
  return odpStrategy({ name: 'ignore-protection-vma' }, IgnoreProtectionVmaUmemOdp);
}
