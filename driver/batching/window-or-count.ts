import type { SchedulerLike } from 'rxjs';
import { batchBuffer } from './batch-buffer.ts';
import type { BatchPolicy } from './sync-batcher.ts';

/**
 * Coalesce within a window or up to a count, whichever comes first: the batch is synced
 * when it holds `count` requests, or `windowNs` after its first request.
 *
 * @example
 *   const policy = windowOrCount(50_000, 8, sim.scheduler);
 */
export function windowOrCount(windowNs: number, count: number, scheduler: SchedulerLike): BatchPolicy {
  return batchBuffer({ windowNs: () => windowNs, maxCount: count, scheduler });
}
