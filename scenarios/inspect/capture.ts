/**
 * Re-run a scenario or a fuzz reproducer deterministically with a WorldObserver attached,
 * and take snapshots at the instants asked for. Same seed, same run: an instant is reached
 * again by running again.
 */
import type { ProfileName, Simulation } from '../../kernel-model/index.ts';
import type { RdmaNode } from '../../driver/index.ts';
import { runScenario, type NarrativeLine, type RunScenarioOptions, type ScenarioDefinition, type ScenarioReport } from '../scenario.ts';
import type { ParamValues } from '../params.ts';
import { runTarget, type FuzzTarget, type Reproducer } from '../fuzz/index.ts';
import { WorldObserver, type CaptureHooks } from './observer.ts';
import type { InstantSpec } from './at.ts';
import { fmtNs, type WorldSnapshot } from './snapshot.ts';

export type InspectTarget =
  | {
    kind: 'scenario'; name: string; def: ScenarioDefinition; seed: number; profile: ProfileName; driver: string; params: ParamValues;
    /** The rest of what `lab run` passes (a user strategy, the used-parameter set). */
    more?: Pick<RunScenarioOptions, 'strategy' | 'usedParams'>;
  }
  | { kind: 'reproducer'; name: string; rep: Reproducer; target: FuzzTarget };

export interface ObservedRun {
  observer: WorldObserver;
  /** Virtual time at the end of the run. */
  endNs: number;
  report: ScenarioReport | null;
  narrative: NarrativeLine[];
}

/** Run the target once with an observer; `attach` runs once the world is built. */
export function runObserved(target: InspectTarget, attach: (o: WorldObserver) => void = () => undefined, hooks: CaptureHooks = {}): ObservedRun {
  let observer: WorldObserver | null = null;
  let simRef: Simulation | null = null;
  const observe = (sim: Simulation, nodes: readonly RdmaNode[]) => {
    simRef = sim;
    observer = new WorldObserver(sim, nodes, hooks);
    attach(observer);
  };
  let report: ScenarioReport | null = null;
  if (target.kind === 'scenario') {
    report = runScenario(target.def, { ...target.more, seed: target.seed, profile: target.profile, driver: target.driver, params: target.params, observe });
  } else {
    const r = target.rep;
    runTarget(target.target, r.commands, {
      seed: r.simSeed, profile: r.profile, preempt: r.preempt, frames: r.frames,
      commandPhaseNs: r.commandPhaseNs, epilogueNs: r.epilogueNs, maxEvents: r.maxEvents, observe,
    });
  }
  if (!observer || !simRef) throw new Error(`${target.name}: the run never built its world`);
  const o = observer as WorldObserver;
  const endNs = (simRef as Simulation).now();
  o.finish();
  return { observer: o, endNs, report, narrative: report?.narrative ?? [] };
}

/**
 * Snapshots at each instant, in the order given; an instant the run never reached gets an
 * error naming how far the run went.
 */
export function captureInstants(target: InspectTarget, instants: readonly InstantSpec[]): { snapshots: (WorldSnapshot | null)[]; errors: string[]; run: ObservedRun } {
  const snapshots: (WorldSnapshot | null)[] = instants.map(() => null);
  const run = runObserved(target, (o) => {
    instants.forEach((at, i) => {
      const keep = (s: WorldSnapshot) => { snapshots[i] ??= s; };
      if (at.kind === 'time') o.atTime(at.ns, `time ${fmtNs(at.ns)}`, keep);
      else if (at.kind === 'record') o.atRecord(at.seq, keep);
      else o.atViolation(at.index, keep);
    });
  });
  const errors: string[] = [];
  instants.forEach((at, i) => {
    if (snapshots[i]) return;
    if (at.kind === 'time') {
      // The run ended exactly at that instant: the state at its end is the state then.
      if (at.ns <= run.endNs) snapshots[i] = run.observer.snapshot(`time ${fmtNs(at.ns)}`);
      else errors.push(`--at ${at.text}: past the end of the run of ${target.name}, which ends at ${fmtNs(run.endNs)} (${run.endNs} ns)`);
    } else if (at.kind === 'record') {
      errors.push(`--at ${at.text}: the run of ${target.name} emits only ${run.observer.records} trace records (record:0 to record:${run.observer.records - 1})`);
    } else {
      const n = run.observer.violations.length;
      errors.push(`--at ${at.text}: the run of ${target.name} reports ${n === 0 ? 'no violation' : `only ${n} violation${n === 1 ? '' : 's'}`}`);
    }
  });
  return { snapshots, errors, run };
}
