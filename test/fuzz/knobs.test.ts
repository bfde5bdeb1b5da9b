/**
 * The strategy knobs of fuzz runs (issue 19, item 1): every batching policy of
 * driver/batching and holdoff timeouts on both sides of a transfer, drawn from the
 * simulation seed (so a reproducer replays them).
 */
import test from 'ava';
import { BATCH_POLICY_NAMES } from '../../driver/batching/index.ts';
import { FUZZ_BATCHINGS, FUZZ_HOLDOFF_TIMEOUTS_NS, fuzzKnobs } from '../../scenarios/fuzz/knobs.ts';
import { Simulation } from '../../kernel-model/index.ts';

test('every batching policy of driver/batching is in the fuzzer\'s list, and each builds', (t) => {
  t.deepEqual([...new Set(FUZZ_BATCHINGS.map((b) => b.name))].sort(), [...BATCH_POLICY_NAMES].sort());
  const sim = new Simulation({ seed: 1 });
  for (let seed = 1; seed <= 60; seed++) t.truthy(fuzzKnobs(seed).batching(sim.scheduler));
});

test('100 simulation seeds meet every policy and every holdoff timeout; timeouts both shorter and longer than a transfer (about 4 µs)', (t) => {
  const policies = new Set<string>();
  const timeouts = new Set<number>();
  for (let seed = 1; seed <= 100; seed++) {
    const k = fuzzKnobs(seed);
    policies.add(k.batchingName);
    timeouts.add(k.holdoffTimeoutNs);
  }
  t.deepEqual([...policies].sort(), FUZZ_BATCHINGS.map((b) => b.name).sort());
  t.deepEqual([...timeouts].sort((a, b) => a - b), [...FUZZ_HOLDOFF_TIMEOUTS_NS].sort((a, b) => a - b));
  t.true(FUZZ_HOLDOFF_TIMEOUTS_NS.some((n) => n < 4_000) && FUZZ_HOLDOFF_TIMEOUTS_NS.some((n) => n > 40_000));
});

test('the knobs are a function of the seed', (t) => {
  for (const seed of [1, 7, 2144518617, -5]) {
    t.is(fuzzKnobs(seed).batchingName, fuzzKnobs(seed).batchingName);
    t.is(fuzzKnobs(seed).holdoffTimeoutNs, fuzzKnobs(seed).holdoffTimeoutNs);
  }
});
