import * as vega from 'vega';
import * as vl from 'vega-lite';
import { usesWindow } from './grid.ts';
import type { SummaryRow, SweepSummary } from './summarize.ts';

/**
 * SVG plots of a sweep summary, rendered in Node by vega-lite + vega (renderer 'none', no
 * canvas package). Each plot has one panel per configuration (strategy, and workload,
 * profile or sync cost when they vary) and per number of invalidating tasks.
 */
export interface Plot {
  /** File name in the output directory. */
  file: string;
  title: string;
  spec: vl.TopLevelSpec;
}

const POLICY_ORDER = ['none', 'window', 'count', 'window-or-count'];
const WINDOW_TITLE = 'batching window (µs)';

interface Datum {
  panel: string;
  tasks: number;
  policy: string;
  windowUs: number | null;
  invP50Us: number;
  invP99Us: number;
  opP99Us: number;
  gbps: number;
  pareto?: boolean;
}

function fig(row: SummaryRow, name: string): number | undefined {
  return row.figures[name]?.mean;
}

/** The label of a row's panel: its strategy plus whatever else varies in the summary. */
function panelLabeller(rows: readonly SummaryRow[]): (r: SummaryRow) => string {
  const varies = (k: 'workload' | 'profile' | 'syncNs') => new Set(rows.map((r) => r.params[k])).size > 1;
  const parts: ((r: SummaryRow) => string)[] = [(r) => r.params.strategy];
  if (varies('workload')) parts.push((r) => r.params.workload);
  if (varies('profile')) parts.push((r) => r.params.profile);
  if (varies('syncNs')) parts.push((r) => (r.params.syncNs === null ? 'default sync' : `sync ${r.params.syncNs / 1000} µs`));
  return (r) => parts.map((p) => p(r)).join(' · ');
}

function toData(summary: SweepSummary): Datum[] {
  const label = panelLabeller(summary.rows);
  const out: Datum[] = [];
  for (const r of summary.rows) {
    const p50 = fig(r, 'invP50Ns');
    const p99 = fig(r, 'invP99Ns');
    const tp = fig(r, 'throughputBytesPerSec');
    if (p50 === undefined || p99 === undefined || tp === undefined) continue;
    out.push({
      panel: label(r),
      tasks: r.params.tasks,
      policy: r.params.policy,
      windowUs: r.params.windowNs === null ? null : r.params.windowNs / 1000,
      invP50Us: p50 / 1000,
      invP99Us: p99 / 1000,
      opP99Us: (fig(r, 'opP99Ns') ?? 0) / 1000,
      gbps: tp / 1e9,
    });
  }
  return out;
}

/** Policies without a window are drawn as flat lines across the windows of the grid. */
function spreadOverWindows(data: readonly Datum[]): Datum[] {
  const windows = [...new Set(data.map((d) => d.windowUs).filter((w): w is number => w !== null))].sort((a, b) => a - b);
  const xs = windows.length > 0 ? windows : [0];
  return data.flatMap((d) => (d.windowUs !== null ? [d] : xs.map((w) => ({ ...d, windowUs: w }))));
}

function markPareto(data: readonly Datum[]): Datum[] {
  return data.map((d) => {
    const dominated = data.some(
      (o) => o !== d && o.panel === d.panel && o.tasks === d.tasks &&
        o.invP99Us <= d.invP99Us && o.gbps >= d.gbps && (o.invP99Us < d.invP99Us || o.gbps > d.gbps),
    );
    return { ...d, pareto: !dominated };
  });
}

/** Ticks for a symlog axis: 0, then 1, 3, 10, 30, ... up to the first at or past `max`. */
function symlogTicks(max: number): number[] {
  const ticks = [0];
  for (let decade = 1; ; decade *= 10) {
    for (const m of [1, 3]) {
      ticks.push(m * decade);
      if (m * decade >= max) return ticks;
    }
  }
}

/** Tick labels: up to 4 significant digits, no exponent, thousands separated. */
const TICK_FORMAT = ',.4~r';

function windowAxisValues(data: readonly Datum[]): number[] {
  return [...new Set(data.map((d) => d.windowUs ?? 0))].sort((a, b) => a - b);
}

const facet = {
  row: { field: 'panel', type: 'nominal', title: null, header: { labelAngle: 0, labelAlign: 'left', labelFontSize: 12 } },
  column: { field: 'tasks', type: 'ordinal', title: 'concurrent invalidating tasks', header: { labelFontSize: 12 } },
} as const;

const policyColor = { field: 'policy', type: 'nominal', title: 'policy', scale: { domain: POLICY_ORDER } } as const;
/** `window` drawn wider, so that `window-or-count` drawn over it (equal when batches never reach the count) leaves it visible. */
const policyWidth = { field: 'policy', type: 'ordinal', title: 'policy', scale: { type: 'ordinal', domain: POLICY_ORDER, range: [1.5, 4, 1.5, 1.5] } } as const;

function base(title: string, values: readonly object[]) {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, fontSize: 14 },
    data: { values: [...values] },
    background: 'white',
    config: { axis: { titleFontSize: 12, labelFontSize: 11 }, legend: { titleFontSize: 12, labelFontSize: 11 } },
  };
}

/** The plots of a summary (none when the runner reports no latency or throughput). */
export function buildPlots(summary: SweepSummary): Plot[] {
  const data = toData(summary);
  if (data.length === 0) return [];
  const hasWindow = summary.rows.some((r) => usesWindow(r.params.policy));
  const spread = spreadOverWindows(data);
  const ticks = windowAxisValues(spread);
  const xWindow = {
    field: 'windowUs', type: 'quantitative', title: WINDOW_TITLE,
    scale: { type: 'symlog', constant: 1 },
    axis: { values: ticks, format: TICK_FORMAT, labelOverlap: 'greedy' },
  } as const;
  const plots: Plot[] = [];

  const latencyRows = spread.flatMap((d) => [
    { ...d, percentile: 'p50', latencyUs: d.invP50Us },
    { ...d, percentile: 'p99', latencyUs: d.invP99Us },
  ]);
  plots.push({
    file: 'latency-vs-window.svg',
    title: 'Invalidation latency against batching window',
    spec: {
      ...base(`${summary.name}: invalidation latency (p50 solid, p99 dashed) against batching window`, latencyRows),
      facet,
      spec: {
        width: 260, height: 190,
        mark: { type: 'line', point: true },
        encoding: {
          x: xWindow,
          y: {
            field: 'latencyUs', type: 'quantitative', title: 'invalidation latency (µs)', scale: { type: 'symlog', constant: 1 },
            axis: { values: symlogTicks(Math.max(1, ...latencyRows.map((d) => d.latencyUs))), format: TICK_FORMAT },
          },
          color: policyColor,
          strokeDash: { field: 'percentile', type: 'nominal', legend: null, scale: { domain: ['p50', 'p99'], range: [[1, 0], [5, 3]] } },
          shape: { field: 'percentile', type: 'nominal', title: 'percentile (p50 solid, p99 dashed)', scale: { domain: ['p50', 'p99'], range: ['circle', 'triangle-up'] } },
          strokeWidth: policyWidth,
          detail: { field: 'percentile' },
        },
      },
    } as unknown as vl.TopLevelSpec,
  });

  plots.push({
    file: 'throughput-vs-window.svg',
    title: 'DMA throughput against batching window',
    spec: {
      ...base(`${summary.name}: DMA throughput against batching window`, spread),
      facet,
      spec: {
        width: 260, height: 190,
        mark: { type: 'line', point: true },
        encoding: {
          x: xWindow,
          y: { field: 'gbps', type: 'quantitative', title: 'DMA throughput (GB/s)', scale: { zero: false } },
          color: policyColor,
          strokeWidth: policyWidth,
        },
      },
    } as unknown as vl.TopLevelSpec,
  });

  const frontier = markPareto(data);
  const xP99 = {
    field: 'invP99Us', type: 'quantitative', title: 'p99 invalidation latency (µs)', scale: { type: 'symlog', constant: 1 },
    axis: { values: symlogTicks(Math.max(1, ...frontier.map((d) => d.invP99Us))), format: TICK_FORMAT, labelOverlap: 'greedy' },
  } as const;
  plots.push({
    file: 'frontier.svg',
    title: 'Latency/throughput frontier',
    spec: {
      ...base(`${summary.name}: p99 invalidation latency against DMA throughput (line: the Pareto frontier)`, frontier),
      facet,
      spec: {
        width: 260, height: 190,
        layer: [
          {
            transform: [{ filter: 'datum.pareto' }],
            mark: { type: 'line', color: '#333', strokeWidth: 1.5 },
            encoding: {
              x: xP99,
              y: { field: 'gbps', type: 'quantitative', title: 'DMA throughput (GB/s)', scale: { zero: false } },
              order: { field: 'invP99Us', type: 'quantitative' },
            },
          },
          {
            mark: { type: 'point', filled: true, size: 50, opacity: 0.85 },
            encoding: {
              x: xP99,
              y: { field: 'gbps', type: 'quantitative', title: 'DMA throughput (GB/s)', scale: { zero: false } },
              color: policyColor,
              shape: { field: 'policy', type: 'nominal', title: 'policy', scale: { domain: POLICY_ORDER } },
              tooltip: [
                { field: 'policy' }, { field: 'windowUs', title: 'window (µs)' },
                { field: 'invP99Us', title: 'p99 (µs)' }, { field: 'gbps', title: 'GB/s' },
              ],
            },
          },
        ],
      },
    } as unknown as vl.TopLevelSpec,
  });

  if (!hasWindow) {
    // Without a windowed policy the window axis has one value: keep only the frontier.
    return plots.filter((p) => p.file === 'frontier.svg');
  }
  return plots;
}

/** Render a vega-lite spec to an SVG string, in Node, without a canvas. */
export async function renderSvg(spec: vl.TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    const svg = await view.toSVG();
    return svg.endsWith('\n') ? svg : `${svg}\n`;
  } finally {
    view.finalize();
  }
}
