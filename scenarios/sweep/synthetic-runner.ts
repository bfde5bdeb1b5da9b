import { Observable } from 'rxjs';
import { Simulation, type Co, type SimEvent } from '../../kernel-model/sim/index.ts';
import type { Nic } from '../../device/index.ts';
import { SyncBatcher, noBatching, type BatchPolicy, type SyncRequest } from '../../driver/batching/index.ts';
import type { PointParams } from './grid.ts';
import { pointPolicy } from './point-policy.ts';
import { percentile, type PointRecord } from './point-runners.ts';

/**
 * The `synthetic` point runner: a tiny model of the batching trade-off on the engine alone,
 * for testing the sweep machinery and for a first look at a grid without the driver.
 *
 * A DMA task streams 64 KiB chunks at PCIe 3.0 x16 speed; each device sync stalls it for
 * the sync's duration. `tasks` invalidating tasks loop: think, enter a system call, zap
 * (2 µs), then wait in a SyncBatcher (driver/batching) for the sync covering their request.
 * With `dma-heavy-reclaim`, a kswapd-like task also invalidates every 50 µs. Each
 * invalidation costs the DMA a refault (odp) or a remap system call (holdoff).
 * The policies are small operators of this file (the driver's own are not needed), with
 * `count` flushing after at most 1 ms so a lone task is not stranded.
 */
const CHUNK_BYTES = 65_536;
const CHUNK_NS = Math.round(CHUNK_BYTES / 12.6);
const ZAP_NS = 2_000;
const SYSCALL_NS = 1_000;
const DEFAULT_SYNC_NS = 5_000;
const REFAULT_NS = 5_000;
const REMAP_NS = 3_000;
const COUNT_BACKSTOP_NS = 1_000_000;

function flushingPolicy(sim: Simulation, windowNs: number | null, count: number | null): BatchPolicy {
  return (source) =>
    new Observable<SyncRequest[]>((sub) => {
      let buf: SyncRequest[] = [];
      let timer: SimEvent | null = null;
      const flush = () => {
        if (timer) timer.cancelled = true;
        timer = null;
        if (buf.length === 0) return;
        const b = buf;
        buf = [];
        sub.next(b);
      };
      const s = source.subscribe({
        next: (r) => {
          buf.push(r);
          if (count !== null && buf.length >= count) flush();
          else if (!timer) timer = sim.scheduler.after(windowNs ?? COUNT_BACKSTOP_NS, flush);
        },
        error: (e: unknown) => sub.error(e),
        complete: () => {
          flush();
          sub.complete();
        },
      });
      return () => {
        s.unsubscribe();
        if (timer) timer.cancelled = true;
      };
    });
}

function policyFor(sim: Simulation, p: PointParams): BatchPolicy {
  switch (p.policy) {
    case 'none': return noBatching();
    case 'window': return flushingPolicy(sim, p.windowNs ?? 0, null);
    case 'count': return flushingPolicy(sim, null, p.count ?? 1);
    case 'window-or-count': return flushingPolicy(sim, p.windowNs ?? 0, p.count ?? 1);
    // adaptive, by-event-type and user policies: driver/batching's (or the user's) own.
    default: return pointPolicy(p, sim.scheduler).policy;
  }
}

export function runSyntheticPoint(params: PointParams, seed: number, durationNs: number): PointRecord {
  const sim = new Simulation({ seed });
  const syncNs = params.syncNs ?? DEFAULT_SYNC_NS;
  let stalledUntil = 0;
  let syncs = 0;
  const nic = {
    name: 'synthetic-nic',
    *sync(): Co<number> {
      syncs++;
      stalledUntil = Math.max(stalledUntil, sim.now() + syncNs);
      yield* sim.sleep(syncNs);
      return 0;
    },
  } as unknown as Nic;
  const batcher = new SyncBatcher(sim, nic, params.policy, policyFor(sim, params));

  let bytes = 0;
  let pendingDmaCost = 0;
  let faults = 0;
  const invLat: number[] = [];
  const opLat: number[] = [];
  const end = durationNs;

  sim.spawn('dma', function* () {
    while (sim.now() < end) {
      if (stalledUntil > sim.now()) yield* sim.sleep(stalledUntil - sim.now());
      if (pendingDmaCost > 0) {
        const c = pendingDmaCost;
        pendingDmaCost = 0;
        yield* sim.sleep(c);
      }
      yield* sim.sleep(CHUNK_NS);
      if (sim.now() <= end) bytes += CHUNK_BYTES;
    }
  }, { kind: 'device' });

  function* invalidate(event: number): Co<void> {
    const t0 = sim.now();
    yield* sim.sleep(SYSCALL_NS);
    const ti = sim.now();
    yield* sim.sleep(ZAP_NS);
    yield* batcher.syncAfterZap(event);
    if (sim.now() > end) return;
    invLat.push(sim.now() - ti);
    opLat.push(sim.now() - t0 + SYSCALL_NS);
    if (params.strategy === 'odp') {
      faults++;
      pendingDmaCost += REFAULT_NS;
    } else {
      pendingDmaCost += REMAP_NS;
    }
  }

  const [thinkLo, thinkHi] = params.workload === 'dma-heavy-dontneed' ? [10_000, 100_000] : [20_000, 200_000];
  for (let i = 0; i < params.tasks; i++) {
    const rng = sim.rng(`churn-${i}`);
    sim.spawn(`churn-${i}`, function* () {
      while (sim.now() < end) {
        yield* sim.sleep(rng.int(thinkLo, thinkHi));
        if (sim.now() >= end) break;
        yield* invalidate(rng.chance(0.5) ? 1 : 2);
      }
    }, { kind: 'user' });
  }
  if (params.workload === 'dma-heavy-reclaim') {
    sim.spawn('kswapd', function* () {
      while (sim.now() < end) {
        yield* sim.sleep(50_000);
        if (sim.now() >= end) break;
        yield* invalidate(0);
      }
    }, { kind: 'kthread' });
  }

  const outcome = sim.run({ untilNs: end });
  if (outcome.failure !== undefined) throw new Error(`simulation failed: ${outcome.failure.split('\n')[0]}`);
  invLat.sort((a, b) => a - b);
  opLat.sort((a, b) => a - b);
  return {
    invP50Ns: percentile(invLat, 50),
    invP99Ns: percentile(invLat, 99),
    opP50Ns: percentile(opLat, 50),
    opP99Ns: percentile(opLat, 99),
    throughputBytesPerSec: Math.round((bytes / end) * 1e9),
    bytesMoved: bytes,
    invalidations: invLat.length,
    syncs,
    faults,
    virtualNs: end,
    meanBatch: syncs > 0 ? Math.round((batcher.stats.requests / syncs) * 1000) / 1000 : 0,
  };
}
