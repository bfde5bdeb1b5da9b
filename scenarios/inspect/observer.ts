/**
 * The inspector's eyes on a run: it subscribes to the streams (the trace, each kernel's
 * notifier stream, each NIC's faults and commands, a sanitizer of its own) and keeps what
 * the model does not hold in one place (open invalidation ranges, lock holders and
 * waiters, GUP references per frame, task names). It takes snapshots at the instants it is
 * asked for, synchronously, while the event that reached the instant is delivered: like the
 * sanitizer it observes and never steers.
 *
 * A time instant T is the state after every engine event at or before T: a marker event at
 * T steps behind any other event of that instant (it re-queues itself at T while others are
 * pending there), then reads the state. Marker events run no model code, so the run and its
 * trace are the same with or without them.
 */
import type { Observable, Subscription } from 'rxjs';
import type { Kernel, MmuNotifierRange, Simulation, TraceRecord } from '../../kernel-model/index.ts';
import { eventName } from '../../kernel-model/index.ts';
import type { RdmaNode } from '../../driver/index.ts';
import { attachSanitizer, type MrBinding, type Sanitizer, type Violation } from '../../sanitizer/index.ts';
import {
  fmtNs, hex, takeSnapshot, type LockInfo, type ObservedState, type OpenInvalidation, type TaskInfo, type WorldSnapshot,
} from './snapshot.ts';

/** A point of the timeline (what the HTML page draws). */
export interface TimelineMark {
  t: number;
  kind: 'invalidate-start' | 'invalidate-end' | 'cpu-fault' | 'device-fault' | 'sync' | 'violation';
  text: string;
}

/** What to capture: instants the observer snapshots when the run reaches them. */
export interface CaptureHooks {
  /** Called for each mark as it happens; return true to snapshot there. */
  onMark?(mark: TimelineMark): boolean;
}

export class WorldObserver implements ObservedState {
  readonly marks: TimelineMark[] = [];
  readonly violations: Violation[] = [];
  readonly snapshots: WorldSnapshot[] = [];
  /** Trace records seen (the next record's seq is at least this). */
  records = 0;
  private readonly subs: Subscription[] = [];
  private readonly taskNames = new Map<number, TaskInfo>();
  private readonly holders = new Map<string, Map<number, number>>();
  private readonly waiters = new Map<string, Set<number>>();
  private readonly gup = new Map<string, Map<number, { pins: number; gets: number }>>();
  private readonly open = new Map<Kernel, Map<MmuNotifierRange, OpenInvalidation>>();
  readonly sanitizer: Sanitizer;
  private recordTargets = new Map<number, (r: TraceRecord) => void>();
  private violationTargets = new Map<number, (v: Violation) => void>();

  constructor(readonly sim: Simulation, readonly nodes: readonly RdmaNode[], private readonly hooks: CaptureHooks = {}) {
    this.subs.push(sim.trace$.subscribe((r) => this.onRecord(r)));
    for (const n of nodes) {
      const k = n.kernel;
      const open = new Map<MmuNotifierRange, OpenInvalidation>();
      this.open.set(k, open);
      this.subs.push(k.notifier$.subscribe((ev) => {
        const what = `${eventName(ev.range.event)} [${hex(ev.range.start)}, ${hex(ev.range.end)}) of ${k.node} mm${ev.mm}`;
        if (ev.phase === 'start') {
          const task = sim.current;
          open.set(ev.range, {
            mm: ev.mm, start: ev.range.start, end: ev.range.end, event: eventName(ev.range.event), blockable: ev.blockable,
            curSeq: ev.curSeq, since: ev.time, task: task ? `${task.id} ${task.name}` : null,
          });
          this.mark({ t: ev.time, kind: 'invalidate-start', text: `invalidate start: ${what}${ev.blockable ? '' : ' (non-blockable)'}` });
        } else {
          // The end is marked before the range leaves the open set: the instant shows it closing.
          this.mark({ t: ev.time, kind: 'invalidate-end', text: `invalidate ${ev.phase === 'eagain' ? '-EAGAIN' : 'end'}: ${what}` });
          open.delete(ev.range);
        }
      }));
      this.subs.push(n.nic.fault$.subscribe((f) => this.mark({
        t: sim.now(), kind: 'device-fault',
        text: `device fault on ${f.nic}: qp ${f.qpNum} key ${hex(f.mrKey)} iova ${hex(f.iova)} ${f.write ? 'write' : 'read'} (${f.reason})`,
      })));
      this.subs.push(n.nic.command$.subscribe((c) => {
        if (c.kind === 'sync') this.mark({ t: sim.now(), kind: 'sync', text: `sync on ${c.nic} (began ${fmtNs(c.begin)})` });
      }));
    }
    this.sanitizer = attachSanitizer({
      sim, kernels: nodes.map((n) => n.kernel), nics: nodes.map((n) => n.nic),
      bindings$: nodes.map((n) => n.device.binding$ as Observable<MrBinding>),
      rcache$: nodes.map((n) => n.device.rcache$),
    });
    this.subs.push(this.sanitizer.violation$.subscribe((v) => {
      this.violations.push(v);
      const index = this.violations.length;
      this.mark({ t: v.time, kind: 'violation', text: `violation ${index}: ${v.id}: ${v.message}` }, {
        violation: { index, id: v.id, severity: v.severity, message: v.message },
      });
      this.violationTargets.get(index)?.(v);
    }));
  }

  private mark(m: TimelineMark, extra: Partial<WorldSnapshot> = {}): void {
    this.marks.push(m);
    if (!this.hooks.onMark?.(m)) return;
    const v = extra.violation;
    this.snapshot(v ? `violation ${v.index} (${v.id})` : `${m.kind} at ${fmtNs(m.t)}`, extra);
  }

  private onRecord(r: TraceRecord): void {
    this.records = r.seq + 1;
    const task = r.task;
    switch (r.type) {
      case 'task-spawn':
        this.taskNames.set(r.id, { id: r.id, name: r.name, kind: r.kind });
        break;
      case 'task-exit':
        this.taskNames.delete(r.id);
        break;
      case 'lock-acquire': {
        if (task === null) break;
        let h = this.holders.get(r.lock);
        if (!h) this.holders.set(r.lock, (h = new Map()));
        h.set(task, (h.get(task) ?? 0) + 1);
        this.waiters.get(r.lock)?.delete(task);
        break;
      }
      case 'lock-release': {
        if (task === null) break;
        const h = this.holders.get(r.lock);
        const n = h?.get(task) ?? 0;
        if (h && n <= 1) h.delete(task);
        else h?.set(task, n - 1);
        break;
      }
      case 'lock-contend': {
        if (task === null) break;
        let w = this.waiters.get(r.lock);
        if (!w) this.waiters.set(r.lock, (w = new Set()));
        w.add(task);
        break;
      }
      case 'gup':
      case 'gup-release': {
        let m = this.gup.get(r.node);
        if (!m) this.gup.set(r.node, (m = new Map()));
        const sign = r.type === 'gup' ? 1 : -1;
        for (const f of r.frames) {
          if (f === 0) continue; // the zero page is never counted (kernel rule 55)
          const e = m.get(f) ?? { pins: 0, gets: 0 };
          if (r.pin) e.pins += sign;
          else e.gets += sign;
          if (e.pins <= 0 && e.gets <= 0) m.delete(f);
          else m.set(f, e);
        }
        break;
      }
      case 'fault':
        this.mark({ t: r.t, kind: 'cpu-fault', text: `CPU fault on ${r.node} mm${r.mm} at ${hex(r.addr)} (${r.write ? 'write' : 'read'}, ${r.kind}) = ${r.ret}` });
        break;
      default:
        break;
    }
    this.recordTargets.get(r.seq)?.(r);
  }

  // ---- ObservedState -------------------------------------------------------------------------

  openInvalidations(k: Kernel): OpenInvalidation[] {
    return [...(this.open.get(k)?.values() ?? [])].sort((a, b) => a.since - b.since || a.start - b.start);
  }

  gupRefs(k: Kernel): Map<number, { pins: number; gets: number }> {
    return this.gup.get(k.node) ?? new Map();
  }

  locks(): LockInfo[] {
    const names = new Set([...this.holders.keys(), ...this.waiters.keys()]);
    const out: LockInfo[] = [];
    const who = (id: number) => `${id} ${this.taskNames.get(id)?.name ?? '?'}`;
    for (const lock of [...names].sort()) {
      const h = [...(this.holders.get(lock)?.keys() ?? [])].map(who);
      const w = [...(this.waiters.get(lock) ?? [])].map(who);
      if (h.length || w.length) out.push({ lock, holders: h, waiters: w });
    }
    return out;
  }

  tasks(): TaskInfo[] {
    return [...this.taskNames.values()].sort((a, b) => a.id - b.id);
  }

  // ---- capturing -----------------------------------------------------------------------------

  /** The world now. */
  snapshot(at: string, extra: Partial<WorldSnapshot> = {}): WorldSnapshot {
    const s = { ...takeSnapshot(this.nodes, this, at), ...extra };
    this.snapshots.push(s);
    return s;
  }

  /** Snapshot at virtual time `t` (after every event at or before it); `done` gets it. */
  atTime(t: number, label: string, done: (s: WorldSnapshot) => void): void {
    const sched = this.sim.scheduler;
    let hops = 0;
    const fire = () => {
      // Step behind the other events of this instant (bounded: a busy instant cannot hang us).
      if (sched.peekTime() === t && hops++ < 100_000) {
        sched.at(t, fire);
        return;
      }
      done(this.snapshot(label));
    };
    sched.at(Math.max(t, this.sim.now()), fire);
  }

  /** Snapshot when trace record `seq` is emitted. */
  atRecord(seq: number, done: (s: WorldSnapshot) => void): void {
    this.recordTargets.set(seq, (r) => done(this.snapshot(`trace record ${seq}`, { record: JSON.stringify(r) })));
  }

  /** Snapshot when the sanitizer reports its `index`-th violation (1-based). */
  atViolation(index: number, done: (s: WorldSnapshot) => void): void {
    this.violationTargets.set(index, (v) => done(this.snapshot(`violation ${index} (${v.id})`, {
      violation: { index, id: v.id, severity: v.severity, message: v.message },
    })));
  }

  /** End-of-run checks of the observer's sanitizer (they may report violations too), then detach. */
  finish(): void {
    this.sanitizer.finish();
    this.sanitizer.detach();
    for (const s of this.subs) s.unsubscribe();
  }
}
