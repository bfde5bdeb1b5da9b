/**
 * The fuzzer's commands for `npm run lab`:
 *
 *   lab fuzz --list
 *   lab fuzz --driver <name> --runs N --seed S [--profile P] [--out file.json] [--shrink-budget N]
 *   lab replay <file.json>
 *
 * Exit codes: 0 nothing found, 1 a violation found (for a broken variant: it was caught),
 * 2 bad input. `registerFuzzCommands(program)` adds both commands to the lab's program
 * (scenarios/cli.ts); output goes through the program's configured writer.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { z } from 'zod';
import { PROFILE_NAMES, profileByName, type ProfileName } from '../../kernel-model/index.ts';
import { renderText } from '../../sanitizer/index.ts';
import { commandSchema, describeCommand } from './commands.ts';
import {
  DEFAULT_SHRINK_BUDGET, failingPart, formatFinding, fuzz, replayReproducer, reproducerCommandLines, type Reproducer,
} from './fuzz.ts';
import { FUZZ_TARGETS, fuzzTarget, type FuzzTarget } from './targets.ts';

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

function parseProfile(v: string): ProfileName {
  const p = profileByName(v);
  if ('error' in p) throw new InvalidArgumentError(p.error);
  return p.name;
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

export const reproducerSchema = z.object({
  version: z.literal(1),
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
});

/** Parse and check a reproducer file's text: the reproducer, or why it is not one. */
export function parseReproducer(text: string): { rep: Reproducer; target: FuzzTarget } | { error: string } {
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
  const target = fuzzTarget(r.data.driver);
  if (!target) return { error: `unknown driver '${r.data.driver}'; valid: ${FUZZ_TARGETS.map((t) => t.name).join(', ')}` };
  return { rep: r.data as Reproducer, target };
}

/**
 * Add `fuzz` and `replay` to the lab's program. `out` defaults to the program's configured
 * writer (resolved when a command runs, so a later configureOutput is honoured).
 */
export function registerFuzzCommands(program: Command, out?: (line: string) => void): void {
  const write = (text: string) => {
    const w = out ?? ((line: string) => {
      const cfg = program.configureOutput();
      if (cfg.writeOut) cfg.writeOut(line + '\n');
      else process.stdout.write(line + '\n');
    });
    for (const line of text.replace(/\n$/, '').split('\n')) w(line);
  };
  const bad = (message: string) => {
    write(`error: ${message}`);
    process.exitCode = 2;
  };

  program
    .command('fuzz')
    .description('fuzz a strategy or a broken driver with random interleavings (fast-check, shrinking); --list names them')
    .option('--list', 'list every strategy and broken driver with the checker expected to catch it')
    .option('--driver <name>', 'the strategy or broken driver to fuzz (see --list)')
    .option('--runs <n>', 'random command lists to try', parseCount('--runs', 1_000_000), 100)
    .option('--seed <n>', "fast-check's seed (it draws the command lists and every simulation seed)", parseSeed, 1)
    .option('--profile <name>', `kernel profile (default: the driver's): ${PROFILE_NAMES.join(', ')}`, parseProfile)
    .option('--out <file>', 'where to write the reproducer of a finding (default fuzz-<driver>-seed<seed>.json)')
    .option('--shrink-budget <n>', `simulations spent shrinking a finding (default ${DEFAULT_SHRINK_BUDGET})`, parseCount('--shrink-budget', 100_000))
    .action((opts: { list?: boolean; driver?: string; runs: number; seed: number; profile?: ProfileName; out?: string; shrinkBudget?: number }) => {
      if (opts.list) {
        write(listLines().join('\n'));
        process.exitCode = 0;
        return;
      }
      if (!opts.driver) return bad(`--driver is required (or --list); valid drivers: ${FUZZ_TARGETS.map((t) => t.name).join(', ')}`);
      const target = fuzzTarget(opts.driver);
      if (!target) return bad(`unknown driver '${opts.driver}'; valid: ${FUZZ_TARGETS.map((t) => t.name).join(', ')}`);
      const profile = opts.profile ?? target.profile;
      write(`fuzz ${target.name} (${target.kind}), ${opts.runs} runs, seed ${opts.seed}, profile ${profile}`);
      const report = fuzz(target, {
        runs: opts.runs, seed: opts.seed, profile,
        ...(opts.shrinkBudget !== undefined ? { shrinkBudget: opts.shrinkBudget } : {}),
      });
      if (!report.found || !report.reproducer) {
        const seen = Object.entries(report.seen).map(([id, n]) => `${id} in ${n} run${n === 1 ? '' : 's'}`).join(', ');
        write(`nothing found in ${report.runs} runs${seen ? ` (allowed: ${seen})` : ''}`);
        process.exitCode = 0;
        return;
      }
      const file = opts.out ?? `fuzz-${target.name}-seed${opts.seed}.json`;
      writeFileSync(file, JSON.stringify(report.reproducer, null, 2) + '\n');
      write(formatFinding(report, file));
      process.exitCode = 1;
    });

  program
    .command('replay')
    .description('replay a fuzz reproducer (the JSON file a finding wrote)')
    .argument('<file>', 'a reproducer written by `lab fuzz`')
    .action((file: string) => {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        return bad(`cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`);
      }
      const parsed = parseReproducer(text);
      if ('error' in parsed) return bad(`${file}: ${parsed.error}`);
      const { rep, target } = parsed;
      write(`replay ${file}: ${target.name} (${target.kind}), profile ${rep.profile}, simulation seed ${rep.simSeed}, ${rep.commands.length} commands`);
      for (const c of rep.commands) write(`  ${describeCommand(c)}`);
      const r = replayReproducer(target, rep);
      const part = failingPart(target, r);
      write('');
      if (r.failure) write(`model failure: ${r.failure}`);
      for (const e of r.sanitizerErrors) write(`sanitizer error: ${e}`);
      write(renderText(r.violations));
      if (part) {
        const what = target.kind === 'broken' ? `caught by ${target.expectedChecker}` : 'violations on a reference strategy';
        write(`${what}: ${part.violations.length} report${part.violations.length === 1 ? '' : 's'}${part.failure ? ' and a model failure' : ''}`);
      } else {
        write(target.kind === 'broken' ? `not caught by ${target.expectedChecker} in this run` : 'no violation beyond what the strategy is allowed');
      }
      for (const l of reproducerCommandLines(rep, file)) write(`  ${l}`);
      process.exitCode = part ? 1 : 0;
    });
}
