import { OUTCOME_LABELS, type KernelVariant, type OutcomeLabel, type ProfileName, type VariantExpectation } from '../../kernel-model/index.ts';
import { parseSets } from '../params.ts';
import { runScenario, type ScenarioDefinition } from '../scenario.ts';
import type { ProposalCosts } from './costs.ts';
import { mismatches, outcomeLabels } from './outcome.ts';

/** One row to run: a profile and a list of variants layered on it (none: the plain kernel). */
export interface CompareRowSpec {
  profile: ProfileName;
  /** As written (`none`, `hubbard-flag`, `a+b`, `./mine.ts#flag`). */
  label: string;
  variants: readonly KernelVariant[];
}

export interface CompareRow {
  profile: ProfileName;
  variant: string;
  /** The proposals behind the row (empty for `none`). */
  proposals: { name: string; seedFile: string; speaker: string; date: string }[];
  run: string;
  outcome: OutcomeLabel[];
  violations: Record<string, number>;
  costs: ProposalCosts;
  invalidations: number;
  expected: { violations: string[]; outcome: OutcomeLabel[]; costs: Record<string, string> } | null;
  matches: boolean;
  /** What differs from the expectation (empty when it matches). */
  differs: string[];
  reading: string;
  /** The story's own figures (records lost, ...). */
  figures: Record<string, number | string>;
}

export interface CompareResult {
  story: string;
  driver: string;
  seed: number;
  rows: CompareRow[];
  ok: boolean;
}

/** The expectation of the plain kernel's row: the story's, else its violations with the outcome they imply. */
function plainExpectation(def: ScenarioDefinition, profile: ProfileName, driver: string): VariantExpectation {
  const own = def.expectVariant?.(profile, driver, null);
  if (own) return own;
  const violations = [...def.expect(profile, driver)];
  const seen = Object.fromEntries(violations.map((v) => [v, 1]));
  return { violations, outcome: outcomeLabels(seen, undefined, false), reading: def.summary };
}

/**
 * `lab compare`: run one story under each (profile, variant) row with the same seed,
 * driver and parameters, and judge each row against the story's expectation for it.
 */
export function runCompare(def: ScenarioDefinition, rows: readonly CompareRowSpec[], opts: { driver: string; seed: number; sets: readonly string[]; variantModules?: Readonly<Record<string, string>> }): CompareResult {
  const params = parseSets([...opts.sets], def.params ?? []);
  if ('error' in params) throw new Error(params.error);
  const out: CompareRow[] = [];
  for (const spec of rows) {
    const report = runScenario(def, {
      seed: opts.seed, profile: spec.profile, driver: opts.driver, params: params.values, costs: true, variants: spec.variants,
      ...(opts.variantModules ? { variantModules: opts.variantModules } : {}),
    });
    const costs = report.costs!;
    const cut = report.outcome.run === 'time-limit' || report.outcome.run === 'event-limit';
    const labels = report.labels ?? outcomeLabels(report.outcome.seen, costs, cut && def.endsAtLimit !== true);
    const exp = spec.variants.length === 0
      ? plainExpectation(def, spec.profile, opts.driver)
      : report.variant?.expectation ?? null;
    const differs = exp ? mismatches(exp, report.outcome.seen, labels, costs) : ['the story declares no expectation for this variant'];
    if (report.outcome.run === 'failed') differs.unshift(`the run failed: ${report.outcome.failure ?? 'unknown'}`);
    out.push({
      profile: spec.profile, variant: spec.label,
      proposals: spec.variants.map((v) => ({ name: v.name, seedFile: v.seedFile, speaker: v.speaker, date: v.date })),
      run: report.outcome.run, outcome: labels, violations: report.outcome.seen, costs,
      invalidations: report.figures.counters.invalidations,
      expected: exp ? { violations: [...exp.violations].sort(), outcome: OUTCOME_LABELS.filter((l) => exp.outcome.includes(l)), costs: { ...(exp.costs ?? {}) } } : null,
      matches: differs.length === 0, differs, reading: exp?.reading ?? '(no expectation declared)', figures: report.extra,
    });
  }
  return { story: def.name, driver: opts.driver, seed: opts.seed, rows: out, ok: out.every((r) => r.matches) };
}

function secs(ns: number): string {
  return `${(ns / 1e9).toFixed(ns % 1e9 === 0 ? 0 : 1)} s`;
}

/** The cost cell: only what a row spent. */
export function costText(c: ProposalCosts, invalidations: number): string {
  const parts: string[] = [];
  if (c.flaggedPages) parts.push(`flagged ${c.flaggedPages}`);
  if (c.flaggedAfterRelease) parts.push(`flagged after release ${c.flaggedAfterRelease}`);
  if (c.keptFlagged) parts.push(`kept flagged ${c.keptFlagged}`);
  if (c.cleanedWhilePinned) parts.push(`cleaned under pin ${c.cleanedWhilePinned}${c.firstCleanIntoPinNs !== null ? ` (first ${secs(c.firstCleanIntoPinNs)} in)` : ''}`);
  if (c.writebackSkipped) parts.push(`writeback skipped ${c.writebackSkipped}`);
  if (c.releasesNotDirtied) parts.push(`releases not dirtied ${c.releasesNotDirtied}`);
  if (c.waits) parts.push(`waits ${c.waits} (${secs(c.waitNs)} ended)`);
  if (c.stuck.length) parts.push(`stuck ${c.stuck.length}`);
  if (invalidations) parts.push(`invalidations ${invalidations}`);
  return parts.join(', ') || '-';
}

function violationText(seen: Readonly<Record<string, number>>): string {
  const ids = Object.keys(seen).sort();
  return ids.length ? ids.map((id) => `${id}×${seen[id]}`).join(', ') : '-';
}

/** The table `lab compare` prints: one row per (profile, variant), then each row's reading and any stuck wait. */
export function renderCompare(r: CompareResult): string[] {
  const head = ['profile', 'variant', 'outcome', 'violations', 'costs', 'expected', 'match'];
  const cells = r.rows.map((row) => [
    row.profile, row.variant, row.outcome.join(' + '), violationText(row.violations), costText(row.costs, row.invalidations),
    row.expected ? row.expected.outcome.join(' + ') : '(none declared)', row.matches ? 'yes' : 'NO',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const line = (c: readonly string[]) => c.map((x, i) => x.padEnd(widths[i]!)).join('  ').trimEnd();
  const lines = [`== lab compare ${r.story}  (driver ${r.driver}, seed ${r.seed})`, '', line(head), line(widths.map((w) => '-'.repeat(w)))];
  for (const c of cells) lines.push(line(c));
  lines.push('');
  for (const row of r.rows) {
    lines.push(`${row.variant}${r.rows.some((x) => x.profile !== row.profile) ? ` (${row.profile})` : ''}: ${row.reading}`);
    for (const p of row.proposals) lines.push(`    proposal: ${p.name}, ${p.speaker}, ${p.date}, seeds/${p.seedFile}`);
    for (const s of row.costs.stuck) lines.push(`    stuck: ${s.caller} on frame ${s.frame} (${s.node}) since ${secs(s.sinceNs)}, waiting for ${s.holder}`);
    if (!row.matches) lines.push(`    differs: ${row.differs.join('; ')}`);
  }
  lines.push('', r.ok ? 'every row as its thread predicted' : `NOT OK: ${r.rows.filter((x) => !x.matches).length} row(s) differ from their expectation`);
  return lines;
}
