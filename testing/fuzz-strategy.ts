import type { ProfileName } from '../kernel-model/index.ts';
import type { StrategyDefinition } from '../driver/index.ts';
import { fuzz, type FuzzReport } from '../scenarios/fuzz/fuzz.ts';
import type { ParamValues } from '../scenarios/params.ts';
import type { LoadedStrategy } from '../scenarios/user-module.ts';
import { userCheckTarget } from '../scenarios/check/subject.ts';

/**
 * Fuzz a driver author's strategy as `lab check` does: random command lists (mmap,
 * munmap, fork, reclaim, migration, RDMA traffic, registration and teardown) with the
 * sanitizer attached; a run fails on an error-severity violation or a model failure
 * (warnings are recorded in `seen`). The first failure is shrunk into `reproducer`.
 *
 * @example
 *   const report = fuzzStrategy(myStrategy, { runs: 50, seed: 1 });
 *   assertNoViolations(t, report);
 */
export function fuzzStrategy(
  strategy: StrategyDefinition | LoadedStrategy,
  opts: { runs?: number; seed?: number; profile?: ProfileName; params?: ParamValues } = {},
): FuzzReport {
  const target = userCheckTarget(strategy, opts.params ?? {});
  return fuzz(target, { runs: opts.runs ?? 100, seed: opts.seed ?? 1, ...(opts.profile ? { profile: opts.profile } : {}) });
}
