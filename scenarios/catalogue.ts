import { runDemo } from './demo.ts';
import type { ProfileName } from '../kernel-model/index.ts';

export interface ScenarioOptions {
  seed: number;
  profile: ProfileName;
}

export interface ScenarioResult {
  /** The narrative, in virtual-time order. */
  lines: string[];
  /** Whether the run behaved as the scenario's expectation says. */
  ok: boolean;
}

export interface Scenario {
  name: string;
  summary: string;
  defaultProfile: ProfileName;
  run(opts: ScenarioOptions): ScenarioResult;
}

/** Every runnable story, by name. */
export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'demo',
    summary: 'a process, the lib/test_hmm-style mirror, and every invalidation between them',
    defaultProfile: 'linux-6.x',
    run: ({ seed }) => runDemo(seed),
  },
];

export function scenarioByName(name: string): Scenario | undefined {
  return SCENARIOS.find((s) => s.name === name);
}
