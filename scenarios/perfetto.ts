import type { Subscription } from 'rxjs';
import { hex, type Kernel, type Simulation, type TraceRecord } from '../kernel-model/index.ts';
import type { Nic } from '../device/index.ts';

/** One Chrome trace event (the JSON format ui.perfetto.dev opens). */
export interface ChromeTraceEvent {
  name: string;
  ph: 'B' | 'E' | 'X' | 'b' | 'e' | 's' | 'f' | 'C' | 'M' | 'i';
  ts: number;
  pid: number;
  tid?: number;
  dur?: number;
  cat?: string;
  id?: string;
  bp?: 'e';
  s?: 't' | 'p' | 'g';
  args?: Record<string, unknown>;
}

const KERNEL_PID = 1;
const DEVICE_PID_BASE = 1_000_000;
const COMMAND_TID = 1;
const us = (ns: number) => ns / 1000;

/**
 * Records a run as a Chrome trace: syscalls and notifier callbacks as spans on per-task
 * tracks (grouped by process; kernel threads under "kernel"), invalidations as spans with
 * flows to the device sync that fenced them, NIC faults as async slices with flows from
 * raise to resume, device commands on a per-NIC track, counters for pinned pages and fault
 * queue depth, and metadata naming processes and threads. Attach before `sim.run()`.
 *
 * @example
 *   const t = new PerfettoTrace(sim, [kernel], [nic]); sim.run(); writeFileSync(f, t.toJson());
 */
export class PerfettoTrace {
  readonly events: ChromeTraceEvent[] = [];
  private readonly subs: Subscription[] = [];
  private readonly taskPid = new Map<number, number>();
  private readonly open = new Map<number, string[]>();
  private readonly pendingInvalidations: { id: string; t: number; pid: number; tid: number }[] = [];
  private flowSeq = 0;

  constructor(private readonly sim: Simulation, private readonly kernels: readonly Kernel[], nics: readonly Nic[]) {
    this.meta(KERNEL_PID, undefined, 'process_name', 'kernel');
    this.subs.push(sim.trace$.subscribe((r) => this.onRecord(r)));
    nics.forEach((nic, i) => {
      const pid = DEVICE_PID_BASE + i;
      this.meta(pid, undefined, 'process_name', `NIC ${nic.name}`);
      this.meta(pid, COMMAND_TID, 'thread_name', 'translation commands');
      this.subs.push(nic.fault$.subscribe((f) => {
        const id = `${nic.name}:fault:${f.id}`;
        const tid = 100 + f.qpNum;
        this.meta(pid, tid, 'thread_name', `QP ${f.qpNum}`);
        this.events.push({ name: `fault ${f.write ? 'write' : 'read'} ${hex(f.iova)}`, ph: 'b', cat: 'nic-fault', id, ts: us(sim.now()), pid, tid });
        this.events.push({ name: 'fault raised', ph: 'X', ts: us(sim.now()), dur: 0.001, pid, tid });
        this.events.push({ name: 'fault → resume', ph: 's', cat: 'flow', id, ts: us(sim.now()), pid, tid, bp: 'e' });
        this.counter(pid, 'fault queue depth', nic.pendingFaults().length);
      }));
      this.subs.push(nic.faultResume$.subscribe((r) => {
        const id = `${nic.name}:fault:${r.fault.id}`;
        const task = sim.current;
        const tpid = task ? this.pidOf(task.id) : pid;
        const ttid = task ? task.id : 100 + r.fault.qpNum;
        this.events.push({ name: `resume fault ${r.fault.id}${r.error ? ' (error)' : ''}`, ph: 'X', ts: us(r.time), dur: 0.001, pid: tpid, tid: ttid });
        this.events.push({ name: 'fault → resume', ph: 'f', cat: 'flow', id, ts: us(r.time), pid: tpid, tid: ttid, bp: 'e' });
        this.events.push({ name: `fault ${r.fault.write ? 'write' : 'read'} ${hex(r.fault.iova)}`, ph: 'e', cat: 'nic-fault', id, ts: us(r.time), pid, tid: 100 + r.fault.qpNum });
        this.counter(pid, 'fault queue depth', Math.max(0, nic.pendingFaults().length - 1));
      }));
      this.subs.push(nic.command$.subscribe((c) => {
        this.events.push({ name: c.kind === 'sync' ? 'sync' : `${c.kind} ${c.count} pages`, ph: 'X', ts: us(c.begin), dur: us(c.end - c.begin), pid, tid: COMMAND_TID, args: { mrKey: c.mrKey, firstPage: c.firstPage } });
        if (c.kind !== 'sync') return;
        // Every invalidation that started before this sync began is fenced by it.
        for (const inv of this.pendingInvalidations.splice(0)) {
          if (inv.t > c.begin) {
            this.pendingInvalidations.push(inv);
            continue;
          }
          this.events.push({ name: 'invalidation → sync', ph: 's', cat: 'flow', id: inv.id, ts: us(inv.t), pid: inv.pid, tid: inv.tid, bp: 'e' });
          this.events.push({ name: 'invalidation → sync', ph: 'f', cat: 'flow', id: inv.id, ts: us(c.begin), pid, tid: COMMAND_TID, bp: 'e' });
        }
      }));
    });
  }

  private pidOf(task: number): number {
    return this.taskPid.get(task) ?? KERNEL_PID;
  }

  private meta(pid: number, tid: number | undefined, name: 'process_name' | 'thread_name', value: string): void {
    const ev: ChromeTraceEvent = { name, ph: 'M', ts: 0, pid, args: { name: value } };
    if (tid !== undefined) ev.tid = tid;
    this.events.push(ev);
  }

  private counter(pid: number, name: string, value: number): void {
    this.events.push({ name, ph: 'C', ts: us(this.sim.now()), pid, args: { value } });
  }

  private begin(task: number, name: string, ts: number, args?: Record<string, unknown>): void {
    const stack = this.open.get(task) ?? [];
    stack.push(name);
    this.open.set(task, stack);
    const ev: ChromeTraceEvent = { name, ph: 'B', ts: us(ts), pid: this.pidOf(task), tid: task };
    if (args) ev.args = args;
    this.events.push(ev);
  }

  private end(task: number, ts: number): void {
    const name = this.open.get(task)?.pop();
    if (name !== undefined) this.events.push({ name, ph: 'E', ts: us(ts), pid: this.pidOf(task), tid: task });
  }

  private onRecord(r: TraceRecord): void {
    const task = r.task;
    switch (r.type) {
      case 'task-spawn': {
        const pid = r.pid ?? KERNEL_PID;
        this.taskPid.set(r.id, pid);
        if (r.pid !== null) this.meta(pid, undefined, 'process_name', `pid ${r.pid} ${r.name.split('/')[0] ?? ''}`);
        this.meta(pid, r.id, 'thread_name', `${r.name} [${r.kind}]`);
        return;
      }
      case 'syscall-begin':
        if (task !== null) this.begin(task, r.name, r.t, { args: r.args });
        return;
      case 'syscall-end':
        if (task !== null) this.end(task, r.t);
        this.pinnedCounter();
        return;
      case 'invalidate-start':
        if (task !== null) {
          this.begin(task, `invalidate ${r.event} [${hex(r.start)}, ${hex(r.end)})`, r.t, { blockable: r.blockable, curSeq: r.curSeq });
          this.pendingInvalidations.push({ id: `inv:${this.flowSeq++}`, t: r.t, pid: this.pidOf(task), tid: task });
        }
        return;
      case 'invalidate-end':
      case 'invalidate-eagain':
        if (task !== null) this.end(task, r.t);
        return;
      case 'callback-start':
        if (task !== null) this.begin(task, `${r.sub}: ${r.op}`, r.t);
        return;
      case 'callback-return':
        if (task !== null) this.end(task, r.t);
        return;
      case 'task-exit':
        for (const _ of this.open.get(r.id) ?? []) this.end(r.id, r.t);
        return;
      default:
        return;
    }
  }

  private pinnedCounter(): void {
    let pinned = 0;
    for (const k of this.kernels) for (const p of k.processes.values()) pinned += p.mm.pinnedVm;
    this.counter(KERNEL_PID, 'pinned pages (pinned_vm)', pinned);
  }

  /** Close spans still open (a run cut by a limit) and return the trace JSON. */
  toJson(): string {
    const now = this.sim.now();
    for (const [task, stack] of this.open) while (stack.length > 0) this.end(task, now);
    for (const s of this.subs) s.unsubscribe();
    return JSON.stringify({ traceEvents: this.events, displayTimeUnit: 'ns' });
  }
}

