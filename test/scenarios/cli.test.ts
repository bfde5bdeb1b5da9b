import test from 'ava';
import { runCli, SCENARIOS } from '../../scenarios/index.ts';

async function cli(...argv: string[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const saved = process.exitCode;
  const code = await runCli(argv, (l) => lines.push(...l.split('\n')));
  process.exitCode = saved;
  return { code, lines };
}

test('list names every scenario on one line each', async (t) => {
  const { code, lines } = await cli('list');
  t.is(code, 0);
  t.true(lines.some((l) => l.startsWith('gup-bias-false-positive ')));
  t.is(lines.length, SCENARIOS.length);
});

for (const [argv, pattern] of [
  [['run', 'nope'], /unknown scenario 'nope'; valid: .*gup-bias-false-positive/],
  [['run', 'gup-bias-false-positive', '--seed', 'x'], /seed must be an integer/],
  [['run', 'gup-bias-false-positive', '--profile', 'linux-9'], /valid profiles: linux-3\.0, linux-4\.18, linux-5\.8, linux-5\.15, linux-6\.x/],
  [['frobnicate'], /unknown command 'frobnicate'; commands: list, demo, run/],
  [['run', 'gup-bias-false-positive', '--frob'], /unknown option '--frob'; options of run: --seed, --profile, --driver, --set, --json, --trace/],
  [['run', 'gup-bias-false-positive', '--driver', 'nope'], /has no driver 'nope'; valid: pinned/],
  [['run', 'gup-bias-false-positive', '--set', 'cost.syncNs=fast'], /bad value for cost\.syncNs/],
  [['run', 'gup-bias-false-positive', '--set', 'nope=1'], /unknown parameter 'nope'; accepted: .*batching\.windowNs/],
  [['run', 'gup-bias-false-positive', '--set', 'batching.policy=sometimes'], /bad value for batching\.policy/],
] as const) {
  test(`bad input (${argv.join(' ')}) gives one line naming it and what is accepted, exit 2`, async (t) => {
    const { code, lines } = await cli(...argv);
    t.is(code, 2);
    t.is(lines.length, 1, lines.join('\n'));
    t.regex(lines[0] ?? '', pattern);
  });
}

test('run --json prints one parseable object per run; same seed, same bytes', async (t) => {
  const a = await cli('run', 'gup-bias-false-positive', '--json', '--seed', '4');
  const b = await cli('run', 'gup-bias-false-positive', '--json', '--seed', '4');
  t.is(a.code, 0);
  t.is(a.lines.length, 1);
  t.is(a.lines[0], b.lines[0]);
  const r = JSON.parse(a.lines[0] ?? '{}');
  t.is(r.scenario, 'gup-bias-false-positive');
  t.true(r.outcome.ok);
});

test('demo: same seed, same output, byte for byte; the narrative lists each invalidation', async (t) => {
  const a = await cli('demo', '--seed', '5');
  const b = await cli('demo', '--seed', '5');
  t.is(a.code, 0);
  t.is(a.lines.join('\n'), b.lines.join('\n'));
  t.true(a.lines.some((l) => /invalidate CLEAR .* blockable, seq 3/.test(l)));
  t.true(a.lines.some((l) => /invalidate RELEASE/.test(l)));
});
