import { createHash } from 'node:crypto';
import type { ProfileName } from '../../kernel-model/index.ts';
import type { PolicyName, RunnerName, StrategyName, SweepSpec, WorkloadName } from './spec.ts';

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
}

export interface Shard {
  index: number;
  count: number;
}

/** Which parameters a policy uses. */
export function usesWindow(policy: PolicyName): boolean {
  return policy === 'window' || policy === 'window-or-count';
}
export function usesCount(policy: PolicyName): boolean {
  return policy === 'count' || policy === 'window-or-count';
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
 * tasks, policy, window, count (outermost first), seeds innermost. Parameters a policy does
 * not use are null and the duplicates this makes are dropped, keeping the first.
 */
export function expandGrid(spec: SweepSpec): SweepPoint[] {
  const g = spec.grid;
  const points: SweepPoint[] = [];
  const seen = new Set<string>();
  for (const strategy of g.strategy)
    for (const workload of g.workload)
      for (const profile of g.profile)
        for (const syncNs of g.syncNs)
          for (const tasks of g.tasks)
            for (const policy of g.policy)
              for (const windowNs of g.windowNs)
                for (const count of g.count) {
                  const params: PointParams = {
                    strategy, workload, profile, syncNs, tasks, policy,
                    windowNs: usesWindow(policy) ? windowNs : null,
                    count: usesCount(policy) ? count : null,
                  };
                  const key = configKey(params);
                  if (seen.has(key)) continue;
                  seen.add(key);
                  for (const seed of spec.seeds) {
                    points.push({
                      index: points.length,
                      id: pointId(spec.runner, spec.durationNs, params, seed),
                      runner: spec.runner,
                      durationNs: spec.durationNs,
                      seed,
                      params,
                    });
                  }
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
