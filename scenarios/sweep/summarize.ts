import { configKey, type PointParams } from './grid.ts';
import { GRID_KEYS, POLICY_KEYS, type PolicyKey, type SweepSpec } from './spec.ts';
import type { PointResult } from './worker.ts';

/** One figure over the seeds of a configuration. `sd` is the sample standard deviation (0 for one seed). */
export interface FigureStats {
  mean: number;
  sd: number;
  min: number;
  max: number;
}

/** One grid configuration, aggregated over its seeds. */
export interface SummaryRow {
  params: PointParams;
  /** Seeds that gave a record. */
  seeds: number;
  /** Seeds whose point failed. */
  failed: number;
  figures: Record<string, FigureStats>;
}

export interface SweepSummary {
  name: string;
  runner: string;
  durationNs: number;
  seeds: number[];
  /** Figure names, in the order the runner reports them. */
  figures: string[];
  /** In grid order (the first point index of each configuration). */
  rows: SummaryRow[];
}

const round3 = (x: number): number => Math.round(x * 1000) / 1000;

/**
 * Aggregate results over seeds. The input order does not matter: results are taken in
 * point-index order, so the same results give the same summary, byte for byte.
 */
export function summarize(spec: SweepSpec, results: readonly PointResult[]): SweepSummary {
  const sorted = [...results].sort((a, b) => a.index - b.index);
  const groups = new Map<string, { params: PointParams; records: Record<string, number>[]; failed: number }>();
  const figures: string[] = [];
  const seenFigure = new Set<string>();
  for (const r of sorted) {
    const key = configKey(r.params);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { params: r.params, records: [], failed: 0 }));
    if (r.record) {
      g.records.push(r.record);
      for (const f of Object.keys(r.record)) {
        if (!seenFigure.has(f)) {
          seenFigure.add(f);
          figures.push(f);
        }
      }
    } else {
      g.failed++;
    }
  }
  const rows: SummaryRow[] = [];
  for (const g of groups.values()) {
    const stats: Record<string, FigureStats> = {};
    for (const f of figures) {
      const xs = g.records.map((r) => r[f]).filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
      if (xs.length === 0) continue;
      const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
      const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
      stats[f] = { mean: round3(mean), sd: round3(sd), min: Math.min(...xs), max: Math.max(...xs) };
    }
    rows.push({ params: g.params, seeds: g.records.length, failed: g.failed, figures: stats });
  }
  return { name: spec.name, runner: spec.runner, durationNs: spec.durationNs, seeds: [...spec.seeds], figures, rows };
}

function csvCell(v: unknown): string {
  if (v === null || v === undefined) return '';
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** One row per configuration: the grid parameters, seeds, then mean and sd of each figure. */
export function summaryCsv(summary: SweepSummary): string {
  // Keys only some policies or user modules have get a column when some row has them.
  const extra = [
    ...POLICY_KEYS.filter((k) => summary.rows.some((r) => r.params[k] !== undefined)),
    ...[...new Set(summary.rows.flatMap((r) => Object.keys(r.params.user ?? {})))].sort(),
  ];
  const cell = (p: SummaryRow['params'], k: string): unknown => ((POLICY_KEYS as readonly string[]).includes(k) ? p[k as PolicyKey] : p.user?.[k]);
  const header = [...GRID_KEYS, ...extra, 'seeds', 'failed', ...summary.figures.flatMap((f) => [`${f}_mean`, `${f}_sd`])];
  const lines = [header.join(',')];
  for (const row of summary.rows) {
    const cells: unknown[] = [...GRID_KEYS.map((k) => row.params[k]), ...extra.map((k) => cell(row.params, k)), row.seeds, row.failed];
    for (const f of summary.figures) {
      const s = row.figures[f];
      cells.push(s?.mean, s?.sd);
    }
    lines.push(cells.map(csvCell).join(','));
  }
  return `${lines.join('\n')}\n`;
}

export function summaryJson(summary: SweepSummary): string {
  return `${JSON.stringify(summary, null, 2)}\n`;
}
