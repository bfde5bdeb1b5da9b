import type { ScenarioDefinition } from './scenario.ts';
import { gupBiasFalsePositive } from './gup-bias-false-positive.ts';

/** Every runnable story, in the order `lab list` and `npm start` show them. */
export const SCENARIOS: readonly ScenarioDefinition[] = [
  gupBiasFalsePositive,
];

export function scenarioByName(name: string): ScenarioDefinition | undefined {
  return SCENARIOS.find((s) => s.name === name);
}
