import type { Subscription } from 'rxjs';
import { hex, type Kernel, type Simulation, type TraceRecord } from '../kernel-model/index.ts';
import type { DeviceAccess, Nic } from '../device/index.ts';
import type { Violation } from '../sanitizer/index.ts';

/** One Chrome trace event (the JSON format ui.perfetto.dev and Chrome's trace engine open). */
export interface ChromeTraceEvent {
  name: string;
  ph: 'B' | 'E' | 'X' | 'b' | 'e' | 's' | 'f' | 'C' | 'M' | 'i';
  ts: number;
  pid: number;
  tid?: number;
  dur?: number;
  cat?: string;
  id?: number;
  bp?: 'e';
  s?: 't' | 'p' | 'g';
  args?: Record<string, unknown>;
}

/** How DMA accesses appear: one instant per work request's run of accesses, or one per access. */
export type DmaDetail = 'per-wr' | 'all';

export interface PerfettoOptions {
  /** Default `per-wr`: contiguous accesses of one work request make one instant (with their count). */
  dma?: DmaDetail;
}

/*
 * Categories. Chrome's trace engine binds a flow event to the slice with the same ts, pid,
 * tid and category (FlowsHandler.js: flowPhaseBindingToken), and both it and Perfetto key a
 * flow by its id, category and name (json_trace_parser_impl.cc: GetFlowIdForV1Event), so
 * both ends of a flow and the flow events themselves share one category: `driver`.
 */
const CAT_KERNEL = 'kernel';
const CAT_DRIVER = 'driver';
const CAT_DMA = 'dma';
const CAT_FAULT = 'nic-fault';
const CAT_SANITIZER = 'sanitizer';

/*
 * Process ids. Each node gets a block, so two nodes' pid 100 stay two processes; within a
 * block, 0 is the node's kernel threads, a user process keeps its Linux pid, and the last
 * id is the node's NIC. Tasks with no node (the story's script) go in SCRIPT_PID, the
 * sanitizer's findings in SANITIZER_PID.
 */
const SCRIPT_PID = 1;
const SANITIZER_PID = 2;
const NODE_PID_BLOCK = 100_000;
const NIC_PID_OFFSET = NODE_PID_BLOCK - 1;
/** Thread ids of device tracks: above every engine task id a run can reach in a test. */
const DEVICE_TID_BASE = 1_000_000_000;
const COMMAND_TRACK = 0;
const SANITIZER_TID = 1;

const FLOW_INVALIDATION = 'invalidation → sync';
const FLOW_FAULT = 'fault → resume';

const us = (ns: number) => ns / 1000;

interface OpenSlice {
  ev: ChromeTraceEvent;
  kind: 'syscall' | 'invalidation' | 'callback';
}

interface NodeInfo {
  index: number;
  kernel: Kernel;
  nic: Nic;
}

interface TaskInfo {
  pid: number;
  tid: number;
}

interface DmaRun {
  first: DeviceAccess;
  lastEnd: number;
  lastTime: number;
  bytes: number;
  accesses: number;
  stale: number;
  fenced: number;
  frames: Set<number>;
}

/**
 * Records a run as a Chrome trace that Perfetto and Chrome's trace engine both draw.
 *
 * - Each task is a thread of its process (user threads under their process, kernel threads
 *   under their node's "kernel", device tasks under their NIC, the story's script under
 *   "scenario"), named once, from the first spawn: attach before anything is spawned.
 * - System calls, invalidations and notifier callbacks are spans on the task's track.
 * - A flow joins a notifier callback to the device sync its own notifier issued (directly,
 *   or through a batching worker that names the tasks it syncs for), and a NIC fault's
 *   raise to the handler's resume of that same fault. Nothing else is joined: a sync does
 *   not fence an invalidation whose notifier did not ask for it.
 * - NIC faults are async slices on one track name ("NIC fault") with the iova in args;
 *   device commands are spans on the NIC's "translation commands" track; DMA accesses,
 *   violations and each violation's trail steps are instants with args; counters show
 *   pinned pages per node and the fault queue depth per NIC.
 *
 * @example
 *   const t = new PerfettoTrace(sim); t.addNode(kernel, nic); sim.run(); writeFileSync(f, t.toJson());
 */
export class PerfettoTrace {
  readonly events: ChromeTraceEvent[] = [];
  /** Flow events to write right after the slice they bind to (same ts; see `toJson`). */
  private readonly attached = new Map<ChromeTraceEvent, ChromeTraceEvent[]>();
  private readonly subs: Subscription[] = [];
  private readonly nodes: NodeInfo[] = [];
  private readonly tasks = new Map<number, TaskInfo>();
  private readonly open = new Map<number, OpenSlice[]>();
  private readonly named = new Set<string>();
  /** Requesters a batching worker announced, keyed by the worker's task, until its sync. */
  private readonly batchFor = new Map<number, ChromeTraceEvent[]>();
  private readonly faultFlows = new Map<string, { id: number; raised: ChromeTraceEvent }>();
  private readonly dmaRuns = new Map<string, DmaRun>();
  private flowSeq = 1;
  private asyncSeq = 1;
  private readonly dma: DmaDetail;
  /** Flows whose two ends fell on the same instant: neither engine can draw them (FlowsHandler keys a flow's slices by ts). */
  skippedFlows = 0;

  constructor(private readonly sim: Simulation, opts: PerfettoOptions = {}) {
    this.dma = opts.dma ?? 'per-wr';
    this.processName(SCRIPT_PID, 'scenario');
    this.subs.push(sim.trace$.subscribe((r) => this.onRecord(r)));
  }

  /** Add a node's kernel and NIC (before it runs anything). */
  addNode(kernel: Kernel, nic: Nic): void {
    const sim = this.sim;
    const node: NodeInfo = { index: this.nodes.length, kernel, nic };
    this.nodes.push(node);
    const base = this.nodeBase(node);
    this.processName(base, `kernel (node ${kernel.node})`);
    const nicPid = base + NIC_PID_OFFSET;
    this.processName(nicPid, `NIC ${nic.name} (node ${kernel.node})`);
    const commandTid = this.deviceTid(node, COMMAND_TRACK);
    this.threadName(nicPid, commandTid, 'translation commands');
    this.subs.push(nic.fault$.subscribe((f) => {
      const ts = us(sim.now());
      const tid = this.deviceTid(node, f.qpNum);
      this.threadName(nicPid, tid, `QP ${f.qpNum}`);
      const args = { fault: f.id, iova: hex(f.iova), write: f.write, qp: f.qpNum, side: f.side, mrKey: hex(f.mrKey) };
      const asyncId = this.asyncSeq++;
      this.events.push({ name: 'NIC fault', ph: 'b', cat: CAT_FAULT, id: asyncId, ts, pid: nicPid, tid, args });
      const raised: ChromeTraceEvent = { name: 'fault raised', ph: 'i', s: 't', cat: CAT_DRIVER, ts, pid: nicPid, tid, args };
      this.events.push(raised);
      this.faultFlows.set(`${nic.name}:${f.id}`, { id: asyncId, raised });
      this.counter(nicPid, 'fault queue depth', nic.pendingFaults().length);
    }));
    this.subs.push(nic.faultResume$.subscribe((r) => {
      const key = `${nic.name}:${r.fault.id}`;
      const started = this.faultFlows.get(key);
      this.faultFlows.delete(key);
      const ts = us(r.time);
      const qpTid = this.deviceTid(node, r.fault.qpNum);
      const handler = sim.current;
      const where = handler ? this.taskInfo(handler.id) : { pid: nicPid, tid: qpTid };
      const resumed: ChromeTraceEvent = {
        name: r.error ? 'fault resumed (error)' : 'fault resumed', ph: 'i', s: 't', cat: CAT_DRIVER, ts, pid: where.pid, tid: where.tid,
        args: { fault: r.fault.id, iova: hex(r.fault.iova), error: r.error },
      };
      this.events.push(resumed);
      if (started) {
        this.events.push({ name: 'NIC fault', ph: 'e', cat: CAT_FAULT, id: started.id, ts, pid: nicPid, tid: qpTid, args: { error: r.error } });
        this.flow(FLOW_FAULT, started.raised, resumed);
      }
      this.counter(nicPid, 'fault queue depth', Math.max(0, nic.pendingFaults().length - 1));
    }));
    this.subs.push(nic.command$.subscribe((c) => {
      const ev: ChromeTraceEvent = {
        name: c.kind === 'sync' ? 'sync' : `${c.kind} ${c.count} pages`, ph: 'X', cat: CAT_DRIVER,
        ts: us(c.begin), dur: us(c.end - c.begin), pid: nicPid, tid: commandTid,
        args: c.kind === 'sync' ? {} : { mrKey: hex(c.mrKey), firstPage: c.firstPage, count: c.count },
      };
      this.events.push(ev);
      if (c.kind !== 'sync' || c.task === null) return;
      const batch = this.batchFor.get(c.task);
      if (batch) {
        this.batchFor.delete(c.task);
        for (const cb of batch) this.flow(FLOW_INVALIDATION, cb, ev);
        return;
      }
      const cb = this.openCallback(c.task);
      if (cb) this.flow(FLOW_INVALIDATION, cb, ev);
    }));
    this.subs.push(nic.access$.subscribe((a) => this.onAccess(node, a)));
  }

  /** Record the sanitizer's findings: each violation, and each step of its trail, as an instant. */
  addViolations(violations: readonly Violation[]): void {
    this.threadName(SANITIZER_PID, SANITIZER_TID, 'violations');
    this.processName(SANITIZER_PID, 'sanitizer');
    violations.forEach((v, n) => {
      this.events.push({
        name: v.id, ph: 'i', s: 't', cat: CAT_SANITIZER, ts: us(v.time), pid: SANITIZER_PID, tid: SANITIZER_TID,
        args: { violation: n, severity: v.severity, message: v.message, trailSteps: v.trail.length },
      });
      for (const step of v.trail) {
        const where = step.task != null && this.tasks.has(step.task) ? this.taskInfo(step.task) : { pid: SANITIZER_PID, tid: SANITIZER_TID };
        this.events.push({
          name: `${v.id} trail: ${step.kind}`, ph: 'i', s: 't', cat: CAT_SANITIZER, ts: us(step.time), pid: where.pid, tid: where.tid,
          args: { violation: n, step: step.kind, text: step.text },
        });
      }
    });
  }

  private nodeBase(node: NodeInfo): number {
    return (node.index + 1) * NODE_PID_BLOCK;
  }

  private deviceTid(node: NodeInfo, track: number): number {
    return DEVICE_TID_BASE + node.index * NODE_PID_BLOCK + track;
  }

  private nodeNamed(name: string | null): NodeInfo | undefined {
    return name === null ? undefined : this.nodes.find((n) => n.kernel.node === name);
  }

  /** The process a task belongs to (see the pid blocks above). */
  private placeTask(r: Extract<TraceRecord, { type: 'task-spawn' }>): number {
    let node = this.nodeNamed(r.node);
    if (r.kind === 'device' || !node) {
      // Device tasks and driver workers are named after their NIC or IB device (`a-nic.qp16.send`, `a-ib/page-fault`).
      const byName = this.nodes.find((n) => r.name.startsWith(`${n.kernel.node}-`));
      if (r.kind === 'device' && byName) return this.nodeBase(byName) + NIC_PID_OFFSET;
      node ??= byName;
    }
    if (!node) return SCRIPT_PID;
    const base = this.nodeBase(node);
    if (r.pid === null) return base;
    const pid = base + r.pid;
    this.processName(pid, `${r.name.split('/')[0] ?? r.name} (pid ${r.pid}, node ${node.kernel.node})`);
    return pid;
  }

  private taskInfo(task: number): TaskInfo {
    let info = this.tasks.get(task);
    if (!info) {
      // A task spawned before the trace attached: still give it its own named track.
      info = { pid: SCRIPT_PID, tid: task };
      this.tasks.set(task, info);
      this.threadName(SCRIPT_PID, task, `task ${task}`);
    }
    return info;
  }

  private processName(pid: number, name: string): void {
    const key = `p${pid}`;
    if (this.named.has(key)) return;
    this.named.add(key);
    this.events.push({ name: 'process_name', ph: 'M', ts: 0, pid, args: { name } });
  }

  private threadName(pid: number, tid: number, name: string): void {
    const key = `t${pid}:${tid}`;
    if (this.named.has(key)) return;
    this.named.add(key);
    this.events.push({ name: 'thread_name', ph: 'M', ts: 0, pid, tid, args: { name } });
  }

  private counter(pid: number, name: string, value: number): void {
    this.events.push({ name, ph: 'C', ts: us(this.sim.now()), pid, args: { value } });
  }

  /**
   * A flow from one slice to another: an `s` event bound to `from` and an `f` event (binding
   * point "enclosing slice") bound to `to`, each written right after its slice with the same
   * ts, pid, tid and category, and a numeric id.
   */
  private flow(name: string, from: ChromeTraceEvent, to: ChromeTraceEvent): void {
    if (from.ts === to.ts) {
      this.skippedFlows++;
      return;
    }
    const id = this.flowSeq++;
    this.attach(from, { name, ph: 's', cat: from.cat as string, id, ts: from.ts, pid: from.pid, tid: from.tid as number });
    this.attach(to, { name, ph: 'f', bp: 'e', cat: to.cat as string, id, ts: to.ts, pid: to.pid, tid: to.tid as number });
  }

  private attach(slice: ChromeTraceEvent, flow: ChromeTraceEvent): void {
    const list = this.attached.get(slice);
    if (list) list.push(flow);
    else this.attached.set(slice, [flow]);
  }

  private begin(task: number, kind: OpenSlice['kind'], name: string, cat: string, ts: number, args?: Record<string, unknown>): void {
    const { pid, tid } = this.taskInfo(task);
    const ev: ChromeTraceEvent = { name, ph: 'B', cat, ts: us(ts), pid, tid };
    if (args) ev.args = args;
    this.events.push(ev);
    const stack = this.open.get(task);
    if (stack) stack.push({ ev, kind });
    else this.open.set(task, [{ ev, kind }]);
  }

  private end(task: number, ts: number): void {
    const top = this.open.get(task)?.pop();
    if (top) this.events.push({ name: top.ev.name, ph: 'E', cat: top.ev.cat as string, ts: us(ts), pid: top.ev.pid, tid: top.ev.tid as number });
  }

  /** The innermost notifier callback open on a task, inside an invalidation. */
  private openCallback(task: number): ChromeTraceEvent | undefined {
    const stack = this.open.get(task);
    if (!stack) return undefined;
    for (let i = stack.length - 1; i >= 0; i--) {
      const s = stack[i] as OpenSlice;
      if (s.kind === 'callback') return stack.slice(0, i).some((o) => o.kind === 'invalidation') ? s.ev : undefined;
    }
    return undefined;
  }

  private onRecord(r: TraceRecord): void {
    const task = r.task;
    switch (r.type) {
      case 'task-spawn': {
        const pid = this.placeTask(r);
        this.tasks.set(r.id, { pid, tid: r.id });
        this.threadName(pid, r.id, `${r.name} [${r.kind}]`);
        return;
      }
      case 'syscall-begin':
        if (task !== null) this.begin(task, 'syscall', r.name, CAT_KERNEL, r.t, { args: r.args, pid: r.pid, node: r.node });
        return;
      case 'syscall-end':
        if (task !== null) this.end(task, r.t);
        this.pinnedCounter(r.node);
        return;
      case 'invalidate-start':
        if (task !== null) this.begin(task, 'invalidation', `invalidate ${r.event}`, CAT_KERNEL, r.t, { start: hex(r.start), end: hex(r.end), mm: r.mm, blockable: r.blockable, curSeq: r.curSeq });
        return;
      case 'invalidate-end':
      case 'invalidate-eagain':
        if (task !== null) this.end(task, r.t);
        return;
      case 'callback-start':
        if (task !== null) this.begin(task, 'callback', `${r.sub}: ${r.op}`, CAT_DRIVER, r.t, { start: hex(r.start), end: hex(r.end), event: r.event });
        return;
      case 'callback-return':
        if (task !== null) this.end(task, r.t);
        return;
      case 'sync-batch': {
        if (task === null) return;
        const callbacks: ChromeTraceEvent[] = [];
        for (const t of r.requesters) {
          const cb = this.openCallback(t);
          if (cb) callbacks.push(cb);
        }
        this.batchFor.set(task, callbacks);
        return;
      }
      case 'task-exit':
        while ((this.open.get(r.id)?.length ?? 0) > 0) this.end(r.id, r.t);
        this.open.delete(r.id);
        return;
      default:
        return;
    }
  }

  private onAccess(node: NodeInfo, a: DeviceAccess): void {
    if (this.dma === 'all') {
      this.dmaInstant(node, { first: a, lastEnd: a.iova + a.length, lastTime: a.time, bytes: a.length, accesses: 1, stale: a.stale ? 1 : 0, fenced: a.fenced ? 1 : 0, frames: new Set([a.frame]) });
      return;
    }
    // One work request's accesses are contiguous in iova on one QP side with one opcode and
    // key; anything else starts the next run.
    const key = `${node.index}:${a.qpNum}:${a.side}`;
    const run = this.dmaRuns.get(key);
    if (run && run.first.opcode === a.opcode && run.first.mrKey === a.mrKey && run.first.write === a.write && run.lastEnd === a.iova) {
      run.lastEnd = a.iova + a.length;
      run.lastTime = a.time;
      run.bytes += a.length;
      run.accesses++;
      if (a.stale) run.stale++;
      if (a.fenced) run.fenced++;
      run.frames.add(a.frame);
      return;
    }
    if (run) this.dmaInstant(node, run);
    this.dmaRuns.set(key, { first: a, lastEnd: a.iova + a.length, lastTime: a.time, bytes: a.length, accesses: 1, stale: a.stale ? 1 : 0, fenced: a.fenced ? 1 : 0, frames: new Set([a.frame]) });
  }

  private dmaInstant(node: NodeInfo, run: DmaRun): void {
    const a = run.first;
    const pid = this.nodeBase(node) + NIC_PID_OFFSET;
    const tid = this.deviceTid(node, a.qpNum);
    this.threadName(pid, tid, `QP ${a.qpNum}`);
    this.events.push({
      name: a.write ? 'DMA write' : 'DMA read', ph: 'i', s: 't', cat: CAT_DMA, ts: us(a.time), pid, tid,
      args: {
        side: a.side, opcode: a.opcode, mrKey: hex(a.mrKey), iova: hex(a.iova), bytes: run.bytes, accesses: run.accesses,
        frames: [...run.frames].slice(0, 16), lastAccessUs: us(run.lastTime), stale: run.stale, fenced: run.fenced,
      },
    });
  }

  private pinnedCounter(nodeName: string): void {
    const node = this.nodeNamed(nodeName);
    if (!node) return;
    let pinned = 0;
    for (const p of node.kernel.processes.values()) pinned += p.mm.pinnedVm;
    this.counter(this.nodeBase(node), 'pinned pages (pinned_vm)', pinned);
  }

  /** Close spans still open (a run cut by a limit), flush DMA runs and return the trace JSON. */
  toJson(): string {
    const now = this.sim.now();
    for (const [task, stack] of this.open) while (stack.length > 0) this.end(task, now);
    for (const [key, run] of this.dmaRuns) {
      const node = this.nodes[Number(key.split(':')[0])];
      if (node) this.dmaInstant(node, run);
    }
    this.dmaRuns.clear();
    for (const s of this.subs) s.unsubscribe();
    this.subs.length = 0;
    // Each flow event right after the slice it binds to: at one ts Perfetto keeps file order
    // and binds `s` and `f` (bp "e") to the topmost slice open on the thread's track.
    const parts: string[] = [];
    for (const ev of this.events) {
      parts.push(JSON.stringify(ev));
      const flows = this.attached.get(ev);
      if (flows) for (const f of flows) parts.push(JSON.stringify(f));
    }
    return `{"traceEvents":[\n${parts.join(',\n')}\n],"displayTimeUnit":"ns"}\n`;
  }
}
