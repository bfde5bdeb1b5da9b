/**
 * Bring your own driver in `lab fuzz`, `lab replay` and `lab sweep` (issue 10 items 2 and 3):
 * the fuzzer runs a user strategy and writes a version-2 reproducer naming its module and
 * hash, which replays (and says when the file changed); a sweep spec names a user strategy
 * and a user policy beside every built-in policy, and every point runs.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runMain } from '../../scenarios/cli.ts';
import { GOOD, POLICY, REPO, ZAPPER, userDir } from './_fixtures.ts';

const dir = userDir({ 'mine.ts': GOOD, 'policy.ts': POLICY, 'zapper.ts': ZAPPER });

async function lab(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runMain(argv, { out: (l) => out.push(...l.split('\n')), err: (l) => err.push(...l.split('\n')) });
  return { code, out, err };
}

test('lab fuzz --driver ./mine.ts: a user strategy fuzzed like a reference (nothing found, exit 0)', async (t) => {
  const r = await lab('fuzz', '--driver', join(dir, 'mine.ts'), '--runs', '3', '--seed', '2', '--out', join(dir, 'never.json'));
  t.is(r.code, 0, [...r.out, ...r.err].join('\n'));
  t.regex(r.out[0] ?? '', /^fuzz my-odp \(.*mine\.ts\) \(reference\), 3 runs, seed 2, profile linux-6\.x$/);
  t.regex(r.out.join('\n'), /nothing found in 3 runs/);
});

test('a wrong user strategy (zaps without a sync) is caught; the v2 reproducer names its module and hash and replays; a changed file is said in one line', async (t) => {
  const file = join(dir, 'found.json');
  const ref = `${join(dir, 'zapper.ts')}#zapper`;
  const r = await lab('fuzz', '--driver', ref, '--runs', '30', '--seed', '1', '--out', file, '--shrink-budget', '30');
  t.is(r.code, 1, [...r.out, ...r.err].join('\n'));
  const text = r.out.join('\n');
  t.regex(text, /my-zapper: violations? on a reference strategy/);
  t.true(text.includes(`npx lab fuzz --driver ${ref} --runs 30 --seed 1 --profile linux-6.x`), text);
  const rep = JSON.parse(readFileSync(file, 'utf8'));
  t.is(rep.version, 2);
  t.deepEqual(rep.module.path, './zapper.ts');
  t.is(rep.module.export, 'zapper');
  t.regex(rep.module.sha256, /^[0-9a-f]{64}$/);
  t.is(rep.schedule, null);
  const replay = await lab('replay', file);
  t.is(replay.code, 1, [...replay.out, ...replay.err].join('\n'));
  t.deepEqual(replay.err, []);
  t.regex(replay.out[0] ?? '', /^replay .*found\.json: my-zapper \(.*zapper\.ts\) \(reference\)/);
  appendFileSync(join(dir, 'zapper.ts'), '// edited\n');
  const after = await lab('replay', file);
  t.is(after.code, 1);
  t.is(after.err.length, 1, after.err.join('\n'));
  t.regex(after.err[0] ?? '', /^note: .*zapper\.ts changed since this reproducer was written \(sha256 [0-9a-f]{12}, now [0-9a-f]{12}\); replaying the current file$/);
});

test('a version-1 reproducer still replays', async (t) => {
  const v1 = JSON.parse(readFileSync(join(REPO, 'test', 'fuzz', 'corpus', 'odp-migrate-vs-munmap.json'), 'utf8'));
  t.is(v1.version, 1);
  const r = await lab('replay', join(REPO, 'test', 'fuzz', 'corpus', 'odp-migrate-vs-munmap.json'));
  t.is(r.code, 0, r.out.join('\n'));
  t.regex(r.out.join('\n'), /no violation beyond what the strategy is allowed/);
});

test('lab fuzz --driver odp --profile linux-3.0 registers nothing: one line saying nothing was tested, exit 2 (not "nothing found")', async (t) => {
  const r = await lab('fuzz', '--driver', 'odp', '--profile', 'linux-3.0', '--runs', '2', '--out', join(dir, 'x.json'));
  t.is(r.code, 2);
  t.is(r.err.length, 1, r.err.join('\n'));
  t.regex(r.err[0] ?? '', /^error: odp registered no memory region in 2 runs under linux-3\.0 \(every reg_mr failed\), so nothing was tested/);
});

test('lab sweep: a spec naming a user strategy and a user policy beside every built-in policy; every point runs in worker processes', (t) => {
  const spec = {
    name: 'byod', runner: 'batching', seeds: [1], durationNs: 300_000,
    grid: {
      strategy: ['odp', './mine.ts'],
      policy: ['none', 'window', 'count', 'window-or-count', 'adaptive', 'by-event-type', './policy.ts#pairs'],
      windowNs: [20_000], count: [4], minWindowNs: [1_000], maxWindowNs: [50_000], inner: ['count'],
      'strategy.pages': [3], 'batching.size': [2, 3],
    },
  };
  writeFileSync(join(dir, 'spec.json'), JSON.stringify(spec));
  const out = join(dir, 'out');
  const r = spawnSync(process.execPath, [join(REPO, 'bin', 'lab.js'), 'sweep', 'spec.json', '--out', out, '--jobs', '2', '--quiet'], { cwd: dir, encoding: 'utf8', timeout: 240_000 });
  t.is(r.status, 0, r.stdout + r.stderr);
  t.is(r.stderr, '', 'quiet: nothing on stderr');
  const lines = readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  // 2 strategies x (6 built-in policies + the user policy with 2 sizes) = 16 points
  t.is(lines.length, 16);
  t.true(lines.every((l) => l.record && l.error === undefined), JSON.stringify(lines.find((l) => l.error)));
  const by = (s: string, p: string) => lines.filter((l) => l.params.strategy === s && l.params.policy === p);
  t.is(by('./mine.ts', './policy.ts#pairs').length, 2);
  t.deepEqual(by('./mine.ts', './policy.ts#pairs').map((l) => l.params.user), [
    { 'batching.size': 2, 'strategy.pages': 3 }, { 'batching.size': 3, 'strategy.pages': 3 },
  ]);
  t.deepEqual(by('odp', 'adaptive')[0].params, { strategy: 'odp', workload: 'dma-heavy', profile: 'linux-6.x', syncNs: null, tasks: 1, policy: 'adaptive', windowNs: null, count: 4, minWindowNs: 1_000, maxWindowNs: 50_000 });
  t.is(by('odp', 'by-event-type')[0].params.inner, 'count');
  // batching changes the figures: some policy made fewer syncs than none
  const syncs = (p: string) => by('odp', p)[0].record.syncs as number;
  t.true(['count', 'adaptive', 'by-event-type'].some((p) => syncs(p) < syncs('none')), JSON.stringify(lines.map((l) => [l.params.policy, l.record.syncs])));
});

test('lab sweep: a bad user parameter in the grid is one line before anything runs, exit 2', (t) => {
  const spec = { name: 'bad', runner: 'batching', seeds: [1], durationNs: 300_000, grid: { strategy: ['./mine.ts'], 'strategy.pages': [99] } };
  writeFileSync(join(dir, 'bad.json'), JSON.stringify(spec));
  const r = spawnSync(process.execPath, [join(REPO, 'bin', 'lab.js'), 'sweep', 'bad.json', '--out', join(dir, 'bad-out')], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 2);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^error: spec grid\.strategy\.pages\[0\]: .*mine\.ts rejects 99: .*\n$/);
});
