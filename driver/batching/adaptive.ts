import { defer, type SchedulerLike } from 'rxjs';
import { batchBuffer } from './batch-buffer.ts';
import type { BatchPolicy } from './sync-batcher.ts';

export interface AdaptiveBatchingOptions {
  /** The smallest and the largest window (ns); the window starts at the smallest. */
  minWindowNs: number;
  maxWindowNs: number;
  /** Also close a batch at this many requests (no count limit when omitted). */
  maxCount?: number;
}

/**
 * A window that adapts to the invalidation rate: it doubles (up to `maxWindowNs`) after a
 * batch that shared its sync with at least one other request, and halves (down to
 * `minWindowNs`) after a batch that closed on a lone request, since waiting bought nothing.
 * Bursts of concurrent invalidations earn a long window; a serial invalidator quickly
 * pays only the minimum.
 *
 * @example
 *   const policy = adaptiveBatching({ minWindowNs: 1_000, maxWindowNs: 100_000 }, sim.scheduler);
 */
export function adaptiveBatching(opts: AdaptiveBatchingOptions, scheduler: SchedulerLike): BatchPolicy {
  return (source) => defer(() => {
    let windowNs = opts.minWindowNs;
    return source.pipe(batchBuffer({
      windowNs: () => windowNs,
      ...(opts.maxCount !== undefined ? { maxCount: opts.maxCount } : {}),
      scheduler,
      onFlush: (batch) => {
        windowNs = batch.length > 1 ? Math.min(opts.maxWindowNs, windowNs * 2) : Math.max(opts.minWindowNs, Math.floor(windowNs / 2));
      },
    }));
  });
}
