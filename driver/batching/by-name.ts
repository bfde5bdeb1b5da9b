import type { SchedulerLike } from 'rxjs';
import { adaptiveBatching } from './adaptive.ts';
import { byEventType } from './by-event-type.ts';
import { countBatching } from './count.ts';
import { noBatching } from './none.ts';
import type { BatchPolicy } from './sync-batcher.ts';
import { windowBatching } from './window.ts';
import { windowOrCount } from './window-or-count.ts';

/** Parameter values as a sweep or the command line gives them (numbers, or strings of digits). */
export type BatchPolicyParams = Readonly<Record<string, number | string | undefined>>;

interface Spec {
  /** Required parameters, then optional ones, with what each accepts. */
  required: readonly string[];
  optional: readonly string[];
  build(p: Readonly<Record<string, number>>, scheduler: SchedulerLike, params: BatchPolicyParams): BatchPolicy | string;
}

const ACCEPTS: Readonly<Record<string, string>> = {
  windowNs: 'a positive integer of ns',
  count: 'an integer >= 1',
  minWindowNs: 'a positive integer of ns',
  maxWindowNs: 'a positive integer of ns, at least minWindowNs',
};

const SPECS: Readonly<Record<string, Spec>> = {
  none: { required: [], optional: [], build: () => noBatching() },
  window: { required: ['windowNs'], optional: [], build: (p, s) => windowBatching(p.windowNs!, s) },
  count: { required: ['count'], optional: [], build: (p) => countBatching(p.count!) },
  'window-or-count': { required: ['windowNs', 'count'], optional: [], build: (p, s) => windowOrCount(p.windowNs!, p.count!, s) },
  adaptive: {
    required: ['minWindowNs', 'maxWindowNs'],
    optional: ['count'],
    build: (p, s) => {
      if (p.maxWindowNs! < p.minWindowNs!) return `adaptive: maxWindowNs must be at least minWindowNs (${p.minWindowNs}), got ${p.maxWindowNs}`;
      return adaptiveBatching({ minWindowNs: p.minWindowNs!, maxWindowNs: p.maxWindowNs!, ...(p.count !== undefined ? { maxCount: p.count } : {}) }, s);
    },
  },
  'by-event-type': {
    required: [],
    optional: [],
    build: (_p, s, params) => {
      const { inner, ...rest } = params;
      if (inner === undefined) return `by-event-type: parameter 'inner' is required (a policy name: ${INNER_NAMES.join(', ')})`;
      if (typeof inner !== 'string' || !INNER_NAMES.includes(inner)) {
        return `by-event-type: inner must be one of ${INNER_NAMES.join(', ')}, got '${String(inner)}'`;
      }
      const r = batchPolicyByName(inner, rest, s);
      return 'error' in r ? `by-event-type: ${r.error}` : byEventType(r.policy);
    },
  },
};

/** The policy names `batchPolicyByName` accepts. */
export const BATCH_POLICY_NAMES: readonly string[] = Object.keys(SPECS);
const INNER_NAMES = BATCH_POLICY_NAMES.filter((n) => n !== 'by-event-type');

/**
 * A batching policy from its name and parameters (for sweeps and the command line). Bad
 * input gives one line naming what was wrong and what is accepted; nothing throws.
 *
 * @example
 *   const r = batchPolicyByName('window-or-count', { windowNs: 50_000, count: 8 }, sim.scheduler);
 *   if ('error' in r) fail(r.error); else new SyncBatcher(sim, nic, r.name, r.policy);
 *   batchPolicyByName('by-event-type', { inner: 'window', windowNs: 20_000 }, sim.scheduler);
 */
export function batchPolicyByName(name: string, params: BatchPolicyParams, scheduler: SchedulerLike): { name: string; policy: BatchPolicy } | { error: string } {
  const spec = Object.hasOwn(SPECS, name) ? SPECS[name] : undefined;
  if (!spec) return { error: `unknown batching policy '${name}'; valid policies: ${BATCH_POLICY_NAMES.join(', ')}` };
  const known = [...spec.required, ...spec.optional];
  const values: Record<string, number> = {};
  if (name !== 'by-event-type') {
    for (const key of Object.keys(params)) {
      if (params[key] === undefined) continue;
      if (!known.includes(key)) {
        return { error: `${name}: unknown parameter '${key}'; ${known.length > 0 ? `accepted: ${known.join(', ')}` : 'it takes no parameters'}` };
      }
    }
    for (const key of known) {
      const raw = params[key];
      if (raw === undefined) {
        if (spec.required.includes(key)) return { error: `${name}: parameter '${key}' is required (${ACCEPTS[key]})` };
        continue;
      }
      const v = typeof raw === 'number' ? raw : /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(v) || v < 1) return { error: `${name}: ${key} must be ${ACCEPTS[key]}, got '${String(raw)}'` };
      values[key] = v;
    }
  }
  const policy = spec.build(values, scheduler, params);
  if (typeof policy === 'string') return { error: policy };
  return { name: describePolicy(name, params), policy };
}

/** "window(windowNs=50000)": the policy as a sweep labels it. */
function describePolicy(name: string, params: BatchPolicyParams): string {
  const parts = Object.entries(params).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${String(v)}`);
  return parts.length > 0 ? `${name}(${parts.join(', ')})` : name;
}
