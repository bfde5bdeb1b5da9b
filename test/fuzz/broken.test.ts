/**
 * Issue part 4: every broken driver whose registry entry says `fuzz` is caught by its
 * named checker within 50 fuzz runs (fast-check seed fixed, so CI is stable). The runs to
 * detection are logged; sanitizer/README.md's table lists them. The `directed` ones are in
 * broken-directed.test.ts.
 */
import test from 'ava';
import { fuzz } from '../../scenarios/fuzz/fuzz.ts';
import { BROKEN_TARGETS } from '../../scenarios/fuzz/targets.ts';
import { renderText } from '../../sanitizer/index.ts';

const RUNS = 50;
export const BROKEN_SEED = 1;

for (const target of BROKEN_TARGETS.filter((b) => b.detection === 'fuzz')) {
  test(`${target.name}: caught by ${target.expectedChecker} within ${RUNS} runs (seed ${BROKEN_SEED})`, (t) => {
    const report = fuzz(target, { runs: RUNS, seed: BROKEN_SEED, shrinkBudget: 0 });
    t.true(report.found, `not caught in ${RUNS} runs; ids seen: ${JSON.stringify(report.seen)}`);
    if (!report.found) return;
    t.true((report.runsToDetection ?? Infinity) <= RUNS);
    const caught = report.failing ?? [];
    t.true(caught.length > 0 && caught.every((v) => v.id === target.expectedChecker));
    t.log(`${target.name}: caught by ${target.expectedChecker} in run ${report.runsToDetection}`);
    t.log(renderText(caught.slice(0, 1)));
  });
}
