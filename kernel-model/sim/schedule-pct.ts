import type { PctOption, ScheduleContext, SchedulePolicy } from './schedule.ts';
import type { Task } from './task.ts';

/**
 * PCT: probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi, Nagarakatte,
 * "A Randomized Scheduler with Probabilistic Guarantees of Finding Bugs", ASPLOS 2010).
 *
 * - Every task gets a distinct random priority when it is spawned: inserting each new task
 *   at a uniformly random rank of the tasks so far gives a uniformly random permutation of
 *   all of them, which is what the algorithm draws up front when it knows the task count.
 * - d - 1 change points are drawn uniformly from the step horizon [1, k]; at the i-th one
 *   the running task's priority drops to i, below every initial priority (i < d).
 * - The engine runs the highest-priority task ready at the current instant: at every
 *   preemption point the running task yields to a ready task that outranks it, and when a
 *   task sleeps the highest-ranked ready one is resumed.
 *
 * A step is a preemption point passed. The guarantee (1/(n·k^(d-1)) per run for a bug of
 * depth d) is relative to the engine's scheduling: tasks that become ready at different
 * virtual instants are ordered by time, not by priority (the model's costs order them),
 * so it covers the orderings of tasks ready at the same instant, which is where the
 * zero-time kernel paths race.
 */
export class PctPolicy implements SchedulePolicy {
  readonly picksTasks = true;
  /** Tasks by initial priority, highest first. */
  private readonly ranks: Task[] = [];
  /** Tasks demoted at a change point, to priority i (1 <= i < d). */
  private readonly lowered = new Map<Task, number>();
  /** Step number -> the priority the running task drops to there. */
  private readonly changeAt = new Map<number, number>();
  /** Preemption points passed so far. */
  steps = 0;
  /** Tasks spawned so far. */
  tasks = 0;
  /** Switches made (preemptions PCT chose). */
  switches = 0;
  /** Task ids demoted at change points, in order. */
  readonly demoted: number[] = [];

  constructor(readonly option: PctOption, private readonly ctx: ScheduleContext) {
    for (let i = 1; i < option.depth; i++) this.changeAt.set(ctx.rng.int(1, option.steps), i);
  }

  onSpawn(task: Task): void {
    this.tasks++;
    this.ranks.splice(this.ctx.rng.int(0, this.ranks.length), 0, task);
  }

  /** Whether `a` outranks `b`. */
  private above(a: Task, b: Task): boolean {
    const la = this.lowered.get(a);
    const lb = this.lowered.get(b);
    if (la !== undefined || lb !== undefined) {
      if (la === undefined) return true;
      if (lb === undefined) return false;
      return la > lb;
    }
    return this.ranks.indexOf(a) < this.ranks.indexOf(b);
  }

  private best(ready: readonly Task[]): Task {
    let top = ready[0] as Task;
    for (const t of ready) if (this.above(t, top)) top = t;
    return top;
  }

  atPreemptionPoint(task: Task, _site: string, ready: readonly Task[]): Task | null {
    this.steps++;
    const drop = this.changeAt.get(this.steps);
    if (drop !== undefined) {
      this.lowered.set(task, drop);
      this.demoted.push(task.id);
    }
    if (ready.length === 0) return null;
    const top = this.best(ready);
    if (!this.above(top, task)) return null;
    this.switches++;
    return top;
  }

  pick(ready: readonly Task[]): Task {
    return this.best(ready);
  }
}
