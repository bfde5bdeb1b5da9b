import type { ScenarioDefinition } from './scenario.ts';
import { writebackVsLongtermPin } from './writeback-vs-longterm-pin.ts';
import { forkWithPinnedRing, forkWithPinnedRingDontfork, pinnedRingZeroPage } from './fork-with-pinned-ring.ts';
import { deferredInvalidationReuse } from './deferred-invalidation-reuse.ts';
import { holdoffNonFaultable } from './holdoff-non-faultable.ts';
import { gupBiasFalsePositive } from './gup-bias-false-positive.ts';
import { migrationMeetsPin } from './migration-meets-pin.ts';
import { odpSwapStorm } from './odp-swap-storm.ts';
import { oomReaperNonblockable } from './oom-reaper-nonblockable.ts';
import { REVOCATION_SCENARIOS } from './revocation.ts';
import { ksmMergesMr } from './ksm-merges-mr.ts';
import { thpSplitZapRuns } from './thp-split-zap-runs.ts';
import { RCACHE_STALE_HIT_SCENARIOS } from './rcache-stale-hit.ts';
import { workloadNodeGc } from './workload-node-gc.ts';

/** Every runnable story, in the order `lab list` and `npm start` show them (the seeds' order). */
export const SCENARIOS: readonly ScenarioDefinition[] = [
  writebackVsLongtermPin,
  forkWithPinnedRing,
  pinnedRingZeroPage,
  forkWithPinnedRingDontfork,
  deferredInvalidationReuse,
  holdoffNonFaultable,
  gupBiasFalsePositive,
  migrationMeetsPin,
  odpSwapStorm,
  oomReaperNonblockable,
  ...REVOCATION_SCENARIOS,
  ksmMergesMr,
  thpSplitZapRuns,
  ...RCACHE_STALE_HIT_SCENARIOS,
  workloadNodeGc,
];

export function scenarioByName(name: string): ScenarioDefinition | undefined {
  return SCENARIOS.find((s) => s.name === name);
}
