/**
 * fault-retry-storm (warning, and a metric): a NIC page fault that kept colliding with
 * invalidations of its range until its retry budget (HMM_RANGE_DEFAULT_TIMEOUT, 1000 ms
 * after the fault began, rdma B3, kernel rule 31) ran out, and was resumed with an error.
 *
 * Observed: each fault on the NIC's fault stream (key, iova range, time), the invalidations
 * of the bound mm that overlap the faulting pages while the fault is outstanding (each one
 * forces the fault path to start over from read_begin, or makes hmm_range_fault return
 * -EBUSY), and the resume command with its error bit.
 *
 * Why a warning and not an error: giving up with -EBUSY after the budget is legal kernel
 * behaviour; it is a liveness problem (the work request fails, the QP goes to error),
 * usually made by a workload that invalidates a hot range faster than the device can fault
 * it in, or a driver whose own fault path triggers invalidations (a write fault breaking
 * COW sends a CLEAR over the page, rule 43).
 *
 * The metric counts every fault: how many collided, how many collisions, the most for one
 * fault, how long faults took, how many ran out of budget.
 */
import { HMM_RANGE_DEFAULT_TIMEOUT_NS, PAGE_SIZE, type Kernel } from '../kernel-model/index.ts';
import type { Checker, FaultEvent, InvalidationInfo, SanitizerContext } from './context.ts';
import { formatNs, hex, violation } from './violation.ts';

interface Outstanding {
  e: FaultEvent;
  kernel: Kernel;
  mm: number;
  start: number;
  end: number;
  collisions: number;
  first: InvalidationInfo[];
}

export interface FaultRetryMetrics {
  faults: number;
  faultsResumed: number;
  faultsCollided: number;
  collisions: number;
  maxCollisionsPerFault: number;
  maxFaultNs: number;
  budgetExhausted: number;
}

export function createFaultRetryStorm(ctx: SanitizerContext, budgetNs = HMM_RANGE_DEFAULT_TIMEOUT_NS): Checker {
  const id = 'fault-retry-storm';
  /** Per NIC name: fault id -> the fault while it is outstanding. */
  const outstanding = new Map<string, Map<number, Outstanding>>();
  const m: FaultRetryMetrics = { faults: 0, faultsResumed: 0, faultsCollided: 0, collisions: 0, maxCollisionsPerFault: 0, maxFaultNs: 0, budgetExhausted: 0 };

  ctx.on(ctx.fault$, id, (e) => {
    m.faults++;
    const b = e.binding;
    if (!b || !e.kernel || b.mmId === null) return;
    const f = e.fault;
    const va = b.addr + (f.iova - b.iova);
    const start = Math.floor(va / PAGE_SIZE) * PAGE_SIZE;
    const end = Math.ceil((va + Math.max(1, f.length)) / PAGE_SIZE) * PAGE_SIZE;
    let byId = outstanding.get(f.nic);
    if (!byId) outstanding.set(f.nic, (byId = new Map()));
    byId.set(f.id, { e, kernel: e.kernel, mm: b.mmId, start, end, collisions: 0, first: [] });
  });

  ctx.on(ctx.invalidation$, id, ({ phase, inv }) => {
    if (phase !== 'start') return;
    for (const byId of outstanding.values()) for (const o of byId.values()) {
      if (o.kernel !== inv.kernel || o.mm !== inv.mm.id || inv.end <= o.start || o.end <= inv.start) continue;
      o.collisions++;
      if (o.first.length < 4) o.first.push(inv);
    }
  });

  ctx.on(ctx.resume$, id, ({ resume: r }) => {
    const byId = outstanding.get(r.fault.nic);
    const o = byId?.get(r.fault.id);
    m.faultsResumed++;
    const took = r.time - r.fault.time;
    m.maxFaultNs = Math.max(m.maxFaultNs, took);
    if (!o) return;
    byId?.delete(r.fault.id);
    if (o.collisions > 0) m.faultsCollided++;
    m.collisions += o.collisions;
    m.maxCollisionsPerFault = Math.max(m.maxCollisionsPerFault, o.collisions);
    if (!r.error || o.collisions === 0 || took < budgetNs) return;
    m.budgetExhausted++;
    const f = r.fault;
    const message = `fault ${f.id} on ${f.nic} key ${hex(f.mrKey)} (${hex(o.start)}..${hex(o.end)} of mm${o.mm}) collided with ` +
      `${o.collisions} invalidation(s) and was resumed with an error after ${formatNs(took)} (budget ${formatNs(budgetNs)})`;
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [
      { time: f.time, kind: 'nic-fault', text: `${f.nic} qp ${f.qpNum} ${f.side} ${f.write ? 'write' : 'read'} fault (${f.reason}) at iova ${hex(f.iova)}, ${f.length} bytes` },
      ...o.first.flatMap((inv) => ctx.trailInvalidation(inv)),
      { time: r.time, kind: 'resume', text: `fault ${f.id} resumed with error` },
    ]));
  });

  return { id, metrics: () => ({ ...m }) };
}
