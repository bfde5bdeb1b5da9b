/**
 * Set-up for the holdoff and batching tests: non-faultable NICs (NO_ODP_CAPS) whose
 * non-ODP strategy is `holdoffStrategy`, applications (process, verbs context, PD, CQ) on
 * them, RC bring-up through the verbs calls, and the cost-model arithmetic the tests use
 * to predict latencies exactly.
 */
import type { ExecutionContext } from 'ava';
import {
  MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, Simulation, errnoName,
  type Co, type Kernel, type Process, type SimulationOptions,
  DEFAULT_CPU_COSTS, type CpuCosts,
} from '../../kernel-model/index.ts';
import {
  Fabric, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE, IBV_QPS_INIT, IBV_QPS_RTR,
  IBV_QPS_RTS, IBV_QPT_RC, NO_ODP_CAPS, type CompletionQueue, type CostModel, type FabricOptions, type QpAttr,
  type QueuePair, type WorkCompletion,
} from '../../device/index.ts';
import {
  createRdmaNode, holdoffStrategy, openDevice, type HoldoffOptions, type HoldoffStrategy, type HoldoffUmem,
  type IbvContext, type IbvMr, type RdmaNode,
} from '../../driver/index.ts';

export const P = PAGE_SIZE;
export const RW = PROT_READ | PROT_WRITE;
export const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
export const MR_ACCESS = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;

export interface HoldoffNode {
  node: RdmaNode;
  strategy: HoldoffStrategy;
}

const complaintLog = new WeakMap<Simulation, string[]>();

/**
 * What the kernel model complained about so far in `sim` (notifier contract and warnings,
 * sleeping in atomic context, deadlocks and lock orders, dirtying a page without buffers).
 * The first call starts recording.
 */
export function complaints(sim: Simulation): string[] {
  let out = complaintLog.get(sim);
  if (!out) {
    const log: string[] = [];
    complaintLog.set(sim, (out = log));
    sim.trace$.subscribe((r) => {
      if (r.type === 'notifier-contract' || r.type === 'notifier-warn') log.push(`${r.type}: ${r.sub}: ${r.message}`);
      else if (r.type === 'might-sleep') log.push(`might-sleep: ${r.what} in ${r.context}`);
      else if (r.type === 'deadlock' || r.type === 'lock-order' || r.type === 'dirty-without-buffers') log.push(`${r.type}: ${JSON.stringify(r)}`);
    });
  }
  return out;
}

/** A node with a non-faultable NIC whose device registers memory with the holdoff strategy. */
export function holdoffNode(sim: Simulation, fabric: Fabric, name: string, opts: HoldoffOptions): HoldoffNode {
  const strategy = holdoffStrategy(opts);
  complaints(sim);
  const node = createRdmaNode(sim, fabric, { name, nic: { caps: { odp: NO_ODP_CAPS } }, device: { nonOdp: strategy } });
  return { node, strategy };
}

/** One application: a process on a node with a verbs context, a PD and a CQ. */
export interface App {
  node: RdmaNode;
  strategy: HoldoffStrategy;
  k: Kernel;
  p: Process;
  ctx: IbvContext;
  pd: number;
  cq: CompletionQueue;
}

export function openApp(n: HoldoffNode, name: string): App {
  const p = n.node.kernel.createProcess(name);
  const ctx = openDevice(n.node.device, p);
  const pd = ctx.allocPd();
  const cq = ctx.createCq(4096);
  if (typeof cq === 'number') throw new Error(`createCq: ${errnoName(cq)}`);
  return { node: n.node, strategy: n.strategy, k: n.node.kernel, p, ctx, pd, cq };
}

/** Two nodes on one fabric, one application on each. */
export function twoHoldoffApps(opts: HoldoffOptions & { b?: Partial<HoldoffOptions>; seed?: number; fabric?: Partial<FabricOptions>; preempt?: SimulationOptions['preempt'] }): { sim: Simulation; fabric: Fabric; a: App; b: App } {
  const sim = new Simulation({ seed: opts.seed ?? 1, preempt: opts.preempt ?? false });
  const fabric = new Fabric(sim, opts.fabric);
  const { b: bOpts, seed: _s, fabric: _f, preempt: _p, ...aOpts } = opts;
  const a = openApp(holdoffNode(sim, fabric, 'a', aOpts), 'app-a');
  const b = openApp(holdoffNode(sim, fabric, 'b', { ...aOpts, ...bOpts }), 'app-b');
  return { sim, fabric, a, b };
}

/** Transport attributes: 7 retries, ~4.2 ms ACK timeout, 0.01 ms RNR timer. */
export const QP_ATTR: QpAttr = { timeout: 10, retryCnt: 7, rnrRetry: 7, minRnrTimer: 1, maxRdAtomic: 16, maxDestRdAtomic: 16 };

export function must(ret: number, what: string): number {
  if (ret < 0) throw new Error(`${what} failed with ${errnoName(ret)}`);
  return ret;
}

function createRcQp(app: App): QueuePair {
  const qp = app.ctx.createQp({ qpType: IBV_QPT_RC, pd: app.pd, sendCq: app.cq, recvCq: app.cq, cap: { maxSendWr: 256, maxRecvWr: 256 } });
  if (typeof qp === 'number') throw new Error(`createQp: ${errnoName(qp)}`);
  return qp;
}

function bringUp(app: App, qp: QueuePair, peer: App, peerQp: QueuePair): void {
  must(app.ctx.modifyQp(qp, { qpState: IBV_QPS_INIT, qpAccessFlags: MR_ACCESS }), 'modify_qp INIT');
  must(app.ctx.modifyQp(qp, { ...QP_ATTR, qpState: IBV_QPS_RTR, destQpNum: peerQp.qpNum, ahAttr: { dlid: peer.node.nic.lid } }), 'modify_qp RTR');
  must(app.ctx.modifyQp(qp, { ...QP_ATTR, qpState: IBV_QPS_RTS }), 'modify_qp RTS');
}

/** ibv_create_qp on both sides and INIT -> RTR -> RTS through ibv_modify_qp. */
export function connectRc(a: App, b: App): [QueuePair, QueuePair] {
  const qa = createRcQp(a);
  const qb = createRcQp(b);
  bringUp(a, qa, b, qb);
  bringUp(b, qb, a, qa);
  return [qa, qb];
}

/** mmap of `pages` private anonymous read-write pages, filled with `byte` (so they are populated). */
export function* mapFilled(app: App, pages: number, byte: (i: number) => number): Co<number> {
  const addr = must(yield* app.p.mmap(0, pages * P, RW, ANON), 'mmap');
  must(yield* app.p.store(addr, pattern(pages * P, byte)), 'store');
  return addr;
}

/** ibv_reg_mr that must succeed. */
export function* regMr(app: App, addr: number, length: number, access = MR_ACCESS): Co<IbvMr> {
  const mr = yield* app.ctx.regMr(app.pd, addr, length, access);
  if (typeof mr === 'number') throw new Error(`reg_mr failed with ${errnoName(mr)}`);
  return mr;
}

export function holdoffUmem(mr: IbvMr): HoldoffUmem {
  if (mr.umem.strategy !== 'holdoff') throw new Error(`MR strategy is ${mr.umem.strategy}`);
  return mr.umem as HoldoffUmem;
}

export function pattern(n: number, byte: (i: number) => number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = byte(i) & 0xff;
  return b;
}

/** A CPU load that must succeed. */
export function* load(app: App, addr: number, length: number): Co<Uint8Array> {
  const r = yield* app.p.load(addr, length);
  if (typeof r === 'number') throw new Error(`load failed with ${errnoName(r)}`);
  return r;
}

/** Wait for `n` completions on the app's CQ and take them. */
export function* completions(app: App, n: number): Co<WorkCompletion[]> {
  yield* app.cq.waitFor(n);
  return app.cq.poll(n);
}

/** Run `body` as a user thread of `app` until the simulation has nothing left to do it needs. */
export function runApp(t: ExecutionContext, sim: Simulation, app: App, body: () => Co, untilNs = 60_000_000_000): void {
  const task = app.p.spawnThread('main', body);
  const out = sim.run({ untilNs, task });
  t.is(out.failure, undefined, `run failed (seed ${out.seed}): ${out.failure ?? ''}`);
  t.true(task.done, `main thread did not finish (run ended: ${out.reason} at ${out.now} ns)`);
  t.deepEqual(complaints(sim), [], 'no complaint from the kernel model');
}

// ---- cost-model arithmetic -------------------------------------------------------------

/** One page access of the DMA engine: bytes over PCIe plus a translation miss (the scheduler rounds to whole ns). */
export function pageAccessNs(costs: CostModel, bytes = P, miss = true): number {
  return Math.round(bytes / costs.pcieBytesPerNs + (miss ? costs.translationMissNs : costs.translationHitNs));
}

/**
 * The CPU time the kernel spends on a munmap/madvise of `pages` pages around the driver's
 * invalidation (kernel-model/cpu-costs.ts): one notifier dispatch, zap_pte_range per page,
 * one TLB flush.
 */
export function kernelZapCpuNs(pages: number, cpu: CpuCosts = DEFAULT_CPU_COSTS): number {
  return cpu.notifierDispatchNs + pages * cpu.zapPerPageNs + cpu.tlbFlushNs;
}

export function zapNs(costs: CostModel, pages: number): number {
  return costs.zapEntriesBaseNs + pages * costs.zapEntriesPerPageNs;
}

export function updateNs(costs: CostModel, pages: number): number {
  return costs.updateEntriesBaseNs + pages * costs.updateEntriesPerPageNs;
}

/**
 * When each stage of one RDMA WRITE of `pages` whole pages ends, on idle NICs with cold
 * translation caches, posted at `t0`: the gather on the requester, the arrival of the
 * message, the responder's writes, and the ACK's arrival back at the requester (which
 * completes the WQE).
 */
export function writeTimeline(costs: CostModel, fabric: FabricOptions, pages: number, t0: number): { gatherStart: number; gatherEnd: number; arrival: number; writeEnd: number; ackArrival: number } {
  const access = pageAccessNs(costs);
  const gatherStart = t0 + costs.doorbellNs;
  const gatherEnd = gatherStart + pages * access;
  const depart = gatherEnd + costs.wqeProcessingNs + costs.dmaReadLatencyNs;
  const arrival = Math.round(depart + (fabric.headerBytes + pages * P) / fabric.bytesPerNs + fabric.latencyNs);
  const writeEnd = arrival + pages * access;
  const ackDepart = writeEnd + costs.responderProcessingNs;
  const ackArrival = Math.round(ackDepart + fabric.headerBytes / fabric.bytesPerNs + fabric.latencyNs);
  return { gatherStart, gatherEnd, arrival, writeEnd, ackArrival };
}
