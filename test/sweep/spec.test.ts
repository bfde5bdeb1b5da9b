/**
 * Sweep specs (issue "Batching latency trade-offs", 2. Sweeps): a spec file is validated
 * with clear errors, one line naming the key and what is accepted; presets by name.
 */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PRESETS, PRESET_NAMES, SpecError, loadSpec, parseSpec } from '../../scenarios/sweep/spec.ts';
import { expandGrid } from '../../scenarios/sweep/grid.ts';
import { runMain } from '../../scenarios/cli.ts';

const ok = { name: 't', runner: 'synthetic', seeds: [1], durationNs: 100_000 };

for (const [title, spec, pattern] of [
  ['an unknown policy names the key, the value and the policies', { ...ok, grid: { policy: ['none', 'windw'] } },
    /^spec grid\.policy\[1\]: "windw" is not accepted; valid: none, window, count, window-or-count, adaptive, by-event-type, or \.\/file\.ts#export$/],
  ['an unknown grid key lists the valid keys', { ...ok, grid: { polcy: ['none'] } },
    /^spec grid: unknown key 'polcy'; valid keys: strategy, workload, profile, syncNs, tasks, policy, windowNs, count, minWindowNs, maxWindowNs, inner, strategy\.KEY, batching\.KEY$/],
  ['an unknown top-level key lists the valid keys', { ...ok, seed: [1] },
    /^spec \(top level\): unknown key 'seed'; valid keys: name, runner, seeds, durationNs, grid, description$/],
  ['a missing key is named', { name: 't', runner: 'synthetic', seeds: [1] }, /^spec durationNs: is required/],
  ['an unknown runner lists the runners', { ...ok, runner: 'fast' }, /^spec runner: "fast" is not accepted; valid: synthetic, batching$/],
  ['a fractional task count', { ...ok, grid: { tasks: [1.5] } }, /^spec grid\.tasks\[0\]: expected an integer, got the number 1\.5$/],
  ['a negative window', { ...ok, grid: { windowNs: [-1] } }, /^spec grid\.windowNs\[0\]: must be at least 0, got -1$/],
  ['an empty list', { ...ok, seeds: [] }, /^spec seeds: must list at least 1 value$/],
  ['a list given as a scalar', { ...ok, grid: { tasks: 4 } }, /^spec grid\.tasks: expected a list, got number 4$/],
  ['an unknown profile lists the profiles', { ...ok, grid: { profile: ['linux-9'] } }, /^spec grid\.profile\[0\]: "linux-9" is not accepted; valid: linux-3\.0, linux-4\.18, linux-5\.8, linux-5\.15, linux-6\.x$/],
  ['a seed listed twice', { ...ok, seeds: [1, 1] }, /^spec seeds: 1 is listed twice$/],
  ['a grid value listed twice', { ...ok, grid: { tasks: [4, 4] } }, /^spec grid\.tasks: 4 is listed twice$/],
  ['several problems: the first, and how many more', { ...ok, runner: 'x', seeds: 'y' }, /^spec runner: .* \(and 1 more problem\)$/],
] as const) {
  test(`spec validation: ${title}`, (t) => {
    const err = t.throws(() => parseSpec(spec), { instanceOf: SpecError });
    t.regex(err?.message ?? '', pattern);
    t.false((err?.message ?? '').includes('\n'));
  });
}

test('every preset is a valid spec; smoke is tiny, batching is the default study', (t) => {
  for (const name of PRESET_NAMES) t.notThrows(() => loadSpec(name), name);
  t.true(expandGrid(loadSpec('smoke')).length <= 40);
  const b = loadSpec('batching');
  t.is(b.runner, 'batching');
  t.deepEqual(b.grid.strategy, ['odp', 'holdoff']);
  t.deepEqual(b.grid.policy, ['none', 'window', 'count', 'window-or-count']);
  t.deepEqual(b.grid.tasks, [1, 4, 16]);
  t.is(b.grid.windowNs[0], 0);
  t.is(b.grid.windowNs[b.grid.windowNs.length - 1], 1_000_000);
  // geometric after 0: constant ratio
  const w = b.grid.windowNs.slice(1);
  for (let i = 2; i < w.length; i++) t.true(Math.abs((w[i] as number) / (w[i - 1] as number) - (w[1] as number) / (w[0] as number)) < 0.01);
  t.true(b.seeds.length >= 2);
  t.truthy(PRESETS.batching);
});

test('spec files: unknown preset, missing file, bad JSON and a bad value each give one line', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sweep-spec-'));
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, '{"name": "x",');
  const wrong = join(dir, 'wrong.json');
  writeFileSync(wrong, JSON.stringify({ ...ok, grid: { strategy: ['pinned'] } }));
  t.regex(t.throws(() => loadSpec('nope'))?.message ?? '', /^unknown preset 'nope'; presets: batching, batching-synthetic, smoke; or a path to a spec \.json file$/);
  t.regex(t.throws(() => loadSpec(join(dir, 'missing.json')))?.message ?? '', /cannot read spec file .*missing\.json: ENOENT/);
  t.regex(t.throws(() => loadSpec(bad))?.message ?? '', /bad\.json is not valid JSON/);
  t.regex(t.throws(() => loadSpec(wrong))?.message ?? '', /wrong\.json: spec grid\.strategy\[0\]: "pinned" is not accepted; valid: odp, holdoff, or \.\/file\.ts#export$/);
});

async function cli(...argv: string[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const saved = process.exitCode;
  const code = await runMain(argv, (l) => lines.push(...l.split('\n')));
  process.exitCode = saved;
  return { code, lines };
}

for (const [argv, pattern] of [
  [['sweep', 'nope'], /^error: unknown preset 'nope'; presets: batching, batching-synthetic, smoke; or a path/],
  [['sweep', 'smoke', '--jobs', '0'], /--jobs must be an integer from 1 to 1024, got '0'/],
  [['sweep', 'smoke', '--shard', '3/3'], /--shard must be i\/n with 0 <= i < n \(e\.g\. 0\/4\), got '3\/3'/],
  [['sweep', 'smoke', '--frob'], /unknown option '--frob'; options of sweep: --jobs, --out, --shard, --resume, --max-points, --quiet, --progress/],
  [['sweep'], /missing required argument 'spec'; usage: lab sweep \[options\] <spec>/],
  [['merge'], /missing required argument 'dirs'/],
  [['merge', '/nonexistent/dir'], /^error: \/nonexistent\/dir is not a directory$/],
] as const) {
  test(`bad sweep input (${argv.join(' ')}) gives one line naming it, exit 2`, async (t) => {
    const { code, lines } = await cli(...argv);
    t.is(code, 2);
    t.is(lines.length, 1, lines.join('\n'));
    t.regex(lines[0] ?? '', pattern);
  });
}
