import { Subscription, type SchedulerAction, type SchedulerLike } from 'rxjs';

/** A pending event: a callback to run at a virtual instant. Cancel by setting `cancelled`. */
export interface SimEvent {
  readonly time: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/**
 * The simulation's only clock: a binary heap ordered by (virtual ns, insertion sequence).
 * Time and sequence live in typed arrays so that ordering compares touch contiguous
 * memory; with a million pending events a push or pop stays O(log n) and cache-friendly.
 *
 * It is also an rxjs `SchedulerLike`, so `timer(5_000, sim.scheduler)`, `delay` and
 * `bufferTime` run in virtual nanoseconds. Do not use rxjs's `VirtualTimeScheduler`:
 * it re-sorts its whole queue on every schedule.
 *
 * @example
 *   const s = new SimScheduler();
 *   s.after(100, () => console.log(s.now())); // prints 100 once run()
 */
export class SimScheduler implements SchedulerLike {
  private times = new Float64Array(1024);
  private seqs = new Float64Array(1024);
  private items: (SimEvent | undefined)[] = new Array(1024);
  private size = 0;
  private nextSeq = 0;
  private clock = 0;

  now(): number {
    return this.clock;
  }

  get pending(): number {
    return this.size;
  }

  /** Run `fn` at virtual time now + delay (ns, rounded to an integer, never negative). */
  after(delay: number, fn: () => void): SimEvent {
    const d = delay > 0 ? Math.round(delay) : 0;
    return this.push(this.clock + d, fn);
  }

  at(time: number, fn: () => void): SimEvent {
    return this.push(Math.max(this.clock, Math.round(time)), fn);
  }

  schedule<T>(work: (this: SchedulerAction<T>, state?: T) => void, delay = 0, state?: T): Subscription {
    return new SimAction<T>(this, work).schedule(state, delay);
  }

  /** Time of the earliest live event, or undefined when nothing is pending. */
  peekTime(): number | undefined {
    this.dropCancelledHead();
    return this.size > 0 ? this.times[0] : undefined;
  }

  /** Pop the earliest live event and advance the clock to it. */
  pop(): SimEvent | undefined {
    this.dropCancelledHead();
    if (this.size === 0) return undefined;
    const ev = this.removeHead();
    this.clock = ev.time;
    return ev;
  }

  private dropCancelledHead(): void {
    while (this.size > 0 && (this.items[0] as SimEvent).cancelled) this.removeHead();
  }

  private push(time: number, fn: () => void): SimEvent {
    const ev: SimEvent = { time, fn, cancelled: false };
    if (this.size === this.times.length) this.grow();
    let i = this.size++;
    const seq = this.nextSeq++;
    const { times, seqs, items } = this;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const pt = times[parent] as number;
      if (pt < time || (pt === time && (seqs[parent] as number) < seq)) break;
      times[i] = pt;
      seqs[i] = seqs[parent] as number;
      items[i] = items[parent];
      i = parent;
    }
    times[i] = time;
    seqs[i] = seq;
    items[i] = ev;
    return ev;
  }

  private removeHead(): SimEvent {
    const { times, seqs, items } = this;
    const head = items[0] as SimEvent;
    const last = --this.size;
    const t = times[last] as number;
    const s = seqs[last] as number;
    const it = items[last];
    items[last] = undefined;
    if (last === 0) return head;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= last) break;
      const right = child + 1;
      if (right < last) {
        const ct = times[child] as number;
        const rt = times[right] as number;
        if (rt < ct || (rt === ct && (seqs[right] as number) < (seqs[child] as number))) child = right;
      }
      const ct = times[child] as number;
      if (t < ct || (t === ct && s < (seqs[child] as number))) break;
      times[i] = ct;
      seqs[i] = seqs[child] as number;
      items[i] = items[child];
      i = child;
    }
    times[i] = t;
    seqs[i] = s;
    items[i] = it;
    return head;
  }

  private grow(): void {
    const n = this.times.length * 2;
    const times = new Float64Array(n);
    times.set(this.times);
    const seqs = new Float64Array(n);
    seqs.set(this.seqs);
    this.times = times;
    this.seqs = seqs;
    this.items.length = n;
  }
}

/** rxjs's view of one scheduled unit of work; rescheduling replaces the pending event. */
class SimAction<T> extends Subscription implements SchedulerAction<T> {
  private pendingEvent: SimEvent | undefined;

  constructor(
    private readonly scheduler: SimScheduler,
    private readonly work: (this: SchedulerAction<T>, state?: T) => void,
  ) {
    super();
    this.add(() => {
      if (this.pendingEvent) this.pendingEvent.cancelled = true;
    });
  }

  schedule(state?: T, delay = 0): Subscription {
    if (this.closed) return this;
    if (this.pendingEvent) this.pendingEvent.cancelled = true;
    this.pendingEvent = this.scheduler.after(delay, () => {
      this.pendingEvent = undefined;
      if (!this.closed) this.work(state);
    });
    return this;
  }
}
