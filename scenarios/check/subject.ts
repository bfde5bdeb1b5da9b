/**
 * From a user's strategy module (or a definition made in code) to what `lab check` runs:
 * the subject (fuzz target and teardown races) and the stories of the catalogue that
 * apply to the strategy's kind, each runnable with the user's strategy or the reference.
 */
import type { StrategyDefinition } from '../../driver/index.ts';
import { SEVERITY, type ViolationId } from '../../sanitizer/index.ts';
import { SCENARIOS } from '../catalogue.ts';
import { runScenario, type ScenarioDefinition } from '../scenario.ts';
import { parseSets, type ParamValues } from '../params.ts';
import { userFuzzTarget } from '../fuzz/cli.ts';
import type { FuzzTarget } from '../fuzz/targets.ts';
import { displayPath, type LoadedStrategy } from '../user-module.ts';
import type { CheckSubject, StoryCheck } from './check.ts';

/** A definition made in code (a test) as if loaded from a module: named by itself, no file. */
export function asLoaded(s: StrategyDefinition | LoadedStrategy): LoadedStrategy {
  if ('def' in s) return s;
  return { ref: s.name, file: `<${s.name}>`, exportName: 'default', sha256: '', def: s as StrategyDefinition };
}

/** Every warning id: what a user strategy may show without failing (the reference designs imply some). */
export const WARNING_IDS = (Object.keys(SEVERITY) as ViolationId[]).filter((id) => SEVERITY[id] === 'warning');

/** The common parameters' defaults (batching.policy=none, ...) under the caller's values. */
function withDefaults(values: ParamValues): ParamValues {
  const d = parseSets([]);
  return { ...('values' in d ? d.values : {}), ...values };
}

/** The fuzz target of a user strategy as `lab check` and the testing helpers judge it: errors fail, warnings do not. */
export function userCheckTarget(s: StrategyDefinition | LoadedStrategy, values: ParamValues = {}): FuzzTarget {
  const m = asLoaded(s);
  return { ...userFuzzTarget(m, withDefaults(values), []), allowed: WARNING_IDS };
}

export function subjectFromModule(s: StrategyDefinition | LoadedStrategy, values: ParamValues = {}): CheckSubject {
  const m = asLoaded(s);
  const target = userCheckTarget(m, values);
  const subject: CheckSubject = {
    name: m.def.name, nic: m.def.nic, like: m.def.like, ref: m.ref,
    strategy: (sim) => target.strategy(sim),
  };
  if (m.sha256) subject.file = displayPath(m.file);
  return subject;
}

/** Whether a story can run a strategy standing in for `like`. */
export function storyApplies(def: ScenarioDefinition, like: string): boolean {
  return def.drivers.includes(like);
}

/** The catalogue's stories for this strategy's kind, at each story's default profile and seed 1. */
export function storiesFor(s: StrategyDefinition | LoadedStrategy, values: ParamValues = {}): StoryCheck[] {
  const m = asLoaded(s);
  return SCENARIOS.filter((d) => storyApplies(d, m.def.like)).map((d) => ({
    name: d.name,
    profile: d.defaultProfile,
    run(withUser: boolean) {
      const r = runScenario(d, {
        seed: 1, profile: d.defaultProfile, driver: m.def.like, params: { ...values },
        ...(withUser ? { strategy: m } : {}),
      });
      const out = { violations: r.violations, run: r.outcome.run, expected: r.outcome.expected };
      return r.outcome.failure !== undefined ? { ...out, failure: r.outcome.failure } : out;
    },
  }));
}
