/**
 * The fuzzer's command line (issue part 5) and its reproducers: `fuzz --list`, a finding
 * that shrinks to a few commands and is written as a replayable file, `replay`, and exit
 * codes 0 (nothing found), 1 (found), 2 (bad input).
 */
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runMain } from '../../scenarios/cli.ts';
import { listLines, parseReproducer } from '../../scenarios/fuzz/cli.ts';
import { failingPart, fuzz, replayReproducer } from '../../scenarios/fuzz/fuzz.ts';
import { FUZZ_TARGETS, fuzzTarget } from '../../scenarios/fuzz/targets.ts';

/** Run the commands as `lab` would: output lines (stdout and stderr) and the exit code. */
async function lab(args: string[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await runMain(args, (l) => lines.push(...l.split('\n')));
  return { code, lines };
}

const tmp = mkdtempSync(join(tmpdir(), 'notifier-lab-fuzz-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

test('fuzz --list: one line per strategy and broken driver, with the checker expected to catch it', async (t) => {
  const { code, lines } = (await lab(['fuzz', '--list']));
  t.is(code, 0);
  t.is(lines.length, FUZZ_TARGETS.length);
  t.deepEqual(lines, listLines());
  for (const target of FUZZ_TARGETS) {
    const line = lines.find((l) => l.startsWith(target.name + ' '));
    t.truthy(line, target.name);
    if (target.kind === 'broken') t.true(line!.includes(`caught by ${target.expectedChecker}`), line);
  }
  t.true(FUZZ_TARGETS.filter((x) => x.kind === 'broken').length >= 12);
});

test('bad input exits 2: unknown driver, no driver, bad numbers, unreadable or invalid reproducers', async (t) => {
  t.is((await lab(['fuzz', '--driver', 'no-such-driver'])).code, 2);
  t.is((await lab(['fuzz'])).code, 2);
  t.is((await lab(['fuzz', '--driver', 'odp', '--runs', '0'])).code, 2);
  t.is((await lab(['fuzz', '--driver', 'odp', '--seed', 'x'])).code, 2);
  t.is((await lab(['fuzz', '--driver', 'odp', '--profile', 'linux-2.6'])).code, 2);
  t.is((await lab(['replay', join(tmp, 'missing.json')])).code, 2);
  writeFileSync(join(tmp, 'bad.json'), '{"version": 1, "driver": "odp"}');
  const bad = (await lab(['replay', join(tmp, 'bad.json')]));
  t.is(bad.code, 2);
  t.regex(bad.lines.join('\n'), /not a fuzz reproducer/);
});

test('a reference strategy with nothing found exits 0', async (t) => {
  const { code, lines } = (await lab(['fuzz', '--driver', 'odp', '--runs', '3', '--seed', '5']));
  t.is(code, 0, lines.join('\n'));
  t.regex(lines.join('\n'), /nothing found in 3 runs/);
});

test('a finding exits 1, prints the command lines and the JSON, and the file replays it (exit 1)', async (t) => {
  const file = join(tmp, 'no-set-seq.json');
  const found = (await lab(['fuzz', '--driver', 'no-set-seq', '--runs', '10', '--seed', '1', '--out', file, '--shrink-budget', '40']));
  t.is(found.code, 1, found.lines.join('\n'));
  const text = found.lines.join('\n');
  t.regex(text, /caught by notifier-contract in run \d+ of 10/);
  t.true(text.includes('npx lab fuzz --driver no-set-seq --runs 10 --seed 1'));
  t.true(text.includes(`npx lab replay ${file}`));
  t.true(existsSync(file));
  t.true(text.includes(JSON.stringify(JSON.parse(readFileSync(file, 'utf8')))), 'the command list is printed as JSON');
  const replay = (await lab(['replay', file]));
  t.is(replay.code, 1, replay.lines.join('\n'));
  t.regex(replay.lines.join('\n'), /caught by notifier-contract/);
});

test('shrinking: a catch shrinks to a handful of commands that replay to the same catch', async (t) => {
  // no-clamp: the first failing list has dozens of commands; an mremap that shrinks slot 0
  // (an UNMAP running past MR 0's end) is enough.
  const target = fuzzTarget('no-clamp')!;
  const report = fuzz(target, { runs: 50, seed: 1, shrinkBudget: 100 });
  t.true(report.found);
  const rep = report.reproducer!;
  t.true(rep.commands.length <= 3, `${rep.commands.length} commands`);
  const parsed = parseReproducer(JSON.stringify(rep));
  if ('error' in parsed) return t.fail(parsed.error);
  const again = replayReproducer(parsed.target, parsed.rep);
  t.truthy(failingPart(target, again), 'the reproducer replays to the catch');
  t.true(again.violations.some((v) => v.id === 'stale-translation'));
});
