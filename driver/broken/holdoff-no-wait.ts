/**
 * Broken holdoff driver: the invalidation does not hold off at all: it zaps at once,
 * whatever DMA is running on the range.
 *
 * Real-world bug: the holdoff design's one promise dropped (seed 000, rdma H3: "holding
 * off the unmapping ... until any pending operation is complete"). The device is still
 * fenced before the callback returns (so nothing reaches a freed page), but a NIC that
 * cannot fault turns the missing entries into protection errors: transfers that were
 * running when the CPU changed the mapping fail and their QPs go to the error state,
 * though the timeout never fired. Correct for the kernel, wrong for the application.
 *
 * Caught by: holdoff-liveness (a zap with work in flight that began before the callback,
 * on an MR that was not revoked).
 *
 * The change: the `holdOff` step returns "idle" without waiting (the example in
 * driver/umem-holdoff.ts's documentation of that step).
 */
import type { Co } from '../../kernel-model/index.ts';
import { HoldoffUmem, holdoffStrategy, type HoldoffOptions, type HoldoffStrategy } from '../umem-holdoff.ts';

export class HoldoffNoWaitUmem extends HoldoffUmem {
  protected override *holdOff(_first: number, _last: number): Co<boolean> {
    // BUG: no wait for the DMA on the range.
    return true;
  }
}

export function holdoffNoWaitStrategy(opts: HoldoffOptions): HoldoffStrategy {
  return holdoffStrategy(opts, HoldoffNoWaitUmem);
}
