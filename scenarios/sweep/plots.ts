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
  /** The policy reads the window (a series); otherwise it is drawn as a reference line. */
  series: boolean;
  invP50Us: number;
  invP99Us: number;
  opP99Us: number;
  gbps: number;
  /** Spread over seeds: min and max of each plotted mean (summary.json's min/max). */
  invP50MinUs: number;
  invP50MaxUs: number;
  invP99MinUs: number;
  invP99MaxUs: number;
  gbpsMin: number;
  gbpsMax: number;
  /** Invalidations completed and still open at the end (means over seeds). */
  completed: number;
  open: number;
  /**
   * Some seed ended with invalidations still open: their latency is only a lower bound
   * (censored), so the point is drawn hollow and never joined into a line as a measurement.
   */
  censored: boolean;
  label: string;
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
    const p50 = r.figures['invP50Ns'];
    const p99 = r.figures['invP99Ns'];
    const tp = r.figures['throughputBytesPerSec'];
    if (p50 === undefined || p99 === undefined || tp === undefined) continue;
    const open = r.figures['invOpenAtEnd'];
    const inv = fig(r, 'invalidations') ?? 0;
    const windowUs = r.params.windowNs === null ? null : r.params.windowNs / 1000;
    out.push({
      panel: label(r),
      tasks: r.params.tasks,
      policy: r.params.policy,
      windowUs,
      series: usesWindow(r.params.policy, r.params.inner),
      invP50Us: p50.mean / 1000,
      invP99Us: p99.mean / 1000,
      opP99Us: (fig(r, 'opP99Ns') ?? 0) / 1000,
      gbps: tp.mean / 1e9,
      invP50MinUs: p50.min / 1000,
      invP50MaxUs: p50.max / 1000,
      invP99MinUs: p99.min / 1000,
      invP99MaxUs: p99.max / 1000,
      gbpsMin: tp.min / 1e9,
      gbpsMax: tp.max / 1e9,
      completed: Math.round(inv - (open?.mean ?? 0)),
      open: open?.mean ?? 0,
      censored: (open?.max ?? 0) > 0,
      label: windowUs === null ? r.params.policy : `${r.params.policy} ${windowUs} µs`,
    });
  }
  return out;
}

function markPareto(data: readonly Datum[]): Datum[] {
  return data.map((d) => {
    if (d.censored) return { ...d, pareto: false };
    const dominated = data.some(
      (o) => o !== d && !o.censored && o.panel === d.panel && o.tasks === d.tasks &&
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

function base(title: string, values: readonly object[], subtitle?: string) {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, fontSize: 14, ...(subtitle ? { subtitle, subtitleFontSize: 11 } : {}) },
    data: { values: [...values] },
    background: 'white',
    config: { axis: { titleFontSize: 12, labelFontSize: 11 }, legend: { titleFontSize: 12, labelFontSize: 11 } },
  };
}

const NOTE = 'dashed lines: policies that ignore the window; bars: min to max over seeds; hollow: censored (invalidations still open at the end: a lower bound; a censored reference policy is left out, see the table)';

/** The plots of a summary (none when the runner reports no latency or throughput). */
export function buildPlots(summary: SweepSummary): Plot[] {
  const data = toData(summary);
  if (data.length === 0) return [];
  const hasWindow = data.some((d) => d.series);
  const ticks = windowAxisValues(data.filter((d) => d.series));
  const xWindow = {
    field: 'windowUs', type: 'quantitative', title: WINDOW_TITLE,
    scale: { type: 'symlog', constant: 1 },
    axis: { values: ticks, format: TICK_FORMAT, labelOverlap: 'greedy' },
  } as const;
  const plots: Plot[] = [];

  const latencyRows = data.flatMap((d) => [
    { ...d, percentile: 'p50', latencyUs: d.invP50Us, latMinUs: d.invP50MinUs, latMaxUs: d.invP50MaxUs },
    { ...d, percentile: 'p99', latencyUs: d.invP99Us, latMinUs: d.invP99MinUs, latMaxUs: d.invP99MaxUs },
  ]);
  const yLatency = {
    field: 'latencyUs', type: 'quantitative', title: 'invalidation latency (µs)', scale: { type: 'symlog', constant: 1 },
    axis: { values: symlogTicks(Math.max(1, ...latencyRows.map((d) => d.latMaxUs))), format: TICK_FORMAT },
  } as const;
  const dash = { field: 'percentile', type: 'nominal', legend: null, scale: { domain: ['p50', 'p99'], range: [[1, 0], [5, 3]] } } as const;
  const shape = { field: 'percentile', type: 'nominal', title: 'percentile (p50 solid, p99 dashed)', scale: { domain: ['p50', 'p99'], range: ['circle', 'triangle-up'] } } as const;
  const latencyTip = [
    { field: 'policy' }, { field: 'windowUs', title: 'window (µs)' }, { field: 'percentile' }, { field: 'latencyUs', title: 'mean (µs)' },
    { field: 'latMinUs', title: 'min (µs)' }, { field: 'latMaxUs', title: 'max (µs)' }, { field: 'completed', title: 'invalidations completed' },
    { field: 'open', title: 'open at the end' },
  ];
  plots.push({
    file: 'latency-vs-window.svg',
    title: 'Invalidation latency against batching window',
    spec: {
      ...base(`${summary.name}: invalidation latency (p50 solid, p99 dashed) against batching window`, latencyRows, NOTE),
      facet,
      spec: {
        width: 260, height: 190,
        layer: [
          {
            // Measurements: windowed policies whose every seed finished its invalidations.
            transform: [{ filter: 'datum.series && !datum.censored' }],
            mark: { type: 'line', point: true },
            encoding: { x: xWindow, y: yLatency, color: policyColor, strokeDash: dash, shape, strokeWidth: policyWidth, detail: { field: 'percentile' }, tooltip: latencyTip },
          },
          {
            transform: [{ filter: 'datum.series' }],
            mark: { type: 'rule', strokeWidth: 1 },
            encoding: { x: xWindow, y: { ...yLatency, field: 'latMinUs' }, y2: { field: 'latMaxUs' }, color: policyColor },
          },
          {
            // Censored: a lower bound, drawn hollow and not joined.
            transform: [{ filter: 'datum.series && datum.censored' }],
            mark: { type: 'point', filled: false, size: 40 },
            encoding: { x: xWindow, y: yLatency, color: policyColor, shape, tooltip: latencyTip },
          },
          {
            // Policies that ignore the window: a reference line across it (censored ones are left out: see the table).
            transform: [{ filter: '!datum.series && !datum.censored' }],
            mark: { type: 'rule', strokeDash: [4, 4], strokeWidth: 1.5 },
            encoding: { y: yLatency, color: policyColor, tooltip: latencyTip },
          },
        ],
      },
    } as unknown as vl.TopLevelSpec,
  });

  const yGbps = { field: 'gbps', type: 'quantitative', title: 'DMA throughput (GB/s)', scale: { zero: false } } as const;
  const gbpsTip = [{ field: 'policy' }, { field: 'windowUs', title: 'window (µs)' }, { field: 'gbps', title: 'mean GB/s' }, { field: 'gbpsMin', title: 'min' }, { field: 'gbpsMax', title: 'max' }];
  plots.push({
    file: 'throughput-vs-window.svg',
    title: 'DMA throughput against batching window',
    spec: {
      ...base(`${summary.name}: DMA throughput against batching window`, data, 'dashed lines: policies that ignore the window; bars: min to max over seeds'),
      facet,
      spec: {
        width: 260, height: 190,
        layer: [
          {
            transform: [{ filter: 'datum.series' }],
            mark: { type: 'line', point: true },
            encoding: { x: xWindow, y: yGbps, color: policyColor, strokeWidth: policyWidth, tooltip: gbpsTip },
          },
          {
            transform: [{ filter: 'datum.series' }],
            mark: { type: 'rule', strokeWidth: 1 },
            encoding: { x: xWindow, y: { ...yGbps, field: 'gbpsMin' }, y2: { field: 'gbpsMax' }, color: policyColor },
          },
          {
            transform: [{ filter: '!datum.series' }],
            mark: { type: 'rule', strokeDash: [4, 4], strokeWidth: 1.5 },
            encoding: { y: yGbps, color: policyColor, tooltip: gbpsTip },
          },
        ],
      },
    } as unknown as vl.TopLevelSpec,
  });

  const frontier = markPareto(data);
  const xP99 = {
    field: 'invP99Us', type: 'quantitative', title: 'p99 invalidation latency (µs)', scale: { type: 'symlog', constant: 1 },
    axis: { values: symlogTicks(Math.max(1, ...frontier.map((d) => d.invP99MaxUs))), format: TICK_FORMAT, labelOverlap: 'greedy' },
  } as const;
  const frontierTip = [
    { field: 'policy' }, { field: 'windowUs', title: 'window (µs)' }, { field: 'invP99Us', title: 'p99 (µs)' }, { field: 'gbps', title: 'GB/s' },
    { field: 'completed', title: 'invalidations completed' }, { field: 'open', title: 'open at the end' },
  ];
  plots.push({
    file: 'frontier.svg',
    title: 'Latency/throughput frontier',
    spec: {
      ...base(`${summary.name}: p99 invalidation latency against DMA throughput (line: the Pareto frontier)`, frontier, `frontier points labelled with their policy and window; ${NOTE}`),
      facet,
      spec: {
        width: 260, height: 190,
        layer: [
          {
            transform: [{ filter: 'datum.pareto' }],
            mark: { type: 'line', color: '#333', strokeWidth: 1.5 },
            encoding: { x: xP99, y: yGbps, order: { field: 'invP99Us', type: 'quantitative' } },
          },
          {
            mark: { type: 'rule', strokeWidth: 1, opacity: 0.6 },
            encoding: { x: { ...xP99, field: 'invP99MinUs' }, x2: { field: 'invP99MaxUs' }, y: yGbps, color: policyColor },
          },
          {
            mark: { type: 'rule', strokeWidth: 1, opacity: 0.6 },
            encoding: { x: xP99, y: { ...yGbps, field: 'gbpsMin' }, y2: { field: 'gbpsMax' }, color: policyColor },
          },
          {
            transform: [{ filter: '!datum.censored' }],
            mark: { type: 'point', filled: true, size: 50, opacity: 0.85 },
            encoding: { x: xP99, y: yGbps, color: policyColor, shape: { field: 'policy', type: 'nominal', title: 'policy', scale: { domain: POLICY_ORDER } }, tooltip: frontierTip },
          },
          {
            transform: [{ filter: 'datum.censored' }],
            mark: { type: 'point', filled: false, size: 50 },
            encoding: { x: xP99, y: yGbps, color: policyColor, shape: { field: 'policy', type: 'nominal', title: 'policy', scale: { domain: POLICY_ORDER } }, tooltip: frontierTip },
          },
          {
            transform: [{ filter: 'datum.pareto' }],
            mark: { type: 'text', align: 'left', dx: 6, dy: -6, fontSize: 9 },
            encoding: { x: xP99, y: yGbps, text: { field: 'label' } },
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
  const compiled = vl.compile(spec, { logger: vega.logger(vega.Error) }).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', logLevel: vega.Error });
  try {
    const svg = await view.toSVG();
    return svg.endsWith('\n') ? svg : `${svg}\n`;
  } finally {
    view.finalize();
  }
}
