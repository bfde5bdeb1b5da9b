import type { Observable } from 'rxjs';
import { writeFileSync } from 'node:fs';
import {
  PLAIN_SCHEDULE, PROFILES, SCENARIO_JITTER, Simulation, type Co, type Kernel, type KernelProfile, type ProfileName,
  type ScheduleOption,
} from '../kernel-model/index.ts';
import { Fabric, NO_ODP_CAPS, type Nic, type NicCapabilities } from '../device/index.ts';
import { createRdmaNode, type IbDeviceOptions, type RdmaNode } from '../driver/index.ts';
import { attachSanitizer, type MrBinding, type Violation } from '../sanitizer/index.ts';
import { RunMetrics, type MetricsSummary } from './metrics.ts';
import { PerfettoTrace } from './perfetto.ts';
import { costsFrom, parseSets, type ParamDoc, type ParamValues } from './params.ts';

export interface NarrativeLine {
  t: number;
  text: string;
}

/** What a story gets: the engine, the chosen profile and driver, parameters, and a narrator. */
export interface ScenarioContext {
  sim: Simulation;
  seed: number;
  profile: KernelProfile;
  driver: string;
  params: ParamValues;
  /** A line of narrative at the current virtual time. */
  say(text: string): void;
  /** A scenario-specific figure for the report. */
  figure(name: string, value: number | string): void;
  /** A node (kernel + NIC + driver device) on the scenario's fabric. */
  node(name: string, opts: { device: IbDeviceOptions; caps?: Partial<NicCapabilities>; frames?: number }): RdmaNode;
  /** The run's scheduling option: `plain` for seed 1, the engine's seeded jitter for any other seed. */
  schedule: ScheduleOption;
  /**
   * One of the workload's random choices (an arrival time, an address, a size): `plain`
   * under seed 1, so the story reads as told, otherwise an integer drawn from the seed in
   * [lo, hi]. Each `name` is its own stream, so adding a choice does not shift the others.
   */
  vary(name: string, plain: number, lo: number, hi: number): number;
}

/**
 * The scheduling option a scenario seed selects: seed 1 keeps the plain schedule the
 * narratives are written against; every other seed turns on the seeded jitter.
 */
export function scheduleForSeed(seed: number): ScheduleOption {
  return seed === 1 ? PLAIN_SCHEDULE : SCENARIO_JITTER;
}

export interface ScenarioDefinition {
  name: string;
  summary: string;
  /** Which seed threads (shared/seeds) it reproduces. */
  seeds: readonly string[];
  defaultProfile: ProfileName;
  drivers: readonly string[];
  defaultDriver: string;
  params?: readonly ParamDoc[];
  /** Virtual-time bound of a run (ns). */
  untilNs: number;
  /** Violation ids this (profile, driver) is expected to show; anything else is unexpected. */
  expect(profile: ProfileName, driver: string): readonly string[];
  /**
   * Violation ids that may appear under some interleavings (seeds other than 1) without
   * being a failure, because whether they do depends on the schedule; each needs a reason
   * in the story's source.
   */
  mayShow?(profile: ProfileName, driver: string): readonly string[];
  /** Build the nodes and return the story's main coroutine. */
  setup(ctx: ScenarioContext): () => Co<void>;
}

export interface ScenarioReport {
  scenario: string;
  profile: ProfileName;
  driver: string;
  seed: number;
  params: ParamValues;
  outcome: {
    ok: boolean;
    run: string;
    expected: string[];
    seen: Record<string, number>;
    unexpected: string[];
    missing: string[];
    failure?: string;
  };
  narrative: NarrativeLine[];
  figures: MetricsSummary;
  extra: Record<string, number | string>;
  violations: Violation[];
}

/**
 * Run one scenario: build its nodes on one simulation and fabric, attach the metrics, the
 * sanitizer and (optionally) the Perfetto trace, run the story to its bound, and compare
 * the violations seen with the ones its expectation names for this profile and driver.
 */
export function runScenario(
  def: ScenarioDefinition,
  opts: {
    seed: number; profile: ProfileName; driver: string; params: ParamValues; traceFile?: string;
    /** Called once the nodes are built, before the story runs (lab inspect and --html attach here). */
    observe?: (sim: Simulation, nodes: readonly RdmaNode[]) => void;
  },
): ScenarioReport {
  // Every documented parameter has a value: the defaults, then what the caller set.
  const defaults = parseSets([], def.params ?? []);
  const params: ParamValues = { ...('values' in defaults ? defaults.values : {}), ...opts.params };
  opts = { ...opts, params };
  const schedule = scheduleForSeed(opts.seed);
  const sim = new Simulation({ seed: opts.seed, schedule });
  // Attached before anything is spawned, so every task is named in the trace.
  const trace = opts.traceFile ? new PerfettoTrace(sim) : null;
  const fabric = new Fabric(sim);
  const profile = PROFILES[opts.profile];
  const nodes: RdmaNode[] = [];
  const narrative: NarrativeLine[] = [];
  const extra: Record<string, number | string> = {};
  const ctx: ScenarioContext = {
    sim, seed: opts.seed, profile, driver: opts.driver, params: opts.params,
    say: (text) => narrative.push({ t: sim.now(), text }),
    figure: (name, value) => {
      extra[name] = value;
    },
    node: (name, o) => {
      const n = createRdmaNode(sim, fabric, {
        name,
        kernel: { profile, frames: o.frames ?? Number(opts.params['memory.frames']) },
        nic: { caps: o.caps ?? { odp: NO_ODP_CAPS }, costs: costsFrom(opts.params) },
        device: o.device,
      });
      nodes.push(n);
      trace?.addNode(n.kernel, n.nic);
      return n;
    },
    schedule,
    vary: (name, plain, lo, hi) => (schedule.mode === 'plain' ? plain : sim.rng(`workload:${name}`).int(lo, hi)),
  };
  const main = def.setup(ctx);
  const kernels: Kernel[] = nodes.map((n) => n.kernel);
  const nics: Nic[] = nodes.map((n) => n.nic);
  const bindings$ = nodes.map((n) => n.device.binding$ as Observable<MrBinding>);
  const metrics = new RunMetrics(sim, kernels, nics);
  const sanitizer = attachSanitizer({ sim, kernels, nics, bindings$ });
  opts.observe?.(sim, nodes);
  const task = sim.spawn(`${def.name}/main`, main, { kind: 'script' });
  const out = sim.run({ untilNs: def.untilNs, task });
  sanitizer.finish();
  if (trace && opts.traceFile) {
    trace.addViolations(sanitizer.violations);
    writeFileSync(opts.traceFile, trace.toJson());
  }
  const seen: Record<string, number> = {};
  for (const v of sanitizer.violations) seen[v.id] = (seen[v.id] ?? 0) + 1;
  const expected = [...def.expect(opts.profile, opts.driver)].sort();
  const allowed = def.mayShow?.(opts.profile, opts.driver) ?? [];
  const unexpected = Object.keys(seen).filter((id) => !expected.includes(id) && !allowed.includes(id)).sort();
  const missing = expected.filter((id) => !seen[id]);
  const failed = out.reason === 'failed';
  const report: ScenarioReport = {
    scenario: def.name, profile: opts.profile, driver: opts.driver, seed: opts.seed, params: opts.params,
    outcome: { ok: !failed && unexpected.length === 0 && missing.length === 0, run: out.reason, expected, seen, unexpected, missing },
    narrative, figures: metrics.summary(), extra, violations: sanitizer.violations,
  };
  if (out.failure) report.outcome.failure = out.failure;
  metrics.dispose();
  return report;
}
