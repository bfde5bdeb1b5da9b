import type { ProfileName } from '../kernel-model/index.ts';
import type { StrategyDefinition } from '../driver/index.ts';
import { scenarioByName, SCENARIOS } from '../scenarios/catalogue.ts';
import { runScenario, type ScenarioReport } from '../scenarios/scenario.ts';
import type { ParamValues } from '../scenarios/params.ts';
import type { LoadedStrategy } from '../scenarios/user-module.ts';
import { asLoaded, storyApplies } from '../scenarios/check/subject.ts';

/**
 * Run one story of the catalogue with a driver author's strategy standing in for the
 * reference it is `like` (defineStrategy), or with the reference itself when `strategy` is
 * omitted. Throws (a test bug, not a finding) for an unknown story or one that has no
 * such reference.
 *
 * @example
 *   const report = runStory('odp-swap-storm', myStrategy);
 *   assertNoViolations(t, report, { severity: 'error' });
 */
export function runStory(
  name: string, strategy?: StrategyDefinition | LoadedStrategy,
  opts: { seed?: number; profile?: ProfileName; driver?: string; params?: ParamValues } = {},
): ScenarioReport {
  const def = scenarioByName(name);
  if (!def) throw new Error(`unknown story '${name}'; stories: ${SCENARIOS.map((s) => s.name).join(', ')}`);
  const m = strategy ? asLoaded(strategy) : undefined;
  const driver = m ? m.def.like : (opts.driver ?? def.defaultDriver);
  if (m && !storyApplies(def, driver)) throw new Error(`story '${name}' has no '${driver}' driver for ${m.def.name} to stand in for; its drivers: ${def.drivers.join(', ')}`);
  return runScenario(def, {
    seed: opts.seed ?? 1, profile: opts.profile ?? def.defaultProfile, driver, params: opts.params ?? {},
    ...(m ? { strategy: m } : {}),
  });
}
