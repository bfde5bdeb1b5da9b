import test from 'ava';
import { runCli } from '../../scenarios/index.ts';

function cli(...argv: string[]): { code: number; lines: string[] } {
  const lines: string[] = [];
  const saved = process.exitCode;
  const code = runCli(argv, (l) => lines.push(...l.split('\n')));
  process.exitCode = saved;
  return { code, lines };
}

test('list names every scenario on one line each', (t) => {
  const { code, lines } = cli('list');
  t.is(code, 0);
  t.true(lines.some((l) => l.startsWith('demo ')));
});

for (const [argv, pattern] of [
  [['run', 'nope'], /unknown scenario 'nope'; valid: .*demo/],
  [['run', 'demo', '--seed', 'x'], /seed must be an integer/],
  [['run', 'demo', '--profile', 'linux-9'], /valid profiles: linux-3\.0, linux-4\.18, linux-5\.8, linux-6\.x/],
  [['frobnicate'], /unknown command 'frobnicate'; commands: list, run/],
  [['run', 'demo', '--frob'], /unknown option '--frob'; options of run: --seed, --profile/],
] as const) {
  test(`bad input (${argv.join(' ')}) gives one line naming it and what is accepted, exit 2`, (t) => {
    const { code, lines } = cli(...argv);
    t.is(code, 2);
    t.is(lines.length, 1, lines.join('\n'));
    t.regex(lines[0] ?? '', pattern);
  });
}

test('run demo: same seed, same output, byte for byte; the narrative lists each invalidation', (t) => {
  const a = cli('run', 'demo', '--seed', '5');
  const b = cli('run', 'demo', '--seed', '5');
  t.is(a.code, 0);
  t.is(a.lines.join('\n'), b.lines.join('\n'));
  t.true(a.lines.some((l) => /invalidate CLEAR .* blockable, seq 3/.test(l)));
  t.true(a.lines.some((l) => /invalidate RELEASE/.test(l)));
});
