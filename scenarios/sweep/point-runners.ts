import type { PointParams } from './grid.ts';
import type { RunnerName } from './spec.ts';

/**
 * What one point produces: flat numeric figures. Every runner gives at least the
 * `STANDARD_FIGURES`; it may add its own after them.
 */
export type PointRecord = Record<string, number>;

/** A point runner: deterministic in (params, seed, durationNs); model code only, no wall clock. */
export type PointRunner = (params: PointParams, seed: number, durationNs: number) => PointRecord;

/** The figures every runner reports, in this order, with what they are. */
export const STANDARD_FIGURES = {
  invP50Ns: 'invalidation latency p50: notifier callback entry to return, zap and the sync fencing it (ns)',
  invP99Ns: 'invalidation latency p99 (ns)',
  opP50Ns: 'latency p50 of the kernel operation that waited on the invalidation (munmap, madvise, reclaim) (ns)',
  opP99Ns: 'kernel operation latency p99 (ns)',
  throughputBytesPerSec: 'DMA throughput: bytes the NIC moved per virtual second',
  bytesMoved: 'bytes the NIC moved',
  invalidations: 'invalidations (notifier callbacks) measured',
  syncs: 'device syncs',
  faults: 'NIC page faults',
  virtualNs: 'virtual time the point ran (ns)',
} as const;

export type StandardFigure = keyof typeof STANDARD_FIGURES;

/**
 * The runners by name. Loaded lazily, so a runner whose dependencies do not load (a
 * driver strategy being rewritten) breaks only the points that use it.
 */
export const POINT_RUNNERS: Readonly<Record<RunnerName, () => Promise<PointRunner>>> = {
  synthetic: async () => (await import('./synthetic-runner.ts')).runSyntheticPoint,
  batching: async () => (await import('./batching-runner.ts')).runBatchingPoint,
};

/** Nearest-rank percentile of a list of numbers (0 for an empty list). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1] ?? 0;
}
