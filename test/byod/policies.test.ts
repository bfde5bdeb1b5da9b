/**
 * Every batching policy of driver/batching reachable from `--set` with its own parameters
 * (issue 10 item 3): the run builds that policy (its name, as driver/batching describes
 * it, appears in the story), `adaptive` really runs adaptive, and a combination a policy
 * cannot use is one line, exit 2.
 */
import test from 'ava';
import { runMain } from '../../scenarios/cli.ts';

async function lab(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runMain(argv, { out: (l) => out.push(...l.split('\n')), err: (l) => err.push(...l.split('\n')) });
  return { code, out, err };
}

const RUN = ['run', 'deferred-invalidation-reuse', '--driver', 'odp', '--profile', 'linux-6.x', '--json', '--set', 'reuse.tasks=4', '--set', 'reuse.rounds=2'];

for (const [sets, name] of [
  [['batching.policy=none'], /\(none\)/],
  [['batching.policy=window', 'batching.windowNs=20000'], /window\(windowNs=20000\)/],
  [['batching.policy=count', 'batching.count=3'], /count\(count=3\)/],
  [['batching.policy=window-or-count', 'batching.windowNs=20000', 'batching.count=3'], /window-or-count\(windowNs=20000, count=3\)/],
  [['batching.policy=adaptive', 'batching.minWindowNs=500', 'batching.maxWindowNs=40000'], /adaptive\(minWindowNs=500, maxWindowNs=40000, count=16\)/],
  [['batching.policy=by-event-type', 'batching.inner=count', 'batching.count=2'], /by-event-type\(inner=count, count=2\)/],
] as [string[], RegExp][]) {
  test(`--set ${sets.join(' ')} builds and runs that policy`, async (t) => {
    const r = await lab(...RUN, ...sets.flatMap((s) => ['--set', s]));
    t.is(r.code, 0, r.err.join('\n'));
    t.deepEqual(r.err, [], 'every --set was used');
    const report = JSON.parse(r.out[0] ?? '{}');
    t.true(report.narrative.some((n: { text: string }) => name.test(n.text)), report.narrative.map((n: { text: string }) => n.text).join('\n'));
  });
}

test('--set batching.policy=adaptive really runs adaptive (not by-event-type(window), as it once did): concurrent invalidations share syncs, a lone one does not', async (t) => {
  const figures = async (...sets: string[]) => {
    const r = await lab(...RUN, ...sets.flatMap((s) => ['--set', s]));
    return JSON.parse(r.out[0] ?? '{}').extra as Record<string, number>;
  };
  const adaptive = await figures('batching.policy=adaptive', 'batching.minWindowNs=50000', 'batching.maxWindowNs=100000');
  const byType = await figures('batching.policy=by-event-type', 'batching.inner=window', 'batching.windowNs=100000');
  const none = await figures('batching.policy=none');
  t.true(adaptive['4 tasks: syncs']! < none['4 tasks: syncs']!, JSON.stringify({ adaptive, none }));
  // by-event-type(window=100 µs) makes a lone invalidation wait the whole window; adaptive shrinks to its minimum
  t.true(adaptive['1 task: invalidation p50 (ns)']! < byType['1 task: invalidation p50 (ns)']!, JSON.stringify({ adaptive, byType }));
});

for (const [sets, pattern] of [
  [['batching.policy=window', 'batching.windowNs=0'], /^error: --set batching\.policy=window: window: windowNs must be a positive integer of ns, got '0'$/],
  [['batching.policy=adaptive', 'batching.minWindowNs=5000', 'batching.maxWindowNs=10'], /^error: --set batching\.policy=adaptive: adaptive: maxWindowNs must be at least minWindowNs \(5000\), got 10$/],
  [['batching.policy=by-event-type', 'batching.inner=by-event-type'], /^error: bad value for batching\.inner: 'by-event-type'/],
  [['batching.policy=sometimes'], /^error: bad value for batching\.policy: 'sometimes' \(valid: none, window, count, window-or-count, adaptive, by-event-type, or \.\/file\.ts#export/],
] as [string[], RegExp][]) {
  test(`unusable batching (${sets.join(' ')}) is one line, exit 2`, async (t) => {
    const r = await lab(...RUN, ...sets.flatMap((s) => ['--set', s]));
    t.is(r.code, 2);
    t.deepEqual(r.out, []);
    t.is(r.err.length, 1, r.err.join('\n'));
    t.regex(r.err[0] ?? '', pattern);
  });
}

test('a --set the scenario never reads is warned about on stderr (the run still counts)', async (t) => {
  const r = await lab('run', 'gup-bias-false-positive', '--set', 'batching.policy=none', '--set', 'holdoff.timeoutNs=5');
  t.is(r.code, 0);
  t.deepEqual(r.err.filter((l) => l.startsWith('warning:')), [
    '--set batching.policy', '--set holdoff.timeoutNs',
  ].map((k) => `warning: ${k} had no effect: gup-bias-false-positive never read it`));
});
