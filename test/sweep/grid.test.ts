/**
 * Grid expansion and shards (issue "Batching latency trade-offs", 2. Sweeps): points in a
 * fixed order with stable ids; `--shard i/n` a deterministic slice; shards partition the grid.
 */
import test from 'ava';
import fc from 'fast-check';
import { expandGrid, parseShard, shardPoints } from '../../scenarios/sweep/grid.ts';
import { loadSpec, parseSpec } from '../../scenarios/sweep/spec.ts';

const spec = parseSpec({
  name: 'g', runner: 'synthetic', seeds: [1, 2], durationNs: 100_000,
  grid: { policy: ['none', 'window', 'count', 'window-or-count'], windowNs: [0, 1000], count: [4, 8], tasks: [1, 4] },
});

test('expansion order: outer keys first, seeds innermost; unused window/count are null and not repeated', (t) => {
  const pts = expandGrid(spec);
  // per tasks value: none 1 + window 2 + count 2 + window-or-count 4 = 9 configurations, times 2 seeds
  t.is(pts.length, 2 * 9 * 2);
  t.deepEqual(pts.map((p) => p.index), pts.map((_, i) => i));
  const brief = pts.slice(0, 12).map((p) => `${p.params.tasks} ${p.params.policy} ${p.params.windowNs} ${p.params.count} s${p.seed}`);
  t.deepEqual(brief, [
    '1 none null null s1', '1 none null null s2',
    '1 window 0 null s1', '1 window 0 null s2',
    '1 window 1000 null s1', '1 window 1000 null s2',
    '1 count null 4 s1', '1 count null 4 s2',
    '1 count null 8 s1', '1 count null 8 s2',
    '1 window-or-count 0 4 s1', '1 window-or-count 0 4 s2',
  ]);
  t.is(pts[18]?.params.tasks, 4);
});

test('ids are stable: the same in every expansion, whatever the key order of the spec; they depend on params, seed, runner and duration', (t) => {
  const a = expandGrid(spec);
  const reordered = parseSpec({
    grid: { tasks: [1, 4], count: [4, 8], windowNs: [0, 1000], policy: ['none', 'window', 'count', 'window-or-count'] },
    durationNs: 100_000, seeds: [1, 2], runner: 'synthetic', name: 'g',
  });
  t.deepEqual(expandGrid(reordered).map((p) => p.id), a.map((p) => p.id));
  t.is(new Set(a.map((p) => p.id)).size, a.length);
  // Golden ids: changing how ids are made would orphan every results file on resume.
  t.deepEqual(a.slice(0, 4).map((p) => p.id), ['ae58d9dc35818aae', '0a138d1532f94b53', 'b8ebdf9b201aaab6', 'e5e046e03968ec86']);
  const longer = expandGrid({ ...spec, durationNs: 200_000 });
  t.notDeepEqual(longer.map((p) => p.id), a.map((p) => p.id));
  // a point keeps its id when the grid grows around it
  const grown = expandGrid({ ...spec, seeds: [1, 2, 3], grid: { ...spec.grid, tasks: [1, 4, 16] } });
  const grownIds = new Set(grown.map((p) => p.id));
  t.true(a.every((p) => grownIds.has(p.id)));
});

test('the default preset expands to a grid that fits the time budget', (t) => {
  const pts = expandGrid(loadSpec('batching'));
  // 2 strategies x 3 task counts x (none + 8 windows + count + 8 windows x 1 count) x 3 seeds
  t.is(pts.length, 2 * 3 * 18 * 3);
});

test('shards partition the grid: every point in exactly one shard, index mod n', (t) => {
  const pts = expandGrid(spec);
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 50 }), (n) => {
      const seen = new Map<string, number>();
      for (let i = 0; i < n; i++) {
        for (const p of shardPoints(pts, { index: i, count: n })) {
          if (p.index % n !== i) return false;
          seen.set(p.id, (seen.get(p.id) ?? 0) + 1);
        }
      }
      return seen.size === pts.length && [...seen.values()].every((c) => c === 1);
    }),
  );
  t.deepEqual(shardPoints(pts, null), pts);
});

test('--shard parsing', (t) => {
  t.deepEqual(parseShard('0/1'), { index: 0, count: 1 });
  t.deepEqual(parseShard('3/4'), { index: 3, count: 4 });
  for (const bad of ['4/4', '1/0', '-1/2', 'a/b', '1', '1/2/3', '']) t.true('error' in parseShard(bad), bad);
});
