import type { Command } from 'commander';
import { relative } from 'node:path';
import { UsageError, type CliIo } from '../cli-errors.ts';
import { NewStrategyError, newStrategy } from './new-strategy.ts';
import { TEMPLATE_BASES, TEMPLATE_STORY } from './templates.ts';

/** `lab new strategy NAME [--from BASE] [--dir DIR]` (new-strategy.ts). */
export function registerNewCommand(program: Command, io: CliIo, setExit: (code: number) => void): void {
  program
    .command('new')
    .description('scaffold your own strategy from a reference: a commented module that passes lab check, and its ava test')
    .argument('<what>', "what to make: 'strategy'")
    .argument('<name>', 'its name (lower-case letters, digits, dashes): NAME.ts and NAME.test.ts')
    .option('--from <base>', `the reference it starts as: ${TEMPLATE_BASES.join(', ')}`, 'odp')
    .option('--dir <dir>', 'where to write the two files (default: the current directory)')
    .action((what: string, name: string, opts: { from: string; dir?: string }) => {
      if (what !== 'strategy') throw new UsageError(`lab new makes 'strategy', got '${what}'`);
      let r;
      try {
        r = newStrategy({ name, from: opts.from, ...(opts.dir !== undefined ? { dir: opts.dir } : {}) });
      } catch (err) {
        if (err instanceof NewStrategyError) throw new UsageError(err.message);
        throw err;
      }
      const show = (f: string) => {
        const rel = relative(process.cwd(), f);
        return rel.startsWith('..') ? f : `./${rel}`;
      };
      io.out(`wrote ${show(r.strategyFile)} (${r.base}, as the reference) and ${show(r.testFile)}`);
      io.out('next:');
      io.out(`  npx lab check ${show(r.strategyFile)}`);
      io.out(`  npx lab run ${TEMPLATE_STORY[r.base]} --driver ${show(r.strategyFile)}`);
      io.out(`  npx ava ${show(r.testFile)}`);
      setExit(0);
    });
}
