
import type { ScenarioReport } from './scenario.ts';

const us = (ns: number) => `${(ns / 1000).toFixed(1)} µs`;
const time = (ns: number) => `${(ns / 1000).toFixed(3).padStart(12)} µs`;

function bytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(2)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

/** The outcome in a few words: what was expected and seen, what was not. */
export function outcomeText(r: ScenarioReport): string {
  const o = r.outcome;
  if (o.run === 'failed') return `FAILED (${o.failure?.split('\n')[0] ?? 'run failed'})`;
  const parts: string[] = [];
  parts.push(o.expected.length ? `expected ${o.expected.map((id) => `${id}×${o.seen[id] ?? 0}`).join(', ')}` : 'clean');
  if (o.unexpected.length) parts.push(`UNEXPECTED ${o.unexpected.map((id) => `${id}×${o.seen[id]}`).join(', ')}`);
  if (o.missing.length) parts.push(`MISSING ${o.missing.join(', ')}`);
  if ((o.run === 'time-limit' || o.run === 'event-limit') && !o.ok && o.failure) parts.push(o.failure);
  return `${o.ok ? 'ok' : 'NOT OK'}: ${parts.join('; ')}`;
}

/** A scenario's report for a terminal: narrative, figures, violations with their trails. */
export function renderReport(r: ScenarioReport): string[] {
  const lines: string[] = [];
  const driver = r.driverModule ? `${r.driver} from ${r.driverModule.path} in place of ${r.driverModule.stands}` : r.driver;
  lines.push(`== ${r.scenario}  (profile ${r.profile}, driver ${driver}, seed ${r.seed})`);
  lines.push('');
  for (const n of r.narrative) lines.push(`${time(n.t)}  ${n.text}`);
  lines.push('');
  const f = r.figures;
  const c = f.counters;
  lines.push(`figures: ${c.invalidations} mmu-notifier invalidations (every range, MR or not), ${c.syncs} syncs, ${c.zaps} zaps (${c.entriesZapped} entries), ${c.faults} NIC faults (${c.faultsResumedWithError} with error), ${bytes(f.bytesMoved)} moved`);
  const all = f.invalidationNs['all'];
  if (all && all.count) lines.push(`  invalidation callbacks: p50 ${us(all.p50)}, p99 ${us(all.p99)}, max ${us(all.max)} over ${all.count}`);
  for (const [op, p] of Object.entries(f.kernelOpNs)) if (p.count && p.max > 1) lines.push(`  ${op}: p50 ${us(p.p50)}, p99 ${us(p.p99)}, max ${us(p.max)} (${p.count})`);
  if (f.faultNs.count) lines.push(`  NIC faults raise→resume: p50 ${us(f.faultNs.p50)}, p99 ${us(f.faultNs.p99)} (${f.faultNs.count})`);
  if (f.wrNs.count) lines.push(`  work requests post→completion: p50 ${us(f.wrNs.p50)}, p99 ${us(f.wrNs.p99)} (${f.wrNs.count})`);
  for (const [k, v] of Object.entries(r.extra)) lines.push(`  ${k}: ${v}`);
  lines.push('');
  lines.push(`outcome: ${outcomeText(r)}`);
  for (const v of r.violations.slice(0, 20)) {
    lines.push(`  [${v.severity}] ${v.id} at ${us(v.time)}: ${v.message}`);
    for (const t of v.trail) lines.push(`      ${time(t.time)}  ${t.kind}: ${t.text}`);
  }
  if (r.violations.length > 20) lines.push(`  ... and ${r.violations.length - 20} more`);
  return lines;
}

/** The `npm start` summary table: one row per scenario run. */
export function renderSummary(reports: readonly ScenarioReport[]): string[] {
  const head = ['scenario', 'profile', 'driver', 'outcome', 'inval', 'syncs', 'faults', 'p99 inval', 'moved'];
  const rows = reports.map((r) => {
    const all = r.figures.invalidationNs['all'];
    return [
      r.scenario, r.profile, r.driver, outcomeText(r), String(r.figures.counters.invalidations), String(r.figures.counters.syncs),
      String(r.figures.counters.faults), all && all.count ? us(all.p99) : '-', bytes(r.figures.bytesMoved),
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
  const fmt = (row: string[]) => row.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [fmt(head), fmt(widths.map((w) => '-'.repeat(w))), ...rows.map(fmt)];
}

