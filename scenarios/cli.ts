import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { PROFILE_NAMES, profileByName, type ProfileName } from '../kernel-model/index.ts';
import { SCENARIOS, scenarioByName } from './catalogue.ts';
import { runScenario } from './scenario.ts';
import { renderReport } from './report.ts';
import { COMMON_PARAMS, parseSets } from './params.ts';
import { runDemo } from './demo.ts';
import { PRESET_NAMES, SpecError, loadSpec } from './sweep/spec.ts';
import { parseShard, type Shard } from './sweep/grid.ts';
import { SweepUsageError, defaultOutDir, runSweep } from './sweep/run-sweep.ts';
import { mergeSweeps } from './sweep/merge.ts';
import { registerFuzzCommands } from './fuzz/index.ts';
import { registerInspectCommand, runScenarioWithHtml } from './inspect/index.ts';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * `npm run lab -- <command>`: the command line. Bad input (an unknown scenario, option or
 * value) gets one line naming what was wrong and what is accepted, and exit code 2.
 */
class UsageError extends Error {}

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

function parseShardOption(v: string): Shard {
  const s = parseShard(v);
  if ('error' in s) throw new InvalidArgumentError(s.error);
  return s;
}

/**
 * The work of an asynchronous command (sweep, merge), started by its action once the
 * input is checked; `runMain` awaits it and gives its exit code.
 */
let pending: Promise<number> | null = null;

export function buildCli(out: (line: string) => void): Command {
  const program = new Command('lab')
    .description('notifier-lab: an RDMA NIC and its Linux driver against a model of the kernel mm')
    .exitOverride()
    .configureOutput({ writeOut: (s) => out(s.trimEnd()), writeErr: (s) => out(s.trimEnd()) });

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
      process.exitCode = ok ? 0 : 1;
    });

  program
    .command('run')
    .description('run scenarios by name, or all; narrative, figures and violations with their trails')
    .argument('<names...>', `scenario names or 'all'`)
    .option('--seed <n>', 'simulation seed', parseSeed, 1)
    .option('--profile <name>', `kernel profile: ${PROFILE_NAMES.join(', ')}`, parseProfile)
    .option('--driver <name>', 'registration strategy or driver variant (lab list shows each scenario\'s)')
    .option('--set <key=value>', 'override a documented parameter (repeatable; lab params lists them)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--json', 'print one JSON object per run (schema: scenarios/report.schema.json)')
    .option('--trace <file>', 'write a Chrome trace (open it in ui.perfetto.dev)')
    .option('--html <file>', 'write a self-contained time-travel page: narrative, timeline, the state at each instant (lab inspect)')
    .action((names: string[], opts: { seed: number; profile?: ProfileName; driver?: string; set: string[]; json?: boolean; trace?: string; html?: string }) => {
      const chosen = names.includes('all') ? [...SCENARIOS] : names.map((n) => {
        const s = scenarioByName(n);
        if (!s) throw new UsageError(`unknown scenario '${n}'; valid: ${SCENARIOS.map((x) => x.name).join(', ')}, all`);
        return s;
      });
      const runs = chosen.map((def) => {
        const driver = opts.driver ?? def.defaultDriver;
        if (!def.drivers.includes(driver)) throw new UsageError(`scenario '${def.name}' has no driver '${driver}'; valid: ${def.drivers.join(', ')}`);
        const params = parseSets(opts.set, def.params ?? []);
        if ('error' in params) throw new UsageError(params.error);
        return { def, driver, params: params.values };
      });
      if (opts.trace && runs.length > 1) throw new UsageError('--trace takes one scenario at a time');
      if (opts.html && (runs.length > 1 || opts.trace)) throw new UsageError('--html takes one scenario at a time, without --trace');
      if (opts.html && !existsSync(dirname(resolve(opts.html)))) throw new UsageError(`--html ${opts.html}: directory ${dirname(resolve(opts.html))} does not exist`);
      let allOk = true;
      let htmlNote = '';
      for (const { def, driver, params } of runs) {
        const profile = opts.profile ?? def.defaultProfile;
        const html = opts.html ? runScenarioWithHtml({ kind: 'scenario', name: def.name, def, seed: opts.seed, profile, driver, params }, opts.html, writeFileSync) : null;
        if (html) htmlNote = html.note;
        const report = html ? html.report : runScenario(def, { seed: opts.seed, profile, driver, params, ...(opts.trace ? { traceFile: opts.trace } : {}) });
        if (opts.json) out(JSON.stringify(report));
        else for (const l of renderReport(report)) out(l);
        if (!report.outcome.ok) {
          allOk = false;
          if (!opts.json) out(`replay: npm run lab -- run ${def.name} --seed ${opts.seed} --profile ${profile} --driver ${driver}`);
        }
      }
      if (opts.trace && !opts.json) out(`trace written to ${opts.trace}: open it in https://ui.perfetto.dev`);
      if (htmlNote && !opts.json) out(htmlNote);
      process.exitCode = allOk ? 0 : 1;
    });

  program
    .command('params')
    .description('list the documented parameters that --set accepts, with defaults')
    .argument('[scenario]', 'also list this scenario\'s own parameters')
    .action((name?: string) => {
      const def = name ? scenarioByName(name) : undefined;
      if (name && !def) throw new UsageError(`unknown scenario '${name}'; valid: ${SCENARIOS.map((x) => x.name).join(', ')}`);
      for (const d of [...COMMON_PARAMS, ...(def?.params ?? [])]) out(`${d.key.padEnd(32)} ${String(d.default).padEnd(10)} ${d.description}`);
    });

  program
    .command('sweep')
    .description('run a parameter grid times seeds in parallel child processes; results, summaries, plots and index.html in --out')
    .argument('<spec>', `a preset (${PRESET_NAMES.join(', ')}) or a spec .json file`)
    .option('--jobs <n>', 'parallel child processes (default: the number of cores)', parseJobs)
    .option('--out <dir>', 'output directory (default: sweep-results/<spec name>)')
    .option('--shard <i/n>', 'run only the points whose index is i mod n (for several machines; join with merge)', parseShardOption)
    .option('--resume', 'skip the points already in <dir>/results.jsonl')
    .action((specArg: string, opts: { jobs?: number; out?: string; shard?: Shard; resume?: boolean }) => {
      let spec;
      try {
        spec = loadSpec(specArg);
      } catch (err) {
        if (err instanceof SpecError) throw new UsageError(err.message);
        throw err;
      }
      const run = runSweep({
        spec, outDir: opts.out ?? defaultOutDir(spec.name), jobs: opts.jobs, shard: opts.shard ?? null, resume: opts.resume === true, out,
      });
      pending = run.then((r) => r.code);
      pending.catch(() => undefined); // handled by runMain; this only keeps it from being "unhandled" under main()
    });

  program
    .command('merge')
    .description('join the result directories of sweep shards into one result set, as if run on one machine')
    .argument('<dirs...>', 'result directories (of `sweep --shard i/n --out DIR`)')
    .option('--out <dir>', 'output directory (default: sweep-results/<spec name>)')
    .action((dirs: string[], opts: { out?: string }) => {
      pending = mergeSweeps(dirs, opts.out, out).then((r) => (r.failed > 0 ? 1 : 0));
      pending.catch(() => undefined);
    });
  registerFuzzCommands(program, out);
  registerInspectCommand(program, out);
  return program;
}

/** Run the CLI on argv; returns the exit code. */
export function main(argv: string[], out: (line: string) => void = console.log): number {
  let lastError = '';
  const program = buildCli(out);
  program.configureOutput({ writeOut: (s) => out(s.trimEnd()), writeErr: (s) => (lastError = s.trim()) });
  for (const c of program.commands) c.configureOutput({ writeOut: (s) => out(s.trimEnd()), writeErr: (s) => (lastError = s.trim()) });
  try {
    program.parse(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
        if (lastError) out(lastError);
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
      out(first + accepted);
      return 2;
    }
    if (err instanceof UsageError) {
      out(`error: ${err.message}`);
      return 2;
    }
    throw err;
  }
}

/**
 * Run the CLI on argv, including the asynchronous commands (sweep, merge); resolves to the
 * exit code. Bad input they find late (a results directory of another sweep) is one line
 * and exit 2, like the rest.
 */
export async function runMain(argv: string[], out: (line: string) => void = console.log): Promise<number> {
  pending = null;
  const code = main(argv, out);
  const work = pending as Promise<number> | null;
  pending = null;
  if (code !== 0 || !work) return code;
  try {
    return await work;
  } catch (err) {
    if (err instanceof SweepUsageError || err instanceof SpecError) {
      out(`error: ${err.message}`);
      return 2;
    }
    throw err;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  runMain(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
