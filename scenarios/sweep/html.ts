import type { Plot } from './plots.ts';
import type { SummaryRow, SweepSummary } from './summarize.ts';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function meanSd(row: SummaryRow, name: string, scale: number, digits: number): string {
  const f = row.figures[name];
  if (!f) return '';
  const m = (f.mean / scale).toFixed(digits);
  return f.sd > 0 ? `${m} <span class="sd">± ${(f.sd / scale).toFixed(digits)}</span>` : m;
}

function completed(row: SummaryRow): string {
  const inv = row.figures['invalidations'];
  if (!inv) return '';
  const open = row.figures['invOpenAtEnd']?.mean ?? 0;
  return String(Math.round(inv.mean - open));
}

function openAtEnd(row: SummaryRow): string {
  const open = row.figures['invOpenAtEnd'];
  if (!open) return '';
  return open.max > 0 ? `<span class="bad">${meanSd(row, 'invOpenAtEnd', 1, 1)} (censored)</span>` : '0';
}

/** The columns of the table: a grid parameter or a figure (mean ± sd over seeds) in display units. */
const COLUMNS: { title: string; cell: (r: SummaryRow) => string; num?: boolean }[] = [
  { title: 'strategy', cell: (r) => esc(r.params.strategy) },
  { title: 'tasks', cell: (r) => String(r.params.tasks), num: true },
  { title: 'policy', cell: (r) => esc(r.params.policy) },
  { title: 'window (µs)', cell: (r) => (r.params.windowNs === null ? '' : String(r.params.windowNs / 1000)), num: true },
  { title: 'count', cell: (r) => (r.params.count === null ? '' : String(r.params.count)), num: true },
  { title: 'inv. p50 (µs)', cell: (r) => meanSd(r, 'invP50Ns', 1000, 1), num: true },
  { title: 'inv. p99 (µs)', cell: (r) => meanSd(r, 'invP99Ns', 1000, 1), num: true },
  { title: 'kernel op p99 (µs)', cell: (r) => meanSd(r, 'opP99Ns', 1000, 1), num: true },
  { title: 'DMA (GB/s)', cell: (r) => meanSd(r, 'throughputBytesPerSec', 1e9, 3), num: true },
  { title: 'syncs', cell: (r) => meanSd(r, 'syncs', 1, 0), num: true },
  { title: 'invalidations', cell: (r) => meanSd(r, 'invalidations', 1, 0), num: true },
  // Sample counts (issue 15 item 6): what each percentile rests on, and what was still open
  // when the run ended (censored: their latency is only a lower bound).
  { title: 'completed', cell: (r) => completed(r), num: true },
  { title: 'open at end', cell: (r) => openAtEnd(r), num: true },
  { title: 'virtual ms', cell: (r) => meanSd(r, 'virtualNs', 1e6, 0), num: true },
  { title: 'seeds', cell: (r) => (r.failed > 0 ? `${r.seeds} <span class="bad">(${r.failed} failed)</span>` : String(r.seeds)), num: true },
];

/** index.html: the plots stacked full width, the summary table below them. */
export function indexHtml(summary: SweepSummary, plots: readonly Plot[], description?: string): string {
  const varying = (k: 'workload' | 'profile' | 'syncNs') => new Set(summary.rows.map((r) => r.params[k])).size > 1;
  const extra: typeof COLUMNS = [];
  if (varying('workload')) extra.push({ title: 'workload', cell: (r) => esc(r.params.workload) });
  if (varying('profile')) extra.push({ title: 'profile', cell: (r) => esc(r.params.profile) });
  if (varying('syncNs')) extra.push({ title: 'sync (µs)', cell: (r) => (r.params.syncNs === null ? 'default' : String(r.params.syncNs / 1000)), num: true });
  const cols = [...COLUMNS.slice(0, 1), ...extra, ...COLUMNS.slice(1)];
  const head = cols.map((c) => `<th>${esc(c.title)}</th>`).join('');
  const body = summary.rows
    .map((r) => `<tr>${cols.map((c) => `<td${c.num ? ' class="num"' : ''}>${c.cell(r)}</td>`).join('')}</tr>`)
    .join('\n');
  const figs = plots
    .map((p) => `<figure><img src="${esc(p.file)}" alt="${esc(p.title)}"><figcaption>${esc(p.title)} (<a href="${esc(p.file)}">${esc(p.file)}</a>)</figcaption></figure>`)
    .join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(summary.name)}: sweep results</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1rem; color: #222; }
.layout { display: block; }
.plots figure { margin: 0 0 1.5rem 0; }
.plots img { width: 100%; height: auto; border: 1px solid #ddd; }
.table { overflow: auto; }
table { border-collapse: collapse; font-size: 0.8rem; }
th, td { padding: 0.2rem 0.45rem; border-bottom: 1px solid #eee; white-space: nowrap; }
th { position: sticky; top: 0; background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.sd { color: #888; }
.bad { color: #b00; }
</style>
</head>
<body>
<h1>${esc(summary.name)}</h1>
<p>${esc(description ?? '')} Runner <code>${esc(summary.runner)}</code>, at least ${summary.durationNs / 1e6} ms of virtual time per point
(the full-model runner: at least 10 ms and ten times the point's window; column "virtual ms"),
seeds ${summary.seeds.join(', ')}; figures are the mean over seeds ± the sample standard deviation. "completed" is
what the percentiles rest on; a point with invalidations still open at the end is censored (their latency is a
lower bound): the plots draw it hollow, never as a measurement.
Data: <a href="summary.csv">summary.csv</a>, <a href="summary.json">summary.json</a>, <a href="results.jsonl">results.jsonl</a>.</p>
<div class="layout">
<div class="plots">
${figs}
</div>
<div class="table">
<table>
<thead><tr>${head}</tr></thead>
<tbody>
${body}
</tbody>
</table>
</div>
</div>
</body>
</html>
`;
}
