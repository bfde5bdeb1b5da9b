import { groupBy, mergeMap } from 'rxjs';
import type { BatchPolicy } from './sync-batcher.ts';

/**
 * Batch separately per notifier event type (UNMAP, CLEAR, PROTECTION_VMA, ...): each event
 * type gets its own instance of the inner policy (or of its override for that type), so
 * one sync never covers requests of two types.
 *
 * @example
 *   const policy = byEventType(windowBatching(50_000, sim.scheduler));
 *   const unmapAtOnce = byEventType(windowBatching(50_000, sim.scheduler), { [MmuNotifyEvent.UNMAP]: noBatching() });
 */
export function byEventType(inner: BatchPolicy, overrides: Partial<Record<number, BatchPolicy>> = {}): BatchPolicy {
  return (source) => source.pipe(
    groupBy((r) => r.event),
    mergeMap((group) => group.pipe(overrides[group.key] ?? inner)),
  );
}
