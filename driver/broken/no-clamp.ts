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
 * The change: the reference's `clamp` step (of `UmemOdp.invalidate`) without the
 * intersection of the range with [this.start, this.end).
 */
import type { MmuNotifierRange } from '../../kernel-model/index.ts';
import { UmemOdp, type OdpSpan } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class NoClampUmemOdp extends UmemOdp {
  protected override clamp(range: MmuNotifierRange): OdpSpan | null {
    // BUG: the range is used as given, not intersected with [this.start, this.end) (rule 13).
    return this.spanOf(range.start, range.end);
  }
}

export function noClampStrategy(): OdpStrategy {
  return odpStrategy({ name: 'no-clamp' }, NoClampUmemOdp);
}
