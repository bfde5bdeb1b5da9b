/**
 * What `lab explore` explores: a story (a catalogue scenario, one of this folder's race
 * fixtures, or a user's module exporting a story), run under one explored schedule. A
 * violation is what the story does not expect: a sanitizer finding outside its expected
 * list for the profile and driver, a run that failed (a task threw: a story's own check),
 * or a run cut by its bound.
 */
import type { ExploreOption, ProfileName, ScheduleOption, Simulation } from '../../kernel-model/index.ts';
import { scenarioByName, SCENARIOS } from '../catalogue.ts';
import { runScenario, type ScenarioDefinition, type ScenarioReport } from '../scenario.ts';
import type { ParamValues } from '../params.ts';
import type { LoadedStrategy } from '../user-module.ts';
import type { ExploreRunResult, ExploreTarget, ExploreViolation } from './explore.ts';
import { mirrorSeqRace } from './mirror-seq-race.ts';

/** Stories written for exploration (races a test explores), runnable by name with `lab explore`. */
export const EXPLORE_SCENARIOS: readonly ScenarioDefinition[] = [mirrorSeqRace];

/** A story by name: the catalogue's, then the exploration fixtures. */
export function exploreScenarioByName(name: string): ScenarioDefinition | undefined {
  return scenarioByName(name) ?? EXPLORE_SCENARIOS.find((s) => s.name === name);
}

export function exploreScenarioNames(): string[] {
  return [...SCENARIOS, ...EXPLORE_SCENARIOS].map((s) => s.name);
}

/** Whether a module's export is a story (the shape `ScenarioDefinition` describes). */
export function isScenarioDefinition(v: unknown): v is ScenarioDefinition {
  if (typeof v !== 'object' || v === null) return false;
  const d = v as Partial<ScenarioDefinition>;
  return typeof d.name === 'string' && typeof d.setup === 'function' && typeof d.expect === 'function' &&
    Array.isArray(d.drivers) && typeof d.defaultDriver === 'string' && typeof d.untilNs === 'number';
}

export interface ScenarioRunSpec {
  seed: number;
  profile: ProfileName;
  driver: string;
  params: ParamValues;
  strategy?: LoadedStrategy;
}

/** The violations of one scenario report, as the explorer counts them. */
export function scenarioViolations(def: ScenarioDefinition, r: ScenarioReport): ExploreViolation[] {
  const out: ExploreViolation[] = [];
  for (const id of r.outcome.unexpected) {
    const v = r.violations.find((x) => x.id === id);
    out.push({ id, message: v ? v.message : id });
  }
  if (r.outcome.run === 'failed') out.push({ id: 'run-failed', message: r.outcome.failure ?? 'the run failed' });
  else if ((r.outcome.run === 'time-limit' || r.outcome.run === 'event-limit') && def.endsAtLimit !== true) {
    out.push({ id: 'did-not-finish', message: r.outcome.failure ?? `stopped by its ${r.outcome.run}` });
  }
  return out;
}

/** One scenario run under a scheduling option (what `lab replay` of a scenario reproducer does). */
export function runScenarioUnder(def: ScenarioDefinition, spec: ScenarioRunSpec, schedule: ScheduleOption): ScenarioReport {
  return runScenario(def, {
    seed: spec.seed, profile: spec.profile, driver: spec.driver, params: spec.params, schedule,
    ...(spec.strategy ? { strategy: spec.strategy } : {}),
  });
}

/** A story as an exploration target. */
export function scenarioTarget(def: ScenarioDefinition, spec: ScenarioRunSpec): ExploreTarget {
  return {
    name: def.name,
    run(schedule: ExploreOption, observe): ExploreRunResult {
      let sim: Simulation | null = null;
      const r = runScenario(def, {
        seed: spec.seed, profile: spec.profile, driver: spec.driver, params: spec.params, schedule,
        ...(spec.strategy ? { strategy: spec.strategy } : {}),
        observe: (s) => {
          sim = s;
          observe(s);
        },
      });
      if (!sim) throw new Error(`${def.name}: ${r.outcome.failure ?? 'set-up failed'}`);
      return { violations: scenarioViolations(def, r), endNs: (sim as Simulation).now() };
    },
  };
}
