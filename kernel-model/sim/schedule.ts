import type { Observable } from 'rxjs';
import type { Rng } from './prng.ts';
import type { Task } from './task.ts';
import type { TraceRecord } from './trace.ts';
import { PctPolicy } from './schedule-pct.ts';
import { ExplorePolicy } from './schedule-explore.ts';

/**
 * The engine's one scheduling option: what happens at a preemption point (a lock
 * operation, a sequence read, a page-table access). Every consumer picks a mode of this
 * one option, never a knob of its own:
 *
 * - `plain`: no preemption. Tasks run until they sleep, in spawn and wake order; the
 *   stories' narratives are told on this schedule (DESIGN: "a run with preemption off is
 *   the plain schedule"). Scenarios use it for seed 1.
 * - `jitter`: at each point the seed decides whether the task steps aside, and for how
 *   long (0 ns: behind the others ready at the same instant; more: a short delay that
 *   models being scheduled out or racing another CPU). Scenarios use it for every seed but
 *   1; the fuzzer uses it with its own probability.
 *
 * - `pct`: probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi, Nagarakatte,
 *   ASPLOS 2010; schedule-pct.ts): every task gets a random priority, the highest-priority
 *   task ready at the current instant runs, and at `depth - 1` random steps out of `steps`
 *   the running task drops below all others. A bug of depth d is hit by one run with
 *   probability at least 1/(n·k^(d-1)) (n tasks, k steps).
 * - `explore`: one schedule of a systematic exploration (schedule-explore.ts; `lab
 *   explore`): at the listed decision points the listed task runs, elsewhere the engine's
 *   default order. A reproducer's `schedule` field is this mode, so `lab replay` replays it.
 *
 * `pct` and `explore` pick which ready task runs (`picksTasks`): the engine then routes
 * every task resume through the policy (Simulation.dispatch). `plain` and `jitter` do not,
 * and their runs are byte-identical to what they were before the other modes existed.
 *
 * @example
 *   new Simulation({ seed: 7, schedule: { mode: 'jitter', probability: 0.1, maxDelayNs: 1_000 } });
 */
export type ScheduleOption =
  | { readonly mode: 'plain' }
  | { readonly mode: 'jitter'; readonly probability: number; readonly maxDelayNs: number }
  | PctOption
  | ExploreOption;

/**
 * PCT with `depth` (d >= 1) and a step horizon `steps` (k): the d - 1 priority change
 * points are drawn uniformly from the first k steps (a step is a preemption point passed).
 */
export interface PctOption {
  readonly mode: 'pct';
  readonly depth: number;
  readonly steps: number;
}

/** A decision of an explored schedule: at decision point `point` (0-based), task `task` runs. */
export type ScheduleDecision = readonly [point: number, task: number];

/**
 * One schedule of a systematic exploration: the decisions that differ from the engine's
 * default (the running task continues at a preemption point; the longest-waiting ready
 * task runs when the running one sleeps). `sleep` and `reduce` are the explorer's own
 * (a replay needs neither): the sleep set to install at one decision point, and whether
 * to record each step's footprint for the reduction.
 */
export interface ExploreOption {
  readonly mode: 'explore';
  readonly decisions: readonly ScheduleDecision[];
  readonly sleep?: { readonly point: number; readonly entries: readonly SleepEntry[] };
  readonly reduce?: boolean;
}

/** A task whose next step the explorer need not run here (sleep sets), with that step's footprint. */
export interface SleepEntry {
  readonly task: number;
  readonly footprint: readonly string[];
}

export type ScheduleMode = ScheduleOption['mode'];

export const PLAIN_SCHEDULE: ScheduleOption = { mode: 'plain' };

/**
 * The jitter a scenario run gets for any seed but 1: a preemption point yields one time in
 * ten, for at most a microsecond (assumed: about the cost of a context switch or of a
 * contended cache line, enough to reorder tasks racing at the same instant without
 * moving a story's timeline).
 */
export const SCENARIO_JITTER: ScheduleOption = { mode: 'jitter', probability: 0.1, maxDelayNs: 1_000 };
const SCENARIO_JITTER_P = 0.1;
const SCENARIO_JITTER_MAX = 1_000;

/** What the engine lets a policy see and use. */
export interface ScheduleContext {
  /** The seeded stream the policy draws from (`sim.rng('preempt')`). */
  readonly rng: Rng;
  /** The run's trace records (the explorer's footprints come from them). */
  readonly trace$: Observable<TraceRecord>;
  /** Ask the run to stop (an explored schedule that the reduction proved redundant). */
  stop(): void;
}

/**
 * What a policy answers at a preemption point: null (run on), a delay in ns (step aside
 * for that long, 0 allowed), or a task ready now to switch to (picking policies only).
 */
export type PreemptDecision = number | null | Task;

/**
 * One mode's decisions. `atPreemptionPoint` returns null to let the task run on, or the
 * delay (ns, 0 allowed) after which it resumes; `onSpawn` lets a mode that ranks tasks
 * (PCT's priorities) see each task as it is created.
 */
export interface SchedulePolicy {
  readonly option: ScheduleOption;
  /** Whether the policy picks which ready task runs (the engine then calls `pick` and the step hooks). */
  readonly picksTasks: boolean;
  onSpawn(task: Task): void;
  /** `ready`: the other tasks ready at this instant, longest-waiting first (empty unless `picksTasks`). */
  atPreemptionPoint(task: Task, site: string, ready: readonly Task[]): PreemptDecision;
  /** `picksTasks` only: which of the tasks ready now (two or more, longest-waiting first) runs. */
  pick?(ready: readonly Task[]): Task;
  /** `picksTasks` only: a task begins a step (it is resumed, or runs on at a preemption point). */
  onStepStart?(task: Task): void;
  /**
   * `picksTasks` only: the step ends (at preemption point `site`, or a park or exit);
   * `timers`: events it armed that are not task wake-ups.
   */
  onStepEnd?(task: Task, timers: number, site?: string): void;
  /** `picksTasks` only: the running task (or null) made `woken` ready (a wake-up or a spawn). */
  onWake?(waker: Task | null, woken: Task): void;
  /** `picksTasks` only: an event that resumes no task ran (an rxjs timer, a device callback). */
  onExternalEvent?(): void;
}

class PlainPolicy implements SchedulePolicy {
  readonly option = PLAIN_SCHEDULE;
  readonly picksTasks = false;
  onSpawn(): void {}
  atPreemptionPoint(): null {
    return null;
  }
}

class JitterPolicy implements SchedulePolicy {
  readonly picksTasks = false;
  constructor(readonly option: Extract<ScheduleOption, { mode: 'jitter' }>, private readonly ctx: ScheduleContext) {}
  onSpawn(): void {}
  atPreemptionPoint(): number | null {
    const { rng } = this.ctx;
    if (!rng.chance(this.option.probability)) return null;
    return this.option.maxDelayNs > 0 ? rng.int(0, this.option.maxDelayNs) : 0;
  }
}

/** The policy object for an option (the engine's only use of the option). */
export function schedulePolicy(option: ScheduleOption, ctx: ScheduleContext): SchedulePolicy {
  switch (option.mode) {
    case 'plain':
      return new PlainPolicy();
    case 'jitter':
      return new JitterPolicy(option, ctx);
    case 'pct':
      return new PctPolicy(option, ctx);
    case 'explore':
      return new ExplorePolicy(option, ctx);
  }
}

/**
 * The older spelling `preempt: { probability, maxDelayNs } | false` (fuzz reproducers of
 * format version 1 carry it) as the scheduling option it always meant.
 */
export function scheduleFromPreempt(preempt: { probability: number; maxDelayNs: number } | false | undefined): ScheduleOption {
  if (!preempt) return PLAIN_SCHEDULE;
  return { mode: 'jitter', probability: preempt.probability, maxDelayNs: preempt.maxDelayNs };
}

/** A one-line description for reports and replay lines. */
export function describeSchedule(option: ScheduleOption): string {
  switch (option.mode) {
    case 'plain':
      return 'plain';
    case 'jitter':
      return `jitter p=${option.probability} max=${option.maxDelayNs}ns`;
    case 'pct':
      return `pct d=${option.depth} k=${option.steps}`;
    case 'explore':
      return `explore ${option.decisions.length === 0 ? 'default order' : option.decisions.map(([p, t]) => `${p}:${t}`).join(',')}`;
  }
}

/**
 * PCT's guarantee (Burckhardt et al., ASPLOS 2010, Theorem 1): one run finds a bug of
 * depth d with probability at least 1/(n·k^(d-1)), n the tasks and k the steps.
 */
export function pctBound(tasks: number, steps: number, depth: number): number {
  return 1 / (Math.max(1, tasks) * Math.max(1, steps) ** Math.max(0, depth - 1));
}

/**
 * Parse the command line's spelling of a scheduling option: `plain`, `jitter`,
 * `jitter:p=0.1,max=1000`, `pct`, `pct:d=3`, `pct:d=3,k=2000`. An error names what is accepted.
 */
export function parseScheduleSpec(text: string, defaults: { pctSteps?: number } = {}): ScheduleOption | { error: string } {
  const accepted = "accepted: plain, jitter[:p=P,max=NS], pct[:d=D,k=K]";
  const [mode = '', rest] = text.split(':', 2) as [string, string | undefined];
  const kv = new Map<string, string>();
  if (rest !== undefined) {
    for (const part of rest.split(',')) {
      const m = /^([a-z]+)=(.+)$/.exec(part.trim());
      if (!m) return { error: `schedule '${text}': '${part}' is not key=value; ${accepted}` };
      kv.set(m[1]!, m[2]!);
    }
  }
  const int = (key: string, dflt: number, lo: number, hi: number): number | { error: string } => {
    const v = kv.get(key);
    if (v === undefined) return dflt;
    if (!/^\d+$/.test(v) || Number(v) < lo || Number(v) > hi) return { error: `schedule '${text}': ${key} must be an integer from ${lo} to ${hi}, got '${v}'` };
    return Number(v);
  };
  const only = (keys: string[]): { error: string } | null => {
    const bad = [...kv.keys()].find((k) => !keys.includes(k));
    return bad ? { error: `schedule '${text}': ${mode} takes no '${bad}'; ${accepted}` } : null;
  };
  switch (mode) {
    case 'plain':
      return only([]) ?? PLAIN_SCHEDULE;
    case 'jitter': {
      const bad = only(['p', 'max']);
      if (bad) return bad;
      const p = kv.has('p') ? Number(kv.get('p')) : SCENARIO_JITTER_P;
      if (!Number.isFinite(p) || p < 0 || p > 1) return { error: `schedule '${text}': p must be a probability in [0, 1], got '${kv.get('p')}'` };
      const max = int('max', SCENARIO_JITTER_MAX, 0, 1_000_000_000);
      if (typeof max !== 'number') return max;
      return { mode: 'jitter', probability: p, maxDelayNs: max };
    }
    case 'pct': {
      const bad = only(['d', 'k']);
      if (bad) return bad;
      const d = int('d', 3, 1, 10);
      if (typeof d !== 'number') return d;
      const k = int('k', defaults.pctSteps ?? PCT_DEFAULT_STEPS, 1, 100_000_000);
      if (typeof k !== 'number') return k;
      return { mode: 'pct', depth: d, steps: k };
    }
    default:
      return { error: `unknown schedule '${text}'; ${accepted}` };
  }
}

/**
 * PCT's default step horizon: change points are drawn from the first 2,000 preemption
 * points. Measured: the stories pass a few hundred; a fuzz run of 30 commands passes a few
 * thousand, so its guarantee covers a bug whose steps fall in the first 2,000 (the output
 * says so when a run went past; `k=` widens it, at the cost of a weaker bound).
 */
export const PCT_DEFAULT_STEPS = 2_000;
