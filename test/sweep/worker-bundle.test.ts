/**
 * Sweep workers from the precompiled build (issue 22 item 4): with a fresh dist/ (`npm run
 * build`) and no user module in the grid, a sweep's workers run dist/sweep-worker.js, and
 * its results are byte-identical to the same sweep's under tsx; a grid that names a user
 * module, or NOTIFIER_LAB_SOURCES=1 (how the tests run), keeps the sources.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { workerCommand } from '../../scenarios/sweep/index.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const TMP = mkdtempSync(join(tmpdir(), 'sweep-bundle-'));
const SPEC_FILE = join(TMP, 'spec.json');
writeFileSync(SPEC_FILE, JSON.stringify({
  name: 'bundle-test',
  runner: 'batching',
  seeds: [1],
  durationNs: 10_000_000,
  grid: { strategy: ['odp', 'holdoff'], workload: ['dma-heavy-mm'], policy: ['none', 'window'], windowNs: [3162], tasks: [4] },
}));

const sourcesEnv = { ...process.env, NOTIFIER_LAB_SOURCES: '1' };
const buildEnv: NodeJS.ProcessEnv = { ...process.env };
delete buildEnv['NOTIFIER_LAB_SOURCES'];

function sweep(out: string, env: NodeJS.ProcessEnv) {
  return spawnSync(process.execPath, ['bin/lab.js', 'sweep', SPEC_FILE, '--jobs', '2', '--quiet', '--out', out], { cwd: REPO, env, encoding: 'utf8' });
}

test('a grid that names a user module always runs its workers from the sources under tsx', (t) => {
  const { args } = workerCommand(true);
  t.true(args.includes('--import'));
  t.true(args.at(-1)!.endsWith(join('scenarios', 'sweep', 'worker.ts')));
});

test.serial('with a fresh build, sweep workers run dist/sweep-worker.js and write results byte-identical to the sources\'', (t) => {
  t.is(process.env['NOTIFIER_LAB_SOURCES'], '1', 'the tests run the sources');
  t.true(workerCommand(false).args.includes('--import'), 'NOTIFIER_LAB_SOURCES=1: the sources');
  const build = spawnSync(process.execPath, ['bin/build.js'], { cwd: REPO, encoding: 'utf8' });
  t.is(build.status, 0, build.stderr);
  // The same question asked as a user's shell would (no NOTIFIER_LAB_SOURCES).
  const asked = spawnSync(process.execPath, ['--import', 'tsx', '-e',
    "import('./scenarios/sweep/index.ts').then((m) => console.log(JSON.stringify([m.workerCommand(false), m.workerCommand(true)])))"],
  { cwd: REPO, env: buildEnv, encoding: 'utf8' });
  t.is(asked.status, 0, asked.stderr);
  const [plain, withModules] = JSON.parse(asked.stdout) as { args: string[] }[];
  t.deepEqual(plain!.args, [join(REPO, 'dist', 'sweep-worker.js')]);
  t.true(withModules!.args.includes('--import'));

  const fromBuild = sweep(join(TMP, 'build'), buildEnv);
  t.is(fromBuild.status, 0, fromBuild.stderr);
  const fromSources = sweep(join(TMP, 'sources'), sourcesEnv);
  t.is(fromSources.status, 0, fromSources.stderr);
  for (const f of ['results.jsonl', 'summary.json', 'summary.csv']) {
    t.is(readFileSync(join(TMP, 'build', f), 'utf8'), readFileSync(join(TMP, 'sources', f), 'utf8'), f);
  }
  t.is(readFileSync(join(TMP, 'build', 'results.jsonl'), 'utf8').trim().split('\n').length, 4);
});
