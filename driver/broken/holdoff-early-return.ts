/**
 * Broken holdoff driver: when the holdoff times out, the invalidation gives up and
 * returns, with DMA still in flight and the device's translations in place.
 *
 * Real-world bug: a bounded wait mistaken for a bounded obligation. The holdoff design
 * (seed 000, rdma H3) waits for DMA touching the range to drain, bounded by a timeout;
 * the timeout bounds how long the kernel waits, not what the driver owes it (kernel rule
 * 11: once the callback returns, the pages may be freed). On timeout the reference still
 * fences the device before returning (QPs to ERROR, revoke, zap, sync). This variant
 * marks the MR revoked and returns: the transfer that was too slow keeps reading and
 * writing pages the kernel frees and hands out again, and later invalidations of the
 * "revoked" MR find nothing to do. dma-buf importers have the same trap (G7: the move
 * callback must not return before the device stopped using the old pages).
 *
 * Caught by: use-after-invalidate (the still-running DMA after the callback returned), with
 * dma-to-freed-page when the page was freed meanwhile.
 *
 * The change: `HoldoffUmem.revoke` (called on timeout with the mutex held) replaced by
 * setting the flag only.
 */
import type { Co } from '../../kernel-model/index.ts';
import { HoldoffUmem, holdoffStrategy, type HoldoffOptions, type HoldoffStrategy } from '../umem-holdoff.ts';

export class HoldoffEarlyReturnUmem extends HoldoffUmem {
  protected override *revoke(): Co {
    // BUG: no QPs to ERROR, no revokeMr, no zap, no sync: the device is not fenced.
    this.revoked = true;
  }
}

export function holdoffEarlyReturnStrategy(opts: HoldoffOptions): HoldoffStrategy {
  return holdoffStrategy(opts, HoldoffEarlyReturnUmem);
}
