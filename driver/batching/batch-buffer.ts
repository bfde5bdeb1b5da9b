import type { OperatorFunction, SchedulerLike, Subscription } from 'rxjs';
import { operate } from 'rxjs/internal/util/lift';
import { createOperatorSubscriber } from 'rxjs/internal/operators/OperatorSubscriber';

/** Why a batch was closed. */
export type FlushReason = 'count' | 'window' | 'complete';

export interface BatchBufferOptions<T> {
  /** The window, read when a batch opens; undefined means no time limit. */
  windowNs?: () => number;
  /** Close the batch when it holds this many requests. */
  maxCount?: number;
  /** Where the window's timer runs: the Simulation's scheduler, never rxjs's default. */
  scheduler?: SchedulerLike;
  /** Told about each batch as it is emitted (adaptive policies learn from it). */
  onFlush?: (batch: T[], reason: FlushReason) => void;
}

/**
 * The shared core of the buffering policies: a batch opens at its first request and is
 * emitted when it holds `maxCount` requests or when `windowNs()` has passed since it opened,
 * whichever comes first (and at completion). Unlike `bufferTime`, no timer runs while no
 * batch is open, so an idle simulation stays idle.
 *
 * @example
 *   source.pipe(batchBuffer({ windowNs: () => 50_000, maxCount: 16, scheduler: sim.scheduler }))
 */
export function batchBuffer<T>(opts: BatchBufferOptions<T>): OperatorFunction<T, T[]> {
  if (opts.windowNs && !opts.scheduler) throw new Error('batchBuffer: a window needs the simulation scheduler');
  return operate((source, subscriber) => {
    let batch: T[] | null = null;
    let timer: Subscription | null = null;
    const flush = (reason: FlushReason): void => {
      timer?.unsubscribe();
      timer = null;
      const b = batch;
      batch = null;
      if (!b || b.length === 0) return;
      opts.onFlush?.(b, reason);
      subscriber.next(b);
    };
    source.subscribe(
      createOperatorSubscriber(
        subscriber,
        (value: T) => {
          if (!batch) {
            batch = [];
            const w = opts.windowNs?.();
            if (w !== undefined && opts.scheduler) timer = opts.scheduler.schedule(() => flush('window'), Math.max(0, w));
          }
          batch.push(value);
          if (opts.maxCount !== undefined && batch.length >= opts.maxCount) flush('count');
        },
        () => {
          flush('complete');
          subscriber.complete();
        },
        undefined,
        () => {
          batch = null;
          timer?.unsubscribe();
          timer = null;
        },
      ),
    );
  });
}
