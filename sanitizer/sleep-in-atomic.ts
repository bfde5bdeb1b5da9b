/**
 * sleep-in-atomic (error): a primitive that might sleep (a blocking lock even when it is
 * free, a timer, a wait queue, waiting for a device command or an Observable) was called
 * in atomic context: inside a non-blockable invalidation (the OOM reaper's), or inside any
 * notifier callback under the `linux-3.0` profile (RCU), or under a page-table lock.
 *
 * Observed: the engine's might_sleep records (kernel rule 15, hazard H5), which it makes
 * whether or not the call actually slept ("might sleep", not "did sleep", as the kernel's
 * debug check does). The trail names the callback and the invalidation the task was in.
 *
 * Why it is a bug: a non-blockable range must not wait (the reaper cannot make progress
 * if the callback waits on a lock held by a task that is blocked on memory), and an RCU
 * callback must not sleep at all. The right answer is try-lock and return false/-EAGAIN.
 *
 * Not flagged: try-locks, preemption points, and any sleep in a blockable range.
 */
import type { Checker, SanitizerContext } from './context.ts';
import type { TrailEntry } from './violation.ts';
import { violation } from './violation.ts';

export function createSleepInAtomic(ctx: SanitizerContext): Checker {
  const id = 'sleep-in-atomic';
  const reported = new Set<string>();

  ctx.onRecords(['might-sleep'], id, (r) => {
    if (r.type !== 'might-sleep') return;
    const cbs = ctx.callbacksOf(r.task);
    const cb = cbs[cbs.length - 1];
    const invs = ctx.invalidationsOf(r.task);
    const inv = cb?.inv ?? invs[invs.length - 1];
    // One report per callback invocation (or per task outside callbacks) and primitive.
    const dedupe = `${r.task}:${cb ? cb.ordinal : 'none'}:${r.what}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const inWhat = cb ? `${cb.op} of ${cb.sub}` : ctx.taskName(r.task);
    const message = `${r.what} in atomic context (${r.context}), in ${inWhat}`;
    const steps: (TrailEntry | null)[] = [];
    if (inv) steps.push(...ctx.trailInvalidation(inv));
    else steps.push(ctx.trailSyscall(ctx.syscallOf(r.task)));
    if (cb) steps.push(ctx.trailCallback(cb));
    steps.push({ time: r.t, kind: 'might-sleep', task: r.task, text: `${r.what} (${r.context}) [${ctx.taskName(r.task)}]` });
    ctx.emitViolation(violation(id, ctx.sim.now(), message, steps));
  });

  return { id };
}
