import type { Simulation } from './simulation.ts';
import type { Blocker, Co, Task } from './task.ts';

type Waiter = { task: Task; write: boolean; wake: () => void };

/**
 * A reader-writer semaphore (`mmap_lock`, `i_mmap_rwsem`). FIFO hand-off: a reader
 * queues behind a waiting writer, as Linux's rwsem does to avoid writer starvation.
 */
export class RwSemaphore implements Blocker {
  writer: Task | null = null;
  private readonly readers = new Map<Task, number>();
  private readonly waiters: Waiter[] = [];

  /**
   * @param handoffNs the CPU time a waiter spends between being handed the lock and
   *   running (its wake-up); read at each hand-off, so a cost model can change it. None: 0.
   */
  constructor(private readonly sim: Simulation, readonly name: string, readonly cls: string = name, private readonly handoffNs?: () => number) {}

  holders(): readonly Task[] {
    return this.writer ? [this.writer] : [...this.readers.keys()];
  }

  /** Held by the current task, for reading (or writing, which implies it). */
  heldByCurrent(mode: 'read' | 'write' | 'any' = 'any'): boolean {
    const t = this.sim.current;
    if (!t) return false;
    if (this.writer === t) return true;
    return mode !== 'write' && this.readers.has(t);
  }

  *downRead(): Co {
    yield* this.down(false);
  }

  *downWrite(): Co {
    yield* this.down(true);
  }

  downReadTrylock(): boolean {
    const t = this.need('down_read_trylock');
    if (this.writer || this.waiters.length > 0) return false;
    this.grant(t, false);
    return true;
  }

  downWriteTrylock(): boolean {
    const t = this.need('down_write_trylock');
    if (this.writer || this.readers.size > 0) return false;
    this.grant(t, true);
    return true;
  }

  upRead(): void {
    const t = this.need('up_read');
    const n = this.readers.get(t);
    if (!n) throw new Error(`up_read(${this.name}) by task ${t.id} that holds no read lock`);
    if (n === 1) this.readers.delete(t);
    else this.readers.set(t, n - 1);
    this.released(t);
  }

  upWrite(): void {
    const t = this.need('up_write');
    if (this.writer !== t) throw new Error(`up_write(${this.name}) by task ${t.id} that is not the writer`);
    this.writer = null;
    this.released(t);
  }

  private *down(write: boolean): Co {
    const task = this.need(write ? 'down_write' : 'down_read');
    this.sim.mightSleep(`${write ? 'down_write' : 'down_read'}(${this.name})`);
    yield* this.sim.preemptPoint(`${write ? 'down_write' : 'down_read'}(${this.name})`);
    const free = write
      ? this.writer === null && this.readers.size === 0 && this.waiters.length === 0
      : this.writer === null && this.waiters.length === 0;
    if (free) {
      this.grant(task, write);
      return;
    }
    if (this.sim.tracing) this.sim.emit({ type: 'lock-contend', lock: this.name, owner: this.writer?.id ?? null });
    task.waitingOn = this;
    this.sim.lockdep.checkBlock(task, this);
    yield* this.sim.park<void>((wake) => this.waiters.push({ task, write, wake }));
    task.waitingOn = null;
    this.sim.lockdep.acquire(task, this.cls);
    if (this.sim.tracing) this.sim.emit({ type: 'lock-acquire', lock: this.name, mode: write ? 'excl' : 'shared' });
    // The lock was granted at the release (released()); the waiter runs only after its
    // wake-up, holding the lock meanwhile.
    const handoff = this.handoffNs?.() ?? 0;
    if (handoff > 0) yield* this.sim.cpu(handoff);
  }

  private grant(task: Task, write: boolean): void {
    if (write) this.writer = task;
    else this.readers.set(task, (this.readers.get(task) ?? 0) + 1);
    this.sim.lockdep.acquire(task, this.cls);
    if (this.sim.tracing) this.sim.emit({ type: 'lock-acquire', lock: this.name, mode: write ? 'excl' : 'shared' });
  }

  private released(task: Task): void {
    this.sim.lockdep.release(task, this.cls);
    if (this.sim.tracing) this.sim.emit({ type: 'lock-release', lock: this.name });
    // Hand the lock to the head of the queue: one writer, or every reader up to a writer.
    while (this.waiters.length > 0 && this.writer === null) {
      const head = this.waiters[0] as Waiter;
      if (head.write) {
        if (this.readers.size > 0) break;
        this.waiters.shift();
        this.writer = head.task;
        head.wake();
        break;
      }
      this.waiters.shift();
      this.readers.set(head.task, (this.readers.get(head.task) ?? 0) + 1);
      head.wake();
    }
  }

  private need(what: string): Task {
    const t = this.sim.current;
    if (!t) throw new Error(`${what}(${this.name}) outside a task`);
    return t;
  }
}
