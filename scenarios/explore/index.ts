// Systematic exploration of interleavings (`lab explore`): the explorer, its targets, its
// race fixtures, and the reproducer format's version 3 (schedules and stories).
export {
  explore, formatExplore, replayDecisions, runSchedule,
  type ExploreOptions, type ExploreReport, type ExploreTarget, type ExploreRunResult, type ExploreViolation, type FoundViolation,
} from './explore.ts';
export {
  EXPLORE_SCENARIOS, exploreScenarioByName, exploreScenarioNames, isScenarioDefinition, runScenarioUnder, scenarioTarget, scenarioViolations,
  type ScenarioRunSpec,
} from './targets.ts';
export { mirrorSeqRace } from './mirror-seq-race.ts';
export { scheduleJsonSchema, scenarioRefSchema, scheduleForFile, type ScenarioRef } from './reproducer.ts';
export { replayScenarioReproducer, loadStory } from './replay.ts';
export { registerExploreCommand } from './cli.ts';
