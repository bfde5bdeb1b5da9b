/**
 * Broken ODP driver: `invalidate` never calls `mmu_interval_set_seq`.
 *
 * Real-world bug: the missed collision of hazard H2 (kernel rules 26-28). Since interval
 * notifiers (5.5) publishing the invalidation's sequence is the driver's job: a driver
 * that zaps its mirror but forgets `mmu_interval_set_seq` leaves `sub.seq` where it was,
 * so a fault that snapshotted the CPU page table before the invalidation passes
 * `mmu_interval_read_retry` afterwards and installs the pfn the kernel is freeing. The
 * kernel's own comment on set_seq says it must be called unconditionally.
 *
 * Caught by: notifier-contract (the model records "invalidate returned true without
 * mmu_interval_set_seq" on every invalidation of a mapped range); stale-translation
 * follows when a fault races the invalidation.
 *
 * The change: the reference's `setSeq` step (of `UmemOdp.invalidate`) does nothing.
 */
import { UmemOdp } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class NoSetSeqUmemOdp extends UmemOdp {
  protected override setSeq(_curSeq: number): void {
    // BUG: mmuIntervalSetSeq(this.notifier, curSeq) is missing (kernel rule 26).
  }
}

export function noSetSeqStrategy(): OdpStrategy {
  return odpStrategy({ name: 'no-set-seq' }, NoSetSeqUmemOdp);
}
