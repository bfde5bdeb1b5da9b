/**
 * Bring your own driver (issue 10 items 2 and "Bad input"): a user's strategy module named
 * by `--driver ./file.ts[#export]` runs in `lab run` in place of the reference it stands
 * for; every way the module can be wrong is one line naming the file, exit 2; a strategy
 * that throws is a failed run with its seed and replay line, exit 1.
 */
import test from 'ava';
import { join } from 'node:path';
import { runMain } from '../../scenarios/cli.ts';
import { GOOD, POLICY, userDir } from './_fixtures.ts';

const dir = userDir({
  'mine.ts': GOOD,
  'policy.ts': POLICY,
  'syntax.ts': 'export const x = ;\n',
  'throws.ts': "throw new Error('cannot load me');\n",
});
const f = (name: string) => join(dir, name);

async function lab(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runMain(argv, { out: (l) => out.push(...l.split('\n')), err: (l) => err.push(...l.split('\n')) });
  return { code, out, err };
}

test('lab run --driver ./file.ts runs the user strategy in place of odp; the report names it and its file', async (t) => {
  const r = await lab('run', 'migration-meets-pin', '--driver', f('mine.ts'), '--json');
  t.is(r.code, 0, r.err.join('\n'));
  const report = JSON.parse(r.out[0] ?? '{}');
  t.is(report.driver, 'my-odp');
  t.is(report.driverModule.stands, 'odp');
  t.true(report.driverModule.path.endsWith('mine.ts'));
  t.regex(report.driverModule.sha256, /^[0-9a-f]{64}$/);
  t.true(report.outcome.ok);
  const text = await lab('run', 'migration-meets-pin', '--driver', f('mine.ts'));
  t.regex(text.out[0] ?? '', /driver my-odp from .*mine\.ts in place of odp/);
});

test('the user strategy really runs: its own parameter makes every registration throw, a failed run with seed and replay line (exit 1)', async (t) => {
  const r = await lab('run', 'migration-meets-pin', '--driver', f('mine.ts'), '--set', 'strategy.boom=true', '--seed', '3');
  t.is(r.code, 1);
  t.true(r.out.some((l) => /FAILED .*boom from the user strategy/.test(l)), r.out.join('\n'));
  t.true(r.out.includes(`replay: npx lab run migration-meets-pin --seed 3 --profile linux-6.x --driver ${f('mine.ts')} --set strategy.boom=true`), r.out.join('\n'));
});

test('a user batching policy by module reference, with its own parameter', async (t) => {
  const r = await lab('run', 'deferred-invalidation-reuse', '--driver', 'odp', '--set', `batching.policy=${f('policy.ts')}#pairs`, '--set', 'batching.size=3', '--json');
  t.is(r.code, 0, r.err.join('\n'));
  const report = JSON.parse(r.out[0] ?? '{}');
  t.true(report.narrative.some((n: { text: string }) => n.text.includes('pairs')), 'the story names the user policy');
  const bad = await lab('run', 'deferred-invalidation-reuse', '--set', `batching.policy=${f('policy.ts')}#pairs`, '--set', 'batching.size=100');
  t.is(bad.code, 2);
  t.is(bad.err.length, 1, bad.err.join('\n'));
  t.regex(bad.err[0] ?? '', /batching\.size/);
});

for (const [title, argv, pattern] of [
  ['a missing file', ['--driver', 'MISSING'], /^error: .*nope\.ts: no such file$/],
  ['a missing export', ['--driver', 'mine.ts#absent'], /^error: .*mine\.ts has no export 'absent'; its strategy exports: default, #alsoMine$/],
  ['an export of the wrong shape', ['--driver', 'mine.ts#notAStrategy'], /^error: .*mine\.ts#notAStrategy is an object with keys a, not a strategy made by defineStrategy/],
  ['a batching policy where a strategy is wanted', ['--driver', 'policy.ts#pairs'], /^error: .*policy\.ts#pairs is a batching policy, not a strategy/],
  ['a TypeScript syntax error', ['--driver', 'syntax.ts'], /^error: .*syntax\.ts: TypeScript syntax error at line 1, column \d+: /],
  ['a module that throws while it loads', ['--driver', 'throws.ts'], /^error: .*throws\.ts: failed to load: cannot load me$/],
  ['a parameter its schema rejects', ['--driver', 'mine.ts', '--set', 'strategy.pages=9'], /^error: bad value for strategy\.pages: '9' \(Too big: expected number to be <=8/],
  ['a parameter it does not have', ['--driver', 'mine.ts', '--set', 'strategy.nope=1'], /^error: unknown parameter 'strategy\.nope'; accepted: .*strategy\.boom, strategy\.pages/],
  ['a scenario with nothing for it to stand in for', ['--driver', 'mine.ts', 'gup'], /^error: scenario 'gup-bias-false-positive' has no 'odp' driver for my-odp \(a faultable strategy\) to stand in for; scenarios that have one: /],
] as [string, readonly string[], RegExp][]) {
  test(`bad user module: ${title} is one line naming the file, exit 2`, async (t) => {
    const args = argv.map((a) => (a === 'MISSING' ? f('nope.ts') : a === 'gup' ? '' : /\.ts/.test(a) ? f(a) : a)).filter((a) => a !== '');
    const scenario = argv.includes('gup') ? 'gup-bias-false-positive' : 'migration-meets-pin';
    const r = await lab('run', scenario, ...args);
    t.is(r.code, 2);
    t.deepEqual(r.out, []);
    t.is(r.err.length, 1, r.err.join('\n'));
    t.regex(r.err[0] ?? '', pattern);
  });
}
