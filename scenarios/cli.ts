import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { DmaDetail } from './perfetto.ts';
import { PROFILE_NAMES, profileByName, type ProfileName } from '../kernel-model/index.ts';
import { SCENARIOS, scenarioByName } from './catalogue.ts';
import { runScenario, type ScenarioDefinition } from './scenario.ts';
import { renderReport } from './report.ts';
import { COMMON_PARAMS, checkBatching, checkStrategyParams, moduleParamDocs, parseSets, shellQuote, type ParamDoc } from './params.ts';
import { runDemo } from './demo.ts';
import { reportJsonSchema } from './report-schema.ts';
import { PRESETS, PRESET_NAMES, SpecError, loadSpec } from './sweep/spec.ts';
import { checkSpecModules } from './sweep/spec-modules.ts';
import { parseShard, type Shard } from './sweep/grid.ts';
import { SweepUsageError, defaultOutDir, runSweep } from './sweep/run-sweep.ts';
import { mergeSweeps } from './sweep/merge.ts';
import type { ProgressMode } from './sweep/progress.ts';
import { registerFuzzCommands } from './fuzz/index.ts';
import { calibrate, renderCalibration } from './calibrate/index.ts';
import { registerCheckCommand } from './check/cli.ts';
import { registerNewCommand } from './new/cli.ts';
import { registerWorkloadCommand } from './workloads/cli.ts';
import { TraceFormatError } from './workloads/trace-format.ts';
import { registerInspectCommand, runScenarioWithHtml } from './inspect/index.ts';
import { exploreScenarioByName, registerExploreCommand } from './explore/index.ts';
import { PctPolicy, describeSchedule, parseScheduleSpec, pctBound, type ScheduleOption, type Simulation } from '../kernel-model/index.ts';
import { isModuleRef, loadBatchPolicy, loadStrategy, type LoadedPolicy, type LoadedStrategy } from './user-module.ts';
import { UsageError, checkOutputFile, errorLine, registerOneLineError, type CliIo } from './cli-errors.ts';
import { checkVariantsOn, registerCompareCommands, resolveVariantSpec } from './compare/cli.ts';

/**
 * `lab <command>` (the package's bin; `npm run -s lab -- …` in the repository): the command
 * line. Results go to stdout, errors, warnings and progress to stderr. Bad input (an
 * unknown scenario, option or value, a user module that does not load, an output path
 * that cannot be written) is one line naming what was wrong and what is accepted, exit 2,
 * found before any work starts where it can be.
 */
export { UsageError, type CliIo };
registerOneLineError(SpecError);
registerOneLineError(SweepUsageError);
registerOneLineError(TraceFormatError);

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function parseSeed(v: string): number {
  if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new InvalidArgumentError(`seed must be an integer, got '${v}'`);
  return Number(v);
}

function parseProfile(v: string): ProfileName {
  const p = profileByName(v);
  if ('error' in p) throw new InvalidArgumentError(p.error);
  return p.name;
}

function parseJobs(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 1024) throw new InvalidArgumentError(`--jobs must be an integer from 1 to 1024, got '${v}'`);
  return Number(v);
}

function parseMaxPoints(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || !Number.isSafeInteger(Number(v))) throw new InvalidArgumentError(`--max-points must be a positive integer, got '${v}'`);
  return Number(v);
}

function parseShardOption(v: string): Shard {
  const s = parseShard(v);
  if ('error' in s) throw new InvalidArgumentError(s.error);
  return s;
}

const collect = (v: string, acc: string[]) => [...acc, v];

function parseSchedule(v: string): ScheduleOption {
  const s = parseScheduleSpec(v);
  if ('error' in s) throw new InvalidArgumentError(s.error);
  return s;
}

/** The command-line spelling of a scheduling option (what --schedule parses back). */
export function scheduleSpec(s: ScheduleOption): string {
  switch (s.mode) {
    case 'jitter': return `jitter:p=${s.probability},max=${s.maxDelayNs}`;
    case 'pct': return `pct:d=${s.depth},k=${s.steps}`;
    default: return s.mode;
  }
}

/**
 * PCT's guarantee for what was run (Burckhardt et al., ASPLOS 2010): per run, a bug of
 * depth <= d is hit with probability at least 1/(n·k^(d-1)); over `runs` independent runs,
 * at least 1 - (1 - p)^runs. n and k are the largest task and step counts seen.
 */
export function pctGuaranteeLine(p: { option: { depth: number; steps: number }; tasks: number; steps: number }, runs: number, maxTasks = p.tasks, maxSteps = p.steps): string {
  const { depth, steps: horizon } = p.option;
  const k = Math.max(horizon, 1);
  const per = pctBound(maxTasks, k, depth);
  const over = 1 - (1 - per) ** runs;
  const fmt = (x: number) => (x >= 0.001 ? x.toPrecision(3) : x.toExponential(2));
  let line = `schedule pct d=${depth} k=${horizon}: a bug of depth <= ${depth} is hit ${runs === 1 ? 'by this run' : `per run`} with probability >= 1/(n·k^${depth - 1}) = ${fmt(per)} ` +
    `(n = ${maxTasks} tasks, k = ${k} steps)${runs > 1 ? `; over ${runs} runs >= ${fmt(over)}` : ''}`;
  if (maxSteps > horizon) line += `; the run${runs === 1 ? '' : 's'} passed up to ${maxSteps} steps, so this covers bugs whose steps fall in the first ${horizon} (widen with k=)`;
  return line;
}

/** The `--set`s, loading a batching policy module one of them names (the last `batching.policy` wins). */
async function policyModule(sets: readonly string[]): Promise<LoadedPolicy | null> {
  const ref = [...sets].reverse().find((s) => s.startsWith('batching.policy='))?.slice('batching.policy='.length);
  return ref && isModuleRef(ref) ? loadBatchPolicy(ref) : null;
}

/** The scenario drivers a user strategy can stand in for, and the message when it cannot here. */
function applies(def: ScenarioDefinition, s: LoadedStrategy): boolean {
  return def.drivers.includes(s.def.like);
}

export function buildCli(io: CliIo, setExit: (code: number) => void = (c) => (process.exitCode = c)): Command {
  const out = (l: string) => io.out(l);
  const program = new Command('lab')
    .description('notifier-lab: an RDMA NIC and its Linux driver against a model of the kernel mm')
    .version(VERSION, '-V, --version', 'print the version')
    .exitOverride()
    .configureOutput({ writeOut: (s) => out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });

  program.command('list').description('list the scenarios, one line each').action(() => {
    for (const s of SCENARIOS) out(`${s.name.padEnd(30)} ${s.summary}`);
  });

  program
    .command('demo')
    .description('the narrated foundation demo: a process, a lib/test_hmm-style mirror, every invalidation between them')
    .option('--seed <n>', 'simulation seed', parseSeed, 1)
    .action((opts: { seed: number }) => {
      const { lines, ok } = runDemo(opts.seed);
      for (const l of lines) out(l);
      setExit(ok ? 0 : 1);
    });

  program
    .command('run')
    .description('run scenarios by name, or all; narrative, figures and violations with their trails')
    .argument('<names...>', `scenario names or 'all'`)
    .option('--seed <n>', 'simulation seed: 1 is the plain schedule the stories are told on; any other seed jitters preemption points, addresses and arrival times', parseSeed, 1)
    .option('--profile <name>', `kernel profile: ${PROFILE_NAMES.join(', ')}`, parseProfile)
    .option('--driver <name>', 'a driver of the scenario (lab list), or your strategy: ./file.ts[#export] (defineStrategy)')
    .option('--set <key=value>', 'override a documented parameter (repeatable; lab params lists them)', collect, [] as string[])
    .option('--json', 'print one JSON object per run (schema: lab schema)')
    .option('--trace <file>', 'write a Chrome trace (open it in ui.perfetto.dev)')
    .addOption(new Option('--trace-dma <detail>', 'DMA accesses in the trace: one instant per work request\'s run of accesses, or every access').choices(['per-wr', 'all']).default('per-wr'))
    .option('--html <file>', 'write a self-contained time-travel page: narrative, timeline, the state at each instant (lab inspect)')
    .option('--variant <name>', 'a kernel variant under study layered on the profile (lab variants): a name, a+b, or ./file.ts#export (defineVariant)')
    .option('--schedule <mode>', 'scheduling instead of the seed\'s: plain, jitter[:p=P,max=NS], or pct[:d=D,k=K] (probabilistic concurrency testing)', parseSchedule)
    .action(async (names: string[], opts: { seed: number; profile?: ProfileName; driver?: string; variant?: string; set: string[]; json?: boolean; trace?: string; traceDma: DmaDetail; html?: string; schedule?: ScheduleOption }) => {
      const user = opts.driver !== undefined && isModuleRef(opts.driver) ? await loadStrategy(opts.driver) : null;
      const variantModules: Record<string, string> = {};
      const variants = opts.variant !== undefined ? await resolveVariantSpec(opts.variant, variantModules) : [];
      const policy = await policyModule(opts.set);
      let chosen = names.includes('all') ? [...SCENARIOS] : names.map((n) => {
        // The exploration fixtures (lab explore's races) run by name too, but are not in `all`.
        const s = scenarioByName(n) ?? exploreScenarioByName(n);
        if (!s) throw new UsageError(`unknown scenario '${n}'; valid: ${SCENARIOS.map((x) => x.name).join(', ')}, all`);
        return s;
      });
      if (user) {
        const fitting = SCENARIOS.filter((d) => applies(d, user)).map((d) => d.name);
        const misfit = chosen.find((d) => !applies(d, user));
        if (misfit && !names.includes('all')) {
          throw new UsageError(`scenario '${misfit.name}' has no '${user.def.like}' driver for ${user.def.name} (a ${user.def.nic} strategy) to stand in for; scenarios that have one: ${fitting.join(', ')}`);
        }
        chosen = chosen.filter((d) => applies(d, user));
        if (chosen.length === 0) throw new UsageError(`no scenario has a '${user.def.like}' driver for ${user.def.name} to stand in for`);
      }
      const moduleDocs: ParamDoc[] = [
        ...(user ? moduleParamDocs('strategy', user.file, user.def.params) : []),
        ...(policy ? moduleParamDocs('batching', policy.file, policy.def.params) : []),
      ];
      const runs = chosen.map((def) => {
        const driver = user ? user.def.like : opts.driver ?? def.defaultDriver;
        if (!def.drivers.includes(driver)) throw new UsageError(`scenario '${def.name}' has no driver '${driver}'; valid: ${def.drivers.join(', ')}, or ./file.ts#export`);
        const params = parseSets(opts.set, [...(def.params ?? []), ...moduleDocs]);
        if ('error' in params) throw new UsageError(params.error);
        const bad = checkBatching(params.values) ?? (user ? checkStrategyParams(user.def, user.file, params.values) : null);
        if (bad) throw new UsageError(bad);
        return { def, driver, params: params.values };
      });
      if (opts.trace !== undefined) {
        if (runs.length > 1) throw new UsageError('--trace takes one scenario at a time');
        checkOutputFile(opts.trace, '--trace');
      }
      if (opts.html !== undefined) {
        if (opts.schedule) throw new UsageError('--html replays the seed\'s schedule; run --schedule without --html');
        if (runs.length > 1 || opts.trace !== undefined) throw new UsageError('--html takes one scenario at a time, without --trace');
        checkOutputFile(opts.html, '--html');
      }
      let allOk = true;
      const setKeys = [...new Set(opts.set.map((s) => s.slice(0, s.indexOf('='))))];
      const unused = new Map(setKeys.map((k) => [k, [] as string[]]));
      for (const { def } of runs) checkVariantsOn(opts.profile ?? def.defaultProfile, variants, opts.variant ?? 'none');
      for (const { def, driver, params } of runs) {
        const profile = opts.profile ?? def.defaultProfile;
        const used = new Set<string>();
        let sim: Simulation | null = null;
        const runOpts = {
          seed: opts.seed, profile, driver, params, usedParams: used,
          ...(variants.length ? { variants, variantModules } : {}),
          ...(user ? { strategy: user } : {}), ...(opts.trace ? { traceFile: opts.trace, traceDma: opts.traceDma } : {}),
          ...(opts.schedule ? { schedule: opts.schedule, observe: (s: Simulation) => { sim = s; } } : {}),
        };
        const html = opts.html !== undefined ? runScenarioWithHtml(def, runOpts, opts.html, writeFileSync) : null;
        const report = html ? html.report : runScenario(def, runOpts);
        if (html && !opts.json) io.err(html.note);
        const pct = (sim as Simulation | null)?.schedulePolicy;
        if (opts.schedule && pct instanceof PctPolicy) {
          const line = pctGuaranteeLine(pct, 1);
          if (opts.json) io.err(line);
          else out(line);
        } else if (opts.schedule && !opts.json) {
          out(`schedule: ${describeSchedule(opts.schedule)}`);
        }
        for (const k of setKeys) if (!used.has(k)) unused.get(k)?.push(def.name);
        if (opts.json) out(JSON.stringify(report));
        else for (const l of renderReport(report)) out(l);
        if (!report.outcome.ok) {
          allOk = false;
          const sets = opts.set.map((s) => ` --set ${shellQuote(s)}`).join('');
          const sched = opts.schedule ? ` --schedule ${scheduleSpec(opts.schedule)}` : '';
          const variant = opts.variant ? ` --variant ${shellQuote(opts.variant)}` : '';
          const line = `replay: npx lab run ${def.name} --seed ${opts.seed} --profile ${profile} --driver ${shellQuote(opts.driver ?? driver)}${variant}${sets}${sched}`;
          if (opts.json) io.err(line);
          else out(line);
        }
      }
      for (const [k, where] of unused) {
        if (where.length > 0) io.err(`warning: --set ${k} had no effect: ${where.length === runs.length && runs.length > 1 ? 'no scenario run' : where.join(', ')} never read it`);
      }
      if (opts.trace && !opts.json) io.err(`trace written to ${opts.trace}: open it in https://ui.perfetto.dev`);
      setExit(allOk ? 0 : 1);
    });

  program
    .command('params')
    .description('list the parameters --set accepts, with defaults (a scenario\'s own ones only when it is named)')
    .argument('[scenario]', 'also list this scenario\'s own parameters')
    .option('--driver <module>', 'also list the parameters of your strategy: ./file.ts[#export]')
    .action(async (name: string | undefined, opts: { driver?: string }) => {
      const def = name ? scenarioByName(name) : undefined;
      if (name && !def) throw new UsageError(`unknown scenario '${name}'; valid: ${SCENARIOS.map((x) => x.name).join(', ')}`);
      if (opts.driver !== undefined && !isModuleRef(opts.driver)) throw new UsageError(`--driver takes a module reference (./file.ts#export), got '${opts.driver}'`);
      const user = opts.driver ? await loadStrategy(opts.driver) : null;
      const docs = new Map<string, ParamDoc>();
      for (const d of [...COMMON_PARAMS, ...(def?.params ?? []), ...(user ? moduleParamDocs('strategy', user.file, user.def.params) : [])]) docs.set(d.key, d);
      for (const d of docs.values()) out(`${d.key.padEnd(32)} ${String(d.default).padEnd(10)} ${d.description}`);
      if (!name) io.err('(a scenario\'s own parameters are listed when it is named: lab params <scenario>)');
    });

  program
    .command('calibrate')
    .description('every published figure the cost model is calibrated to, measured on the model beside its source; assumed parameters apart')
    .option('--json', 'print the report as JSON')
    .action((opts: { json?: boolean }) => {
      const r = calibrate();
      if (opts.json) out(JSON.stringify(r, null, 2));
      else for (const l of renderCalibration(r)) out(l);
      setExit(r.ok ? 0 : 1);
    });

  program
    .command('schema')
    .description('print the JSON Schema of `lab run --json` (scenarios/report.schema.json)')
    .action(() => out(JSON.stringify(reportJsonSchema(), null, 2)));

  program
    .command('sweep')
    .description('run a parameter grid times seeds in parallel child processes; results, summaries, plots and index.html in --out')
    .argument('<spec>', `a preset (${PRESET_NAMES.join(', ')}) or a spec .json file`)
    .option('--jobs <n>', 'parallel child processes (default: the number of cores)', parseJobs)
    .option('--out <dir>', 'output directory (default: sweep-results/<spec name>)')
    .option('--shard <i/n>', 'run only the points whose index is i mod n (for several machines; join with merge)', parseShardOption)
    .option('--resume', 'skip the points already in <dir>/results.jsonl')
    .option('--max-points <n>', 'refuse a grid of more points than this (default 100000)', parseMaxPoints)
    .option('--quiet', 'no progress, only errors and the final summary line')
    .addOption(new Option('--progress <mode>', 'progress on stderr: a bar on a terminal, lines otherwise (auto), or as asked').choices(['auto', 'bar', 'lines', 'none']))
    .action(async (specArg: string, opts: { jobs?: number; out?: string; shard?: Shard; resume?: boolean; maxPoints?: number; quiet?: boolean; progress?: ProgressMode }) => {
      const spec = loadSpec(specArg, opts.maxPoints !== undefined ? { maxPoints: opts.maxPoints } : {});
      const baseDir = Object.hasOwn(PRESETS, specArg) ? process.cwd() : dirname(resolve(specArg));
      await checkSpecModules(spec, baseDir);
      const progress: ProgressMode = opts.quiet ? 'none' : opts.progress ?? 'auto';
      const r = await runSweep({
        spec, specArg, baseDir, outDir: opts.out ?? defaultOutDir(spec.name), jobs: opts.jobs, shard: opts.shard ?? null, resume: opts.resume === true,
        out, err: (l) => io.err(l), progress, quiet: opts.quiet === true,
      });
      setExit(r.code);
    });

  program
    .command('merge')
    .description('join the result directories of sweep shards into one result set, as if run on one machine')
    .argument('<dirs...>', 'result directories (of `sweep --shard i/n --out DIR`)')
    .option('--out <dir>', 'output directory (default: sweep-results/<spec name>)')
    .action(async (dirs: string[], opts: { out?: string }) => {
      const r = await mergeSweeps(dirs, opts.out, out);
      setExit(r.failed > 0 ? 1 : 0);
    });
  registerFuzzCommands(program, io, setExit);
  registerCheckCommand(program, io, setExit);
  registerNewCommand(program, io, setExit);
  registerWorkloadCommand(program, io, setExit);
  registerInspectCommand(program, out, setExit);
  registerExploreCommand(program, io, setExit);
  registerCompareCommands(program, io, setExit);
  return program;
}

function toIo(w?: CliIo | ((line: string) => void)): CliIo {
  if (typeof w === 'function') return { out: w, err: w };
  return w ?? { out: (l) => process.stdout.write(`${l}\n`), err: (l) => process.stderr.write(`${l}\n`) };
}

/**
 * Run the CLI on argv (without node and the script); resolves to the exit code. Every
 * error, whatever throws it, is one line on `err` and exit 2.
 */
export async function runMain(argv: string[], w?: CliIo | ((line: string) => void)): Promise<number> {
  const io = toIo(w);
  let lastError = '';
  let code: number | undefined;
  const program = buildCli(io, (c) => (code = c));
  const capture = { writeOut: (s: string) => io.out(s.trimEnd()), writeErr: (s: string) => (lastError = s.trim()) };
  program.configureOutput(capture);
  for (const c of program.commands) c.exitOverride().configureOutput(capture);
  // Commands that set process.exitCode themselves (lab inspect) are read from it.
  const legacy = () => {
    const c = typeof process.exitCode === 'number' ? process.exitCode : 0;
    process.exitCode = undefined;
    return c;
  };
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code ?? legacy();
  } catch (err) {
    legacy();
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
        if (lastError) io.out(lastError);
        return 0;
      }
      // One line: commander's message plus what would have been accepted.
      const first = (lastError.split('\n')[0] ?? err.message).trim();
      const sub = program.commands.find((c) => argv.includes(c.name()));
      let accepted = '';
      if (err.code === 'commander.unknownCommand' || (err.code === 'commander.help' && !sub)) {
        accepted = `; commands: ${program.commands.map((c) => c.name()).join(', ')}`;
      } else if (err.code === 'commander.unknownOption' && sub) {
        accepted = `; options of ${sub.name()}: ${sub.options.map((o) => o.long).join(', ')}`;
      } else if (err.code === 'commander.missingArgument' && sub) {
        accepted = `; usage: lab ${sub.name()} ${sub.usage()}`;
      }
      io.err(first + accepted);
      return 2;
    }
    io.err(`error: ${errorLine(err)}`);
    return 2;
  }
}

/**
 * The process entry (the bin shim and `tsx scenarios/cli.ts`): stdout closed early (`lab
 * run all | head`) ends the process quietly.
 */
export function runProcess(argv: string[] = process.argv.slice(2)): void {
  const quietEpipe = (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  };
  process.stdout.on('error', quietEpipe);
  process.stderr.on('error', quietEpipe);
  runMain(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`error: ${errorLine(err)}\n`);
      process.exitCode = 2;
    },
  );
}

if (process.argv[1] !== undefined && import.meta.url === `file://${process.argv[1]}`) runProcess();
