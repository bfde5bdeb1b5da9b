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
 * The change: the reference `UmemOdp.invalidate` with the `mmuIntervalSetSeq` line removed.
 */
import { PAGE_SIZE, mmuNotifierRangeBlockable, type Co, type MmuNotifierRange } from '../../kernel-model/index.ts';
import { UmemOdp, odpStrategy, type OdpStrategy } from '../umem-odp.ts';

export class NoSetSeqUmemOdp extends UmemOdp {
  override *invalidate(range: MmuNotifierRange, _curSeq: number): Co<boolean> {
    if (!mmuNotifierRangeBlockable(range)) return false;
    yield* this.mutex.lock();
    try {
      // BUG: mmuIntervalSetSeq(this.notifier, curSeq) is missing (kernel rule 26).
      if (this.pages.size === 0) return true;
      const start = Math.max(range.start, this.start);
      const end = Math.min(range.end, this.end);
      if (start >= end) return true;
      const first = Math.floor((start - this.start) / PAGE_SIZE);
      const last = Math.ceil((end - this.start) / PAGE_SIZE) - 1;
      const present = this.presentIn(first, last);
      if (present.length === 0) return true;
      yield* this.zap(present, last, range.event);
      this.unmapPages(present);
      const { counters } = this.owner;
      counters.invalidations++;
      counters.invalidationPages += present.length;
      this.owner.ctx.mrEvents.next({ type: 'invalidated', umem: this.owner.umem, start, end });
      return true;
    } finally {
      this.mutex.unlock();
    }
  }
}

export function noSetSeqStrategy(): OdpStrategy {
  return odpStrategy({}, (owner, start, end, first, name) => new NoSetSeqUmemOdp(owner, start, end, first, name));
}
