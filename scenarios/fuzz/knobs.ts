/**
 * The strategy knobs of one fuzz run: which batching policy the reference ODP and holdoff
 * strategies fence with, and how long a holdoff invalidation waits for DMA. They are not
 * commands (a strategy is built before anything runs) but a pure function of the run's
 * simulation seed, so a reproducer, which keeps that seed, replays them exactly, and a
 * campaign of a few hundred runs meets every policy and every timeout (issue 19, item 1).
 *
 * The timeouts spread over both sides of a transfer: a 4-page RDMA WRITE with its ACK
 * takes about 4 µs, so 0.5 and 2 µs revoke MRs under ordinary traffic (the timeout path),
 * while 50 µs and 1 ms outlast every transfer (the drain path, where a timeout would mask
 * a bug that loses the wait).
 *
 * @example
 *   const k = fuzzKnobs(sim.seed);
 *   holdoffStrategy({ holdoffTimeoutNs: k.holdoffTimeoutNs, batching: k.batching(sim.scheduler), batchingName: k.batchingName });
 */
import type { SchedulerLike } from 'rxjs';
import { BATCH_POLICY_NAMES, batchPolicyByName, type BatchPolicy, type BatchPolicyParams } from '../../driver/batching/index.ts';

/** One batching policy the fuzzer uses, with its parameters (virtual ns). */
export interface FuzzBatching {
  name: string;
  params: BatchPolicyParams;
}

/** Every policy of driver/batching (by-name.ts), with parameters that matter at fuzz time scales. */
export const FUZZ_BATCHINGS: readonly FuzzBatching[] = [
  { name: 'none', params: {} },
  { name: 'window', params: { windowNs: 5_000 } },
  { name: 'count', params: { count: 3 } },
  { name: 'window-or-count', params: { windowNs: 20_000, count: 4 } },
  { name: 'adaptive', params: { minWindowNs: 1_000, maxWindowNs: 40_000 } },
  { name: 'by-event-type', params: { inner: 'window', windowNs: 10_000 } },
];

/** Holdoff timeouts (virtual ns): shorter and longer than the transfers. */
export const FUZZ_HOLDOFF_TIMEOUTS_NS: readonly number[] = [500, 2_000, 8_000, 50_000, 1_000_000];

export interface FuzzKnobs {
  batchingName: string;
  holdoffTimeoutNs: number;
  /** A fresh policy on the run's scheduler. */
  batching(scheduler: SchedulerLike): BatchPolicy;
}

/** A 32-bit mix of the seed (murmur3's finaliser), so neighbouring seeds differ in every knob. */
function mix(seed: number): number {
  let h = seed >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85eb_ca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2_ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** The knobs of the run whose simulation seed is `simSeed`. */
export function fuzzKnobs(simSeed: number): FuzzKnobs {
  const h = mix(simSeed);
  const b = FUZZ_BATCHINGS[h % FUZZ_BATCHINGS.length]!;
  const holdoffTimeoutNs = FUZZ_HOLDOFF_TIMEOUTS_NS[Math.floor(h / 256) % FUZZ_HOLDOFF_TIMEOUTS_NS.length]!;
  return {
    batchingName: b.name,
    holdoffTimeoutNs,
    batching(scheduler) {
      const r = batchPolicyByName(b.name, b.params, scheduler);
      if ('error' in r) throw new Error(`fuzz batching ${b.name}: ${r.error}`);
      return r.policy;
    },
  };
}

/** One line for a finding: the knobs a run had. */
export function describeKnobs(simSeed: number): string {
  const k = fuzzKnobs(simSeed);
  const b = FUZZ_BATCHINGS.find((x) => x.name === k.batchingName)!;
  const params = Object.entries(b.params).map(([key, v]) => `${key}=${String(v)}`).join(', ');
  return `batching ${b.name}${params ? `(${params})` : ''}, holdoff timeout ${k.holdoffTimeoutNs} ns`;
}

/** Every policy name of driver/batching is in the fuzzer's list (checked by a test). */
export const FUZZ_BATCHING_NAMES_COMPLETE = (): boolean => BATCH_POLICY_NAMES.every((n) => FUZZ_BATCHINGS.some((b) => b.name === n));
