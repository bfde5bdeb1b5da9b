import type { SchedulerLike } from 'rxjs';
import { batchBuffer } from './batch-buffer.ts';
import type { BatchPolicy } from './sync-batcher.ts';

/**
 * Coalesce within a window: the first request opens a window of `windowNs` on the
 * simulation's scheduler; every request that arrives before it closes shares one sync.
 * A waiter's latency is at most `windowNs` plus the sync; a lone invalidation pays the
 * whole window and saves nothing.
 *
 * @example
 *   const policy = windowBatching(50_000, sim.scheduler); // 50 µs
 */
export function windowBatching(windowNs: number, scheduler: SchedulerLike): BatchPolicy {
  return batchBuffer({ windowNs: () => windowNs, scheduler });
}
