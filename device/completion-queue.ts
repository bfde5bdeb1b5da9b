import { Observable, Subject } from 'rxjs';
import type { Co, Simulation } from '../kernel-model/sim/index.ts';
import type { WorkCompletion } from './work-completion.ts';

/**
 * A completion queue (`struct ibv_cq`): CQEs in the order the device wrote them, taken
 * with `poll` (`ibv_poll_cq`). A CQ that is full when the device writes overruns: the CQE
 * is lost, `overrun` is set and the NIC reports IBV_EVENT_CQ_ERR.
 *
 * @example
 *   yield* cq.wait();              // in a task: sleep until a CQE is there
 *   const [wc] = cq.poll(1);
 */
export class CompletionQueue {
  private entries: WorkCompletion[] = [];
  private head = 0;
  private readonly subject = new Subject<WorkCompletion>();
  private waiters: (() => void)[] = [];
  /** Every CQE as it is written (emitted only while observed). */
  readonly completion$: Observable<WorkCompletion> = this.subject.asObservable();
  overrun = false;
  /** CQEs written over the CQ's life. */
  written = 0;

  constructor(private readonly sim: Simulation, readonly cqNum: number, readonly capacity: number) {}

  /** CQEs waiting to be polled. */
  get length(): number {
    return this.entries.length - this.head;
  }

  /** `ibv_poll_cq`: take up to `max` CQEs, oldest first. */
  poll(max = 1): WorkCompletion[] {
    const n = Math.min(max, this.length);
    const out = this.entries.slice(this.head, this.head + n);
    this.head += n;
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    return out;
  }

  /** Take every waiting CQE. */
  drain(): WorkCompletion[] {
    return this.poll(this.length);
  }

  /** Sleep (in a task) until at least one CQE is waiting. */
  *wait(): Co {
    while (this.length === 0) yield* this.sim.park<void>((wake) => this.waiters.push(() => wake()));
  }

  /** Sleep until at least `n` CQEs are waiting. */
  *waitFor(n: number): Co {
    while (this.length < n) yield* this.sim.park<void>((wake) => this.waiters.push(() => wake()));
  }

  /** Device side: write a CQE. Returns false on overrun. */
  push(wc: WorkCompletion): boolean {
    if (this.length >= this.capacity) {
      this.overrun = true;
      return false;
    }
    this.entries.push(wc);
    this.written++;
    if (this.subject.observed) this.subject.next(wc);
    if (this.waiters.length > 0) {
      const ws = this.waiters;
      this.waiters = [];
      for (const w of ws) w();
    }
    return true;
  }
}
