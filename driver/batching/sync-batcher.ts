import { Subject, concatMap, defer, type Observable, type OperatorFunction } from 'rxjs';
import type { Co, Simulation } from '../../kernel-model/index.ts';
import type { Nic } from '../../device/index.ts';

/** One invalidation's request for the device sync that makes its zaps effective. */
export interface SyncRequest {
  /** When the invalidation asked (virtual ns). */
  readonly time: number;
  /** The notifier event that caused it (for by-event-type policies). */
  readonly event: number;
  /** Called once the sync covering this request has completed. */
  readonly done: () => void;
  /** The invalidating task that asked (engine task id), for traces linking it to its sync. */
  readonly task?: number | null;
}

/**
 * A batching policy: an rxjs operator from the stream of sync requests to the stream of
 * batches, each of which gets one device sync. `none` is one batch per request.
 *
 * @example
 *   const policy: BatchPolicy = (s) => s.pipe(bufferTime(50_000, null, 16, sim.scheduler));
 */
export type BatchPolicy = OperatorFunction<SyncRequest, SyncRequest[]>;

export interface BatcherStats {
  requests: number;
  syncs: number;
  /** Virtual ns spent in sync commands. */
  syncNs: number;
}

/**
 * Turns zaps into effective invalidations at the lowest sync cost the policy allows. The
 * invalidating task zaps its entries, then waits in `syncAfterZap` until the batch that
 * contains its request has synced: that wait is the latency side of the trade-off, fewer
 * syncs the throughput side. Syncs run one after another on a device worker.
 */
export class SyncBatcher {
  private readonly requests = new Subject<SyncRequest>();
  readonly stats: BatcherStats = { requests: 0, syncs: 0, syncNs: 0 };
  /** Each batch as it is synced: its size and when it completed. */
  readonly batch$: Observable<{ size: number; time: number }>;
  private readonly batchSubject = new Subject<{ size: number; time: number }>();

  constructor(private readonly sim: Simulation, private readonly nic: Nic, readonly policyName: string, policy: BatchPolicy) {
    this.batch$ = this.batchSubject.asObservable();
    this.requests
      .pipe(
        policy,
        concatMap((batch) => defer(() => this.sim.fromTask(`${nic.name}/sync`, () => this.syncBatch(batch), 'device'))),
      )
      .subscribe();
  }

  private *syncBatch(batch: SyncRequest[]): Co<void> {
    if (batch.length === 0) return;
    const t0 = this.sim.now();
    if (this.sim.tracing) this.sim.emit({ type: 'sync-batch', nic: this.nic.name, requesters: batch.flatMap((r) => (r.task == null ? [] : [r.task])) });
    yield* this.nic.sync();
    this.stats.syncs++;
    this.stats.syncNs += this.sim.now() - t0;
    this.batchSubject.next({ size: batch.length, time: this.sim.now() });
    for (const r of batch) r.done();
  }

  /** Called by an invalidation after its zaps: returns once they are fenced by a sync. */
  *syncAfterZap(event: number): Co<void> {
    // Waiting for the batch's sync sleeps: recorded if the caller is in atomic context.
    this.sim.mightSleep('wait for the batched device sync');
    this.stats.requests++;
    // A device whose zaps are synchronous UMRs on the mkey (mlx5: mlx5_ib_invalidate_range
    // -> mlx5r_umr_update_xlt) has nothing left to fence and nothing to batch.
    if (this.nic.caps?.invalidation === 'mkey-umr') return;
    yield* this.sim.park<void>((wake) => this.requests.next({ time: this.sim.now(), event, done: () => wake(), task: this.sim.current?.id ?? null }));
  }
}
