import {
  MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, errnoName, type Co, type Kernel, type Process,
} from '../kernel-model/index.ts';
import {
  IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_REMOTE_ATOMIC, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE,
  IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, wcStatusName,
  type CompletionQueue, type QpAttr, type QueuePair, type WorkCompletion,
} from '../device/index.ts';
import { openDevice, type IbvContext, type IbvMr, type RdmaNode } from '../driver/index.ts';

/**
 * What a scenario's application does with verbs, in a few lines per step: open the
 * device, connect RC QPs, register, post, wait. Calls that must succeed throw a model
 * error naming the call, which fails the run with its seed.
 */
export const P = PAGE_SIZE;
export const RW = PROT_READ | PROT_WRITE;
export const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
export const ALL_ACCESS = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

export interface App {
  node: RdmaNode;
  k: Kernel;
  p: Process;
  ctx: IbvContext;
  pd: number;
  cq: CompletionQueue;
}

/** ibv_open_device, ibv_alloc_pd and ibv_create_cq for a process on a node. */
export function openApp(node: RdmaNode, p: Process): App {
  const ctx = openDevice(node.device, p);
  const pd = ctx.allocPd();
  const cq = must(ctx.createCq(4096), 'create_cq');
  return { node, k: node.kernel, p, ctx, pd, cq };
}

/** Transport attributes: 7 retries, ~4 ms ACK timeout, RNR retry forever, short RNR timer. */
export const QP_ATTR: QpAttr = { timeout: 10, retryCnt: 7, rnrRetry: 7, minRnrTimer: 1, maxRdAtomic: 16, maxDestRdAtomic: 16 };

/** One connected RC QP on each app (RESET, INIT, RTR, RTS through ibv_modify_qp). */
export function connectRc(a: App, b: App, attr: QpAttr = {}): [QueuePair, QueuePair] {
  const make = (app: App) => must(app.ctx.createQp({ qpType: IBV_QPT_RC, pd: app.pd, sendCq: app.cq, recvCq: app.cq, cap: { maxSendWr: 1024, maxRecvWr: 1024 } }), 'create_qp');
  const qa = make(a);
  const qb = make(b);
  const up = (app: App, qp: QueuePair, peer: App, peerQp: QueuePair) => {
    const at = { ...QP_ATTR, ...attr };
    must(app.ctx.modifyQp(qp, { qpState: IBV_QPS_INIT, qpAccessFlags: ALL_ACCESS }), 'modify_qp INIT');
    must(app.ctx.modifyQp(qp, { ...at, qpState: IBV_QPS_RTR, destQpNum: peerQp.qpNum, ahAttr: { dlid: peer.node.nic.lid } }), 'modify_qp RTR');
    must(app.ctx.modifyQp(qp, { ...at, qpState: IBV_QPS_RTS }), 'modify_qp RTS');
  };
  up(a, qa, b, qb);
  up(b, qb, a, qa);
  return [qa, qb];
}

export function must<T>(ret: T | number, what: string): T {
  if (typeof ret === 'number' && ret < 0) throw new Error(`${what} failed with ${errnoName(ret)}`);
  return ret as T;
}

/** mmap(private anonymous) of `pages` pages. */
export function* mapAnon(app: App, pages: number, prot = RW): Co<number> {
  return must(yield* app.p.mmap(0, pages * P, prot, ANON), 'mmap');
}

export function* store(app: App, addr: number, bytes: Uint8Array): Co {
  must(yield* app.p.store(addr, bytes), 'store');
}

export function* load(app: App, addr: number, length: number): Co<Uint8Array> {
  return must(yield* app.p.load(addr, length), 'load');
}

/** ibv_reg_mr that must succeed. */
export function* regOk(app: App, addr: number, length: number, access = ALL_ACCESS): Co<IbvMr> {
  return must(yield* app.ctx.regMr(app.pd, addr, length, access), 'reg_mr');
}

/** Wait for `n` completions on the app's CQ and poll them. */
export function* completions(app: App, n: number): Co<WorkCompletion[]> {
  yield* app.cq.waitFor(n);
  return app.ctx.pollCq(app.cq, n);
}

export function statusNames(wcs: readonly WorkCompletion[]): string {
  return wcs.map((w) => wcStatusName(w.status)).join(', ');
}

/** A deterministic byte pattern: `n` bytes derived from `seed`. */
export function pattern(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff;
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
