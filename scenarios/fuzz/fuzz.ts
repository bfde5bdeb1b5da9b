/**
 * The shrinking fuzzer: fast-check draws command lists (commands.ts), each runs in one
 * simulation (run.ts) whose seed fast-check also draws, so one fast-check seed decides
 * everything; a failing list shrinks to a minimal one, which becomes a reproducer.
 *
 * What "failing" means depends on the target (targets.ts):
 * - a reference strategy fails on any violation its design does not allow, a model
 *   failure (a task threw) or an exception inside a checker;
 * - a broken variant "fails" when its expected checker catches it: the counterexample is
 *   the catch, shrunk to the fewest commands that still show it.
 *
 * @example
 *   const r = fuzz(fuzzTarget('zap-without-sync')!, { runs: 50, seed: 1 });
 *   if (r.found) console.log(formatFinding(r));
 */
import fc from 'fast-check';
import type { ProfileName, ScheduleOption } from '../../kernel-model/index.ts';
import { scheduleForFile, type ScenarioRef } from '../explore/reproducer.ts';
import { renderText, type Violation } from '../../sanitizer/index.ts';
import { DEFAULT_SHAPE, commandsArbitrary, describeCommand, type Command, type CommandShape } from './commands.ts';
import { DEFAULT_RUN_CONFIG, runCommands, type RunConfig, type RunResult } from './run.ts';
import { isExpectedCatch, unexpectedViolations, type FuzzTarget } from './targets.ts';
import { shellQuote } from '../params.ts';
import { likelyCause } from './likely-cause.ts';
import { describeKnobs } from './knobs.ts';

export interface FuzzOptions {
  runs: number;
  /** fast-check's seed: it draws every command list and every simulation seed. */
  seed: number;
  /** The kernel profile (default: the target's). */
  profile?: ProfileName;
  shape?: CommandShape;
  /** Run knobs other than the seed and profile. */
  config?: Partial<Omit<RunConfig, 'seed' | 'profile'>>;
  /** Simulations spent shrinking a failure at most (each is one run). */
  shrinkBudget?: number;
  /** Called after every run (progress). */
  onRun?: (index: number, result: RunResult) => void;
}

/**
 * Everything needed to replay one run: `lab replay file.json`. One versioned format that
 * later work extends: version 1 (the built-in drivers only) still replays; version 2 adds
 * the user module the driver came from (path relative to the reproducer's directory, and
 * the sha256 of its content when found), the `--set`s the run was given, and a reserved
 * `schedule` (an explored interleaving, null until exploration writes one).
 */
export interface Reproducer {
  version: 1 | 2 | 3;
  driver: string;
  /** The user's strategy module (version 2), or null for a built-in driver. */
  module?: { path: string; export: string; sha256: string } | null;
  /** `key=value` parameters the run was given (version 2). */
  sets?: string[];
  /**
   * The run's scheduling option (version 3; null or absent: the jitter `preempt` says): an
   * explored schedule (`lab explore`), or PCT (`lab fuzz --schedule pct:...`). See
   * scenarios/explore/reproducer.ts.
   */
  schedule?: ScheduleOption | null;
  /** Version 3: a story explored by `lab explore` instead of a fuzz command list (null: a fuzz run). */
  scenario?: ScenarioRef | null;
  profile: ProfileName;
  /** The simulation's seed (drawn by fast-check). */
  simSeed: number;
  preempt: RunConfig['preempt'];
  frames: number;
  commandPhaseNs: number;
  epilogueNs: number;
  maxEvents: number;
  /** How it was found: `lab fuzz --driver <driver> --runs <runs> --seed <fcSeed>`. */
  found: { fcSeed: number; runs: number; run: number; path: string } | null;
  commands: Command[];
}

export interface FuzzReport {
  target: FuzzTarget;
  profile: ProfileName;
  seed: number;
  runs: number;
  /** Whether the property failed: a violation on a reference, the expected catch on a broken variant. */
  found: boolean;
  /** Runs until the first failure (1-based), when found. */
  runsToDetection?: number;
  /** Simulations spent shrinking. */
  shrinkRuns: number;
  /** The shrunk failing run, replayable. */
  reproducer?: Reproducer;
  /** What the shrunk run reported (all violations) and which of them made it fail. */
  violations?: Violation[];
  failing?: Violation[];
  failure?: string;
  sanitizerErrors?: readonly string[];
  /** Violation ids seen over all runs (including allowed warnings), per id the runs that showed it. */
  seen: Record<string, number>;
}

export const DEFAULT_SHRINK_BUDGET = 500;

/** Why a run fails the target's property: the violations (or failure) that count. */
export function failingPart(t: FuzzTarget, r: RunResult): { violations: Violation[]; failure?: string; sanitizerErrors: readonly string[] } | null {
  if (t.kind === 'broken') {
    const caught = r.violations.filter((v) => isExpectedCatch(t, v));
    return caught.length > 0 ? { violations: caught, sanitizerErrors: [] } : null;
  }
  const bad = unexpectedViolations(t, r.violations);
  if (bad.length === 0 && r.failure === undefined && r.sanitizerErrors.length === 0) return null;
  const out: { violations: Violation[]; failure?: string; sanitizerErrors: readonly string[] } = { violations: bad, sanitizerErrors: r.sanitizerErrors };
  if (r.failure !== undefined) out.failure = r.failure;
  return out;
}

export function runConfigFor(t: FuzzTarget, opts: Pick<FuzzOptions, 'profile' | 'config'>, seed: number): RunConfig {
  return { ...DEFAULT_RUN_CONFIG, ...opts.config, seed, profile: opts.profile ?? t.profile };
}

/** One run of a target (the fuzzer's property body, also used by replay). */
export function runTarget(t: FuzzTarget, commands: readonly Command[], config: RunConfig): RunResult {
  const r = runCommands({ name: t.name, nic: t.nic, strategy: (sim) => t.strategy(sim) }, commands, config);
  // Each trail ends with the likely strategy step (likely-cause.ts).
  const role = t.role ?? (t.nic === 'faultable' ? 'odp' : 'holdoff');
  for (const v of r.violations) {
    const c = likelyCause(v, role, t.name);
    if (c) v.cause = c;
  }
  return r;
}

/** Fuzz `t`: `runs` random command lists from fast-check's `seed`, shrinking the first failure. */
export function fuzz(t: FuzzTarget, opts: FuzzOptions): FuzzReport {
  const shape = opts.shape ?? DEFAULT_SHAPE;
  const budget = opts.shrinkBudget ?? DEFAULT_SHRINK_BUDGET;
  const seen: Record<string, number> = {};
  let runIndex = 0;
  let firstFailureRun = 0;
  let shrinkRuns = 0;
  const property = fc.property(
    fc.noShrink(fc.integer({ min: 1, max: 2 ** 31 - 1 })),
    commandsArbitrary(shape),
    (simSeed, commands) => {
      if (firstFailureRun > 0) {
        // Shrinking: past the budget, stop exploring (every candidate "passes").
        if (shrinkRuns >= budget) return true;
        shrinkRuns++;
      }
      runIndex++;
      const r = runTarget(t, commands, runConfigFor(t, opts, simSeed));
      if (firstFailureRun === 0) {
        for (const id of new Set(r.violations.map((v) => v.id))) seen[id] = (seen[id] ?? 0) + 1;
        opts.onRun?.(runIndex, r);
      }
      const failed = failingPart(t, r) !== null;
      if (failed && firstFailureRun === 0) firstFailureRun = runIndex;
      return !failed;
    },
  );
  const details = fc.check(property, { numRuns: opts.runs, seed: opts.seed, endOnFailure: false });
  const profile = opts.profile ?? t.profile;
  const report: FuzzReport = { target: t, profile, seed: opts.seed, runs: opts.runs, found: details.failed, shrinkRuns, seen };
  if (!details.failed || !details.counterexample) return report;
  const [simSeed, commands] = details.counterexample;
  const config = runConfigFor(t, opts, simSeed);
  const final = runTarget(t, commands, config);
  const part = failingPart(t, final);
  report.runsToDetection = firstFailureRun;
  report.reproducer = {
    version: config.schedule ? 3 : 2, driver: t.name,
    module: t.module ? { path: t.module.file, export: t.module.exportName, sha256: t.module.sha256 } : null,
    sets: [...(t.sets ?? [])], schedule: config.schedule ? scheduleForFile(config.schedule) : null,
    ...(config.schedule ? { scenario: null } : {}),
    profile, simSeed, preempt: config.preempt, frames: config.frames,
    commandPhaseNs: config.commandPhaseNs, epilogueNs: config.epilogueNs, maxEvents: config.maxEvents,
    found: { fcSeed: opts.seed, runs: opts.runs, run: firstFailureRun, path: details.counterexamplePath ?? '' },
    commands,
  };
  report.violations = final.violations;
  report.failing = part?.violations ?? [];
  if (part?.failure !== undefined) report.failure = part.failure;
  if (part && part.sanitizerErrors.length > 0) report.sanitizerErrors = part.sanitizerErrors;
  return report;
}

/** The run a reproducer describes. */
export function replayReproducer(t: FuzzTarget, rep: Reproducer): RunResult {
  return runTarget(t, rep.commands, {
    seed: rep.simSeed, profile: rep.profile, preempt: rep.preempt, frames: rep.frames,
    commandPhaseNs: rep.commandPhaseNs, epilogueNs: rep.epilogueNs, maxEvents: rep.maxEvents,
    ...(rep.schedule ? { schedule: rep.schedule } : {}),
  });
}

/**
 * The command lines that find and replay a reproducer; `driverRef` is the driver as the
 * finder named it (a module reference for a user strategy).
 */
export function reproducerCommandLines(rep: Reproducer, file: string, driverRef?: string): string[] {
  const lines: string[] = [];
  if (rep.found) {
    const sets = (rep.sets ?? []).map((s) => ` --set ${shellQuote(s)}`).join('');
    const sched = rep.schedule && rep.schedule.mode === 'pct' ? ` --schedule pct:d=${rep.schedule.depth},k=${rep.schedule.steps}` : '';
    lines.push(`npx lab fuzz --driver ${shellQuote(driverRef ?? rep.driver)} --runs ${rep.found.runs} --seed ${rep.found.fcSeed} --profile ${rep.profile}${sets}${sched}`);
  }
  lines.push(`npx lab replay ${shellQuote(file)}`);
  return lines;
}

/** A finding for people: what failed, the shrunk command list, how to run it again. */
export function formatFinding(r: FuzzReport, file: string, rep: Reproducer | undefined = r.reproducer): string {
  if (!rep) return `${r.target.name}: nothing found in ${r.runs} runs (seed ${r.seed}, profile ${r.profile})\n`;
  const what = r.target.kind === 'broken'
    ? `caught by ${r.target.expectedChecker}`
    : `violation${(r.failing?.length ?? 0) === 1 ? '' : 's'} on a reference strategy`;
  let out = `${r.target.name}: ${what} in run ${r.runsToDetection} of ${r.runs} (fast-check seed ${r.seed}, profile ${r.profile}); ` +
    `shrunk to ${rep.commands.length} command${rep.commands.length === 1 ? '' : 's'} (${r.shrinkRuns} shrink runs)\n\n`;
  if (r.failure) out += `model failure: ${r.failure}\n\n`;
  for (const e of r.sanitizerErrors ?? []) out += `sanitizer error: ${e}\n`;
  out += renderText(r.failing ?? []);
  // Nothing hidden (issue 19): the expected checker decides the catch; every other
  // violation of the shrunk run is printed too, as a finding (or as a warning the
  // reference's design allows).
  const others = (r.violations ?? []).filter((v) => !(r.failing ?? []).includes(v));
  const allowed = others.filter((v) => (r.target.allowed as readonly string[]).includes(v.id));
  const findings = others.filter((v) => !(r.target.allowed as readonly string[]).includes(v.id));
  if (findings.length > 0) out += `\nother findings (${findings.length}):\n${renderText(findings)}`;
  if (allowed.length > 0) out += `\nallowed by the strategy's design (${allowed.length}): ${[...new Set(allowed.map((v) => v.id))].join(', ')}\n`;
  const before = Object.entries(r.seen).filter(([id]) => id !== r.target.expectedChecker || r.target.kind !== 'broken');
  if (r.target.kind === 'broken' && before.length > 0) out += `violations seen in the runs up to the catch: ${before.map(([id, n]) => `${id} in ${n}`).join(', ')}\n`;
  out += `\ncommands (simulation seed ${rep.simSeed}; ${describeKnobs(rep.simSeed)}):\n`;
  for (const c of rep.commands) out += `  ${describeCommand(c)}\n`;
  out += `\nreproduce:\n`;
  for (const l of reproducerCommandLines(rep, file, r.target.module?.ref)) out += `  ${l}\n`;
  out += `\n${file}:\n${JSON.stringify(rep)}\n`;
  return out;
}
