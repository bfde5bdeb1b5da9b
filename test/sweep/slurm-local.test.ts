/**
 * scenarios/sweep/slurm-local.sh (issue 22 item 6), without Slurm: the script installs
 * packages and starts daemons, so it is run by hand, not here. What is tested is the part
 * that must hold before anything is installed or started: bad arguments are one line on
 * stderr naming what was wrong and the accepted usage, exit 2, and nothing is created
 * (not even the --state directory).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SCRIPT = new URL('../../scenarios/sweep/slurm-local.sh', import.meta.url).pathname;
const TMP = mkdtempSync(join(tmpdir(), 'slurm-local-test-'));
const USAGE = /; usage: slurm-local\.sh \[--state DIR\] \[--out DIR\] \[--spec NAME\] \[--shards N\] \[--keep\] \[--timeout SECONDS\]$/;

const NOT_EMPTY = join(TMP, 'not-empty');
const A_FILE = join(TMP, 'a-file');
writeFileSync(A_FILE, 'x');
mkdirSync(NOT_EMPTY);
writeFileSync(join(NOT_EMPTY, 'results.jsonl'), '{}\n');
test.after.always(() => rmSync(TMP, { recursive: true, force: true }));

for (const [title, args, message] of [
  ['an unknown argument', ['--bogus'], /^slurm-local\.sh: unknown argument '--bogus'/],
  ['a positional argument', ['batching'], /^slurm-local\.sh: unknown argument 'batching'/],
  ['--shards without a value', ['--shards'], /^slurm-local\.sh: --shards needs a value/],
  ['--shards 0', ['--shards', '0'], /^slurm-local\.sh: --shards must be an integer from 1 to 64, got '0'/],
  ['--shards 65', ['--shards=65'], /^slurm-local\.sh: --shards must be an integer from 1 to 64, got '65'/],
  ['--shards not a number', ['--shards', 'four'], /^slurm-local\.sh: --shards must be an integer from 1 to 64, got 'four'/],
  ['--timeout not a number', ['--timeout', '1.5'], /^slurm-local\.sh: --timeout must be a whole number of seconds >= 1, got '1\.5'/],
  ['--spec empty', ['--spec='], /^slurm-local\.sh: --spec needs a value/],
  ['--out that holds files', ['--out', NOT_EMPTY], /^slurm-local\.sh: --out .*not-empty is not empty \(choose a new directory\)/],
  ['--out that is a file', ['--out', A_FILE], /^slurm-local\.sh: --out .*a-file is not a directory/],
] as const) {
  test(`slurm-local.sh: ${title} is one line on stderr, exit 2, nothing created`, (t) => {
    const state = join(TMP, `state-${title.replace(/\W+/g, '-')}`);
    // --state first: the arguments under test come last (a missing value is at the end)
    const r = spawnSync('bash', [SCRIPT, '--state', state, ...args], { encoding: 'utf8', timeout: 30_000 });
    t.is(r.status, 2, r.stderr);
    t.is(r.stdout, '');
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    t.is(lines.length, 1, r.stderr);
    t.regex(lines[0] ?? '', message);
    t.regex(lines[0] ?? '', USAGE);
    t.false(existsSync(state), 'the state directory is not created for bad arguments');
  });
}

test('slurm-local.sh: --state that is a file is refused (exit 2) and left alone', (t) => {
  const r = spawnSync('bash', [SCRIPT, '--state', A_FILE], { encoding: 'utf8', timeout: 30_000 });
  t.is(r.status, 2);
  t.regex(r.stderr, /^slurm-local\.sh: --state .*a-file is not a directory; usage: /);
  t.is(r.stderr.trim().split('\n').length, 1);
});

test('slurm-local.sh --help: exit 0, usage and every option on stdout, nothing on stderr', (t) => {
  const r = spawnSync('bash', [SCRIPT, '--help'], { encoding: 'utf8', timeout: 30_000 });
  t.is(r.status, 0);
  t.is(r.stderr, '');
  for (const opt of ['--state DIR', '--out DIR', '--spec NAME', '--shards N', '--keep', '--timeout SECONDS']) t.true(r.stdout.includes(opt), opt);
});
