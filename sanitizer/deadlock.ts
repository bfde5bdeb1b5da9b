/**
 * deadlock (error) and lock-order (warning).
 *
 * deadlock: a task blocked on a lock and closed a cycle in the wait-for graph (task ->
 * lock it waits on -> tasks holding it -> ...), found by the engine at the moment it
 * blocks (not when the run goes idle: periodic kernel threads keep a run busy). The
 * report names every task and lock of the cycle; the trail shows, per task, the locks it
 * took (from the lock records) and the one it waits for. Typical: a callback taking a
 * driver lock held by a task that waits on `mmu_interval_read_begin` or `remove`
 * (H4), or a fault worker dropping the last mm reference under the umem mutex, whose
 * exit_mmap calls the callback that takes the same mutex (rdma C10, CVE-2022-48675).
 *
 * lock-order: lockdep's check: a task took class B while holding class A, and the graph
 * already had B before A (through the chain shown). No task blocked, but another
 * interleaving deadlocks. The notifier's pseudo-lock (`mmu_notifier_invalidate_range_start`,
 * rule 8) takes part, so "driver lock held across read_begin" shows up here.
 *
 * Not flagged: contention (a wait that ends), re-acquiring in a consistent order.
 */
import type { Checker, SanitizerContext } from './context.ts';
import type { TrailEntry } from './violation.ts';
import { violation } from './violation.ts';

interface Held {
  time: number;
  task: number | null;
  /** The task's name when it took the lock (undefined: unknown then). */
  name: string | undefined;
  lock: string;
  mode: string;
}

export function createDeadlock(ctx: SanitizerContext): Checker {
  const id = 'deadlock';
  /**
   * Locks each task holds, with when it took them. The trail text is written only when a
   * report needs it (from the task's name as it was when the lock was taken).
   */
  const held = new Map<number | null, Held[]>();

  const text = (h: Held) => `${h.task === null ? 'no task' : h.name !== undefined ? `task ${h.task} ${h.name}` : `task ${h.task}`} took ${h.lock} (${h.mode})`;
  const entry = (h: Held): TrailEntry => ({ time: h.time, kind: 'lock', task: h.task, text: text(h) });
  const heldEntries = (task: number | null): TrailEntry[] => (held.get(task) ?? []).map(entry);

  ctx.onRecords(['lock-acquire', 'lock-release', 'deadlock', 'lock-order'], id, (r) => {
    switch (r.type) {
      case 'lock-acquire': {
        let list = held.get(r.task);
        if (!list) held.set(r.task, (list = []));
        list.push({ time: r.t, task: r.task, name: ctx.taskInfo(r.task)?.name, lock: r.lock, mode: r.mode });
        return;
      }
      case 'lock-release': {
        const list = held.get(r.task);
        if (!list) return;
        const needle = ` took ${r.lock} (`;
        for (let i = list.length - 1; i >= 0; i--) {
          // The hold whose trail text names the lock (the same lock, or, should a name
          // contain that text, the text says so too).
          const h = list[i] as Held;
          if (h.lock === r.lock || text(h).includes(needle)) {
            list.splice(i, 1);
            break;
          }
        }
        return;
      }
      case 'deadlock': {
        const steps: TrailEntry[] = [];
        r.tasks.forEach((t, i) => {
          steps.push(...heldEntries(t));
          steps.push({ time: r.t, kind: 'wait', task: t, text: `${ctx.taskName(t)} waits for ${r.locks[i] ?? '?'}` });
        });
        const cycle = r.tasks.map((t, i) => `${ctx.taskName(t)} waits for ${r.locks[i] ?? '?'}`).join(', ');
        ctx.emitViolation(violation(id, ctx.sim.now(), `deadlock: ${cycle}`, steps));
        return;
      }
      case 'lock-order': {
        const steps: TrailEntry[] = [
          { time: r.t, kind: 'order', text: `earlier: ${r.chain.join(' -> ')} (so ${r.second} is taken before ${r.first})` },
          ...heldEntries(r.task),
          { time: r.t, kind: 'lock', task: r.task, text: `${ctx.taskName(r.task)} takes ${r.second} while holding ${r.first}` },
        ];
        ctx.emitViolation(violation('lock-order', ctx.sim.now(),
          `possible deadlock: ${r.second} taken while holding ${r.first}, but ${r.chain.join(' -> ')} was seen before`, steps));
        return;
      }
      default:
        return;
    }
  });

  return { id };
}
