import type { Rng } from './prng.ts';
import type { Task } from './task.ts';

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
 * Further modes (issue 19: PCT, priority-based scheduling with d change points; systematic
 * exploration replaying a list of decisions) are new members of this union with a new
 * `SchedulePolicy` class in `schedulePolicy`; the engine calls the policy and nothing else.
 *
 * @example
 *   new Simulation({ seed: 7, schedule: { mode: 'jitter', probability: 0.1, maxDelayNs: 1_000 } });
 */
export type ScheduleOption =
  | { readonly mode: 'plain' }
  | { readonly mode: 'jitter'; readonly probability: number; readonly maxDelayNs: number };

export type ScheduleMode = ScheduleOption['mode'];

export const PLAIN_SCHEDULE: ScheduleOption = { mode: 'plain' };

/**
 * The jitter a scenario run gets for any seed but 1: a preemption point yields one time in
 * ten, for at most a microsecond (assumed: about the cost of a context switch or of a
 * contended cache line, enough to reorder tasks racing at the same instant without
 * moving a story's timeline).
 */
export const SCENARIO_JITTER: ScheduleOption = { mode: 'jitter', probability: 0.1, maxDelayNs: 1_000 };

/** What the engine lets a policy see and use. */
export interface ScheduleContext {
  /** The seeded stream the policy draws from (`sim.rng('schedule')`). */
  readonly rng: Rng;
}

/**
 * One mode's decisions. `atPreemptionPoint` returns null to let the task run on, or the
 * delay (ns, 0 allowed) after which it resumes; `onSpawn` lets a mode that ranks tasks
 * (PCT's priorities) see each task as it is created.
 */
export interface SchedulePolicy {
  readonly option: ScheduleOption;
  onSpawn(task: Task): void;
  atPreemptionPoint(task: Task, site: string): number | null;
}

class PlainPolicy implements SchedulePolicy {
  readonly option = PLAIN_SCHEDULE;
  onSpawn(): void {}
  atPreemptionPoint(): null {
    return null;
  }
}

class JitterPolicy implements SchedulePolicy {
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
  }
}
