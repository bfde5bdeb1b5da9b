/**
 * holdoff-liveness (error): the holdoff design's promise broken: DMA in progress on a
 * range when an invalidation of it arrived is to complete, not to fail, unless the holdoff
 * timeout fired (seed 000: "holding off the unmapping ... until any pending operation is
 * complete"; rdma H3). An invalidate callback that zaps the device entries of a non-ODP
 * mirrored MR while work that was already running on them is still running makes that
 * work fail (a NIC that cannot fault turns the missing entry into a protection error),
 * though the MR was not revoked (revocation is how the timeout path shows).
 *
 * Observed: each NIC's DMA activity (work from doorbell to completion, executing
 * requests: nic.dmaActivity), the command stream (a zap, who issued it, the MR's state),
 * and the callbacks each task is inside.
 *
 * Only MRs of strategies that make the holdoff promise: the reference `holdoff` and
 * strategies named after it (`holdoff*`; a design that zaps at once, like a snapshot
 * mirror, fails in-flight work by design). Not flagged: ODP MRs (the device faults and
 * retries: nothing fails), work that started
 * after the callback did (the provider checks the validity word first; an rkey access that
 * arrives during an invalidation may fail by design), zaps of a revoked MR (the timeout
 * path, or deregistration), zaps outside a callback.
 */
import type { ActiveDma, MemoryRegion } from '../device/index.ts';
import { PAGE_SIZE } from '../kernel-model/index.ts';
import type { Checker, SanitizerContext } from './context.ts';
import { formatNs, hex, violation } from './violation.ts';

interface Tracked {
  op: ActiveDma;
  since: number;
  end: number | null;
}

/** Ended work is kept this long for a zap that began before it ended (virtual ns). */
const KEEP_ENDED_NS = 1_000_000;

export function createHoldoffLiveness(ctx: SanitizerContext): Checker {
  const id = 'holdoff-liveness';
  const byMr = new Map<MemoryRegion, Map<number, Tracked>>();
  const reported = new Set<string>();

  for (const nic of ctx.nics) {
    ctx.watch(nic.dmaActivity.activity$, id, (ev) => {
      if (ev.type === 'start') {
        for (const r of ev.op.ranges) {
          if (r.mr.onDemand) continue;
          let m = byMr.get(r.mr);
          if (!m) byMr.set(r.mr, (m = new Map()));
          m.set(ev.op.id, { op: ev.op, since: ev.time, end: null });
        }
        return;
      }
      for (const r of ev.op.ranges) {
        const t = byMr.get(r.mr)?.get(ev.op.id);
        if (t) t.end = ev.time;
      }
    });
  }

  ctx.on(ctx.command$, id, (e) => {
    const c = e.cmd;
    if (c.kind !== 'zap' || !e.mr || e.mr.onDemand || e.mr.state !== 'valid' || e.binding?.kind !== 'mirrored') return;
    if (!e.binding.strategy.startsWith('holdoff')) return;
    const m = byMr.get(e.mr);
    if (!m) return;
    for (const [k, t] of m) if (t.end !== null && t.end < ctx.sim.now() - KEEP_ENDED_NS) m.delete(k);
    const cbs = ctx.callbacksOf(c.task);
    const cb = cbs[cbs.length - 1];
    if (!cb || cb.op !== 'invalidate') return;
    const lo = e.mr.pageIova(c.firstPage);
    const hi = e.mr.pageIova(c.firstPage + c.count - 1) + PAGE_SIZE;
    for (const t of m.values()) {
      if (t.since >= cb.time || (t.end !== null && t.end <= c.begin)) continue;
      const hit = t.op.ranges.find((r) => r.mr === e.mr && r.iova < hi && lo < r.iova + r.length);
      if (!hit) continue;
      const dedupe = `${c.nic}:${t.op.id}`;
      if (reported.has(dedupe)) continue;
      reported.add(dedupe);
      const message = `${cb.sub} zapped key ${hex(c.mrKey)} pages ${c.firstPage}-${c.firstPage + c.count - 1} at ${formatNs(c.begin)} while work ` +
        `(qp ${t.op.qpNum} ${t.op.side}, [${hex(hit.iova)}, ${hex(hit.iova + hit.length)})) that was running when the invalidation arrived ` +
        `was still running, and the MR was not revoked: that work fails though the holdoff timeout did not fire`;
      const trail = [
        ...(cb.inv ? ctx.trailInvalidation(cb.inv) : []),
        { time: t.since, kind: 'dma-start', task: null, text: `${c.nic} qp ${t.op.qpNum} ${t.op.side} began work on [${hex(hit.iova)}, ${hex(hit.iova + hit.length)}) of key ${hex(c.mrKey)}` },
        ctx.trailCallback(cb),
        { time: c.begin, kind: 'zap', task: c.task, text: `zap of key ${hex(c.mrKey)} pages ${c.firstPage}-${c.firstPage + c.count - 1} with that work in flight [${ctx.taskName(c.task)}]` },
      ];
      ctx.emitViolation(violation(id, ctx.sim.now(), message, trail));
    }
  });

  return { id };
}
