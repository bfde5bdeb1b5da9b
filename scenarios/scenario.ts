import type { Observable } from 'rxjs';
import { writeFileSync } from 'node:fs';
import {
  OUTCOME_LABELS, PLAIN_SCHEDULE, PROFILES, SCENARIO_JITTER, Simulation, applyVariants, type AppliedVariant, type Co, type Kernel, type KernelProfile,
  type KernelVariant, type OutcomeLabel, type ProfileName, type ScheduleOption, type VariantExpectation,
} from '../kernel-model/index.ts';
import { Fabric, NO_ODP_CAPS, type Nic, type NicCapabilities } from '../device/index.ts';
import { createRdmaNode, type IbDeviceOptions, type RdmaNode, type StrategyDefinition, type UmemStrategy } from '../driver/index.ts';
import { attachSanitizer, type MrBinding, type Violation } from '../sanitizer/index.ts';
import { RunMetrics, type MetricsSummary } from './metrics.ts';
import { PerfettoTrace, type DmaDetail } from './perfetto.ts';
import { batchingFromParams, costsFrom, cpuCostsFrom, moduleParams, parseSets, type ParamDoc, type ParamValues } from './params.ts';
import { displayPath, type LoadedStrategy } from './user-module.ts';
import { ProposalCostObserver, type ProposalCosts } from './compare/costs.ts';
import { outcomeLabels } from './compare/outcome.ts';

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
  /** The run's scheduling option: `plain` for seed 1, the engine's seeded jitter for any other seed (unless the run was given one). */
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
  /**
   * Whether the story is meant to end at its time bound (a workload that runs until
   * stopped). Otherwise a run cut by the time or event limit is NOT OK: it did not finish.
   */
  endsAtLimit?: boolean;
  /** Violation ids this (profile, driver) is expected to show; anything else is unexpected. */
  expect(profile: ProfileName, driver: string): readonly string[];
  /**
   * What the story expects under a kernel variant (kernel-model/variant.ts): violations,
   * outcome and the thread's claim the row tests; `variant` null asks for the plain kernel's
   * row (`none`), which defaults to `expect`. null: no expectation for that variant (its
   * `lab compare` row cannot match). A row that comes out otherwise than its thread
   * predicted is explained in the story's text.
   */
  expectVariant?(profile: ProfileName, driver: string, variant: AppliedVariant | null): VariantExpectation | null;

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
  /** The user's strategy module the run used in place of the reference `driver` stands for. */
  driverModule?: { name: string; stands: string; path: string; export: string; sha256: string };
  /** The kernel variants under study the run was layered with (proposals, never mainline). */
  variant?: {
    name: string;
    proposals: { name: string; status: 'proposal'; seedFile: string; speaker: string; date: string; summary: string; module?: string }[];
    /** The story's expectation for this variant, if it declares one. */
    expectation: VariantExpectation | null;
  };
  /** The outcome in `lab compare`'s words, worst first (with --variant, or when costs were asked for). */
  labels?: OutcomeLabel[];
  /** What the proposals cost, measured from the trace (with --variant, or when asked for). */
  costs?: ProposalCosts;
}

/**
 * A strategy that wraps another (to charge a cost, say): a user strategy replaces the
 * innermost one and the wrapper is rebuilt around it, so the story's own additions stay.
 */
export interface WrappingStrategy extends UmemStrategy {
  readonly inner: UmemStrategy;
  rewrap(inner: UmemStrategy): UmemStrategy;
}

function isWrapping(s: UmemStrategy): s is WrappingStrategy {
  return typeof (s as Partial<WrappingStrategy>).rewrap === 'function' && (s as Partial<WrappingStrategy>).inner !== undefined;
}

/** `s` with its innermost strategy replaced by `make()` when that one is named `role`; and whether it was. */
function substitute(s: UmemStrategy, role: string, make: () => UmemStrategy): { s: UmemStrategy; swapped: boolean } {
  if (isWrapping(s)) {
    const r = substitute(s.inner, role, make);
    return r.swapped ? { s: s.rewrap(r.s), swapped: true } : { s, swapped: false };
  }
  return s.name === role ? { s: make(), swapped: true } : { s, swapped: false };
}

/** Record which parameters a run read (to warn about a `--set` nothing used). */
function tracked(values: ParamValues, used: Set<string>): ParamValues {
  return new Proxy(values, {
    get(target, key, receiver) {
      if (typeof key === 'string') used.add(key);
      return Reflect.get(target, key, receiver);
    },
  });
}

/** What a run is given besides the scenario. */
export interface RunScenarioOptions {
  seed: number;
  profile: ProfileName;
  /** A driver name of the scenario's; with `strategy`, the reference that strategy stands in for. */
  driver: string;
  params: ParamValues;
  traceFile?: string;
  /** DMA accesses in the trace: per work request (default) or every one. */
  traceDma?: DmaDetail;
  /** A user strategy (defineStrategy) used wherever the story builds the reference `driver`. */
  strategy?: LoadedStrategy;
  /** Filled with the parameter keys the run read. */
  usedParams?: Set<string>;
  /** Called once the nodes are built, before the story runs (lab inspect and --html attach here). */
  observe?: (sim: Simulation, nodes: readonly RdmaNode[]) => void;
  /**
   * The scheduling option (`lab run --schedule`, `lab explore`), instead of the one the seed
   * selects. Addresses and arrival times still follow the seed (seed 1: as the story is told).
   */
  schedule?: ScheduleOption;
  /** Kernel variants layered on the profile (applyVariants must accept them: check first with `variantsError`). */
  variants?: readonly KernelVariant[];
  /** Measure the proposals' costs and label the outcome even without a variant (lab compare's `none` row). */
  costs?: boolean;
  /** Module paths of user variants, by name, for the report. */
  variantModules?: Readonly<Record<string, string>>;
}

/** Why these variants cannot run on this profile (null: they can). */
export function variantsError(profile: ProfileName, variants: readonly KernelVariant[]): string | null {
  const p = applyVariants(PROFILES[profile], variants);
  return 'error' in p ? p.error : null;
}

/** The expectation of a story for a variant: the story's own, else a user variant's, else null. */
export function variantExpectation(def: ScenarioDefinition, profile: ProfileName, driver: string, applied: AppliedVariant): VariantExpectation | null {
  const own = def.expectVariant?.(profile, driver, applied) ?? null;
  if (own) return own;
  if (applied.variants.length === 1) return applied.variants[0]!.expect?.(def.name, profile, driver) ?? null;
  return null;
}

/**
 * Run one scenario: build its nodes on one simulation and fabric, attach the metrics, the
 * sanitizer and (optionally) the Perfetto trace, run the story to its bound, and compare
 * the violations seen with the ones its expectation names for this profile and driver.
 * A story cut by its time or event bound is NOT OK unless it declares that end. A user
 * strategy that throws (building or running) fails the run; it never escapes.
 */
export function runScenario(def: ScenarioDefinition, opts: RunScenarioOptions): ScenarioReport {
  // Every documented parameter has a value: the defaults, then what the caller set.
  const defaults = parseSets([], def.params ?? []);
  const given: ParamValues = { ...('values' in defaults ? defaults.values : {}), ...opts.params };
  const used = opts.usedParams ?? new Set<string>();
  const params = tracked(given, used);
  const schedule = opts.schedule ?? scheduleForSeed(opts.seed);
  // The workload's own randomness (addresses, arrival times) follows the seed alone.
  const told = opts.seed === 1;
  const sim = new Simulation({ seed: opts.seed, schedule });
  // Attached before anything is spawned, so every task is named in the trace.
  const trace = opts.traceFile ? new PerfettoTrace(sim, { dma: opts.traceDma ?? 'per-wr' }) : null;
  const fabric = new Fabric(sim);
  const layered = applyVariants(PROFILES[opts.profile], opts.variants ?? []);
  if ('error' in layered) throw new Error(layered.error);
  const profile = layered;
  const applied = profile.variant;
  const nodes: RdmaNode[] = [];
  const narrative: NarrativeLine[] = [];
  const extra: Record<string, number | string> = {};
  const user = opts.strategy;
  let swaps = 0;
  const userStrategy = (): UmemStrategy => {
    const p = moduleParams('strategy', user!.file, user!.def.params, params);
    if ('error' in p) throw new Error(p.error);
    const b = batchingFromParams(params, sim.scheduler);
    return (user!.def as StrategyDefinition<unknown>).strategy(p.params, { sim, batching: b.policy, batchingName: b.name });
  };
  const withUser = (device: IbDeviceOptions): IbDeviceOptions => {
    if (!user) return device;
    const role = user.def.like;
    if (role === 'odp') {
      if (!device.odp) return device;
      const r = substitute(device.odp, 'odp', userStrategy);
      if (r.swapped) swaps++;
      return { ...device, odp: r.s };
    }
    const r = substitute(device.nonOdp, role, userStrategy);
    if (r.swapped) swaps++;
    return { ...device, nonOdp: r.s };
  };
  const ctx: ScenarioContext = {
    sim, seed: opts.seed, profile, driver: opts.driver, params,
    say: (text) => narrative.push({ t: sim.now(), text }),
    figure: (name, value) => {
      extra[name] = value;
    },
    node: (name, o) => {
      const n = createRdmaNode(sim, fabric, {
        name,
        // Any seed but 1 randomizes addresses as Linux does (randomize_va_space).
        kernel: { profile, frames: o.frames ?? Number(params['memory.frames']), randomizeVaSpace: !told, cpuCosts: cpuCostsFrom(params) },
        nic: { caps: o.caps ?? { odp: NO_ODP_CAPS }, costs: costsFrom(params) },
        device: withUser(o.device),
      });
      nodes.push(n);
      trace?.addNode(n.kernel, n.nic);
      return n;
    },
    schedule,
    vary: (name, plain, lo, hi) => (told ? plain : sim.rng(`workload:${name}`).int(lo, hi)),
  };
  let main: (() => Co<void>) | null = null;
  let setupFailure: string | undefined;
  try {
    main = def.setup(ctx);
    if (user && swaps === 0) setupFailure = `the story built no '${user.def.like}' strategy for ${user.def.name} to stand in for`;
  } catch (err) {
    setupFailure = `set-up threw: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`;
  }
  const kernels: Kernel[] = nodes.map((n) => n.kernel);
  const nics: Nic[] = nodes.map((n) => n.nic);
  const bindings$ = nodes.map((n) => n.device.binding$ as Observable<MrBinding>);
  const metrics = new RunMetrics(sim, kernels, nics);
  const rcache$ = nodes.map((n) => n.device.rcache$);
  const sanitizer = attachSanitizer({ sim, kernels, nics, bindings$, rcache$ });
  const costObserver = applied || opts.costs ? new ProposalCostObserver(sim, () => kernels) : null;
  let out: { reason: string; failure?: string };
  if (main && setupFailure === undefined) {
    opts.observe?.(sim, nodes);
    const task = sim.spawn(`${def.name}/main`, main, { kind: 'script' });
    out = sim.run({ untilNs: def.untilNs, task });
  } else {
    out = { reason: 'failed', failure: setupFailure ?? 'set-up failed' };
  }
  sanitizer.finish();
  if (trace && opts.traceFile) {
    trace.addViolations(sanitizer.violations);
    writeFileSync(opts.traceFile, trace.toJson());
  }
  const seen: Record<string, number> = {};
  for (const v of sanitizer.violations) seen[v.id] = (seen[v.id] ?? 0) + 1;
  const expectation = applied ? variantExpectation(def, opts.profile, opts.driver, applied) : null;
  const expected = [...(expectation ? expectation.violations : def.expect(opts.profile, opts.driver))].sort();
  const unexpected = Object.keys(seen).filter((id) => !expected.includes(id)).sort();
  const missing = expected.filter((id) => !seen[id]);
  const failed = out.reason === 'failed';
  // A story a variant is expected to leave stuck may end at its bound: that is its outcome.
  const cut = (out.reason === 'time-limit' || out.reason === 'event-limit') && def.endsAtLimit !== true;
  const cutExpected = cut && expectation !== null && expectation.outcome.includes('stuck');
  const report: ScenarioReport = {
    scenario: def.name, profile: opts.profile, driver: user ? user.def.name : opts.driver, seed: opts.seed, params: given,
    outcome: { ok: !failed && (!cut || cutExpected) && unexpected.length === 0 && missing.length === 0, run: out.reason, expected, seen, unexpected, missing },
    narrative, figures: metrics.summary(), extra, violations: sanitizer.violations,
  };
  if (out.failure) report.outcome.failure = out.failure;
  else if (cut && !cutExpected) report.outcome.failure = `the story did not finish: stopped by its ${out.reason === 'time-limit' ? `time limit (${def.untilNs} ns)` : 'event limit'}`;
  if (user) report.driverModule = { name: user.def.name, stands: opts.driver, path: displayPath(user.file), export: user.exportName, sha256: user.sha256 };
  if (costObserver) {
    const costs = costObserver.finish();
    const labels = outcomeLabels(seen, costs, cut);
    report.costs = costs;
    report.labels = labels;
    // A variant's expected outcome is part of being ok (a stuck wait the story predicted is fine; one it did not is not).
    const want = OUTCOME_LABELS.filter((l) => expectation?.outcome.includes(l));
    if (expectation && labels.join('+') !== want.join('+')) {
      report.outcome.ok = false;
      report.outcome.failure ??= `outcome ${labels.join('+')}, the story expects ${expectation.outcome.join('+')} under ${applied!.name}`;
    }
  }
  if (applied) {
    report.variant = {
      name: applied.name,
      proposals: applied.variants.map((v) => ({
        name: v.name, status: v.status, seedFile: v.seedFile, speaker: v.speaker, date: v.date, summary: v.summary,
        ...(opts.variantModules?.[v.name] ? { module: opts.variantModules[v.name] } : {}),
      })),
      expectation,
    };
  }
  metrics.dispose();
  return report;
}
