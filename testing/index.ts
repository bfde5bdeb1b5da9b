// notifier-lab/testing: helpers for a driver author's own tests (run a story with a given
// strategy, fuzz it, assert no violations). The same helpers the project's tests use.
export { defineStrategy, defineBatchPolicy, type StrategyDefinition, type BatchPolicyDefinition } from '../driver/index.ts';
export { runScenario, scenarioByName, SCENARIOS, loadStrategy, type ScenarioReport } from '../scenarios/index.ts';
export { runStory } from './run-story.ts';
export { fuzzStrategy } from './fuzz-strategy.ts';
export { checkStrategy } from './check-strategy.ts';
export { assertNoViolations, findings, type Assertions, type Judged } from './assert-no-violations.ts';
export { renderCheck, type CheckReport, type CheckRow } from '../scenarios/check/check.ts';
