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

export function createDeadlock(ctx: SanitizerContext): Checker {
  const id = 'deadlock';
  /** Locks each task holds, with when and where it took them. */
  const held = new Map<number | null, TrailEntry[]>();

  ctx.on(ctx.trace$, id, (r) => {
    switch (r.type) {
      case 'lock-acquire': {
        let list = held.get(r.task);
        if (!list) held.set(r.task, (list = []));
        list.push({ time: r.t, kind: 'lock', task: r.task, text: `${ctx.taskName(r.task)} took ${r.lock} (${r.mode})` });
        return;
      }
      case 'lock-release': {
        const list = held.get(r.task);
        if (!list) return;
        const needle = ` took ${r.lock} (`;
        for (let i = list.length - 1; i >= 0; i--) {
          if ((list[i] as TrailEntry).text.includes(needle)) {
            list.splice(i, 1);
            break;
          }
        }
        return;
      }
      case 'deadlock': {
        const steps: TrailEntry[] = [];
        r.tasks.forEach((t, i) => {
          steps.push(...(held.get(t) ?? []));
          steps.push({ time: r.t, kind: 'wait', task: t, text: `${ctx.taskName(t)} waits for ${r.locks[i] ?? '?'}` });
        });
        const cycle = r.tasks.map((t, i) => `${ctx.taskName(t)} waits for ${r.locks[i] ?? '?'}`).join(', ');
        ctx.emitViolation(violation(id, ctx.sim.now(), `deadlock: ${cycle}`, steps));
        return;
      }
      case 'lock-order': {
        const steps: TrailEntry[] = [
          { time: r.t, kind: 'order', text: `earlier: ${r.chain.join(' -> ')} (so ${r.second} is taken before ${r.first})` },
          ...(held.get(r.task) ?? []),
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
