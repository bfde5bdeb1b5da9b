/**
 * The coverage list and the default campaign (issue 19, item 1): every item of the
 * committed list (scenarios/fuzz/coverage.ts) is reached by the default 200-run campaign
 * (67 runs of each reference strategy, fast-check seed 1), and the list is complete: every
 * trace-record kind and every spec rule a test cites is on it or set apart with why.
 */
import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import {
  COVERAGE_ITEMS, DEFAULT_COVERAGE_RUNS, NOT_EXPECTED_TRACE, OUTSIDE_FUZZ_WORLD, formatCoverage, runCoverage,
} from '../../scenarios/fuzz/coverage.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('the list names every trace-record kind of kernel-model/sim/trace.ts (or says why a clean run has none)', (t) => {
  const src = readFileSync(join(root, 'kernel-model/sim/trace.ts'), 'utf8');
  const kinds = [...src.matchAll(/\{ type: '([a-z-]+)'/g)].map((m) => m[1]!);
  t.true(kinds.length > 30);
  const listed = new Set(COVERAGE_ITEMS.filter((i) => i.kind === 'trace').map((i) => i.id.slice('trace '.length)));
  for (const k of kinds) t.true(listed.has(k) || k in NOT_EXPECTED_TRACE, `trace kind '${k}' is neither on the list nor set apart`);
});

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? testFiles(join(dir, e.name)) : e.name.endsWith('.test.ts') ? [join(dir, e.name)] : []);
}

test('the list names every spec rule a test cites (or says why the fuzz world does not reach it)', (t) => {
  const cited = new Set<string>();
  for (const f of testFiles(join(root, 'test'))) {
    for (const m of readFileSync(f, 'utf8').matchAll(/kernel rules? (\d+[a-z]?)\b|rdma ([A-H]\d+)\b/g)) cited.add(m[1] ? `kernel rule ${m[1]}` : `rdma ${m[2]}`);
  }
  const listed = new Set(COVERAGE_ITEMS.filter((i) => i.kind === 'rule').map((i) => i.id));
  const missing = [...cited].filter((r) => !listed.has(r) && !(r in OUTSIDE_FUZZ_WORLD)).sort();
  t.deepEqual(missing, []);
});

test(`the default campaign (${DEFAULT_COVERAGE_RUNS} runs) reaches every item, with no violation on a reference`, (t) => {
  const c = runCoverage({ runs: DEFAULT_COVERAGE_RUNS, seed: 1 });
  t.log(formatCoverage(c).filter((l) => /unreached|every item|coverage:/.test(l)).join('\n'));
  t.deepEqual(c.unreached.map((i) => i.id), []);
  t.deepEqual(c.failures, []);
  t.deepEqual(c.perStrategy, { pinned: 67, odp: 67, holdoff: 67 });
});
