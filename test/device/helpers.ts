/**
 * Test fixtures for the NIC model: a fake memory behind a DmaBus-compatible face, nodes
 * (a NIC and its memory) on a fabric, connected RC pairs, and buffers (an MR with frames).
 */
import type { ExecutionContext } from 'ava';
import type { Subscription } from 'rxjs';
import type { Co } from '../../kernel-model/sim/index.ts';
import { Simulation } from '../../kernel-model/sim/index.ts';
import {
  CompletionQueue, DEVICE_PAGE_SIZE, Fabric, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_REMOTE_ATOMIC,
  IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE, IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC,
  MemoryRegion, Nic, QueuePair, wcStatusName, type DeviceDmaBus, type DeviceFault, type FabricOptions, type NicOptions, type QpAttr,
  type WorkCompletion,
} from '../../device/index.ts';

/** Physical memory for tests: frames are byte arrays, allocated on demand. */
export class FakeMemory implements DeviceDmaBus {
  private readonly pages = new Map<number, Uint8Array>();
  private next = 1;

  alloc(): number {
    return this.next++;
  }

  page(frame: number): Uint8Array {
    let p = this.pages.get(frame);
    if (!p) this.pages.set(frame, (p = new Uint8Array(DEVICE_PAGE_SIZE)));
    return p;
  }

  read(frame: number, offset: number, length: number): Uint8Array {
    return this.page(frame).slice(offset, offset + length);
  }

  write(frame: number, offset: number, bytes: Uint8Array): void {
    if (offset + bytes.length > DEVICE_PAGE_SIZE) throw new RangeError('write crosses a page');
    this.page(frame).set(bytes, offset);
  }
}

export const ALL_ACCESS = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

export interface Node {
  sim: Simulation;
  nic: Nic;
  mem: FakeMemory;
  pd: number;
  cq: CompletionQueue;
}

export function makeNode(sim: Simulation, fabric: Fabric | undefined, name: string, opts: Partial<NicOptions> = {}): Node {
  const mem = new FakeMemory();
  const { fabric: _ignored, ...rest } = opts;
  const nic = new Nic(sim, mem, { name, ...rest, ...(fabric ? { fabric } : {}) });
  const pd = nic.allocPd();
  const cq = nic.createCq(1024) as CompletionQueue;
  return { sim, nic, mem, pd, cq };
}

/** Two nodes on a fabric. */
export function twoNodes(opts: Omit<Partial<NicOptions>, 'fabric'> & { seed?: number; fabric?: Partial<FabricOptions> } = {}): { sim: Simulation; a: Node; b: Node; fabric: Fabric } {
  const sim = new Simulation({ seed: opts.seed ?? 1 });
  const fabric = new Fabric(sim, opts.fabric);
  const nicOpts = { ...opts, fabric: undefined };
  return { sim, fabric, a: makeNode(sim, fabric, 'a', nicOpts), b: makeNode(sim, fabric, 'b', nicOpts) };
}

export function createQp(n: Node, cq = n.cq): QueuePair {
  const qp = n.nic.createQp({ qpType: IBV_QPT_RC, pd: n.pd, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4096, maxRecvWr: 4096 } });
  if (typeof qp === 'number') throw new Error(`createQp: ${qp}`);
  return qp;
}

/** Default transport attributes for tests: 7 retries, 4.096 µs * 2^10 ≈ 4.2 ms timeout, 0.01 ms RNR timer. */
export const TEST_ATTR: QpAttr = { timeout: 10, retryCnt: 7, rnrRetry: 7, minRnrTimer: 1, maxRdAtomic: 16, maxDestRdAtomic: 16 };

export function connect(a: Node, qa: QueuePair, b: Node, qb: QueuePair, attr: QpAttr = {}): void {
  const at = { ...TEST_ATTR, ...attr };
  for (const [n, q, peerNic, peerQp] of [[a, qa, b.nic, qb], [b, qb, a.nic, qa]] as const) {
    ok(n.nic.modifyQp(q, { qpState: IBV_QPS_INIT, qpAccessFlags: ALL_ACCESS }));
    ok(n.nic.modifyQp(q, { ...at, qpState: IBV_QPS_RTR, destQpNum: peerQp.qpNum, ahAttr: { dlid: peerNic.lid } }));
    ok(n.nic.modifyQp(q, { ...at, qpState: IBV_QPS_RTS }));
  }
}

/** An RC QP on each node, connected. */
export function rcPair(a: Node, b: Node, attr: QpAttr = {}): [QueuePair, QueuePair] {
  const qa = createQp(a);
  const qb = createQp(b);
  connect(a, qa, b, qb, attr);
  return [qa, qb];
}

function ok(ret: number): void {
  if (ret !== 0) throw new Error(`verbs call failed: ${ret}`);
}

export interface Buffer {
  mr: MemoryRegion;
  iova: number;
  length: number;
  /** Frame of each page, whether mapped or not. */
  frames: number[];
}

/** Register an MR over fresh frames (not yet mapped in the device page table). */
export function buffer(n: Node, iova: number, pages: number, opts: { access?: number; onDemand?: boolean; pd?: number } = {}): Buffer {
  const mr = n.nic.createMr({ pd: opts.pd ?? n.pd, iova, length: pages * DEVICE_PAGE_SIZE, access: opts.access ?? ALL_ACCESS, onDemand: opts.onDemand ?? false });
  if (typeof mr === 'number') throw new Error(`createMr: ${mr}`);
  const frames: number[] = [];
  for (let i = 0; i < pages; i++) frames.push(n.mem.alloc());
  return { mr, iova, length: pages * DEVICE_PAGE_SIZE, frames };
}

/** Install the buffer's pages [first, first + count) in the device page table. */
export function* mapBuffer(n: Node, buf: Buffer, first = 0, count = buf.frames.length - first, writable = true): Co {
  const r = yield* n.nic.updateEntries(buf.mr, first, buf.frames.slice(first, first + count), writable);
  if (r !== 0) throw new Error(`updateEntries: ${r}`);
}

/** Fill a buffer's memory with a byte pattern (directly, as the CPU would). */
export function fill(n: Node, buf: Buffer, byteAt: (i: number) => number): void {
  for (let p = 0; p < buf.frames.length; p++) {
    const bytes = new Uint8Array(DEVICE_PAGE_SIZE);
    for (let i = 0; i < DEVICE_PAGE_SIZE; i++) bytes[i] = byteAt(p * DEVICE_PAGE_SIZE + i) & 0xff;
    n.mem.write(buf.frames[p] as number, 0, bytes);
  }
}

/** Bytes [offset, offset + length) of a buffer, read from memory. */
export function contents(n: Node, buf: Buffer, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; ) {
    const at = offset + i;
    const p = Math.floor(at / DEVICE_PAGE_SIZE);
    const o = at % DEVICE_PAGE_SIZE;
    const n2 = Math.min(DEVICE_PAGE_SIZE - o, length - i);
    out.set(n.mem.read(buf.frames[p] as number, o, n2), i);
    i += n2;
  }
  return out;
}

/** Run a script task to completion; fail the test on a model failure. */
export function runScript(t: ExecutionContext, sim: Simulation, body: () => Co, limits: { untilNs?: number } = {}): void {
  const task = sim.spawn('test', body);
  const out = sim.run({ untilNs: limits.untilNs ?? 60_000_000_000, task });
  t.is(out.failure, undefined, out.failure);
  t.true(task.done, `script did not finish (run ended: ${out.reason} at ${out.now} ns)`);
}

export function statusNames(wcs: readonly WorkCompletion[]): string[] {
  return wcs.map((w) => wcStatusName(w.status));
}

/**
 * A stand-in for the driver's fault handler: on each fault, after `delayNs`, install the
 * faulting buffer's pages over [iova, iova + length) (read-write unless `readOnly`) and
 * resume. Faults on keys it does not know are resumed with the error bit.
 */
export function pager(n: Node, bufs: Buffer[], opts: { delayNs?: number; readOnly?: boolean; log?: DeviceFault[]; resume?: boolean } = {}): Subscription {
  return n.nic.fault$.subscribe((f) => {
    opts.log?.push(f);
    if (opts.resume === false) return;
    n.sim.spawn(`pager-${f.id}`, function* () {
      if (opts.delayNs) yield* n.sim.sleep(opts.delayNs);
      const buf = bufs.find((b) => b.mr.lkey === f.mrKey);
      if (!buf) {
        n.nic.resumeFault(f.id, { error: true });
        return;
      }
      const first = buf.mr.pageIndexOf(f.iova);
      const last = Math.min(buf.frames.length - 1, buf.mr.pageIndexOf(f.iova + Math.max(f.length, 1) - 1));
      yield* mapBuffer(n, buf, first, last - first + 1, !opts.readOnly);
      n.nic.resumeFault(f.id);
    }, { kind: 'worker' });
  });
}
