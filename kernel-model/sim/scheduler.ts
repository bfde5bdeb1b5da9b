import { Subscription, type SchedulerAction, type SchedulerLike } from 'rxjs';

/** A pending event: a callback to run at a virtual instant. Cancel by setting `cancelled`. */
export interface SimEvent {
  readonly time: number;
  /** Insertion sequence: orders events of the same instant. */
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/** Bounds on the number of calendar buckets; a rebuild aims at ~4 events per bucket. */
const MIN_BUCKETS = 64;
const MAX_BUCKETS = 16384;

/**
 * The simulation's only clock: events ordered by (virtual ns, insertion sequence).
 *
 * A two-tier priority queue, so that the cost per event does not grow with the number
 * pending. Events due before `horizon` sit in a small binary heap (time and sequence in
 * typed arrays, so comparisons touch contiguous memory); later ones wait unsorted in a
 * ring of calendar buckets of equal width, and those past the ring in an overflow list.
 * When the heap runs dry the next non-empty bucket is moved into it; when the ring runs
 * dry it is rebuilt from the overflow with a width fitted to what is there. A push is
 * O(1) or O(log k) for a heap of k << n; each event is moved between tiers at most twice.
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
  /** Every pending event earlier than this is in the heap. */
  private horizon = 0;
  private ringBase = 0;
  private ringWidth = 1;
  private ringCursor = 0;
  private ringCount = 0;
  private ring: SimEvent[][] = Array.from({ length: MIN_BUCKETS }, () => []);
  private overflow: SimEvent[] = [];

  now(): number {
    return this.clock;
  }

  get pending(): number {
    return this.size + this.ringCount + this.overflow.length;
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
    for (;;) {
      if (this.size === 0 && !this.refill()) return;
      if (!(this.items[0] as SimEvent).cancelled) return;
      this.removeHead();
    }
  }

  private push(time: number, fn: () => void): SimEvent {
    const ev: SimEvent = { time, seq: this.nextSeq++, fn, cancelled: false };
    this.place(ev);
    return ev;
  }

  private place(ev: SimEvent): void {
    if (ev.time < this.horizon) {
      this.heapPush(ev);
      return;
    }
    const idx = Math.floor((ev.time - this.ringBase) / this.ringWidth);
    if (idx < this.ring.length) {
      (this.ring[idx] as SimEvent[]).push(ev);
      this.ringCount++;
    } else {
      this.overflow.push(ev);
    }
  }

  /** The heap is empty: move the next bucket in, rebuilding the ring if needed. */
  private refill(): boolean {
    for (;;) {
      if (this.ringCount > 0) {
        while ((this.ring[this.ringCursor] as SimEvent[]).length === 0) this.ringCursor++;
        // The bucket's array stays in the ring, emptied, for the next pass to fill: no new
        // array (and no regrowth) per bucket drained.
        const bucket = this.ring[this.ringCursor] as SimEvent[];
        this.ringCount -= bucket.length;
        this.ringCursor++;
        this.horizon = this.ringBase + this.ringCursor * this.ringWidth;
        for (let i = 0; i < bucket.length; i++) {
          const ev = bucket[i] as SimEvent;
          if (!ev.cancelled) this.heapPush(ev);
        }
        bucket.length = 0;
        if (this.size > 0) return true;
        continue;
      }
      const live = this.overflow.filter((ev) => !ev.cancelled);
      this.overflow = [];
      if (live.length === 0) return false;
      let min = Infinity;
      let max = -Infinity;
      for (const ev of live) {
        if (ev.time < min) min = ev.time;
        if (ev.time > max) max = ev.time;
      }
      let buckets = MIN_BUCKETS;
      while (buckets < MAX_BUCKETS && buckets * 4 < live.length) buckets *= 2;
      if (buckets !== this.ring.length) this.ring = Array.from({ length: buckets }, () => []);
      this.ringBase = min;
      this.ringWidth = Math.max(1, Math.ceil((max - min + 1) / buckets));
      this.ringCursor = 0;
      this.horizon = min;
      for (const ev of live) this.place(ev);
    }
  }

  private heapPush(ev: SimEvent): void {
    if (this.size === this.times.length) this.grow();
    const { time, seq } = ev;
    let i = this.size++;
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
