/**
 * Set-up for the verbs-level tests: RDMA nodes (kernel, NIC, driver device) on one
 * simulation and fabric, an application per node (a process with a verbs context, a PD
 * and a CQ), RC bring-up through the verbs calls, and small helpers that fail the run
 * when a call that must succeed does not.
 */
import type { ExecutionContext } from 'ava';
import {
  MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROFILES, PROT_READ, PROT_WRITE, Simulation, errnoName,
  type Co, type Kernel, type Process, type ProfileName,
} from '../../kernel-model/index.ts';
import {
  Fabric, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_REMOTE_ATOMIC, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE,
  IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, NO_ODP_CAPS, wcStatusName,
  type CompletionQueue, type NicCapabilities, type QpAttr, type QueuePair, type WorkCompletion,
} from '../../device/index.ts';
import {
  createRdmaNode, openDevice, pinnedStrategy, type IbvContext, type IbvMr, type RdmaNode, type UmemStrategy,
} from '../../driver/index.ts';

export const P = PAGE_SIZE;
export const RW = PROT_READ | PROT_WRITE;
export const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
export const ALL_ACCESS = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

/** One application on one node: its process, verbs context, a PD and a CQ. */
export interface App {
  node: RdmaNode;
  k: Kernel;
  p: Process;
  ctx: IbvContext;
  pd: number;
  cq: CompletionQueue;
}

export interface NodeOptions {
  profile?: ProfileName;
  caps?: Partial<NicCapabilities>;
  /** The device's non-ODP strategy (default: pinnedStrategy()). */
  nonOdp?: UmemStrategy;
  odp?: UmemStrategy;
}

export function makeApp(sim: Simulation, fabric: Fabric, name: string, opts: NodeOptions = {}): App {
  const node = createRdmaNode(sim, fabric, {
    name,
    kernel: { profile: PROFILES[opts.profile ?? 'linux-6.x'] },
    nic: { caps: opts.caps ?? { odp: NO_ODP_CAPS } },
    device: { nonOdp: opts.nonOdp ?? pinnedStrategy(), ...(opts.odp ? { odp: opts.odp } : {}) },
  });
  const p = node.kernel.createProcess(`${name}-app`);
  return openApp(node, p);
}

/** ibv_open_device, ibv_alloc_pd and ibv_create_cq for a process on a node. */
export function openApp(node: RdmaNode, p: Process): App {
  const ctx = openDevice(node.device, p);
  const pd = ctx.allocPd();
  const cq = ctx.createCq(4096);
  if (typeof cq === 'number') throw new Error(`createCq: ${errnoName(cq)}`);
  return { node, k: node.kernel, p, ctx, pd, cq };
}

/** Two applications on two nodes of one fabric (non-faultable NICs unless `caps` says otherwise). */
export function twoApps(opts: NodeOptions & { seed?: number } = {}): { sim: Simulation; fabric: Fabric; a: App; b: App } {
  const sim = new Simulation({ seed: opts.seed ?? 1 });
  const fabric = new Fabric(sim);
  return { sim, fabric, a: makeApp(sim, fabric, 'a', opts), b: makeApp(sim, fabric, 'b', opts) };
}

/** Transport attributes for tests: 7 retries, ~4.2 ms ACK timeout, short RNR timer. */
export const TEST_QP_ATTR: QpAttr = { timeout: 10, retryCnt: 7, rnrRetry: 7, minRnrTimer: 1, maxRdAtomic: 16, maxDestRdAtomic: 16 };

/** ibv_create_qp (RC) on the app's PD and CQ. */
export function createRcQp(app: App, pd = app.pd): QueuePair {
  const qp = app.ctx.createQp({ qpType: IBV_QPT_RC, pd, sendCq: app.cq, recvCq: app.cq, cap: { maxSendWr: 1024, maxRecvWr: 1024 } });
  if (typeof qp === 'number') throw new Error(`createQp: ${errnoName(qp)}`);
  return qp;
}

/** RESET -> INIT -> RTR -> RTS with the peer as destination, through ibv_modify_qp. */
export function bringUp(app: App, qp: QueuePair, peer: App, peerQp: QueuePair, attr: QpAttr = {}): void {
  const at = { ...TEST_QP_ATTR, ...attr };
  must(app.ctx.modifyQp(qp, { qpState: IBV_QPS_INIT, qpAccessFlags: ALL_ACCESS }), 'modify_qp INIT');
  must(app.ctx.modifyQp(qp, { ...at, qpState: IBV_QPS_RTR, destQpNum: peerQp.qpNum, ahAttr: { dlid: peer.node.nic.lid } }), 'modify_qp RTR');
  must(app.ctx.modifyQp(qp, { ...at, qpState: IBV_QPS_RTS }), 'modify_qp RTS');
}

/** One connected RC QP on each app. */
export function connectRc(a: App, b: App, attr: QpAttr = {}): [QueuePair, QueuePair] {
  const qa = createRcQp(a);
  const qb = createRcQp(b);
  bringUp(a, qa, b, qb, attr);
  bringUp(b, qb, a, qa, attr);
  return [qa, qb];
}

export function must(ret: number, what: string): number {
  if (ret < 0) throw new Error(`${what} failed with ${errnoName(ret)}`);
  return ret;
}

/** mmap(RW, private anonymous) of `pages` pages, which must succeed. */
export function* mapAnon(app: App, pages: number, prot = RW): Co<number> {
  return must(yield* app.p.mmap(0, pages * P, prot, ANON), 'mmap');
}

/** A CPU store that must succeed. */
export function* store(app: App, addr: number, bytes: Uint8Array): Co {
  must(yield* app.p.store(addr, bytes), 'store');
}

/** A CPU load that must succeed. */
export function* load(app: App, addr: number, length: number): Co<Uint8Array> {
  const r = yield* app.p.load(addr, length);
  if (typeof r === 'number') throw new Error(`load failed with ${errnoName(r)}`);
  return r;
}

/** ibv_reg_mr that must succeed. */
export function* regOk(app: App, addr: number, length: number, access = ALL_ACCESS, pd = app.pd): Co<IbvMr> {
  const mr = yield* app.ctx.regMr(pd, addr, length, access);
  if (typeof mr === 'number') throw new Error(`regMr failed with ${errnoName(mr)}`);
  return mr;
}

/** Wait for `n` completions on the app's CQ and poll them. */
export function* completions(app: App, n: number): Co<WorkCompletion[]> {
  yield* app.cq.waitFor(n);
  return app.ctx.pollCq(app.cq, n);
}

export function statusNames(wcs: readonly WorkCompletion[]): string[] {
  return wcs.map((w) => wcStatusName(w.status));
}

/** A deterministic byte pattern: `n` bytes derived from `seed`. */
export function pattern(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff;
  return out;
}

/** Run `body` as a script task until it finishes; a model failure fails the test. */
export function run(t: ExecutionContext, sim: Simulation, body: () => Co, untilNs = 60_000_000_000): void {
  const task = sim.spawn('test', body, { kind: 'script' });
  const out = sim.run({ untilNs, task });
  t.is(out.failure, undefined, `run failed (seed ${out.seed}): ${out.failure ?? ''}`);
  t.true(task.done, `script did not finish (run ended: ${out.reason} at ${out.now} ns)`);
}
