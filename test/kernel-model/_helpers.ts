/**
 * Shared set-up for the kernel-model tests: a kernel with one process, the notifier
 * stream recorded, a way to run a script as the process's main thread, and compact
 * renderings of invalidations so a test can compare them with the trigger table
 * (spec/kernel.md rule 21).
 */
import type { ExecutionContext } from 'ava';
import {
  Kernel, PAGE_SIZE, eventName, hex, vpn, pteFrame, ptePresent,
  type Co, type KernelOptions, type MmStruct, type NotifierStreamEvent, type Process,
} from '../../kernel-model/index.ts';
import { Dmirror } from '../../driver/index.ts';

export const P = PAGE_SIZE;
export const GiB = 1024 * 1024 * 1024;

export interface Rig {
  k: Kernel;
  p: Process;
  /** Every notifier phase of every mm of `k`, in order. */
  events: NotifierStreamEvent[];
}

export function rig(opts: KernelOptions = {}): Rig {
  const k = new Kernel({ seed: 1, ...opts });
  const p = k.createProcess('app');
  const events: NotifierStreamEvent[] = [];
  k.notifier$.subscribe((e) => events.push(e));
  return { k, p, events };
}

/**
 * Run `body` as the main thread of `r.p` until the simulation is idle. A model failure
 * (an exception in a task) fails the test with the seed; the thread must have finished.
 */
export function runMain(t: ExecutionContext, r: Rig, body: () => Co<void>): void {
  const task = r.p.spawnThread('main', body);
  const out = r.k.sim.run();
  if (out.reason === 'failed') t.fail(`run failed (seed ${out.seed}): ${out.failure ?? ''}`);
  t.true(task.done, `main thread did not finish (run ended: ${out.reason})`);
}

/** "phase EVENT start-end" for each notifier phase of `mm` (all mms when omitted). */
export function lines(events: readonly NotifierStreamEvent[], mm?: MmStruct): string[] {
  return events.filter((e) => mm === undefined || e.mm === mm.id).map(line);
}

export function line(e: NotifierStreamEvent): string {
  return `${e.phase} ${eventName(e.range.event)} ${hex(e.range.start)}-${hex(e.range.end)}`;
}

/** The start and end lines of one invalidation. */
export function pair(event: string, start: number, end: number): string[] {
  return [`start ${event} ${hex(start)}-${hex(end)}`, `end ${event} ${hex(start)}-${hex(end)}`];
}

/** A syscall that must succeed: its non-negative result, or the run fails. */
export function ok(ret: number, what: string): number {
  if (ret < 0) throw new Error(`${what} failed with ${ret}`);
  return ret;
}

/** A load that must succeed. */
export function bytes(ret: Uint8Array | number, what: string): Uint8Array {
  if (typeof ret === 'number') throw new Error(`${what} failed with ${ret}`);
  return ret;
}

export function fill(byte: number, n: number): Uint8Array {
  return new Uint8Array(n).fill(byte);
}

/** The frame the process's PTE maps at addr, or -1 when not present. */
export function frameAt(mm: MmStruct, addr: number): number {
  const pte = mm.pageTable.get(vpn(addr));
  return ptePresent(pte) ? pteFrame(pte) : -1;
}

/** Open a dmirror on `mm`, which must succeed (it subscribes to the whole address space). */
export function* openMirror(k: Kernel, mm: MmStruct, name = 'dmirror'): Co<Dmirror> {
  const d = yield* Dmirror.open(k, mm, name);
  if (typeof d === 'number') throw new Error(`Dmirror.open failed with ${d}`);
  return d;
}
