import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { PROFILE_NAMES, profileByName, type ProfileName } from '../kernel-model/index.ts';
import { SCENARIOS, scenarioByName } from './catalogue.ts';

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

export function buildCli(out: (line: string) => void): Command {
  const program = new Command('lab')
    .description('notifier-lab: an RDMA NIC and its Linux driver against a model of the kernel mm')
    .exitOverride()
    .configureOutput({ writeOut: (s) => out(s.trimEnd()), writeErr: (s) => out(s.trimEnd()) });

  program.command('list').description('list the scenarios, one line each').action(() => {
    for (const s of SCENARIOS) out(`${s.name.padEnd(28)} ${s.summary}`);
  });

  program
    .command('run')
    .description('run scenarios by name, or all')
    .argument('<names...>', `scenario names or 'all'`)
    .option('--seed <n>', 'simulation seed', parseSeed, 1)
    .option('--profile <name>', `kernel profile: ${PROFILE_NAMES.join(', ')}`, parseProfile)
    .action((names: string[], opts: { seed: number; profile?: ProfileName }) => {
      const chosen = names.includes('all') ? [...SCENARIOS] : names.map((n) => {
        const s = scenarioByName(n);
        if (!s) throw new UsageError(`unknown scenario '${n}'; valid: ${SCENARIOS.map((x) => x.name).join(', ')}, all`);
        return s;
      });
      let allOk = true;
      for (const s of chosen) {
        const profile = opts.profile ?? s.defaultProfile;
        out(`== ${s.name} (profile ${profile}, seed ${opts.seed})`);
        const r = s.run({ seed: opts.seed, profile });
        for (const l of r.lines) out(l);
        if (!r.ok) {
          allOk = false;
          out(`!! ${s.name} did not behave as expected; replay: npm run lab -- run ${s.name} --seed ${opts.seed} --profile ${profile}`);
        }
      }
      process.exitCode = allOk ? 0 : 1;
    });
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

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = main(process.argv.slice(2));
}
