import type { StrategyDefinition } from '../driver/index.ts';
import type { ParamValues } from '../scenarios/params.ts';
import type { LoadedStrategy } from '../scenarios/user-module.ts';
import { DEFAULT_CHECK_RUNS, runCheck, type CheckOptions, type CheckReport } from '../scenarios/check/check.ts';
import { storiesFor, subjectFromModule } from '../scenarios/check/subject.ts';

/**
 * `lab check` in a test: the stories of the strategy's kind (beside the reference), a fuzz
 * campaign and the teardown races. `report.ok` is the verdict; `report.rows` each check.
 *
 * @example
 *   const report = checkStrategy(myStrategy, { runs: 50, only: ['fuzz', 'race'] });
 *   t.true(report.ok, renderCheck(report).join('\n'));
 */
export function checkStrategy(
  strategy: StrategyDefinition | LoadedStrategy,
  opts: Partial<Omit<CheckOptions, 'stories'>> & { params?: ParamValues } = {},
): CheckReport {
  const params = opts.params ?? {};
  const wantStories = !opts.only || opts.only.some((o) => o === 'story' || o.startsWith('story:'));
  return runCheck(subjectFromModule(strategy, params), {
    runs: opts.runs ?? DEFAULT_CHECK_RUNS, seed: opts.seed ?? 1,
    ...(opts.only ? { only: opts.only } : {}),
    stories: wantStories ? storiesFor(strategy, params) : [],
  });
}
