/**
 * `lab run <scenario> --html FILE`: one self-contained page (no network at view time) with
 * the narrative, a timeline of the run (invalidations, faults, syncs, violations) and a
 * slider over precomputed snapshots of the world (those of `lab inspect`): at every
 * violation, every invalidation start and end, every CPU and device fault, and a regular
 * grid of instants. Keys: ] or n next violation, [ or p previous, arrows step.
 *
 * Snapshots share most of their state with their neighbours, so the page stores each
 * distinct block of text once (a string table) and a snapshot as indices into it.
 */
import { fmtNs } from './snapshot.ts';
import { snapshotBlocks } from './render.ts';
import { runObserved, type InspectTarget, type ObservedRun } from './capture.ts';
import type { TimelineMark } from './observer.ts';
import { PAGE_TEMPLATE } from './page.ts';
import { outcomeText } from '../report.ts';
import type { RunScenarioOptions, ScenarioDefinition, ScenarioReport } from '../scenario.ts';

/** Instants of the regular grid (besides the event instants). */
export const GRID_POINTS = 200;
/** Bound on snapshots per page: past it, fault and invalidation instants are thinned evenly (violations never). */
export const MAX_SNAPSHOTS = 3000;
/** Lines of one block the page keeps (the terminal shows them all). */
export const MAX_BLOCK_LINES = 300;

const KINDS: readonly TimelineMark['kind'][] = ['invalidate-start', 'invalidate-end', 'cpu-fault', 'device-fault', 'sync', 'violation'];

export interface PageData {
  title: string;
  subtitle: string;
  outcome: string;
  endNs: number;
  narrative: [number, string][];
  violations: { t: number; id: string; severity: string; message: string; trail: [number, string, string][] }[];
  kinds: readonly string[];
  /** [time, kind index, text]. */
  marks: [number, number, string][];
  /** Distinct lines of the state panel. */
  lines: string[];
  /** Distinct blocks: [section, runs of line ids as [first, count] pairs]. */
  blocks: [string, number[]][];
  /** [time, label, violation index (1-based) or 0, block indices]. */
  snaps: [number, string, number, number[]][];
}

export interface HtmlResult {
  html: string;
  /** The first (observed) run: its report is what `lab run` prints. */
  run: ObservedRun;
  snapshots: number;
}

/** Run the target twice (once to learn its length, once to snapshot) and build the page. */
export function buildHtmlPage(target: InspectTarget): HtmlResult {
  const first = runObserved(target);
  const counts = new Map<string, number>();
  for (const m of first.observer.marks) counts.set(m.kind, (counts.get(m.kind) ?? 0) + 1);
  const thinnable = first.observer.marks.filter((m) => m.kind !== 'violation' && m.kind !== 'sync').length;
  const budget = Math.max(0, MAX_SNAPSHOTS - GRID_POINTS - (counts.get('violation') ?? 0));
  const every = thinnable > budget ? thinnable / Math.max(1, budget) : 1;
  let seen = 0;
  let next = 0;
  const second = runObserved(target, (o) => {
    const step = Math.max(1, Math.floor(first.endNs / GRID_POINTS));
    for (let t = 0; t <= first.endNs; t += step) o.atTime(t, `time ${fmtNs(t)}`, () => undefined);
  }, {
    onMark: (m) => {
      if (m.kind === 'violation') return true;
      if (m.kind === 'sync') return false;
      const take = seen >= next;
      seen++;
      if (take) next += every;
      return take;
    },
  });
  const o = second.observer;
  // Two string tables: each distinct line once, each distinct block once as runs of line
  // ids ([first id, count] pairs): a block that changed in one line costs a few numbers.
  const lineIndex = new Map<string, number>();
  const lines: string[] = [];
  const lineId = (l: string): number => {
    let i = lineIndex.get(l);
    if (i === undefined) {
      i = lines.length;
      lines.push(l);
      lineIndex.set(l, i);
    }
    return i;
  };
  const blockIndex = new Map<string, number>();
  const blocks: [string, number[]][] = [];
  const snaps: PageData['snaps'] = o.snapshots.map((s) => {
    const ids = snapshotBlocks(s).map((b) => {
      const kept = b.lines.length > MAX_BLOCK_LINES
        ? [...b.lines.slice(0, MAX_BLOCK_LINES), `... ${b.lines.length - MAX_BLOCK_LINES} more lines (lab inspect --at ${s.t} shows them all)`]
        : b.lines;
      const text = [`-- ${b.title}${kept.length ? '' : ': none'}`, ...kept.map((l) => `  ${l}`)];
      const runs: number[] = [];
      for (const l of text) {
        const id = lineId(l);
        const n = runs.length;
        if (n >= 2 && (runs[n - 2] as number) + (runs[n - 1] as number) === id) runs[n - 1]!++;
        else runs.push(id, 1);
      }
      const key = `${b.section}\u0000${runs.join(',')}`;
      let i = blockIndex.get(key);
      if (i === undefined) {
        i = blocks.length;
        blocks.push([b.section, runs]);
        blockIndex.set(key, i);
      }
      return i;
    });
    return [s.t, s.at, s.violation?.index ?? 0, ids];
  });
  const report = first.report;
  const data: PageData = {
    title: target.name,
    subtitle: target.kind === 'scenario'
      ? `profile ${target.profile}, driver ${target.driver}, seed ${target.seed}${Object.keys(target.params).length ? '' : ''}`
      : `reproducer ${target.rep.driver}, profile ${target.rep.profile}, simulation seed ${target.rep.simSeed}`,
    outcome: report ? outcomeText(report) : `${first.observer.violations.length} violations`,
    endNs: first.endNs,
    narrative: first.narrative.map((n) => [n.t, n.text]),
    violations: o.violations.map((v) => ({
      t: v.time, id: v.id, severity: v.severity, message: v.message, trail: v.trail.map((e) => [e.time, e.kind, e.text] as [number, string, string]),
    })),
    kinds: KINDS,
    marks: o.marks.map((m) => [m.t, KINDS.indexOf(m.kind), m.text]),
    lines,
    blocks,
    snaps,
  };
  // JSON inside a <script> element: no "<" may appear raw, or "</script>" could end it.
  const json = JSON.stringify(data).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
  const html = PAGE_TEMPLATE.replace('__TITLE__', escapeHtml(`${target.name}: notifier-lab time travel`)).replace('__DATA__', () => json);
  return { html, run: first, snapshots: snaps.length };
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * `lab run <scenario> --html FILE`: run it (the report is that of a plain run: observing
 * changes nothing), write the page, and return the report with a line about the page.
 */
export function runScenarioWithHtml(
  def: ScenarioDefinition, opts: RunScenarioOptions, file: string, write: (file: string, text: string) => void,
): { report: ScenarioReport; note: string } {
  const more: Pick<RunScenarioOptions, 'strategy' | 'usedParams'> = {};
  if (opts.strategy) more.strategy = opts.strategy;
  if (opts.usedParams) more.usedParams = opts.usedParams;
  const page = buildHtmlPage({ kind: 'scenario', name: def.name, def, seed: opts.seed, profile: opts.profile, driver: opts.driver, params: opts.params, more });
  write(file, page.html);
  const mib = (Buffer.byteLength(page.html) / (1 << 20)).toFixed(2);
  return { report: page.run.report as ScenarioReport, note: `time-travel page written to ${file} (${page.snapshots} instants, ${mib} MiB): open it in a browser` };
}
