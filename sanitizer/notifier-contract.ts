/**
 * notifier-contract (error): a driver-side obligation of the notifier protocol not met
 * (kernel rules 10, 14, 16, 26-28, 30; hazards H2, H4, H13, H17):
 * - an interval `invalidate` that did not call `mmu_interval_set_seq` (the model records
 *   it; a non-blockable `false` legitimately skips it);
 * - `mmu_interval_read_retry` or `set_seq` called without the lock the subscriber
 *   declared at insert (the model records it);
 * - device entries installed after that lock was dropped: a task whose read_retry said
 *   "no retry" under the lock, then released the lock, then installed translations for
 *   that mm before its next read_retry (rule 28: install before dropping the lock);
 * - device entries installed on the word of `mmu_interval_check_retry`: a task whose
 *   check_retry said "no retry" installed translations for that subscriber's interval
 *   before any read_retry (rule 29: check_retry without the lock is only a hint that the
 *   work is already stale; a false proves nothing, so only read_retry under the lock may
 *   let entries in). hmm_range_fault's own check_retry is followed by the driver's
 *   read_retry before its install, and is not flagged;
 * - what the kernel WARNs about in a caller (notifier-warn records): start/end unbalanced
 *   (an end without its start, an end after -EAGAIN), `remove` from a callback, a non-zero
 *   return from a blockable start, `false` from a blockable invalidate or for RELEASE, a
 *   registration or insert done wrong, hmm_range_fault without the mmap lock.
 *
 * Observed: the trace (notifier-contract, notifier-warn, read-retry, lock-release records)
 * and the NIC's command stream (which task installed entries, for which MR).
 *
 * Not flagged: installs made while the lock is still held after a successful read_retry,
 * installs by a task that made no read_retry (a driver with its own protocol; the effect
 * of a missed collision is what stale-translation checks), and a non-blockable `false`.
 */
import type { Kernel } from '../kernel-model/index.ts';
import type { Checker, CommandEvent, SanitizerContext } from './context.ts';
import type { TrailEntry } from './violation.ts';
import { hex, violation } from './violation.ts';

interface Granted {
  kernel: Kernel | undefined;
  sub: string;
  mm: number;
  lock: string;
  time: number;
  task: number | null;
  dropped: TrailEntry | null;
}

const WARN_KINDS: [RegExp, string][] = [
  [/rule 10/, 'start/end unbalanced'],
  [/rule 30/, 'remove called from a notifier callback'],
  [/rule 14/, 'invalid return from invalidate_range_start'],
  [/rule 16|rule 34/, 'invalidate returned false where it may not'],
];

export function createNotifierContract(ctx: SanitizerContext): Checker {
  const id = 'notifier-contract';
  const granted = new Map<number | null, Granted>();
  /** Per task: the last mmu_interval_check_retry that said "no retry", until its next read_retry. */
  const hinted = new Map<number | null, Granted>();
  const reported = new Set<string>();

  function context(task: number | null): (TrailEntry | null)[] {
    const cbs = ctx.callbacksOf(task);
    const cb = cbs[cbs.length - 1];
    const invs = ctx.invalidationsOf(task);
    const inv = cb?.inv ?? invs[invs.length - 1];
    const steps: (TrailEntry | null)[] = [];
    if (inv) steps.push(...ctx.trailInvalidation(inv));
    else steps.push(ctx.trailSyscall(ctx.syscallOf(task)));
    if (cb) steps.push(ctx.trailCallback(cb));
    return steps;
  }

  ctx.onRecords(['notifier-contract', 'notifier-warn', 'read-retry', 'check-retry', 'lock-release'], id, (r) => {
    switch (r.type) {
      case 'notifier-contract': {
        ctx.emitViolation(violation(id, ctx.sim.now(), `${r.sub}: ${r.message}`, [
          ...context(r.task),
          { time: r.t, kind: 'contract', task: r.task, text: `${r.sub}: ${r.message} [${ctx.taskName(r.task)}]` },
        ]));
        return;
      }
      case 'notifier-warn': {
        const kind = WARN_KINDS.find(([re]) => re.test(r.message))?.[1];
        ctx.emitViolation(violation(id, ctx.sim.now(), `${kind ? kind + ': ' : ''}${r.sub}: ${r.message}`, [
          ...context(r.task),
          { time: r.t, kind: 'warn', task: r.task, text: `${r.sub}: ${r.message} [${ctx.taskName(r.task)}]` },
        ]));
        return;
      }
      case 'check-retry': {
        if (!r.retry) hinted.set(r.task, { kernel: ctx.kernelByNode(r.node), sub: r.sub, mm: r.mm, lock: r.lock ?? 'no lock', time: r.t, task: r.task, dropped: null });
        return;
      }
      case 'read-retry': {
        hinted.delete(r.task);
        if (!r.retry && r.lock !== null && r.locked) {
          granted.set(r.task, { kernel: ctx.kernelByNode(r.node), sub: r.sub, mm: r.mm, lock: r.lock, time: r.t, task: r.task, dropped: null });
        } else {
          granted.delete(r.task);
        }
        return;
      }
      case 'lock-release': {
        const g = granted.get(r.task);
        if (g && !g.dropped && g.lock === r.lock) {
          g.dropped = { time: r.t, kind: 'unlock', task: r.task, text: `${r.lock} released [${ctx.taskName(r.task)}]` };
        }
        return;
      }
      default:
        return;
    }
  });

  /** Whether an install of `e` concerns the interval of subscriber `sub` of (kernel, mm). */
  function concerns(e: CommandEvent, g: Granted): boolean {
    if (!e.binding || !e.kernel || g.kernel !== e.kernel || g.mm !== e.binding.mmId || e.binding.kind !== 'mirrored') return false;
    const sub = ctx.intervalSubscribers(e.kernel, g.mm).filter((x) => x.sub === g.sub);
    if (e.mr && sub.length > 0 && e.installs.length > 0) {
      const vas = e.installs.map((i) => ctx.vaOfIndex(e.binding!, e.mr!, i.index));
      if (!vas.some((va) => sub.some((x) => x.start <= va + 4095 && va <= x.last))) return false;
    }
    return true;
  }

  ctx.on(ctx.command$, id, (e) => {
    if (e.cmd.kind !== 'update' || !e.binding || !e.kernel) return;
    const h = hinted.get(e.cmd.task);
    if (h && concerns(e, h)) {
      hinted.delete(e.cmd.task);
      const b = e.binding;
      const message = `${ctx.taskName(e.cmd.task)} installed ${e.cmd.count} device entries of key ${hex(b.key)} (mm${b.mmId}) ` +
        `on the word of mmu_interval_check_retry(${h.sub}), with no read_retry under ${h.lock}: check_retry is only a hint (rule 29)`;
      ctx.emitViolation(violation(id, ctx.sim.now(), message, [
        { time: h.time, kind: 'check-retry', task: h.task, text: `mmu_interval_check_retry(${h.sub}) = false [${ctx.taskName(h.task)}]` },
        ...e.installs.slice(0, 4).map((i) => ctx.trailInstall(i, b, e.mr)),
      ]));
      return;
    }
    const g = granted.get(e.cmd.task);
    if (!g || !g.dropped || g.kernel !== e.kernel || g.mm !== e.binding.mmId || e.binding.kind !== 'mirrored') return;
    // Only installs inside the interval of the subscriber whose read_retry granted them.
    const sub = ctx.intervalSubscribers(e.kernel, g.mm).filter((x) => x.sub === g.sub);
    if (e.mr && sub.length > 0 && e.installs.length > 0) {
      const vas = e.installs.map((i) => ctx.vaOfIndex(e.binding!, e.mr!, i.index));
      if (!vas.some((va) => sub.some((x) => x.start <= va + 4095 && va <= x.last))) return;
    }
    const dedupe = `${e.cmd.task}:${g.time}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const b = e.binding;
    const message = `${ctx.taskName(e.cmd.task)} installed ${e.cmd.count} device entries of key ${hex(b.key)} (mm${b.mmId}) ` +
      `after dropping ${g.lock}, the lock ${g.sub} declared for read_retry: an invalidation may have run in between (rule 28)`;
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [
      { time: g.time, kind: 'read-retry', task: g.task, text: `mmu_interval_read_retry(${g.sub}) = false under ${g.lock} [${ctx.taskName(g.task)}]` },
      g.dropped,
      ...e.installs.slice(0, 4).map((i) => ctx.trailInstall(i, b, e.mr)),
    ]));
  });

  return { id };
}
