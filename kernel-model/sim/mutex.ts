import type { Simulation } from './simulation.ts';
import type { Blocker, Co, Task } from './task.ts';

/**
 * A sleeping mutex owned by a task. `lock` might sleep even when the mutex is free, so
 * it is recorded in atomic context whether or not it had to wait (the kernel's
 * might_sleep() in mutex_lock). `trylock` never sleeps.
 *
 * `cls` is the lockdep class (for example every MR's umem mutex shares one class).
 */
export class Mutex implements Blocker {
  owner: Task | null = null;
  /** Made on the first wait: most mutexes (one per implicit ODP child) never see one. */
  private waiters: { task: Task; wake: () => void }[] | null = null;
  /** `mutex_lock(name)`, built once: it names every lock's might-sleep and preemption point. */
  private readonly site: string;

  /** A subclass that builds its name when asked (`get name`) passes an empty `label`. */
  constructor(private readonly sim: Simulation, private readonly label: string, readonly cls: string = label) {
    this.site = label ? `mutex_lock(${label})` : '';
  }

  get name(): string {
    return this.label;
  }

  /** The site of every lock's might-sleep and preemption point (built per lock for a subclass's name). */
  private get lockSite(): string {
    return this.site || `mutex_lock(${this.name})`;
  }

  holders(): readonly Task[] {
    return this.owner ? [this.owner] : [];
  }

  get locked(): boolean {
    return this.owner !== null;
  }

  heldByCurrent(): boolean {
    return this.owner !== null && this.owner === this.sim.current;
  }

  *lock(): Co {
    const task = this.need('mutex_lock');
    this.sim.mightSleep(this.lockSite);
    yield* this.sim.preemptPoint(this.lockSite);
    // Re-taking a mutex one holds is a self-deadlock: checkBlock finds the one-task cycle.
    if (this.owner !== null) {
      if (this.sim.tracing) this.sim.emit({ type: 'lock-contend', lock: this.name, owner: this.owner.id });
      task.waitingOn = this;
      this.sim.lockdep.checkBlock(task, this);
      yield* this.sim.park<void>((wake) => (this.waiters ??= []).push({ task, wake }));
      task.waitingOn = null;
      // Ownership was handed to us by unlock().
    } else {
      this.owner = task;
    }
    this.sim.lockdep.acquire(task, this.cls);
    if (this.sim.tracing) this.sim.emit({ type: 'lock-acquire', lock: this.name, mode: 'excl' });
  }

  trylock(): boolean {
    const task = this.need('mutex_trylock');
    if (this.owner !== null) return false;
    this.owner = task;
    this.sim.lockdep.acquire(task, this.cls);
    if (this.sim.tracing) this.sim.emit({ type: 'lock-acquire', lock: this.name, mode: 'excl' });
    return true;
  }

  unlock(): void {
    const task = this.need('mutex_unlock');
    if (this.owner !== task) {
      throw new Error(`mutex_unlock(${this.name}) by task ${task.id} that does not own it`);
    }
    this.sim.lockdep.release(task, this.cls);
    if (this.sim.tracing) this.sim.emit({ type: 'lock-release', lock: this.name });
    const next = this.waiters?.shift();
    this.owner = next ? next.task : null;
    next?.wake();
  }

  private need(what: string): Task {
    const t = this.sim.current;
    if (!t) throw new Error(`${what}(${this.name}) outside a task`);
    return t;
  }
}
