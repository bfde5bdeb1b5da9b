/**
 * The fuzzer's commands for `lab`:
 *
 *   lab fuzz --list
 *   lab fuzz --coverage [--runs N] [--seed S]
 *   lab fuzz --driver <name | ./file.ts[#export]> --runs N --seed S [--profile P] [--set k=v]... [--out file.json] [--shrink-budget N] [--schedule pct:d=D,k=K]
 *   lab replay <file.json>
 *
 * Exit codes: 0 nothing found, 1 a violation found (for a broken variant: it was caught),
 * 2 bad input (including a driver that could register nothing under the profile, so that
 * nothing was tested). `registerFuzzCommands(program, io)` adds both commands to the lab's
 * program (scenarios/cli.ts): results go to `io.out`, errors and notes to `io.err`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { z } from 'zod';
import { PROFILE_NAMES, PctPolicy, parseScheduleSpec, profileByName, type ProfileName, type ScheduleOption } from '../../kernel-model/index.ts';
import { renderText } from '../../sanitizer/index.ts';
import { commandSchema, describeCommand } from './commands.ts';
import {
  DEFAULT_SHRINK_BUDGET, failingPart, formatFinding, fuzz, replayReproducer, reproducerCommandLines, type FuzzReport, type Reproducer,
} from './fuzz.ts';
import { FUZZ_TARGETS, fuzzTarget, type FuzzTarget } from './targets.ts';
import { DEFAULT_COVERAGE_RUNS, formatCoverage, runCoverage } from './coverage.ts';
import type { Simulation } from '../../kernel-model/index.ts';
import type { IbUmem, StrategyDefinition, UmemStrategy } from '../../driver/index.ts';
import { batchingFromParams, checkBatching, moduleParamDocs, moduleParams, parseSets, shellQuote, type ParamValues } from '../params.ts';
import { changedSince, displayPath, isModuleRef, loadBatchPolicy, loadStrategy, type LoadedStrategy } from '../user-module.ts';
import { UsageError, checkOutputFile, type CliIo } from '../cli-errors.ts';
import { scenarioRefSchema, scheduleJsonSchema } from '../explore/reproducer.ts';
import { replayScenarioReproducer } from '../explore/replay.ts';

function parseCount(what: string, max: number) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > max) throw new InvalidArgumentError(`${what} must be an integer from 1 to ${max}, got '${v}'`);
    return Number(v);
  };
}

function parseSeed(v: string): number {
  if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v)) || Math.abs(Number(v)) > 2 ** 31 - 1) {
    throw new InvalidArgumentError(`seed must be an integer in [-2147483647, 2147483647], got '${v}'`);
  }
  return Number(v);
}

function parseSchedule(v: string): ScheduleOption {
  const s = parseScheduleSpec(v);
  if ('error' in s) throw new InvalidArgumentError(s.error);
  return s;
}

/** PCT's guarantee over a campaign (Burckhardt et al., ASPLOS 2010), with the largest task and step counts seen. */
function pctCampaignLine(o: { depth: number; steps: number }, runs: number, tasks: number, steps: number): string {
  const per = 1 / (Math.max(1, tasks) * Math.max(1, o.steps) ** (o.depth - 1));
  const over = 1 - (1 - per) ** runs;
  const fmt = (x: number) => (x >= 0.001 ? x.toPrecision(3) : x.toExponential(2));
  let line = `schedule pct d=${o.depth} k=${o.steps}: a bug of depth <= ${o.depth} is hit per run with probability >= 1/(n·k^${o.depth - 1}) = ${fmt(per)} ` +
    `(n = ${tasks} tasks, k = ${o.steps} steps); over ${runs} runs >= ${fmt(over)}`;
  if (steps > o.steps) line += `; runs passed up to ${steps} steps, so this covers bugs whose steps fall in the first ${o.steps} (widen with k=)`;
  return line;
}

function parseProfile(v: string): ProfileName {
  const p = profileByName(v);
  if ('error' in p) throw new InvalidArgumentError(p.error);
  return p.name;
}

/**
 * The end of a campaign that found nothing: for a reference, the warnings its design
 * allows; for a broken driver, that its checker did not catch it, and every other
 * violation its runs showed (findings, never hidden as "allowed").
 */
export function notFoundLine(report: FuzzReport): string {
  const t = report.target;
  const fmt = (ids: string[]) => ids.map((id) => `${id} in ${report.seen[id]} run${report.seen[id] === 1 ? '' : 's'}`).join(', ');
  const ids = Object.keys(report.seen);
  const allowed = ids.filter((id) => (t.allowed as readonly string[]).includes(id));
  const findings = ids.filter((id) => !(t.allowed as readonly string[]).includes(id));
  if (t.kind === 'broken') {
    return `not caught by ${t.expectedChecker} in ${report.runs} runs${findings.length ? `; findings: ${fmt(findings)}` : ''}`;
  }
  return `nothing found in ${report.runs} runs${allowed.length ? ` (allowed: ${fmt(allowed)})` : ''}${findings.length ? `; findings: ${fmt(findings)}` : ''}`;
}

/** One line per target: name, kind, the checker expected to catch it (or what a reference may show). */
export function listLines(): string[] {
  const width = Math.max(...FUZZ_TARGETS.map((t) => t.name.length));
  return FUZZ_TARGETS.map((t) => {
    const what = t.kind === 'broken'
      ? `caught by ${t.expectedChecker}${t.detection === 'directed' ? ' (directed test)' : ''}: ${t.bug}`
      : `reference strategy: no violations${t.allowed.length ? ` except ${t.allowed.join(', ')} (warnings)` : ''}`;
    return `${t.name.padEnd(width)}  ${t.kind.padEnd(9)}  ${t.nic === 'faultable' ? 'ODP NIC' : 'non-ODP'}  ${t.profile}  ${what}`;
  });
}

const preemptSchema = z.union([z.literal(false), z.object({ probability: z.number().min(0).max(1), maxDelayNs: z.number().int().min(0) })]);

const runFields = {
  driver: z.string(),
  profile: z.enum(PROFILE_NAMES as [ProfileName, ...ProfileName[]]),
  simSeed: z.number().int(),
  preempt: preemptSchema,
  frames: z.number().int().min(64).max(1 << 24),
  commandPhaseNs: z.number().int().positive(),
  epilogueNs: z.number().int().positive(),
  maxEvents: z.number().int().positive(),
  found: z.object({ fcSeed: z.number().int(), runs: z.number().int(), run: z.number().int(), path: z.string() }).nullable(),
  commands: z.array(commandSchema),
};

/** The reproducer format, by version (see `Reproducer` in fuzz.ts). */
export const reproducerSchema = z.discriminatedUnion('version', [
  z.object({ version: z.literal(1), ...runFields }),
  z.object({
    version: z.literal(2),
    ...runFields,
    module: z.object({ path: z.string().min(1), export: z.string().min(1), sha256: z.string().regex(/^[0-9a-f]{64}$/) }).nullable(),
    sets: z.array(z.string()),
    schedule: z.null().optional(),
  }),
  z.object({
    version: z.literal(3),
    ...runFields,
    module: z.object({ path: z.string().min(1), export: z.string().min(1), sha256: z.string().regex(/^[0-9a-f]{64}$/) }).nullable(),
    sets: z.array(z.string()),
    schedule: scheduleJsonSchema.nullable(),
    scenario: scenarioRefSchema.nullable(),
  }),
]);

function parseReproducerJson(text: string): { rep: Reproducer } | { error: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return { error: `not JSON: ${err instanceof Error ? err.message : String(err)}` };
  }
  const r = reproducerSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    return { error: `not a fuzz reproducer: ${issue ? `${issue.path.join('.') || '(top)'}: ${issue.message}` : 'invalid'}` };
  }
  return { rep: r.data as Reproducer };
}

/** Parse and check a reproducer of a built-in driver: the reproducer, or why it is not one. */
export function parseReproducer(text: string): { rep: Reproducer; target: FuzzTarget } | { error: string } {
  const p = parseReproducerJson(text);
  if ('error' in p) return p;
  const { rep } = p;
  if (rep.module) return { error: `it names the module ${rep.module.path}; replay it with lab replay (which loads the module)` };
  const target = fuzzTarget(rep.driver);
  if (!target) return { error: `unknown driver '${rep.driver}'; valid: ${FUZZ_TARGETS.map((t) => t.name).join(', ')}` };
  if ((rep.sets ?? []).length > 0) return { error: `--set is only for a user module's parameters, but it keeps ${rep.sets!.join(' ')}` };
  return { rep, target };
}

/** A strategy that counts the registrations it made (to tell "nothing found" from "nothing could register"). */
function counting(s: UmemStrategy, count: { registered: number }): UmemStrategy {
  return {
    name: s.name,
    *regMr(ctx, req) {
      const r = yield* s.regMr(ctx, req);
      if (typeof r !== 'number') count.registered++;
      return r;
    },
  };
}

/** A strategy whose every registration fails the run with `why` (a user factory that threw). */
function throwing(name: string, why: string): UmemStrategy {
  return {
    name,
    *regMr(): Generator<never, IbUmem | number, unknown> {
      throw new Error(why);
    },
  };
}

/**
 * A user strategy as a fuzz target: a reference the fuzzer holds to "no violation", run
 * with its own parameters (validated by its schema) and the batching the `--set`s name.
 */
export function userFuzzTarget(m: LoadedStrategy, values: ParamValues, sets: readonly string[], profile: ProfileName = 'linux-6.x'): FuzzTarget {
  const p = moduleParams('strategy', m.file, m.def.params, values);
  if ('error' in p) throw new UsageError(p.error);
  const def = m.def as StrategyDefinition<unknown>;
  return {
    name: def.name, kind: 'reference', role: def.like, nic: def.nic, profile, allowed: [], file: displayPath(m.file),
    module: { ref: m.ref, file: m.file, exportName: m.exportName, sha256: m.sha256 }, sets: [...sets],
    strategy: (sim?: Simulation) => {
      try {
        if (!sim) throw new Error('no simulation given');
        const b = batchingFromParams(values, sim.scheduler);
        return def.strategy(p.params, { sim, batching: b.policy, batchingName: b.name });
      } catch (err) {
        return throwing(def.name, `${displayPath(m.file)}: ${def.name}.strategy() threw: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
      }
    },
  };
}

/** Load the modules `--set batching.policy=./x.ts` and the user strategy name, then parse the `--set`s against their schemas. */
async function parseModuleSets(sets: readonly string[], strategy: LoadedStrategy | null, baseDir: string): Promise<ParamValues> {
  const policyRef = [...sets].reverse().find((s) => s.startsWith('batching.policy='))?.slice('batching.policy='.length);
  const policy = policyRef && isModuleRef(policyRef) ? await loadBatchPolicy(policyRef, baseDir) : null;
  const docs = [
    ...(strategy ? moduleParamDocs('strategy', strategy.file, strategy.def.params) : []),
    ...(policy ? moduleParamDocs('batching', policy.file, policy.def.params) : []),
  ];
  for (const s of sets) {
    const key = s.split('=')[0] ?? '';
    if (!key.startsWith('strategy.') && !key.startsWith('batching.')) {
      throw new UsageError(`fuzz takes --set only for a user strategy's parameters (strategy.KEY) and its batching (batching.*), got '${s}'`);
    }
  }
  const v = parseSets(sets, docs);
  if ('error' in v) throw new UsageError(v.error);
  const bad = checkBatching(v.values);
  if (bad) throw new UsageError(bad);
  return v.values;
}

/** Read, check and (for a user module) load what a reproducer file names. `note`: one line when the module changed since. */
export async function loadReproducer(file: string): Promise<{ rep: Reproducer; target: FuzzTarget; note: string | null }> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : (code ?? String(err))}`);
  }
  const p = parseReproducerJson(text);
  if ('error' in p) throw new UsageError(`${file}: ${p.error}`);
  const { rep } = p;
  if (!rep.module) {
    const parsed = parseReproducer(text);
    if ('error' in parsed) throw new UsageError(`${file}: ${parsed.error}`);
    return { ...parsed, note: null };
  }
  const base = dirname(resolve(file));
  const ref = `${rep.module.path}${rep.module.export === 'default' ? '' : `#${rep.module.export}`}`;
  const m = await loadStrategy(ref, base);
  const values = await parseModuleSets(rep.sets ?? [], m, base);
  const target = userFuzzTarget(m, values, rep.sets ?? [], rep.profile);
  return { rep, target, note: changedSince(m.file, rep.module.sha256) };
}

/** The reproducer as written to `file`: a module path relative to the file's directory, so the two move together. */
function forFile(rep: Reproducer, file: string): Reproducer {
  if (!rep.module) return rep;
  let path = relative(dirname(resolve(file)), rep.module.path);
  if (!path.startsWith('.') && !path.startsWith('/')) path = `./${path}`;
  return { ...rep, module: { ...rep.module, path } };
}

/**
 * Add `fuzz` and `replay` to the lab's program. Without `io`, lines go to the program's
 * configured writer (resolved when a command runs, so a later configureOutput is honoured).
 */
export function registerFuzzCommands(
  program: Command, io?: CliIo | ((line: string) => void), setExit: (code: number) => void = (c) => (process.exitCode = c),
): void {
  const fallback = (line: string) => {
    const cfg = program.configureOutput();
    if (cfg.writeOut) cfg.writeOut(line + '\n');
    else process.stdout.write(line + '\n');
  };
  const sink = typeof io === 'function' ? { out: io, err: io } : io ?? { out: fallback, err: fallback };
  const lines = (w: (l: string) => void) => (text: string) => {
    for (const line of text.replace(/\n$/, '').split('\n')) w(line);
  };
  const write = lines((l) => sink.out(l));
  const note = lines((l) => sink.err(l));

  program
    .command('fuzz')
    .description('fuzz a strategy, a broken driver or your own (./file.ts#name) with random interleavings (fast-check, shrinking); --list names them')
    .option('--list', 'list every strategy and broken driver with the checker expected to catch it')
    .option('--coverage', `run the coverage campaign (--runs split among the reference strategies, default ${DEFAULT_COVERAGE_RUNS}) and report how many runs reached each item of the committed list (scenarios/fuzz/coverage.ts); exit 1 if any is unreached`)
    .option('--driver <name>', 'the strategy or broken driver to fuzz (see --list), or ./file.ts[#export] (defineStrategy)')
    .option('--runs <n>', 'random command lists to try (default 100; 200 with --coverage)', parseCount('--runs', 1_000_000))
    .option('--seed <n>', "fast-check's seed (it draws the command lists and every simulation seed)", parseSeed, 1)
    .option('--profile <name>', `kernel profile (default: the driver's): ${PROFILE_NAMES.join(', ')}`, parseProfile)
    .option('--set <key=value>', "a user strategy's parameter (strategy.KEY) or its batching (batching.*); repeatable", (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--out <file>', 'where to write the reproducer of a finding (default fuzz-<driver>-seed<seed>.json)')
    .option('--shrink-budget <n>', `simulations spent shrinking a finding (default ${DEFAULT_SHRINK_BUDGET})`, parseCount('--shrink-budget', 100_000))
    .option('--schedule <mode>', 'scheduling instead of the default jitter: plain, jitter[:p=P,max=NS], or pct[:d=D,k=K] (probabilistic concurrency testing)', parseSchedule)
    .action(async (opts: { list?: boolean; coverage?: boolean; driver?: string; runs?: number; seed: number; profile?: ProfileName; set: string[]; out?: string; shrinkBudget?: number; schedule?: ScheduleOption }) => {
      if (opts.list) {
        write(listLines().join('\n'));
        setExit(0);
        return;
      }
      if (opts.coverage) {
        if (opts.driver) throw new UsageError('--coverage runs the reference strategies; it takes no --driver (accepted with it: --runs, --seed)');
        const c = runCoverage({ runs: opts.runs ?? DEFAULT_COVERAGE_RUNS, seed: opts.seed });
        write(formatCoverage(c).join('\n'));
        setExit(c.unreached.length > 0 || c.failures.length > 0 ? 1 : 0);
        return;
      }
      const runs = opts.runs ?? 100;
      if (!opts.driver) throw new UsageError(`--driver is required (or --list); valid drivers: ${FUZZ_TARGETS.map((t) => t.name).join(', ')}, or ./file.ts#export`);
      let target: FuzzTarget;
      if (isModuleRef(opts.driver)) {
        const m = await loadStrategy(opts.driver);
        const values = await parseModuleSets(opts.set, m, process.cwd());
        target = userFuzzTarget(m, values, opts.set);
      } else {
        const t = fuzzTarget(opts.driver);
        if (!t) throw new UsageError(`unknown driver '${opts.driver}'; valid: ${FUZZ_TARGETS.map((x) => x.name).join(', ')}, or ./file.ts#export`);
        if (opts.set.length > 0) throw new UsageError(`--set is for a user strategy's parameters (--driver ./file.ts); ${t.name} takes none`);
        target = t;
      }
      const profile = opts.profile ?? target.profile;
      const file = opts.out ?? `fuzz-${target.name}-seed${opts.seed}.json`;
      checkOutputFile(file, '--out');
      // The heading is part of the result: printed once the campaign is over (nothing on stdout for bad input).
      const heading = `fuzz ${target.name}${target.module ? ` (${target.file})` : ''} (${target.kind}), ${runs} runs, seed ${opts.seed}, profile ${profile}`;
      const count = { registered: 0 };
      const counted: FuzzTarget = { ...target, strategy: (sim?: Simulation) => counting(target.strategy(sim), count) };
      // PCT: the largest task and step counts over the campaign's runs, for its guarantee.
      const pct = { tasks: 0, steps: 0, last: null as PctPolicy | null };
      const report = fuzz(counted, {
        runs, seed: opts.seed, profile,
        ...(opts.shrinkBudget !== undefined ? { shrinkBudget: opts.shrinkBudget } : {}),
        ...(opts.schedule ? {
          config: { schedule: opts.schedule, observe: (sim: Simulation) => { pct.last = sim.schedulePolicy instanceof PctPolicy ? sim.schedulePolicy : null; } },
          onRun: () => {
            if (!pct.last) return;
            pct.tasks = Math.max(pct.tasks, pct.last.tasks);
            pct.steps = Math.max(pct.steps, pct.last.steps);
          },
        } : {}),
      });
      const pctLine = opts.schedule?.mode === 'pct' ? pctCampaignLine(opts.schedule, report.runsToDetection ?? report.runs, pct.tasks, pct.steps) : null;
      if (!report.found || !report.reproducer) {
        if (count.registered === 0) {
          throw new UsageError(`${target.name} registered no memory region in ${report.runs} runs under ${profile} (every reg_mr failed), so nothing was tested; ` +
            `try its default profile${profile !== target.profile ? ` (${target.profile})` : ''} or another --profile`);
        }
        write(heading);
        if (pctLine) write(pctLine);
        write(notFoundLine(report));
        setExit(0);
        return;
      }
      write(heading);
      if (pctLine) write(pctLine);
      const rep = forFile(report.reproducer, file);
      // The finding first: it is printed even if the file cannot be written.
      write(formatFinding(report, file, rep));
      try {
        writeFileSync(file, JSON.stringify(rep, null, 2) + '\n');
      } catch (err) {
        throw new UsageError(`the finding above could not be written to ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      setExit(1);
    });

  program
    .command('replay')
    .description('replay a fuzz reproducer (the JSON file a finding wrote)')
    .argument('<file>', 'a reproducer written by `lab fuzz`')
    .action(async (file: string) => {
      // A story `lab explore` explored (reproducer version 3 with a scenario): replayed as a story.
      const scenarioCode = await replayScenarioReproducer(file, { out: write, err: note });
      if (scenarioCode !== null) {
        setExit(scenarioCode);
        return;
      }
      const { rep, target, note: changed } = await loadReproducer(file);
      if (changed) note(`note: ${changed}`);
      write(`replay ${file}: ${target.name}${target.module ? ` (${target.file})` : ''} (${target.kind}), profile ${rep.profile}, simulation seed ${rep.simSeed}, ${rep.commands.length} commands`);
      for (const c of rep.commands) write(`  ${describeCommand(c)}`);
      const r = replayReproducer(target, rep);
      const part = failingPart(target, r);
      write('');
      if (r.failure) write(`model failure: ${r.failure}`);
      for (const e of r.sanitizerErrors) write(`sanitizer error: ${e}`);
      write(renderText(r.violations));
      if (part) {
        const what = target.kind === 'broken' ? `caught by ${target.expectedChecker}` : `violations on ${target.module ? 'the strategy' : 'a reference strategy'}`;
        write(`${what}: ${part.violations.length} report${part.violations.length === 1 ? '' : 's'}${part.failure ? ' and a model failure' : ''}`);
      } else {
        write(target.kind === 'broken' ? `not caught by ${target.expectedChecker} in this run` : 'no violation beyond what the strategy is allowed');
      }
      const ref = target.module ? `${relative(process.cwd(), target.module.file).startsWith('..') ? target.module.file : `./${relative(process.cwd(), target.module.file)}`}${target.module.exportName === 'default' ? '' : `#${target.module.exportName}`}` : undefined;
      for (const l of reproducerCommandLines(rep, file, ref)) write(`  ${l}`);
      setExit(part ? 1 : 0);
    });
}

