/**
 * Shared set-up for the GUP/pinning, fork, reclaim, migration, writeback and OOM tests:
 * a rig under a named profile and the trace records of a run.
 */
import {
  PROFILES, PROT_READ, PROT_WRITE, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED,
  type Kernel, type KernelOptions, type ProfileName, type TraceRecord,
} from '../../kernel-model/index.ts';
import { rig, type Rig } from './_helpers.ts';

export const RW = PROT_READ | PROT_WRITE;
export const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
export const SHARED_ANON = MAP_SHARED | MAP_ANONYMOUS;

/** A rig (kernel, one process, notifier stream recorded) under the named profile. */
export function rigOn(profile: ProfileName, opts: KernelOptions = {}): Rig {
  return rig({ ...opts, profile: PROFILES[profile] });
}

/** Record every trace record of `k` from now on; `of(type)` filters by type. */
export function traceOf(k: Kernel) {
  const records: TraceRecord[] = [];
  k.sim.trace$.subscribe((r) => records.push(r));
  const of = <K extends TraceRecord['type']>(type: K) =>
    records.filter((r): r is Extract<TraceRecord, { type: K }> => r.type === type);
  return { records, of };
}

