import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { PROFILE_NAMES, type ProfileName } from '../../kernel-model/index.ts';
import { BATCH_POLICY_NAMES } from '../../driver/index.ts';
import { isModuleRef } from '../user-module.ts';

/**
 * A sweep spec: a grid of parameter lists, the seeds each grid point is run with, the
 * point runner that turns (params, seed) into figures, and the virtual duration of one
 * run. Presets are specs by name; a spec file is the same object as JSON.
 *
 * @example
 *   { "name": "mine", "runner": "batching", "seeds": [1, 2], "durationNs": 2000000,
 *     "grid": { "policy": ["none", "window"], "windowNs": [0, 10000, 100000], "tasks": [1, 4] } }
 */

/** The point runners by name (their code is in point-runners.ts, loaded lazily). */
export const RUNNER_NAMES = ['synthetic', 'batching'] as const;
export type RunnerName = (typeof RUNNER_NAMES)[number];

/**
 * Sync batching policies (driver/batching, every one batchPolicyByName builds), or a
 * module reference to the user's own (`./file.ts#export`, resolved relative to the spec
 * file). Each policy uses only its own parameters: `windowNs` (window, window-or-count),
 * `count` (count, window-or-count, adaptive's largest batch), `minWindowNs`/`maxWindowNs`
 * (adaptive), `inner` (by-event-type, with the inner policy's parameters).
 */
export const POLICY_NAMES: readonly string[] = BATCH_POLICY_NAMES;
/** A built-in policy name or a module reference. */
export type PolicyName = string;

/** Registration strategies that batch syncs (driver/umem-odp.ts, driver/umem-holdoff.ts), or a user strategy module. */
export const STRATEGY_NAMES = ['odp', 'holdoff'] as const;
/** A built-in strategy name or a module reference. */
export type StrategyName = string;

/** The inner policies by-event-type accepts. */
export const INNER_POLICY_NAMES: readonly string[] = BATCH_POLICY_NAMES.filter((n) => n !== 'by-event-type');

/**
 * Workload mixes. All are RDMA-WRITE heavy on one registered buffer, with the
 * invalidating tasks churning pieces of it:
 * - `dma-heavy`: munmap+mmap and madvise(DONTNEED) churn;
 * - `dma-heavy-reclaim`: the same plus memory pressure, so kswapd reclaims pages of the buffer;
 * - `dma-heavy-dontneed`: madvise(DONTNEED) churn only (no VMA changes);
 * - `dma-heavy-punch`: the buffer is a MAP_SHARED file mapping and the tasks punch holes in
 *   it (fallocate PUNCH_HOLE takes no mmap_lock, but the inode lock: the punches, and so
 *   their invalidations, go one at a time, against the DMA);
 * - `dma-heavy-mm`: `dma-heavy-reclaim` plus the mm's other background invalidators:
 *   automatic NUMA balancing scans (kernel-model/numa-balancing.ts) and KSM merging the
 *   buffer's identical pages (kernel-model/ksm.ts, the buffer MADV_MERGEABLE).
 */
export const WORKLOAD_NAMES = ['dma-heavy', 'dma-heavy-reclaim', 'dma-heavy-dontneed', 'dma-heavy-punch', 'dma-heavy-mm'] as const;
export type WorkloadName = (typeof WORKLOAD_NAMES)[number];

const PROFILES = PROFILE_NAMES as unknown as readonly [ProfileName, ...ProfileName[]];

/** The grid keys every point has, in the order the expansion nests them (outermost first). */
export const GRID_KEYS = ['strategy', 'workload', 'profile', 'syncNs', 'tasks', 'policy', 'windowNs', 'count'] as const;
export type GridKey = (typeof GRID_KEYS)[number];
/** Keys only the policies that use them have (after GRID_KEYS in the nesting). */
export const POLICY_KEYS = ['minWindowNs', 'maxWindowNs', 'inner'] as const;
export type PolicyKey = (typeof POLICY_KEYS)[number];
/** A user module's own parameter as a grid key: `strategy.KEY` or `batching.KEY`. */
export const USER_KEY = /^(strategy|batching)\.[A-Za-z_][A-Za-z0-9_]*$/;

const list = <T extends z.ZodType>(item: T) => z.array(item).min(1);
const MODULE_OR = (names: readonly string[]) => `valid: ${names.join(', ')}, or ./file.ts#export`;
const nameOrModule = (names: readonly string[]) =>
  z.string().refine((v) => names.includes(v) || isModuleRef(v), { message: MODULE_OR(names), params: { valid: true } });

const GridShape = {
  strategy: list(nameOrModule(STRATEGY_NAMES)).default(['odp']),
  workload: list(z.enum(WORKLOAD_NAMES)).default(['dma-heavy']),
  profile: list(z.enum(PROFILES)).default(['linux-6.x']),
  /** Device sync cost (ns); null is the cost model's default. */
  syncNs: list(z.int().min(1).max(1e9).nullable()).default([null]),
  /** Concurrent invalidating tasks. */
  tasks: list(z.int().min(1).max(256)).default([1]),
  policy: list(nameOrModule(POLICY_NAMES)).default(['none']),
  /** Batching window (ns), for `window` and `window-or-count`. */
  windowNs: list(z.int().min(0).max(1e10)).default([0]),
  /** Batch size that flushes, for `count` and `window-or-count`. */
  count: list(z.int().min(1).max(1e6)).default([16]),
  /** adaptive: its smallest and largest window (ns). */
  minWindowNs: list(z.int().min(1).max(1e10)).default([1_000]),
  maxWindowNs: list(z.int().min(1).max(1e10)).default([100_000]),
  /** by-event-type: the policy each event type gets. */
  inner: list(z.enum(INNER_POLICY_NAMES as [string, ...string[]])).default(['window']),
};

/** The grid: the keys above, plus `strategy.KEY`/`batching.KEY` lists for user modules' own parameters. */
const GridSchema = z.object(GridShape).catchall(list(z.union([z.number(), z.string(), z.boolean(), z.null()])));

export const SweepSpecSchema = z.strictObject({
  /** A safe file name: it names the default output directory (never `.`, `..` or a hidden one). */
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'a letter or digit, then letters, digits, dot, dash and underscore, at most 64'),
  runner: z.enum(RUNNER_NAMES),
  seeds: list(z.int().min(0).max(2 ** 31 - 1)),
  /** Virtual time each point runs for (ns). */
  durationNs: z.int().min(1_000).max(3_600_000_000_000),
  grid: GridSchema.default(GridSchema.parse({})),
  description: z.string().optional(),
});

export type SweepSpec = z.output<typeof SweepSpecSchema>;
export type SweepSpecInput = z.input<typeof SweepSpecSchema>;
export type Grid = SweepSpec['grid'];

const KNOWN_KEYS: Record<string, readonly string[]> = {
  '': Object.keys(SweepSpecSchema.shape),
  grid: [...Object.keys(GridShape), 'strategy.KEY', 'batching.KEY'],
};

/** A bad spec: one line naming the key and what is accepted. */
export class SpecError extends Error {}

function formatPath(path: readonly PropertyKey[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${String(p)}` : String(p);
  return s || '(top level)';
}

function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  const j = JSON.stringify(v);
  return j === undefined ? String(v) : j.length > 40 ? `${j.slice(0, 37)}...` : j;
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'number' && !Number.isInteger(v)) return `the number ${v}`;
  return typeof v === 'object' ? 'an object' : `${typeof v} ${show(v)}`;
}

function describeIssue(iss: z.core.$ZodIssue): string {
  const where = `spec ${formatPath(iss.path)}`;
  const input = (iss as { input?: unknown }).input;
  switch (iss.code) {
    case 'invalid_value':
      return `${where}: ${show(input)} is not accepted; valid: ${iss.values.map((v) => String(v)).join(', ')}`;
    case 'unrecognized_keys': {
      const known = KNOWN_KEYS[iss.path.join('.')] ?? [];
      return `${where}: unknown key${iss.keys.length > 1 ? 's' : ''} ${iss.keys.map((k) => `'${k}'`).join(', ')}; valid keys: ${known.join(', ')}`;
    }
    case 'invalid_type': {
      if (input === undefined) return `${where}: is required (${iss.expected})`;
      const expected = iss.expected === 'int' ? 'an integer' : iss.expected === 'array' ? 'a list' : `a ${iss.expected}`;
      return `${where}: expected ${expected}, got ${kind(input)}`;
    }
    case 'too_small':
      if (iss.origin === 'array') return `${where}: must list at least ${String(iss.minimum)} value`;
      return `${where}: must be at least ${String(iss.minimum)}, got ${show(input)}`;
    case 'too_big':
      return `${where}: must be at most ${String(iss.maximum)}, got ${show(input)}`;
    case 'invalid_format':
      return `${where}: ${show(input)} is not accepted (${iss.message})`;
    case 'custom':
      if ((iss.params as { valid?: boolean } | undefined)?.valid) return `${where}: ${show(input)} is not accepted; ${iss.message}`;
      return `${where}: ${iss.message}`;
    default:
      return `${where}: ${iss.message}`;
  }
}

/** Validate a parsed spec object; throws SpecError with one line on the first problem. */
export function parseSpec(raw: unknown, source = 'spec'): SweepSpec {
  const r = SweepSpecSchema.safeParse(raw, { reportInput: true });
  if (!r.success) {
    const first = r.error.issues[0];
    const more = r.error.issues.length > 1 ? ` (and ${r.error.issues.length - 1} more problem${r.error.issues.length > 2 ? 's' : ''})` : '';
    const msg = first ? describeIssue(first) : 'invalid spec';
    throw new SpecError(`${source === 'spec' ? '' : `${source}: `}${msg}${more}`);
  }
  const spec = r.data;
  const prefix = source === 'spec' ? '' : `${source}: `;
  for (const key of Object.keys(spec.grid)) {
    if (!Object.hasOwn(GridShape, key) && !USER_KEY.test(key)) {
      throw new SpecError(`${prefix}spec grid: unknown key '${key}'; valid keys: ${KNOWN_KEYS['grid']!.join(', ')}`);
    }
  }
  const dupSeed = firstDuplicate(spec.seeds);
  if (dupSeed !== undefined) throw new SpecError(`${prefix}spec seeds: ${dupSeed} is listed twice`);
  for (const key of Object.keys(spec.grid)) {
    const d = firstDuplicate(spec.grid[key] as readonly unknown[]);
    if (d !== undefined) throw new SpecError(`${prefix}spec grid.${key}: ${show(d)} is listed twice`);
  }
  if (spec.runner === 'synthetic') {
    const mod = [...spec.grid.strategy].find((x) => isModuleRef(x));
    if (mod) throw new SpecError(`${prefix}spec grid.strategy: ${mod} needs the batching runner (the synthetic runner models odp and holdoff only)`);
  }
  return spec;
}

/** The spec's grid lists in expansion order (GRID_KEYS, POLICY_KEYS, then user keys sorted), for counting and expanding. */
export function gridLists(spec: SweepSpec): [string, readonly unknown[]][] {
  const g = spec.grid as Record<string, readonly unknown[]>;
  const user = Object.keys(g).filter((k) => USER_KEY.test(k)).sort();
  return [...GRID_KEYS, ...POLICY_KEYS, ...user].map((k) => [k, g[k] ?? []]);
}

/** Grid points before expansion (an upper bound: combinations a policy does not use collapse). */
export function countPoints(spec: SweepSpec): number {
  return gridLists(spec).reduce((n, [, xs]) => n * xs.length, spec.seeds.length);
}

/** The default limit on a sweep's points (`--max-points` overrides it). */
export const DEFAULT_MAX_POINTS = 100_000;

function firstDuplicate(xs: readonly unknown[]): unknown {
  const seen = new Set<unknown>();
  for (const x of xs) {
    if (seen.has(x)) return x;
    seen.add(x);
  }
  return undefined;
}

// ---- presets ---------------------------------------------------------------------------

/** 0, then 1 µs to 1 ms in a geometric series (half-decade steps), in ns. */
export const WINDOW_SERIES_NS: readonly number[] = [0, 1_000, 3_162, 10_000, 31_623, 100_000, 316_228, 1_000_000];

export const PRESETS: Readonly<Record<string, SweepSpecInput>> = {
  /**
   * The default trade-off study (issue "Batching latency trade-offs"): odp and holdoff,
   * every policy, windows from 0 to 1 ms, 1, 4 and 16 invalidating tasks, RDMA-WRITE heavy
   * traffic with munmap/madvise churn and reclaim, three seeds.
   */
  batching: {
    name: 'batching',
    description: 'sync batching: invalidation latency against DMA throughput, odp and holdoff, policies none/window/count/window-or-count, churn with reclaim, NUMA scans and KSM',
    runner: 'batching',
    seeds: [1, 2, 3],
    // Each point runs at least 10 ms and ten times its window (grid.ts pointDurationNs).
    durationNs: 10_000_000,
    grid: {
      strategy: ['odp', 'holdoff'],
      workload: ['dma-heavy-mm'],
      profile: ['linux-6.x'],
      syncNs: [null],
      tasks: [1, 4, 16],
      policy: ['none', 'window', 'count', 'window-or-count'],
      windowNs: [...WINDOW_SERIES_NS],
      count: [16],
    },
  },
  /** The default study's grid on the synthetic runner (no driver needed; seconds to run). */
  'batching-synthetic': {
    name: 'batching-synthetic',
    description: 'the batching grid on the synthetic runner',
    runner: 'synthetic',
    seeds: [1, 2, 3],
    durationNs: 20_000_000,
    grid: {
      strategy: ['odp', 'holdoff'],
      workload: ['dma-heavy-reclaim'],
      tasks: [1, 4, 16],
      policy: ['none', 'window', 'count', 'window-or-count'],
      windowNs: [...WINDOW_SERIES_NS],
      count: [16],
    },
  },
  /** A tiny sweep for tests and for trying the machinery. */
  smoke: {
    name: 'smoke',
    description: 'a tiny synthetic sweep',
    runner: 'synthetic',
    seeds: [1, 2],
    durationNs: 2_000_000,
    grid: {
      policy: ['none', 'window', 'count', 'window-or-count'],
      windowNs: [0, 10_000, 100_000],
      count: [8],
      tasks: [1, 4],
    },
  },
};

export const PRESET_NAMES = Object.keys(PRESETS);

/**
 * A preset by name, or a spec file by path (anything ending in .json, or containing a
 * slash). Throws SpecError with one line.
 */
export function loadSpec(nameOrPath: string, opts: { maxPoints?: number } = {}): SweepSpec {
  const spec = loadSpecUnchecked(nameOrPath);
  const max = opts.maxPoints ?? DEFAULT_MAX_POINTS;
  const n = countPoints(spec);
  if (n > max) {
    const sizes = gridLists(spec).filter(([, xs]) => xs.length > 1).map(([k, xs]) => `${xs.length} ${k}`);
    throw new SpecError(`spec ${spec.name}: the grid has up to ${n.toLocaleString('en-US')} points (${[...sizes, `${spec.seeds.length} seeds`].join(' × ')}), more than the limit of ${max.toLocaleString('en-US')}; shrink it or pass --max-points ${n}`);
  }
  return spec;
}

function loadSpecUnchecked(nameOrPath: string): SweepSpec {
  const preset = Object.hasOwn(PRESETS, nameOrPath) ? PRESETS[nameOrPath] : undefined;
  if (preset) return parseSpec(preset);
  if (!nameOrPath.endsWith('.json') && !nameOrPath.includes('/')) {
    throw new SpecError(`unknown preset '${nameOrPath}'; presets: ${PRESET_NAMES.join(', ')}; or a path to a spec .json file`);
  }
  let text: string;
  try {
    text = readFileSync(nameOrPath, 'utf8');
  } catch (err) {
    throw new SpecError(`cannot read spec file ${nameOrPath}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new SpecError(`spec file ${nameOrPath} is not valid JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  return parseSpec(raw, nameOrPath);
}
