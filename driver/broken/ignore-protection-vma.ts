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
 * The change: the reference `UmemOdp.invalidate` with an early return for PROTECTION_VMA
 * (after set_seq, so the sequence protocol itself stays intact).
 */
import {
  MmuNotifyEvent, PAGE_SIZE, mmuIntervalSetSeq, mmuNotifierRangeBlockable, type Co, type MmuNotifierRange,
} from '../../kernel-model/index.ts';
import { UmemOdp, odpStrategy, type OdpStrategy } from '../umem-odp.ts';

/** The filter: events this driver thinks cannot affect what the device may do. */
function harmless(range: MmuNotifierRange): boolean {
  // BUG: a protection change may remove write permission (rules 20, 22).
  return range.event === MmuNotifyEvent.PROTECTION_VMA;
}

export class IgnoreProtectionVmaUmemOdp extends UmemOdp {
  override *invalidate(range: MmuNotifierRange, curSeq: number): Co<boolean> {
    if (!mmuNotifierRangeBlockable(range)) return false;
    yield* this.mutex.lock();
    try {
      mmuIntervalSetSeq(this.notifier, curSeq);
      if (harmless(range)) return true;
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

export function ignoreProtectionVmaStrategy(): OdpStrategy {
  return odpStrategy({}, (owner, start, end, first, name) => new IgnoreProtectionVmaUmemOdp(owner, start, end, first, name));
}
