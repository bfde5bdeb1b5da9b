import { Subscription, type SchedulerAction, type SchedulerLike } from 'rxjs';

/** A pending event: a callback to run at a virtual instant. Cancel by setting `cancelled`. */
export interface SimEvent {
  readonly time: number;
  /** Insertion sequence: orders events of the same instant. */
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/**
 * An event scheduled with `call`/`callAt`: a number (no object), which `cancel` takes. It
 * names the event's slot and its sequence number, so a stale id (of an event that already
 * ran, whose slot now holds another) cancels nothing.
 */
export type EventId = number;

/** Bounds on the number of calendar buckets; a rebuild aims at ~4 events per bucket. */
const MIN_BUCKETS = 64;
const MAX_BUCKETS = 1 << 20;
const EVENTS_PER_BUCKET = 4;
/** Event ids: slot in the low bits, the sequence number modulo 2^SEQ_BITS above it. */
const SLOT_BITS = 24;
const SLOT_SPAN = 2 ** SLOT_BITS;
const SEQ_SPAN = 2 ** 29;
/** Overflow times sampled to fit the ring's span to the distribution (a ring buffer). */
const SAMPLES = 1024;
/** Past this many samples, one overflow push in SAMPLE_EVERY is sampled. */
const SAMPLE_EVERY = 16;
/** The ring spans the overflow up to this quantile; the tail past it stays in the overflow. */
const SPAN_QUANTILE = 15 / 16;
const NONE = -1;

type Callback = (arg: never) => void;

/**
 * The simulation's only clock: events ordered by (virtual ns, insertion sequence).
 *
 * Built so that the cost per event does not grow with the number pending, up to millions:
 * - A pending event is not an object. Its time and sequence number sit in one typed array
 *   (`meta`, two doubles per slot: one cache line holds both), its callback and argument in
 *   two plain arrays, and the list it is on in a typed array of links. Slots are reused
 *   last-freed-first, so a push right after a pop writes memory that is still in cache.
 *   Nothing per event is left for the garbage collector (`call`; `after` also returns a
 *   handle object for the callers that keep one).
 * - Two tiers. Events due before `horizon` sit in a small binary heap (time, sequence and
 *   slot in typed arrays); later ones wait unsorted in a ring of calendar buckets of equal
 *   width (linked lists through the slots), and those past the ring in an overflow list.
 *   When the heap runs dry the next non-empty bucket is moved into it; when the ring runs
 *   dry it is rebuilt from the overflow.
 * - The bucket width adapts to the event-time distribution: a rebuild takes ~4 events per
 *   bucket and spans the ring from the earliest overflow event to the 15/16 quantile of a
 *   running sample of overflow times (not to the latest: one far-off timer among a million
 *   near events would otherwise make every bucket wide and the heap big). The tail past the
 *   quantile stays in the overflow for a later rebuild, fitted to what is there then.
 *
 * It is also an rxjs `SchedulerLike`, so `timer(5_000, sim.scheduler)`, `delay` and
 * `bufferTime` run in virtual nanoseconds. Do not use rxjs's `VirtualTimeScheduler`:
 * it re-sorts its whole queue on every schedule.
 *
 * @example
 *   const s = new SimScheduler();
 *   s.after(100, () => console.log(s.now())); // prints 100 once run()
 *   const id = s.call(50, (x: string) => console.log(x), 'hi');
 *   s.cancel(id);
 */
export class SimScheduler implements SchedulerLike {
  // ---- the slots ----
  /**
   * Four doubles per slot, in one 32-byte run so that walking a list touches one cache line
   * per event: time, sequence number, the next slot on the same list (bucket, overflow or
   * free list; NONE ends it), and 1 once cancelled.
   */
  private meta = new Float64Array(4 * 1024);
  /** Three references per slot: callback (null once cancelled), its argument, and the handle `after`/`at` returned (so `pop` gives back the same object). */
  private cbs: unknown[] = new Array(3 * 1024);
  private capacity = 1024;
  private used = 0;
  private freeHead = NONE;
  // ---- the heap (events before horizon) ----
  private hTime = new Float64Array(256);
  private hSeq = new Float64Array(256);
  private hSlot = new Int32Array(256);
  private size = 0;
  // ---- the ring and the overflow ----
  private heads = new Int32Array(MIN_BUCKETS).fill(NONE);
  private ringBase = 0;
  private ringWidth = 1;
  private ringCursor = 0;
  private ringCount = 0;
  /** Every pending event earlier than this is in the heap. */
  private horizon = 0;
  /** The overflow's slots, in a plain array: a rebuild reads it in order, and the loads it makes from each slot do not wait on one another (no list to chase). */
  private ov = new Int32Array(1024);
  private ovSpare = new Int32Array(1024);
  private ovCount = 0;
  private ovMin = Infinity;
  private readonly sample = new Float64Array(SAMPLES);
  private sampled = 0;
  private sampleTick = 0;
  // ---- the clock ----
  private nextSeq = 0;
  private clock = 0;

  now(): number {
    return this.clock;
  }

  /** Events scheduled and not yet run (cancelled ones count until they are reached). */
  get pending(): number {
    return this.size + this.ringCount + this.ovCount;
  }

  /** Run `fn` at virtual time now + delay (ns, rounded to an integer, never negative). */
  after(delay: number, fn: () => void): SimEvent {
    const d = delay > 0 ? Math.round(delay) : 0;
    return this.handle(this.push(this.clock + d, fn, undefined));
  }

  at(time: number, fn: () => void): SimEvent {
    return this.handle(this.push(Math.max(this.clock, Math.round(time)), fn, undefined));
  }

  /**
   * Run `fn(arg)` at now + delay (ns, rounded, never negative) with no object allocated:
   * the engine's own path (a task's wake-up is `call(ns, resume, task)`). Returns an id
   * that `cancel` takes.
   */
  call<A>(delay: number, fn: (arg: A) => void, arg: A): EventId {
    const d = delay > 0 ? Math.round(delay) : 0;
    return this.push(this.clock + d, fn as Callback, arg);
  }

  /** `call` at an absolute virtual time (a time in the past means now). */
  callAt<A>(time: number, fn: (arg: A) => void, arg: A): EventId {
    return this.push(Math.max(this.clock, Math.round(time)), fn as Callback, arg);
  }

  /** Cancel an event by the id `call` returned; false if it already ran or was cancelled. */
  cancel(id: EventId): boolean {
    const slot = id % SLOT_SPAN;
    const seq = this.meta[4 * slot + 1] as number;
    if (slot >= this.used || seq % SEQ_SPAN !== Math.floor(id / SLOT_SPAN)) return false;
    return this.cancelSlot(slot, seq);
  }

  schedule<T>(work: (this: SchedulerAction<T>, state?: T) => void, delay = 0, state?: T): Subscription {
    return new SimAction<T>(this, work).schedule(state, delay);
  }

  /** Time of the earliest live event, or undefined when nothing is pending. */
  peekTime(): number | undefined {
    this.dropCancelledHead();
    return this.size > 0 ? this.hTime[0] : undefined;
  }

  /** Pop the earliest live event and advance the clock to it (tests and tools; the engine uses `runNext`). */
  pop(): SimEvent | undefined {
    this.dropCancelledHead();
    if (this.size === 0) return undefined;
    const slot = this.hSlot[0] as number;
    const c = 3 * slot;
    const ref = (this.cbs[c + 2] as EventRef | undefined) ?? new EventRef(this, slot, this.hTime[0] as number, this.hSeq[0] as number);
    const fn = this.cbs[c] as (a: unknown) => void;
    const arg = this.cbs[c + 1];
    this.removeHead();
    this.free(slot);
    this.clock = ref.time;
    ref.ran(arg === undefined ? (fn as () => void) : () => fn(arg));
    return ref;
  }

  /**
   * Pop the earliest live event, advance the clock to it and run it. False when nothing is
   * pending. Its slot is free before it runs, so what it schedules can reuse it.
   */
  runNext(): boolean {
    this.dropCancelledHead();
    if (this.size === 0) return false;
    const slot = this.hSlot[0] as number;
    const cbs = this.cbs;
    const c = 3 * slot;
    const fn = cbs[c] as (a: unknown) => void;
    const arg = cbs[c + 1];
    const ref = cbs[c + 2] as EventRef | undefined;
    this.clock = this.hTime[0] as number;
    this.removeHead();
    this.free(slot);
    if (ref !== undefined) ref.ran(fn as () => void);
    fn(arg);
    return true;
  }

  // ---- handles ---------------------------------------------------------------------------

  private handle(id: EventId): SimEvent {
    const slot = id % SLOT_SPAN;
    const ref = new EventRef(this, slot, this.meta[4 * slot] as number, this.meta[4 * slot + 1] as number);
    this.cbs[3 * slot + 2] = ref;
    return ref;
  }

  /** For EventRef: is the event in `slot` with sequence `seq` still pending and live? */
  isLive(slot: number, seq: number): boolean {
    return slot < this.used && this.meta[4 * slot + 1] === seq && this.cbs[3 * slot] != null;
  }

  /** For EventRef: its callback while it is pending. */
  callbackOf(slot: number, seq: number): (() => void) | undefined {
    if (!this.isLive(slot, seq)) return undefined;
    const fn = this.cbs[3 * slot] as (a: unknown) => void;
    const arg = this.cbs[3 * slot + 1];
    return arg === undefined ? (fn as () => void) : () => fn(arg);
  }

  /** Cancel the event in `slot` if it is still the live one with sequence `seq`. */
  cancelSlot(slot: number, seq: number): boolean {
    if (!this.isLive(slot, seq)) return false;
    this.meta[4 * slot + 3] = 1;
    this.cbs[3 * slot] = null;
    this.cbs[3 * slot + 1] = undefined;
    return true;
  }

  // ---- slots -----------------------------------------------------------------------------

  private push(time: number, fn: Callback, arg: unknown): EventId {
    let slot = this.freeHead;
    if (slot !== NONE) {
      this.freeHead = this.meta[4 * slot + 2] as number;
    } else {
      if (this.used === this.capacity) this.growSlots();
      slot = this.used++;
    }
    const seq = this.nextSeq++;
    const m = 4 * slot;
    const meta = this.meta;
    meta[m] = time;
    meta[m + 1] = seq;
    meta[m + 3] = 0;
    this.cbs[3 * slot] = fn;
    this.cbs[3 * slot + 1] = arg;
    this.place(slot, time, seq);
    return (seq % SEQ_SPAN) * SLOT_SPAN + slot;
  }

  private free(slot: number): void {
    const c = 3 * slot;
    const cbs = this.cbs;
    cbs[c] = undefined;
    cbs[c + 1] = undefined;
    cbs[c + 2] = undefined;
    this.meta[4 * slot + 2] = this.freeHead;
    this.freeHead = slot;
  }

  private growSlots(): void {
    const n = this.capacity * 2;
    if (n > SLOT_SPAN) throw new RangeError(`more than ${SLOT_SPAN} events pending`);
    const meta = new Float64Array(4 * n);
    meta.set(this.meta);
    this.meta = meta;
    this.cbs.length = 3 * n;
    this.capacity = n;
  }

  // ---- tiers -----------------------------------------------------------------------------

  private place(slot: number, time: number, seq: number): void {
    if (time < this.horizon) {
      this.heapPush(time, seq, slot);
      return;
    }
    const idx = Math.floor((time - this.ringBase) / this.ringWidth);
    if (idx < this.heads.length) {
      this.meta[4 * slot + 2] = this.heads[idx] as number;
      this.heads[idx] = slot;
      this.ringCount++;
      return;
    }
    if (this.ovCount === this.ov.length) {
      const grown = new Int32Array(2 * this.ov.length);
      grown.set(this.ov);
      this.ov = grown;
    }
    this.ov[this.ovCount++] = slot;
    if (time < this.ovMin) this.ovMin = time;
    if (this.sampled < SAMPLES) {
      this.sample[this.sampled++] = time;
    } else if (++this.sampleTick % SAMPLE_EVERY === 0) {
      this.sample[(this.sampleTick / SAMPLE_EVERY) % SAMPLES] = time;
    }
  }

  private dropCancelledHead(): void {
    for (;;) {
      if (this.size === 0 && !this.refill()) return;
      const slot = this.hSlot[0] as number;
      if (this.meta[4 * slot + 3] === 0) return;
      this.removeHead();
      this.free(slot);
    }
  }

  /** The heap is empty: move the next bucket in, rebuilding the ring if needed. */
  private refill(): boolean {
    for (;;) {
      if (this.ringCount > 0) {
        const heads = this.heads;
        let cursor = this.ringCursor;
        while (heads[cursor] === NONE) cursor++;
        let slot = heads[cursor] as number;
        heads[cursor] = NONE;
        this.ringCursor = ++cursor;
        this.horizon = this.ringBase + cursor * this.ringWidth;
        const meta = this.meta;
        while (slot !== NONE) {
          const m = 4 * slot;
          const next = meta[m + 2] as number;
          this.ringCount--;
          if (meta[m + 3] !== 0) this.free(slot);
          else this.heapPush(meta[m] as number, meta[m + 1] as number, slot);
          slot = next;
        }
        if (this.size > 0) return true;
        continue;
      }
      if (this.ovCount === 0) return false;
      this.rebuild();
    }
  }

  /** The ring is empty: refit it to the overflow and move the overflow's front into it. */
  private rebuild(): void {
    const list = this.ov;
    const count = this.ovCount;
    const min = this.ovMin;
    // The span: to the SPAN_QUANTILE of the sampled overflow times (or all of it).
    const n = Math.min(this.sampled, SAMPLES);
    const s = this.sample.subarray(0, n).sort();
    let hi = n > 0 ? (s[Math.min(n - 1, Math.floor(n * SPAN_QUANTILE))] as number) : min;
    if (!(hi >= min)) hi = min;
    let buckets = MIN_BUCKETS;
    while (buckets < MAX_BUCKETS && buckets * EVENTS_PER_BUCKET < count * SPAN_QUANTILE) buckets *= 2;
    if (buckets !== this.heads.length) this.heads = new Int32Array(buckets);
    this.heads.fill(NONE);
    // Re-placing may send the tail back to the overflow: into the spare array, not the one read.
    this.ov = this.ovSpare.length >= count ? this.ovSpare : new Int32Array(list.length);
    this.ovSpare = list;
    this.ovCount = 0;
    this.ovMin = Infinity;
    this.sampled = 0;
    this.sampleTick = 0;
    const meta = this.meta;
    if (!Number.isFinite(min)) {
      // Only events at an infinite time are left: they go to the heap, in sequence order.
      this.ringBase = 0;
      this.ringWidth = 1;
      this.ringCursor = buckets;
      this.horizon = Infinity;
      for (let i = 0; i < count; i++) {
        const slot = list[i] as number;
        const m = 4 * slot;
        if (meta[m + 3] !== 0) this.free(slot);
        else this.heapPush(meta[m] as number, meta[m + 1] as number, slot);
      }
      return;
    }
    this.ringBase = min;
    this.ringWidth = Number.isFinite(hi) ? Math.max(1, Math.ceil((hi - min + 1) / buckets)) : Number.MAX_SAFE_INTEGER;
    this.ringCursor = 0;
    this.horizon = min;
    for (let i = 0; i < count; i++) {
      const slot = list[i] as number;
      const m = 4 * slot;
      if (meta[m + 3] !== 0) this.free(slot);
      else this.place(slot, meta[m] as number, meta[m + 1] as number);
    }
  }

  // ---- the heap --------------------------------------------------------------------------

  private heapPush(time: number, seq: number, slot: number): void {
    if (this.size === this.hTime.length) this.growHeap();
    let i = this.size++;
    const { hTime, hSeq, hSlot } = this;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const pt = hTime[parent] as number;
      if (pt < time || (pt === time && (hSeq[parent] as number) < seq)) break;
      hTime[i] = pt;
      hSeq[i] = hSeq[parent] as number;
      hSlot[i] = hSlot[parent] as number;
      i = parent;
    }
    hTime[i] = time;
    hSeq[i] = seq;
    hSlot[i] = slot;
  }

  private removeHead(): void {
    const { hTime, hSeq, hSlot } = this;
    const last = --this.size;
    if (last === 0) return;
    const t = hTime[last] as number;
    const s = hSeq[last] as number;
    const it = hSlot[last] as number;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= last) break;
      const right = child + 1;
      if (right < last) {
        const ct = hTime[child] as number;
        const rt = hTime[right] as number;
        if (rt < ct || (rt === ct && (hSeq[right] as number) < (hSeq[child] as number))) child = right;
      }
      const ct = hTime[child] as number;
      if (t < ct || (t === ct && s < (hSeq[child] as number))) break;
      hTime[i] = ct;
      hSeq[i] = hSeq[child] as number;
      hSlot[i] = hSlot[child] as number;
      i = child;
    }
    hTime[i] = t;
    hSeq[i] = s;
    hSlot[i] = it;
  }

  private growHeap(): void {
    const n = this.hTime.length * 2;
    const t = new Float64Array(n);
    t.set(this.hTime);
    const q = new Float64Array(n);
    q.set(this.hSeq);
    const s = new Int32Array(n);
    s.set(this.hSlot);
    this.hTime = t;
    this.hSeq = q;
    this.hSlot = s;
  }
}

/** The handle `after`/`at` return: reads and cancels the event through its slot. */
class EventRef implements SimEvent {
  private done: (() => void) | undefined;
  private cancelledAfterRun = false;

  constructor(
    private readonly scheduler: SimScheduler,
    private readonly slot: number,
    readonly time: number,
    readonly seq: number,
  ) {}

  /** The scheduler ran (or popped) it: keep its callback for readers of `fn`. */
  ran(fn: () => void): void {
    this.done = fn;
  }

  get fn(): () => void {
    return this.done ?? this.scheduler.callbackOf(this.slot, this.seq) ?? noop;
  }

  get cancelled(): boolean {
    if (this.done !== undefined) return this.cancelledAfterRun;
    return !this.scheduler.isLive(this.slot, this.seq);
  }

  set cancelled(v: boolean) {
    if (!v) return;
    if (this.done !== undefined) {
      this.cancelledAfterRun = true;
      return;
    }
    this.scheduler.cancelSlot(this.slot, this.seq);
  }
}

function noop(): void {}

/** rxjs's view of one scheduled unit of work; rescheduling replaces the pending event. */
class SimAction<T> extends Subscription implements SchedulerAction<T> {
  private pendingEvent: EventId | undefined;
  private state: T | undefined;

  constructor(
    private readonly scheduler: SimScheduler,
    private readonly work: (this: SchedulerAction<T>, state?: T) => void,
  ) {
    super();
    this.add(() => {
      if (this.pendingEvent !== undefined) this.scheduler.cancel(this.pendingEvent);
    });
  }

  schedule(state?: T, delay = 0): Subscription {
    if (this.closed) return this;
    if (this.pendingEvent !== undefined) this.scheduler.cancel(this.pendingEvent);
    this.state = state;
    this.pendingEvent = this.scheduler.call(delay, fireAction, this as SimAction<unknown>);
    return this;
  }

  /** Its event came due. */
  fire(): void {
    this.pendingEvent = undefined;
    if (!this.closed) this.work(this.state);
  }
}

function fireAction(action: SimAction<unknown>): void {
  action.fire();
}
