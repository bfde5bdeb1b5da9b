// notifier-lab/testing: helpers for a driver author's own tests (run a story with a given
// strategy, fuzz it, assert no violations). The same helpers the project's tests use.
export { defineStrategy, defineBatchPolicy, type StrategyDefinition, type BatchPolicyDefinition } from '../driver/index.ts';
export { runScenario, scenarioByName, SCENARIOS, loadStrategy, type ScenarioReport } from '../scenarios/index.ts';
