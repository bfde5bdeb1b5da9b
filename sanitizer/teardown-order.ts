/**
 * teardown-order (error): the device used an MR after its teardown had gone too far:
 * - after deregistration returned (ib_dereg_mr must fence the device first: revoke the key
 *   and wait for a sync, rdma C9), an access through the key;
 * - after the interval notifier of a mirrored MR (ODP, holdoff) was removed, an access to
 *   an address only that notifier covered: with no subscriber the kernel no longer tells
 *   the driver when the page goes, so the notifier must outlive every device use
 *   (ib_umem_odp_release removes it last, after the device is fenced).
 *
 * Observed: the binding stream (registration and the return of deregistration), the
 * trace's interval-insert and interval-remove records (a notifier inserted by the task that
 * then published the registration belongs to that MR), and each device access.
 *
 * This does not need a live subscriber covering the address, as use-after-invalidate
 * does: a driver that removes its notifier too early leaves nothing for that checker to
 * compare with, and is caught here directly.
 *
 * Not flagged: implicit ODP MRs' notifier half (children come and go with their 1 GiB
 * slots; their accesses are judged by use-after-invalidate and stale-translation), pinned
 * and dma-buf MRs' notifier half (they have none), and keys registered again since.
 */
import type { Checker, SanitizerContext } from './context.ts';
import { formatNs, hex, violation, type TrailEntry } from './violation.ts';

interface SubRec {
  node: string;
  sub: string;
  mm: number;
  start: number;
  last: number;
  insertedAt: number;
  removed: TrailEntry | null;
}

interface Dereg {
  time: number;
  task: number | null;
  text: string;
}

const SIZE_MAX = 2 ** 64 - 1;

export function createTeardownOrder(ctx: SanitizerContext): Checker {
  const id = 'teardown-order';
  /** Per task: subscribers it inserted since it last published a binding. */
  const pending = new Map<number | null, SubRec[]>();
  /** Per "nic:key": the notifiers inserted for the MR at registration. */
  const subsOfKey = new Map<string, SubRec[]>();
  /** Per "node:sub:start:last": the record (to mark removal). */
  const byName = new Map<string, SubRec>();
  /** Per "nic:key": deregistration returned, and the key was not registered again. */
  const deregistered = new Map<string, Dereg>();
  const reported = new Set<string>();

  ctx.onRecords(['interval-insert', 'interval-remove'], id, (r) => {
    if (r.type === 'interval-insert') {
      const rec: SubRec = { node: r.node, sub: r.sub, mm: r.mm, start: r.start, last: r.last, insertedAt: r.t, removed: null };
      byName.set(`${r.node}:${r.sub}:${r.start}:${r.last}`, rec);
      let l = pending.get(r.task);
      if (!l) pending.set(r.task, (l = []));
      l.push(rec);
    } else if (r.type === 'interval-remove') {
      const rec = byName.get(`${r.node}:${r.sub}:${r.start}:${r.last}`);
      if (rec && !rec.removed) {
        rec.removed = { time: r.t, kind: 'notifier-remove', task: r.task, text: `mmu_interval_notifier_remove(${r.sub}) returned: [${hex(r.start)}, ${hex(r.last + 1)}) of mm${r.mm} no longer watched [${ctx.taskName(r.task)}]` };
        byName.delete(`${r.node}:${r.sub}:${r.start}:${r.last}`);
      }
    }
  });

  ctx.on(ctx.binding$, id, (e) => {
    const b = e.binding;
    const key = `${b.nic}:${b.key}`;
    const task = ctx.sim.current?.id ?? null;
    if (e.event === 'reg') {
      deregistered.delete(key);
      subsOfKey.set(key, b.length >= SIZE_MAX || b.kind !== 'mirrored' ? [] : (pending.get(task) ?? []).filter((s) => s.mm === b.mmId));
      pending.delete(task);
      return;
    }
    subsOfKey.delete(key);
    pending.delete(task);
    deregistered.set(key, { time: ctx.sim.now(), task, text: `ibv_dereg_mr of key ${hex(b.key)} (${b.strategy}) returned [${ctx.taskName(task)}]` });
  });

  ctx.on(ctx.access$, id, (e) => {
    const a = e.access;
    const key = `${a.nic}:${a.mrKey}`;
    const gone = e.binding ? undefined : deregistered.get(key);
    if (gone) {
      const dedupe = `dereg:${key}:${gone.time}`;
      if (reported.has(dedupe)) return;
      reported.add(dedupe);
      const message = `${a.nic} ${a.write ? 'wrote' : 'read'} ${a.length} bytes through key ${hex(a.mrKey)} at ${formatNs(a.time)}, ` +
        `after its deregistration returned at ${formatNs(gone.time)}: deregistration must fence the device first (rdma C9)`;
      ctx.emitViolation(violation(id, ctx.sim.now(), message, [
        ctx.trailInstall(ctx.install(a.nic, a.generation)),
        { time: gone.time, kind: 'dereg', task: gone.task, text: gone.text },
        ctx.trailAccess(e),
      ]));
      return;
    }
    const subs = e.binding ? subsOfKey.get(key) : undefined;
    if (!subs || subs.length === 0 || e.va === undefined) return;
    const va = e.va;
    const covering = subs.filter((s) => s.start <= va && va <= s.last);
    if (covering.length === 0 || covering.some((s) => !s.removed)) return;
    const removed = covering[0]!.removed!;
    const dedupe = `sub:${key}:${removed.time}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const message = `${a.nic} ${a.write ? 'wrote' : 'read'} ${a.length} bytes at va ${hex(va)} of mm${e.binding?.mmId} through key ${hex(a.mrKey)} ` +
      `after the MR's interval notifier ${covering[0]!.sub} was removed: the notifier must outlive every device use`;
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [
      { time: covering[0]!.insertedAt, kind: 'notifier-insert', task: null, text: `${covering[0]!.sub} inserted over [${hex(covering[0]!.start)}, ${hex(covering[0]!.last + 1)}) of mm${covering[0]!.mm}` },
      removed,
      ctx.trailInstall(ctx.install(a.nic, a.generation), e.binding, e.mr),
      ctx.trailAccess(e),
    ]));
  });

  return { id };
}
