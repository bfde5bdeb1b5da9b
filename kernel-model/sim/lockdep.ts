import type { Simulation } from './simulation.ts';
import type { Blocker, Task } from './task.ts';

export interface DeadlockReport {
  time: number;
  tasks: { id: number; name: string }[];
  locks: string[];
}

export interface LockOrderReport {
  time: number;
  /** The lock class held when `second` was taken ... */
  first: string;
  second: string;
  /** ... while an earlier path already took `second` before `first`. */
  chain: string[];
}

/**
 * Two checks, as the kernel has them:
 * - a deadlock is found the moment a task blocks and closes a cycle in the wait-for
 *   graph (task -> lock it waits on -> tasks holding it -> ...), not when the run goes
 *   idle, because periodic kernel threads keep a run busy forever;
 * - lockdep's lock-order graph: taking class B while holding class A adds A -> B, and a
 *   path B -> ... -> A already present means some interleaving could deadlock, even if
 *   this run did not. Pseudo-locks (the notifier's `invalidate_range_start` map, rule 8)
 *   take part like real ones.
 */
export class Lockdep {
  readonly deadlocks: DeadlockReport[] = [];
  readonly orderViolations: LockOrderReport[] = [];
  private readonly after = new Map<string, Set<string>>();
  private readonly reported = new Set<string>();

  constructor(private readonly sim: Simulation) {}

  /** Called before `task` parks on `lock`. Returns the cycle if blocking closes one. */
  checkBlock(task: Task, lock: Blocker): DeadlockReport | null {
    // The common case, answered without building the search: no holder is this task or
    // waits on anything, so no cycle can pass through the lock.
    let chained = false;
    for (const holder of lock.holders()) {
      if (holder === task || holder.waitingOn) {
        chained = true;
        break;
      }
    }
    if (!chained) return null;
    const tasks: Task[] = [task];
    const locks: string[] = [lock.name];
    const seen = new Set<Task>();
    const dfs = (l: Blocker): boolean => {
      for (const holder of l.holders()) {
        if (holder === task) return true;
        if (seen.has(holder)) continue;
        seen.add(holder);
        const next = holder.waitingOn;
        if (!next) continue;
        tasks.push(holder);
        locks.push(next.name);
        if (dfs(next)) return true;
        tasks.pop();
        locks.pop();
      }
      return false;
    };
    if (!dfs(lock)) return null;
    const report: DeadlockReport = {
      time: this.sim.now(),
      tasks: tasks.map((t) => ({ id: t.id, name: t.name })),
      locks,
    };
    this.deadlocks.push(report);
    this.sim.emit({ type: 'deadlock', tasks: tasks.map((t) => t.id), locks });
    return report;
  }

  /** Record that the current task acquires lock class `cls` (after any wait). */
  acquire(task: Task, cls: string): void {
    for (const held of task.held) {
      if (held === cls) continue;
      const path = this.path(cls, held);
      if (path) {
        const key = `${held}\u0000${cls}`;
        if (!this.reported.has(key)) {
          this.reported.add(key);
          const report = { time: this.sim.now(), first: held, second: cls, chain: path };
          this.orderViolations.push(report);
          this.sim.emit({ type: 'lock-order', first: held, second: cls, chain: path });
        }
      }
      let set = this.after.get(held);
      if (!set) this.after.set(held, (set = new Set()));
      set.add(cls);
    }
    task.held.push(cls);
  }

  release(task: Task, cls: string): void {
    const i = task.held.lastIndexOf(cls);
    if (i >= 0) task.held.splice(i, 1);
  }

  /** A lockdep map acquired and released at once: records order without holding. */
  touch(task: Task, cls: string): void {
    this.acquire(task, cls);
    this.release(task, cls);
  }

  private path(from: string, to: string): string[] | null {
    const prev = new Map<string, string>();
    const queue = [from];
    const seen = new Set([from]);
    while (queue.length > 0) {
      const node = queue.shift() as string;
      if (node === to) {
        const chain = [to];
        let cur = to;
        while (cur !== from) {
          cur = prev.get(cur) as string;
          chain.unshift(cur);
        }
        return chain;
      }
      for (const nxt of this.after.get(node) ?? []) {
        if (!seen.has(nxt)) {
          seen.add(nxt);
          prev.set(nxt, node);
          queue.push(nxt);
        }
      }
    }
    return null;
  }
}
