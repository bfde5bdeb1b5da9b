import * as hdr from 'hdr-histogram-js';
import type { Subscription } from 'rxjs';
import { eventName, type Kernel, type Simulation, type TraceRecord } from '../kernel-model/index.ts';
import type { Nic } from '../device/index.ts';

export interface Percentiles {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** The JSON face of a run's metrics (documented in scenarios/report.schema.json). */
export interface MetricsSummary {
  /** Notifier callback entry to return, per event type and over all (ns). */
  invalidationNs: Record<string, Percentiles>;
  /** The kernel operation that waited: syscalls by name, and each invalidation window (start to end) by event (ns). */
  kernelOpNs: Record<string, Percentiles>;
  /** NIC fault raise to resume (ns). */
  faultNs: Percentiles;
  /** Work request post to completion, as the application measured it (ns). */
  wrNs: Percentiles;
  counters: {
    invalidations: number;
    syncs: number;
    zaps: number;
    entriesZapped: number;
    faults: number;
    faultsResumedWithError: number;
    retries: number;
    prefetches: number;
    revocations: number;
  };
  bytesMoved: number;
  /** Bytes moved per virtual second. */
  throughputBytesPerSec: number;
  /** DMA-engine time lost to sync stalls (ns). */
  syncStallNs: number;
  virtualNs: number;
}

function newHistogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 1e13, numberOfSignificantValueDigits: 3 });
}

function percentiles(h: hdr.Histogram | undefined): Percentiles {
  if (!h || h.totalCount === 0) return { count: 0, p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  return {
    count: h.totalCount,
    p50: h.getValueAtPercentile(50),
    p90: h.getValueAtPercentile(90),
    p99: h.getValueAtPercentile(99),
    max: h.maxValue,
    mean: Math.round(h.mean),
  };
}

/**
 * Everything a run measures, from the streams alone (so it changes nothing it measures):
 * HDR histograms for invalidation callbacks, the kernel operations that waited, NIC
 * faults and work requests; counters; bytes moved and sync stalls. Counters that
 * strategies keep (retries, prefetches, revocations) are added with `count`.
 *
 * @example
 *   const m = new RunMetrics(sim, [kernel], [nic]); sim.run(); m.summary();
 */
export class RunMetrics {
  private readonly invalidation = new Map<string, hdr.Histogram>();
  private readonly kernelOp = new Map<string, hdr.Histogram>();
  private readonly fault = newHistogram();
  private readonly wr = newHistogram();
  private readonly subs: Subscription[] = [];
  private readonly extra = { retries: 0, prefetches: 0, revocations: 0 };
  private invalidations = 0;

  constructor(private readonly sim: Simulation, kernels: readonly Kernel[], private readonly nics: readonly Nic[]) {
    const callbackStack = new Map<number | null, { t: number; event: string }[]>();
    const syscallStack = new Map<number | null, { t: number; name: string }[]>();
    this.subs.push(sim.trace$.subscribe((r: TraceRecord) => {
      if (r.type === 'callback-start' && (r.op === 'invalidate' || r.op === 'invalidate_range_start' || r.op === 'invalidate_page')) {
        const s = callbackStack.get(r.task) ?? [];
        s.push({ t: r.t, event: r.event });
        callbackStack.set(r.task, s);
      } else if (r.type === 'callback-return' && (r.op === 'invalidate' || r.op === 'invalidate_range_start' || r.op === 'invalidate_page')) {
        const top = callbackStack.get(r.task)?.pop();
        if (top) {
          this.record(this.invalidation, top.event, r.t - top.t);
          this.record(this.invalidation, 'all', r.t - top.t);
        }
      } else if (r.type === 'syscall-begin') {
        const s = syscallStack.get(r.task) ?? [];
        s.push({ t: r.t, name: r.name });
        syscallStack.set(r.task, s);
      } else if (r.type === 'syscall-end') {
        const top = syscallStack.get(r.task)?.pop();
        if (top) this.record(this.kernelOp, top.name, r.t - top.t);
      }
    }));
    for (const k of kernels) {
      const open = new Map<object, number>();
      this.subs.push(k.notifier$.subscribe((e) => {
        if (e.phase === 'start') {
          this.invalidations++;
          open.set(e.range, e.time);
        } else {
          const t0 = open.get(e.range);
          open.delete(e.range);
          if (t0 !== undefined) this.record(this.kernelOp, `invalidation:${eventName(e.range.event)}`, e.time - t0);
        }
      }));
    }
    for (const nic of nics) {
      this.subs.push(nic.faultResume$.subscribe((r) => this.fault.recordValue(Math.max(1, r.time - r.fault.time))));
    }
  }

  private record(map: Map<string, hdr.Histogram>, key: string, ns: number): void {
    let h = map.get(key);
    if (!h) map.set(key, (h = newHistogram()));
    h.recordValue(Math.max(1, Math.round(ns)));
  }

  /** A work request's post-to-completion time, measured by the application. */
  recordWr(ns: number): void {
    this.wr.recordValue(Math.max(1, Math.round(ns)));
  }

  /** Add to a counter the strategies keep themselves. */
  count(name: 'retries' | 'prefetches' | 'revocations', n = 1): void {
    this.extra[name] += n;
  }

  summary(): MetricsSummary {
    let syncs = 0, zaps = 0, entriesZapped = 0, faults = 0, withError = 0, bytes = 0, stall = 0;
    for (const nic of this.nics) {
      syncs += nic.stats.syncs;
      zaps += nic.stats.zapCommands;
      faults += nic.faultQueue.raised;
      withError += nic.faultQueue.resumedWithError;
      bytes += nic.engine.stats.bytesRead + nic.engine.stats.bytesWritten;
      stall += nic.stats.syncs * nic.costs.syncDmaStallNs;
      entriesZapped += nic.stats.zappedEntries;
    }
    const virtualNs = this.sim.now();
    const sort = (m: Map<string, hdr.Histogram>) =>
      Object.fromEntries([...m.keys()].sort().map((k) => [k, percentiles(m.get(k))]));
    return {
      invalidationNs: sort(this.invalidation),
      kernelOpNs: sort(this.kernelOp),
      faultNs: percentiles(this.fault),
      wrNs: percentiles(this.wr),
      counters: {
        invalidations: this.invalidations, syncs, zaps, entriesZapped, faults, faultsResumedWithError: withError,
        retries: this.extra.retries, prefetches: this.extra.prefetches, revocations: this.extra.revocations,
      },
      bytesMoved: bytes,
      throughputBytesPerSec: virtualNs > 0 ? Math.round((bytes / virtualNs) * 1e9) : 0,
      syncStallNs: stall,
      virtualNs,
    };
  }

  dispose(): void {
    for (const s of this.subs) s.unsubscribe();
  }
}
