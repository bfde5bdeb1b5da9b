/**
 * `lab check`: a verdict on a driver author's strategy. Three kinds of check, each a row
 * of one table:
 * - `story:NAME`: every story of the catalogue whose drivers include the reference the
 *   strategy stands in for (`like`), run with the user's strategy in its place. It passes
 *   when the user's run shows no error-severity violation and did not fail; errors that
 *   the reference itself shows in that story (the story's point, such as pinned pages
 *   under writeback on linux-4.18) are reported as "as reference", not as findings. The
 *   reference's own outcome is shown beside it, so a strategy better than the reference
 *   is never failed for missing the reference's expected warnings.
 * - `fuzz`: a fuzz campaign (scenarios/fuzz) with the strategy as a target that allows
 *   every warning and no error; the first finding is shrunk.
 * - `race:NAME`: the named teardown races of races.ts.
 * Warnings are listed per row; they never fail a check.
 */
import { type ProfileName, type Simulation } from '../../kernel-model/index.ts';
import type { UmemStrategy } from '../../driver/index.ts';
import { SEVERITY, renderText, type Violation, type ViolationId } from '../../sanitizer/index.ts';
import { DEFAULT_RUN_CONFIG, runCommands, type RunResult } from '../fuzz/run.ts';
import { fuzz } from '../fuzz/fuzz.ts';
import type { FuzzTarget } from '../fuzz/targets.ts';
import { RACE_OFFSETS_US, RACE_SEEDS, TEARDOWN_RACES, type TeardownRace } from './races.ts';

/** Which reference a user strategy stands in for (its stories, and the comparison). */
export type CheckRole = 'odp' | 'holdoff' | 'pinned';

/** What `lab check` judges: a strategy, how to build it, and how the user named it. */
export interface CheckSubject {
  name: string;
  nic: 'faultable' | 'non-faultable';
  like: CheckRole;
  /** As the user wrote it on the command line (for replay lines). */
  ref: string;
  /** The module's file as shown to the user, when it came from one. */
  file?: string;
  /** A fresh strategy for one run. */
  strategy(sim: Simulation): UmemStrategy;
}

/** One story run as `lab check` needs it (the scenario harness supplies it: see stories.ts). */
export interface StoryOutcome {
  violations: readonly Violation[];
  failure?: string;
  /** How the run ended ('done', 'failed', a limit). */
  run: string;
  /** The violation ids the story expects of the reference. */
  expected: readonly string[];
}

/** A story that applies to the subject, and how to run it with the user's strategy or the reference. */
export interface StoryCheck {
  name: string;
  profile: ProfileName;
  run(withUserStrategy: boolean): StoryOutcome;
}

export type CheckKind = 'story' | 'fuzz' | 'race';

export interface CheckRow {
  check: string;
  kind: CheckKind;
  result: 'pass' | 'fail' | 'skipped';
  /** What was run, or why it was skipped ("200 runs", "15 runs", "as reference: ..."). */
  detail: string;
  /** Stories: the reference strategy's outcome in the same story. */
  reference?: string;
  /** Stories: error ids the user's strategy shows as the reference does (the story's own hazard; not a finding). */
  asReference?: string[];
  /** Warning ids the user's strategy showed (never a failure). */
  warnings: string[];
  /** The first error-severity violation, with its trail. */
  violation?: Violation;
  /** A model failure (a task threw, the user's code among them). */
  failure?: string;
  /** The simulation or fast-check seed of the failing run. */
  seed?: number;
  /** The command that runs this check again. */
  replay: string;
}

export interface CheckReport {
  strategy: { name: string; nic: string; like: CheckRole; ref: string; file?: string };
  rows: CheckRow[];
  /** Rows that failed. */
  findings: number;
  ok: boolean;
}

export interface CheckOptions {
  /** Fuzz runs (default 200). */
  runs: number;
  /** The fuzz campaign's fast-check seed (default 1). */
  seed: number;
  /** Only these checks (names as in the table; `story`, `race` select a kind). */
  only?: readonly string[];
  /** The stories that apply (stories.ts builds them from the catalogue). */
  stories?: readonly StoryCheck[];
  /** Command prefix of replay lines (default `npx lab`). */
  lab?: string;
  /** Progress, one line per check (stderr in the CLI). */
  progress?: (line: string) => void;
}

export const DEFAULT_CHECK_RUNS = 200;
const FUZZ_PROFILE: ProfileName = 'linux-6.x';

const WARNINGS = (Object.keys(SEVERITY) as ViolationId[]).filter((id) => SEVERITY[id] === 'warning');

function errors(vs: readonly Violation[]): Violation[] {
  return vs.filter((v) => v.severity === 'error');
}

function warningIds(vs: readonly Violation[]): string[] {
  return [...new Set(vs.filter((v) => v.severity !== 'error').map((v) => v.id))].sort();
}

function quote(s: string): string {
  return /^[A-Za-z0-9_./#:=@%+-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

function selected(opts: CheckOptions, name: string, kind: CheckKind): boolean {
  if (!opts.only || opts.only.length === 0) return true;
  return opts.only.includes(name) || opts.only.includes(kind);
}

/** The names of every check `runCheck` would run for a subject (for `--only` validation). */
export function checkNames(subject: Pick<CheckSubject, 'nic'>, stories: readonly { name: string }[]): string[] {
  return [
    ...stories.map((s) => `story:${s.name}`),
    'fuzz',
    ...TEARDOWN_RACES.map((r) => `race:${r.name}`),
  ];
}

function outcomeText(o: StoryOutcome): string {
  const ids = [...new Set(o.violations.map((v) => v.id))].sort();
  const run = o.failure ? `failed (${o.failure.split('\n')[0]})` : o.run === 'task-done' ? '' : `ended: ${o.run}`;
  const parts = [ids.length ? ids.join(', ') : 'clean', run].filter(Boolean);
  return parts.join('; ');
}

function storyRow(subject: CheckSubject, s: StoryCheck, replay: string): CheckRow {
  const user = s.run(true);
  const ref = s.run(false);
  const errs = errors(user.violations);
  const refErrors = new Set(errors(ref.violations).map((v) => v.id));
  const row: CheckRow = {
    check: `story:${s.name}`, kind: 'story', result: 'pass', detail: `profile ${s.profile}`,
    reference: outcomeText(ref), warnings: warningIds(user.violations), replay,
  };
  if (user.failure !== undefined || user.run === 'failed') {
    row.result = 'fail';
    row.failure = user.failure ?? 'the run failed';
  }
  const beyond = errs.filter((v) => !refErrors.has(v.id));
  if (beyond.length > 0) {
    row.result = 'fail';
    row.violation = beyond[0]!;
  } else if (errs.length > 0) {
    row.asReference = [...new Set(errs.map((v) => v.id))].sort();
  }
  row.detail = `${row.detail}; ${subject.name}: ${outcomeText(user)}`;
  return row;
}

function fuzzRow(subject: CheckSubject, opts: CheckOptions, replay: string): CheckRow {
  const target: FuzzTarget = {
    name: subject.name, kind: 'reference', nic: subject.nic, profile: FUZZ_PROFILE,
    strategy: (sim?: Simulation) => subject.strategy(sim as Simulation),
    allowed: WARNINGS, file: subject.file ?? subject.ref,
  };
  const warnings = new Set<string>();
  const r = fuzz(target, {
    runs: opts.runs, seed: opts.seed,
    onRun: (_i, res) => {
      for (const id of warningIds(res.violations)) warnings.add(id);
    },
  });
  const row: CheckRow = {
    check: 'fuzz', kind: 'fuzz', result: r.found ? 'fail' : 'pass', detail: `${opts.runs} runs, seed ${opts.seed}, profile ${FUZZ_PROFILE}`,
    warnings: [...warnings].sort(), replay,
  };
  if (r.found) {
    row.detail = `finding in run ${r.runsToDetection} of ${opts.runs} (seed ${opts.seed}), shrunk to ${r.reproducer?.commands.length ?? '?'} commands`;
    row.seed = opts.seed;
    const first = r.failing?.[0];
    if (first) row.violation = first;
    if (r.failure !== undefined) row.failure = r.failure;
    else if (!first && r.sanitizerErrors?.length) row.failure = `sanitizer error: ${r.sanitizerErrors[0]}`;
  }
  return row;
}

/** One teardown race at every offset and seed; the first run with an error or a failure decides. */
export function runRace(subject: Pick<CheckSubject, 'name' | 'nic' | 'strategy'>, race: TeardownRace): { result: RunResult; d: number; seed: number; runs: number; warnings: string[] } {
  const warnings = new Set<string>();
  let runs = 0;
  let last: { result: RunResult; d: number; seed: number } | null = null;
  for (const d of RACE_OFFSETS_US) {
    for (const seed of RACE_SEEDS) {
      runs++;
      const result = runCommands({ name: subject.name, nic: subject.nic, strategy: subject.strategy }, race.commands(d), {
        ...DEFAULT_RUN_CONFIG, seed, profile: FUZZ_PROFILE,
      });
      for (const id of warningIds(result.violations)) warnings.add(id);
      last = { result, d, seed };
      if (errors(result.violations).length > 0 || result.failure !== undefined || result.sanitizerErrors.length > 0) {
        return { ...last, runs, warnings: [...warnings].sort() };
      }
    }
  }
  return { ...last!, runs, warnings: [...warnings].sort() };
}

function raceRow(subject: CheckSubject, race: TeardownRace, replay: string): CheckRow {
  const name = `race:${race.name}`;
  if (race.faultableOnly && subject.nic !== 'faultable') {
    return { check: name, kind: 'race', result: 'skipped', detail: 'needs a NIC that takes page faults', warnings: [], replay };
  }
  const r = runRace(subject, race);
  const errs = errors(r.result.violations);
  const failed = errs.length > 0 || r.result.failure !== undefined || r.result.sanitizerErrors.length > 0;
  const row: CheckRow = {
    check: name, kind: 'race', result: failed ? 'fail' : 'pass',
    detail: failed ? `teardown ${r.d} µs after the work, simulation seed ${r.seed}` : `${r.runs} runs (${RACE_OFFSETS_US.length} offsets x ${RACE_SEEDS.length} seeds)`,
    warnings: r.warnings, replay,
  };
  if (failed) {
    row.seed = r.seed;
    if (errs[0]) row.violation = errs[0];
    if (r.result.failure !== undefined) row.failure = r.result.failure;
    else if (!errs[0]) row.failure = `sanitizer error: ${r.result.sanitizerErrors[0]}`;
  }
  return row;
}

/** Run every selected check on `subject`. Deterministic: same subject and options, same report. */
export function runCheck(subject: CheckSubject, opts: CheckOptions): CheckReport {
  const lab = opts.lab ?? 'npx lab';
  const base = `${lab} check ${quote(subject.ref)}`;
  const rows: CheckRow[] = [];
  const note = (s: string) => opts.progress?.(`check ${s}`);
  for (const s of opts.stories ?? []) {
    const name = `story:${s.name}`;
    if (!selected(opts, name, 'story')) continue;
    note(name);
    rows.push(storyRow(subject, s, `${base} --only ${name}`));
  }
  if (selected(opts, 'fuzz', 'fuzz')) {
    note(`fuzz (${opts.runs} runs)`);
    rows.push(fuzzRow(subject, opts, `${base} --only fuzz --runs ${opts.runs} --seed ${opts.seed}`));
  }
  for (const race of TEARDOWN_RACES) {
    const name = `race:${race.name}`;
    if (!selected(opts, name, 'race')) continue;
    note(name);
    rows.push(raceRow(subject, race, `${base} --only ${name}`));
  }
  const findings = rows.filter((r) => r.result === 'fail').length;
  const strategy: CheckReport['strategy'] = { name: subject.name, nic: subject.nic, like: subject.like, ref: subject.ref };
  if (subject.file) strategy.file = subject.file;
  return { strategy, rows, findings, ok: findings === 0 };
}

function firstViolationText(r: CheckRow): string {
  if (r.violation) return `${r.violation.id}: ${r.violation.message}`;
  if (r.failure) return `failure: ${r.failure.split('\n')[0]}`;
  const parts: string[] = [];
  if (r.asReference?.length) parts.push(`as reference: ${r.asReference.join(', ')}`);
  if (r.warnings.length) parts.push(`warnings: ${r.warnings.join(', ')}`);
  return parts.length ? parts.join('; ') : '-';
}

function clip(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}

/** The table for people: one row per check, then each finding's trail and replay command. */
export function renderCheck(report: CheckReport): string[] {
  const s = report.strategy;
  const out: string[] = [];
  out.push(`lab check: strategy '${s.name}' (${s.nic} NIC, stands in for '${s.like}')${s.file ? ` from ${s.file}` : ''}`);
  out.push('');
  const w0 = Math.max(5, ...report.rows.map((r) => r.check.length));
  out.push(`${'check'.padEnd(w0)}  ${'result'.padEnd(7)}  first violation / warnings`);
  for (const r of report.rows) {
    out.push(`${r.check.padEnd(w0)}  ${r.result.padEnd(7)}  ${clip(firstViolationText(r), 110)}`);
    if (r.kind === 'story' && r.reference !== undefined) out.push(`${''.padEnd(w0)}  ${''.padEnd(7)}  reference '${s.like}': ${r.reference}`);
  }
  const failed = report.rows.filter((r) => r.result === 'fail');
  for (const r of failed) {
    out.push('');
    out.push(`== ${r.check}: ${r.detail}`);
    if (r.violation) out.push(...renderText([r.violation]).trimEnd().split('\n'));
    if (r.failure) out.push(`model failure: ${r.failure.split('\n')[0]}`);
    out.push(`replay: ${r.replay}`);
  }
  out.push('');
  out.push(report.ok
    ? `verdict: clean (${report.rows.filter((r) => r.result === 'pass').length} passed, ${report.rows.filter((r) => r.result === 'skipped').length} skipped)`
    : `verdict: ${report.findings} finding${report.findings === 1 ? '' : 's'} in ${report.rows.length} checks`);
  return out;
}

/** The report for tools: what the table shows, with whole violations (trails included). */
export function checkJson(report: CheckReport): string {
  return JSON.stringify(report);
}
