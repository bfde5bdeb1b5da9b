// Real programs as workloads: the trace format, its capture, and its replay (issue 20).
// README.md beside this file documents the format and the replay rules.
import { readFileSync } from 'node:fs';
import { runScenario, type ScenarioReport } from '../scenario.ts';
import type { LoadedStrategy } from '../user-module.ts';
import { parseTrace, TraceFormatError, type WorkloadTrace } from './trace-format.ts';
import { workloadScenario, type WorkloadOptions } from './replay.ts';

export { parseTrace, formatEvent, formatHeader, TraceFormatError, TRACE_MAGIC, TRACE_VERSION, TRACE_OPS, type WorkloadTrace, type TraceEvent, type TraceOp } from './trace-format.ts';
export { workloadScenario, defaultCacheFor, WORKLOAD_DRIVERS, WORKLOAD_CACHES, type WorkloadOptions, type WorkloadDriver, type WorkloadCacheName } from './replay.ts';

/** The shipped traces (scenarios/workloads/traces/), by short name. */
export const SHIPPED_TRACES = { 'node-gc': 'node-gc.trace', 'cpython-lists': 'cpython-lists.trace', 'sort-large': 'sort-large.trace' } as const;

/** A shipped trace's path, by short name. */
export function shippedTracePath(name: keyof typeof SHIPPED_TRACES): string {
  return new URL(`./traces/${SHIPPED_TRACES[name]}`, import.meta.url).pathname;
}

/** Read and parse a trace file; a bad file is one line naming the file, the line and what was expected. */
export function loadTrace(path: string): WorkloadTrace {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new TraceFormatError(0, `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return parseTrace(text);
}

export interface WorkloadRun extends ScenarioReport {
  /** The run finished without a violation and the model kept up with the trace. */
  ok: boolean;
  failure?: string;
  replayed: number;
}

/** Replay a trace under one driver and cache (a user strategy stands in for `opts.driver`). */
export function replayWorkload(trace: WorkloadTrace, opts: WorkloadOptions & { seed?: number; strategy?: LoadedStrategy; name?: string }): WorkloadRun {
  const def = workloadScenario(trace, opts.name ?? 'workload', opts);
  const r = runScenario(def, { seed: opts.seed ?? 1, profile: def.defaultProfile, driver: def.defaultDriver, params: {}, ...(opts.strategy ? { strategy: opts.strategy } : {}) });
  const replayed = Number(r.extra['workload.events replayed'] ?? 0);
  return { ...r, ok: r.outcome.ok, ...(r.outcome.failure ? { failure: r.outcome.failure } : {}), replayed };
}
