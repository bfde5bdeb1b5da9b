/**
 * Broken holdoff driver: deregistration removes the interval notifier first and fences the
 * device after.
 *
 * Real-world bug: teardown in the wrong order. ib_umem_odp_release and the reference
 * holdoff deregistration stop the device (revoke the key, zap, sync) and only then remove
 * the notifier (rdma C9), because the notifier is the only thing that tells the driver
 * when a page the device may still use goes away. Removed first, a transfer still running
 * on the MR, or an invalidation that lands before the fence, reaches pages the driver no
 * longer hears about: a munmap in that window frees pages the NIC still writes.
 *
 * Caught by: teardown-order (a device access after the MR's notifier was removed).
 *
 * The change: `HoldoffUmem.dereg` (the strategy's class seam) removes the notifier before
 * doing what the reference does; the reference then finds it removed.
 */
import { mmuIntervalNotifierRemove, type Co } from '../../kernel-model/index.ts';
import { HoldoffUmem, holdoffStrategy, type HoldoffOptions, type HoldoffStrategy } from '../umem-holdoff.ts';

export class RemoveBeforeFenceUmem extends HoldoffUmem {
  override *dereg(): Co<number> {
    // BUG: nothing watches the range from here on, and the device is not fenced yet.
    if (this.notifier.inserted) yield* mmuIntervalNotifierRemove(this.notifier);
    return yield* super.dereg();
  }
}

export function removeBeforeFenceStrategy(opts: HoldoffOptions): HoldoffStrategy {
  return holdoffStrategy(opts, RemoveBeforeFenceUmem);
}
