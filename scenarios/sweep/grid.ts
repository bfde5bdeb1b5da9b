import { createHash } from 'node:crypto';
import type { ProfileName } from '../../kernel-model/index.ts';
import { isModuleRef } from '../user-module.ts';
import { gridLists, type PolicyName, type RunnerName, type StrategyName, type SweepSpec, type WorkloadName } from './spec.ts';

/**
 * One grid point's parameters. A policy that does not use the window or the count has it
 * as null, so `none` is run once per configuration, not once per window value.
 */
export interface PointParams {
  strategy: StrategyName;
  workload: WorkloadName;
  profile: ProfileName;
  /** Device sync cost (ns), or null for the cost model's default. */
  syncNs: number | null;
  tasks: number;
  policy: PolicyName;
  windowNs: number | null;
  count: number | null;
  /** adaptive only. */
  minWindowNs?: number;
  maxWindowNs?: number;
  /** by-event-type only: the policy each event type gets. */
  inner?: string;
  /** A user module's own parameters (`strategy.KEY`, `batching.KEY`), only for a point that uses that module. */
  user?: Record<string, number | string | boolean | null>;
}

/** A point to run: its place in the whole grid, a stable id, params and seed. */
export interface SweepPoint {
  /** Position in the expanded grid (the canonical order of results). */
  index: number;
  /** Hash of runner, duration, params and seed: the same point has the same id in every run. */
  id: string;
  runner: RunnerName;
  durationNs: number;
  seed: number;
  params: PointParams;
  /** Where module references in `params` are resolved (the spec file's directory); not part of the id. */
  baseDir?: string;
}

export interface Shard {
  index: number;
  count: number;
}

/** Which parameters a policy uses (by-event-type: those of its inner policy). */
/** The least virtual time a point of the full-model runner runs (issue 15 item 6): enough for a p99. */
export const MIN_POINT_NS = 10_000_000;

/**
 * How long a point runs: the spec's duration, but on the `batching` runner at least
 * MIN_POINT_NS and ten times the point's longest window, so a p99 rests on more than a
 * handful of invalidations and a window is not longer than the run that measures it.
 */
export function pointDurationNs(runner: string, specNs: number, params: PointParams): number {
  if (runner !== 'batching') return specNs;
  const longest = Math.max(params.windowNs ?? 0, params.maxWindowNs ?? 0);
  return Math.max(specNs, MIN_POINT_NS, 10 * longest);
}

export function usesWindow(policy: PolicyName, inner?: string): boolean {
  if (policy === 'by-event-type') return inner !== undefined && usesWindow(inner);
  return policy === 'window' || policy === 'window-or-count';
}
export function usesCount(policy: PolicyName, inner?: string): boolean {
  if (policy === 'by-event-type') return inner !== undefined && usesCount(inner);
  return policy === 'count' || policy === 'window-or-count' || policy === 'adaptive';
}
function usesAdaptive(policy: PolicyName, inner?: string): boolean {
  return policy === 'adaptive' || (policy === 'by-event-type' && inner === 'adaptive');
}

/** JSON with object keys in a fixed order (the order of `keys`, then sorted), for hashing. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
}

/** The point's configuration without its seed (what summaries aggregate over seeds). */
export function configKey(params: PointParams): string {
  return canonicalJson(params);
}

function pointId(runner: string, durationNs: number, params: PointParams, seed: number): string {
  return createHash('sha256').update(canonicalJson({ runner, durationNs, params, seed })).digest('hex').slice(0, 16);
}

/**
 * Expand a spec into its points, in a fixed order: strategy, workload, profile, sync cost,
 * tasks, policy, window, count, then adaptive's windows, by-event-type's inner policy and
 * user modules' own parameters (outermost first), seeds innermost. Parameters a point
 * does not use are null (or absent) and the duplicates this makes are dropped, keeping
 * the first. Count first (`countPoints`): this builds every point.
 */
export function expandGrid(spec: SweepSpec, baseDir?: string): SweepPoint[] {
  const lists = gridLists(spec);
  const points: SweepPoint[] = [];
  const seen = new Set<string>();
  const at = new Array<number>(lists.length).fill(0);
  if (lists.some(([, xs]) => xs.length === 0)) return points;
  for (;;) {
    const v: Record<string, unknown> = {};
    lists.forEach(([k, xs], i) => (v[k] = xs[at[i]!]));
    const policy = v['policy'] as string;
    const inner = policy === 'by-event-type' ? (v['inner'] as string) : undefined;
    const params: PointParams = {
      strategy: v['strategy'] as string, workload: v['workload'] as WorkloadName, profile: v['profile'] as ProfileName,
      syncNs: v['syncNs'] as number | null, tasks: v['tasks'] as number, policy,
      windowNs: usesWindow(policy, inner) ? (v['windowNs'] as number) : null,
      count: usesCount(policy, inner) ? (v['count'] as number) : null,
    };
    if (usesAdaptive(policy, inner)) {
      params.minWindowNs = v['minWindowNs'] as number;
      params.maxWindowNs = v['maxWindowNs'] as number;
    }
    if (inner !== undefined) params.inner = inner;
    const user: Record<string, number | string | boolean | null> = {};
    for (const [k] of lists) {
      if ((k.startsWith('strategy.') && isModuleRef(params.strategy)) || (k.startsWith('batching.') && isModuleRef(policy))) {
        user[k] = v[k] as number | string | boolean | null;
      }
    }
    if (Object.keys(user).length > 0) params.user = user;
    const key = configKey(params);
    if (!seen.has(key)) {
      seen.add(key);
      for (const seed of spec.seeds) {
        points.push({
          index: points.length,
          id: pointId(spec.runner, pointDurationNs(spec.runner, spec.durationNs, params), params, seed),
          runner: spec.runner,
          durationNs: pointDurationNs(spec.runner, spec.durationNs, params),
          seed,
          params,
          ...(baseDir !== undefined ? { baseDir } : {}),
        });
      }
    }
    // The odometer: the last key turns fastest.
    let i = lists.length - 1;
    for (; i >= 0; i--) {
      at[i]!++;
      if (at[i]! < lists[i]![1].length) break;
      at[i] = 0;
    }
    if (i < 0) break;
  }
  return points;
}

/** `--shard i/n`: the points whose index is i mod n. Every point is in exactly one shard. */
export function shardPoints(points: readonly SweepPoint[], shard: Shard | null): SweepPoint[] {
  if (!shard) return [...points];
  return points.filter((p) => p.index % shard.count === shard.index);
}

/** Parse `i/n` (0 <= i < n); returns an error message for anything else. */
export function parseShard(text: string): Shard | { error: string } {
  const m = /^(\d{1,6})\/(\d{1,6})$/.exec(text.trim());
  const bad = { error: `--shard must be i/n with 0 <= i < n (e.g. 0/4), got '${text}'` };
  if (!m) return bad;
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (count < 1 || index >= count) return bad;
  return { index, count };
}

export function formatShard(s: Shard | null): string {
  return s ? `${s.index}/${s.count}` : 'all';
}
