import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { UsageError, type CliIo } from '../cli-errors.ts';
import { moduleParamDocs, parseSets, checkStrategyParams, checkBatching, type ParamValues } from '../params.ts';
import { isModuleRef, loadStrategy, type LoadedStrategy } from '../user-module.ts';
import { DEFAULT_CHECK_RUNS, checkJson, checkNames, renderCheck, runCheck } from './check.ts';
import { storiesFor, subjectFromModule } from './subject.ts';

function count(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 1_000_000) throw new InvalidArgumentError(`--runs must be an integer from 1 to 1000000, got '${v}'`);
  return Number(v);
}

function seed(v: string): number {
  if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new InvalidArgumentError(`seed must be an integer, got '${v}'`);
  return Number(v);
}

/** The strategy's own parameters and the batching the `--set`s name, validated before any work. */
function checkedSets(m: LoadedStrategy, sets: readonly string[]): ParamValues {
  for (const s of sets) {
    const key = s.split('=')[0] ?? '';
    if (!key.startsWith('strategy.') && !key.startsWith('batching.')) {
      throw new UsageError(`check takes --set only for the strategy's parameters (strategy.KEY) and its batching (batching.*), got '${s}'`);
    }
  }
  const v = parseSets(sets, moduleParamDocs('strategy', m.file, m.def.params));
  if ('error' in v) throw new UsageError(v.error);
  const bad = checkBatching(v.values) ?? checkStrategyParams(m.def, m.file, v.values);
  if (bad) throw new UsageError(bad);
  return v.values;
}

/**
 * `lab check ./my-driver.ts[#export]`: the verdict on a driver author's strategy (check.ts).
 * The table (or --json) on stdout, progress on stderr; exit 0 clean, 1 findings, 2 bad input.
 */
export function registerCheckCommand(program: Command, io: CliIo, setExit: (code: number) => void): void {
  program
    .command('check')
    .description("a verdict on your strategy: the catalogue's stories of its kind beside the reference, a fuzz campaign, teardown races")
    .argument('<strategy>', 'your strategy module: ./file.ts or ./file.ts#export (defineStrategy)')
    .option('--runs <n>', `fuzz runs (default ${DEFAULT_CHECK_RUNS})`, count, DEFAULT_CHECK_RUNS)
    .option('--seed <n>', "the fuzz campaign's seed", seed, 1)
    .option('--only <check>', 'only this check (repeatable): story, fuzz, race, or a check name from the table', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--set <key=value>', "a parameter of the strategy (strategy.KEY) or its batching (batching.*); repeatable", (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--json', 'print the report as one JSON object (violations with their trails)')
    .action(async (ref: string, opts: { runs: number; seed: number; only: string[]; set: string[]; json?: boolean }) => {
      if (!isModuleRef(ref)) throw new UsageError(`check takes your strategy module, ./file.ts or ./file.ts#export (made with defineStrategy), got '${ref}'`);
      const m = await loadStrategy(ref);
      const values = checkedSets(m, opts.set);
      const stories = storiesFor(m, values);
      const names = checkNames(m.def, stories);
      for (const o of opts.only) {
        if (o !== 'story' && o !== 'race' && !names.includes(o)) throw new UsageError(`--only ${o}: no such check for ${m.def.name}; checks: story, fuzz, race, ${names.join(', ')}`);
      }
      const report = runCheck(subjectFromModule(m, values), {
        runs: opts.runs, seed: opts.seed, only: opts.only, stories, progress: (l) => io.err(l),
      });
      if (opts.json) io.out(checkJson(report));
      else for (const l of renderCheck(report)) io.out(l);
      setExit(report.ok ? 0 : 1);
    });
}
