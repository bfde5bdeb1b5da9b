import { batchBuffer } from './batch-buffer.ts';
import type { BatchPolicy } from './sync-batcher.ts';

/**
 * Coalesce up to a count: requests wait until `count` of them are pending, then share one
 * sync. There is no time limit: with fewer than `count` invalidations the waiters (and the
 * munmap or reclaim behind them) wait for the next ones. Use `windowOrCount` for a bound.
 *
 * @example
 *   const policy = countBatching(8);
 */
export function countBatching(count: number): BatchPolicy {
  return batchBuffer({ maxCount: count });
}
