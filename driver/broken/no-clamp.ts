/**
 * Broken ODP driver: the invalidation range is not clamped to the MR.
 *
 * Real-world bug: hazard H19, kernel rule 13 ("interval subscribers receive the whole
 * operation range, not the intersection with their own interval; drivers MUST clamp").
 * A munmap, mprotect, fork or exit that covers more than the MR hands the callback a
 * range that runs past the MR's end. Computing the last MTT index from it makes the tail
 * zap run past the MR's last entry; the device refuses that UMR (-EINVAL), the driver does
 * not look at the status (the reference does not either: its runs are always in range),
 * forgets the pages, and returns true while the device still translates them.
 *
 * Caught by: use-after-invalidate (the next access uses the surviving translation), and
 * stale-translation at the end of the invalidation.
 *
 * The change: the reference `UmemOdp.invalidate` without the two `Math.max`/`Math.min`
 * clamps of the range to [this.start, this.end).
 */
import {
  PAGE_SIZE, mmuIntervalSetSeq, mmuNotifierRangeBlockable, type Co, type MmuNotifierRange,
} from '../../kernel-model/index.ts';
import { UmemOdp, odpStrategy, type OdpStrategy } from '../umem-odp.ts';

export class NoClampUmemOdp extends UmemOdp {
  override *invalidate(range: MmuNotifierRange, curSeq: number): Co<boolean> {
    if (!mmuNotifierRangeBlockable(range)) return false;
    yield* this.mutex.lock();
    try {
      mmuIntervalSetSeq(this.notifier, curSeq);
      if (this.pages.size === 0) return true;
      // BUG: the range is used as given, not intersected with [this.start, this.end) (rule 13).
      const { start, end } = range;
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

export function noClampStrategy(): OdpStrategy {
  return odpStrategy({}, (owner, start, end, first, name) => new NoClampUmemOdp(owner, start, end, first, name));
}
