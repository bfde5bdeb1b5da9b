/**
 * The engine's clock (DESIGN "The engine": one scheduler, a binary heap ordered by
 * (time, insertion sequence) that is also rxjs's SchedulerLike; real timers fail a run;
 * every run is bounded).
 */
import test from 'ava';
import { fc, testProp } from '@fast-check/ava';
import { bufferTime, delay, interval, map, merge, of, take, throwError, timer } from 'rxjs';
import { DEFAULT_RUN_LIMITS, SimScheduler, Simulation, type SimEvent } from '../../kernel-model/sim/index.ts';

/** Pop and run every live event. */
function drain(s: SimScheduler): void {
  for (let ev = s.pop(); ev; ev = s.pop()) ev.fn();
}

// ---- the heap ---------------------------------------------------------------------------

test('events pop by virtual time, and the clock jumps to each one', (t) => {
  const s = new SimScheduler();
  const seen: [string, number][] = [];
  for (const [name, at] of [['c', 300], ['a', 100], ['d', 400], ['b', 200]] as const) {
    s.at(at, () => seen.push([name, s.now()]));
  }
  t.is(s.pending, 4);
  t.is(s.peekTime(), 100);
  t.is(s.now(), 0, 'peeking does not advance the clock');
  drain(s);
  t.deepEqual(seen, [['a', 100], ['b', 200], ['c', 300], ['d', 400]]);
  t.is(s.pending, 0);
  t.is(s.peekTime(), undefined);
  t.is(s.pop(), undefined);
  t.is(s.now(), 400, 'an empty pop leaves the clock where it was');
});

test('events at the same instant pop in insertion order (FIFO ties), not heap order', (t) => {
  const s = new SimScheduler();
  const seen: number[] = [];
  // Twenty ties at t=50 interleaved with earlier and later events: a heap that breaks ties
  // arbitrarily scrambles them as siftDown moves them around.
  for (let i = 0; i < 20; i++) {
    s.at(50, () => seen.push(i));
    s.at(100 - i, () => seen.push(1000 + i));
    s.at(i, () => seen.push(2000 + i));
  }
  drain(s);
  const ties = seen.filter((x) => x < 1000);
  t.deepEqual(ties, Array.from({ length: 20 }, (_, i) => i));
  // And the ties sit between everything before 50 and everything after it.
  const at50 = seen.indexOf(0);
  t.true(seen.slice(0, at50).every((x) => x >= 2000));
  t.true(seen.slice(at50 + 20).every((x) => x >= 1000 && x < 2000));
});

test('an event scheduled at the current instant from inside an event runs after those already queued there', (t) => {
  const s = new SimScheduler();
  const seen: string[] = [];
  s.at(10, () => {
    seen.push('first');
    s.after(0, () => seen.push('spawned at 10'));
  });
  s.at(10, () => seen.push('second'));
  drain(s);
  t.deepEqual(seen, ['first', 'second', 'spawned at 10']);
});

test('after() rounds to integer ns and never goes back in time; at() in the past means now', (t) => {
  const s = new SimScheduler();
  s.at(100, () => undefined);
  s.pop();
  const a = s.after(2.6, () => undefined);
  const b = s.after(-50, () => undefined);
  const c = s.at(30, () => undefined);
  t.is(a.time, 103);
  t.is(b.time, 100);
  t.is(c.time, 100);
  t.is(s.pop(), b, 'the negative delay became "now", queued before the at(30)');
  t.is(s.pop(), c);
  t.is(s.pop(), a);
});

test('a cancelled event never runs, whether it is the head, in the middle or the last', (t) => {
  const s = new SimScheduler();
  const ran: number[] = [];
  const evs: SimEvent[] = [];
  for (let i = 0; i < 10; i++) evs.push(s.at(i * 10, () => ran.push(i)));
  for (const i of [0, 4, 5, 9]) (evs[i] as SimEvent).cancelled = true;
  t.is(s.peekTime(), 10, 'peek skips a cancelled head');
  drain(s);
  t.deepEqual(ran, [1, 2, 3, 6, 7, 8]);
  t.is(s.now(), 80, 'the clock never visits a cancelled event');
});

test('ordering survives growing past the initial capacity', (t) => {
  const s = new SimScheduler();
  const n = 5000; // the heap starts at 1024 slots
  const order: number[] = [];
  for (let i = 0; i < n; i++) s.at((i * 7919) % 1000, () => order.push(i));
  t.is(s.pending, n);
  drain(s);
  const expected = Array.from({ length: n }, (_, i) => i).sort(
    (a, b) => (a * 7919) % 1000 - (b * 7919) % 1000 || a - b,
  );
  t.deepEqual(order, expected);
});

testProp(
  'any batch of schedules pops in the order of a stable sort by time',
  [fc.array(fc.record({ time: fc.integer({ min: 0, max: 40 }), cancel: fc.boolean() }), { maxLength: 2500 })],
  (t, items) => {
    const s = new SimScheduler();
    const popped: number[] = [];
    const evs = items.map((it, i) => s.at(it.time, () => popped.push(i)));
    items.forEach((it, i) => {
      if (it.cancel) (evs[i] as SimEvent).cancelled = true;
    });
    drain(s);
    // Array.prototype.sort is stable (ES2019), so this is the (time, insertion) order.
    const expected = items
      .map((it, i) => ({ ...it, i }))
      .filter((it) => !it.cancel)
      .sort((a, b) => a.time - b.time)
      .map((it) => it.i);
    t.deepEqual(popped, expected);
  },
  { numRuns: 200 },
);

testProp(
  'interleaved push, pop and cancel agree with a sorted reference list',
  [
    fc.array(
      fc.oneof(
        fc.record({ op: fc.constant('push' as const), delay: fc.integer({ min: 0, max: 30 }) }),
        fc.record({ op: fc.constant('pop' as const) }),
        fc.record({ op: fc.constant('cancel' as const), pick: fc.nat() }),
      ),
      { maxLength: 400 },
    ),
  ],
  (t, ops) => {
    const s = new SimScheduler();
    type Ref = { time: number; seq: number; ev: SimEvent };
    let ref: Ref[] = [];
    let seq = 0;
    let clock = 0;
    for (const o of ops) {
      if (o.op === 'push') {
        const ev = s.after(o.delay, () => undefined);
        ref.push({ time: clock + o.delay, seq: seq++, ev });
        t.is(ev.time, clock + o.delay);
      } else if (o.op === 'cancel') {
        if (ref.length === 0) continue;
        const victim = ref[o.pick % ref.length] as Ref;
        victim.ev.cancelled = true;
        ref = ref.filter((r) => r !== victim);
      } else {
        ref.sort((a, b) => a.time - b.time || a.seq - b.seq);
        const want = ref.shift();
        const got = s.pop();
        t.is(got, want?.ev);
        if (want) clock = want.time;
        t.is(s.now(), clock);
      }
    }
    // Whatever is left drains in reference order too.
    ref.sort((a, b) => a.time - b.time || a.seq - b.seq);
    const rest: SimEvent[] = [];
    for (let ev = s.pop(); ev; ev = s.pop()) rest.push(ev);
    t.is(rest.length, ref.length);
    t.true(rest.every((ev, i) => ev === ref[i]?.ev), 'same events, by identity, in order');
  },
  { numRuns: 300 },
);

// ---- rxjs on virtual time -----------------------------------------------------------------

test('timer(…, sim.scheduler) fires at the virtual instant inside run()', (t) => {
  const sim = new Simulation();
  const fired: number[] = [];
  timer(5_000, sim.scheduler).subscribe(() => fired.push(sim.now()));
  timer(1_000, 2_000, sim.scheduler).pipe(take(3)).subscribe(() => fired.push(sim.now()));
  t.deepEqual(fired, [], 'nothing runs before run()');
  const out = sim.run();
  t.deepEqual(fired, [1_000, 3_000, 5_000, 5_000]);
  t.is(out.reason, 'idle');
  t.is(out.now, 5_000);
});

test('interval(…, sim.scheduler) ticks every period of virtual ns', (t) => {
  const sim = new Simulation();
  const ticks: [number, number][] = [];
  interval(250, sim.scheduler).pipe(take(4)).subscribe((i) => ticks.push([i, sim.now()]));
  const out = sim.run();
  t.deepEqual(ticks, [[0, 250], [1, 500], [2, 750], [3, 1_000]]);
  t.is(out.reason, 'idle', 'take(4) unsubscribes, so nothing stays scheduled');
});

test('delay(…, sim.scheduler) shifts values by virtual ns from inside a task', (t) => {
  const sim = new Simulation();
  const got: [string, number][] = [];
  sim.spawn('producer', function* () {
    yield* sim.sleep(20);
    of('a', 'b').pipe(delay(50, sim.scheduler)).subscribe((v) => got.push([v, sim.now()]));
    yield* sim.sleep(100);
    of('c').pipe(delay(1, sim.scheduler)).subscribe((v) => got.push([v, sim.now()]));
  });
  const out = sim.run();
  t.is(out.reason, 'idle');
  t.deepEqual(got, [['a', 70], ['b', 70], ['c', 121]]);
});

test('bufferTime(…, sim.scheduler) closes windows on virtual time', (t) => {
  const sim = new Simulation();
  const at = (ns: number, v: string) => timer(ns, sim.scheduler).pipe(map(() => v));
  const windows: [number, string[]][] = [];
  merge(at(10, 'a'), at(30, 'b'), at(150, 'c'), at(260, 'd'))
    .pipe(bufferTime(100, sim.scheduler))
    .subscribe((buf) => windows.push([sim.now(), buf]));
  const out = sim.run();
  // Windows close at 100 and 200; the source completes at 260, flushing the open window.
  t.deepEqual(windows, [[100, ['a', 'b']], [200, ['c']], [260, ['d']]]);
  t.is(out.reason, 'idle');
});

test('an operator used without the simulation scheduler fails the run (real timer)', (t) => {
  const sim = new Simulation();
  let after = false;
  sim.spawn('forgetful', function* () {
    yield* sim.waitFor(timer(5)); // asyncScheduler: would arm a real setInterval
    after = true;
  });
  const out = sim.run();
  t.is(out.reason, 'failed');
  t.regex(out.failure ?? '', /real timer/);
  t.false(after, 'the task never got a value from the real timer');
});

test('a direct setTimeout during run() fails the run, and the real one is restored afterwards', (t) => {
  const realSetTimeout = globalThis.setTimeout;
  const sim = new Simulation();
  let laterRan = false;
  sim.spawn('naughty', function* () {
    setTimeout(() => undefined, 5);
    yield* sim.sleep(10);
  });
  sim.spawn('later', function* () {
    yield* sim.sleep(1_000);
    laterRan = true;
  });
  const out = sim.run();
  t.is(out.reason, 'failed');
  t.regex(out.failure ?? '', /real timer.*setTimeout/);
  t.false(laterRan, 'a failed run stops');
  t.is(globalThis.setTimeout, realSetTimeout);
});

test('an rxjs error with no error handler fails the run through the unhandled-error hook', (t) => {
  const sim = new Simulation();
  sim.spawn('fire-and-forget', function* () {
    throwError(() => new Error('boom in a stream')).subscribe();
    yield* sim.sleep(10);
  });
  const out = sim.run();
  t.is(out.reason, 'failed');
  t.regex(out.failure ?? '', /unhandled rxjs error: Error: boom in a stream/);
  t.notRegex(out.failure ?? '', /real timer/, 'reporting the error is not mistaken for a real timer');
});

test('an error thrown by a subscriber on a virtual timer is reported the same way', (t) => {
  const sim = new Simulation();
  timer(10, sim.scheduler)
    .pipe(map(() => { throw new Error('bad batch'); }))
    .subscribe();
  const out = sim.run();
  t.is(out.reason, 'failed');
  t.regex(out.failure ?? '', /unhandled rxjs error: Error: bad batch/);
  t.is(out.now, 10);
});

test('an rxjs error that has a handler is not a failure', (t) => {
  const sim = new Simulation();
  const errors: string[] = [];
  timer(10, sim.scheduler)
    .pipe(map(() => { throw new Error('handled'); }))
    .subscribe({ error: (e: Error) => errors.push(e.message) });
  const out = sim.run();
  t.is(out.reason, 'idle');
  t.deepEqual(errors, ['handled']);
});

// ---- bounds ---------------------------------------------------------------------------------

/** A kernel thread that wakes every `period` ns forever, counting its wake-ups. */
function periodic(sim: Simulation, period: number): { ticks: number } {
  const counter = { ticks: 0 };
  sim.spawn('kthread', function* () {
    for (;;) {
      yield* sim.sleep(period);
      counter.ticks++;
    }
  }, { kind: 'kthread' });
  return counter;
}

test('untilNs stops with reason time-limit, running events at exactly the limit', (t) => {
  const sim = new Simulation();
  const k = periodic(sim, 10);
  const out = sim.run({ untilNs: 100 });
  t.is(out.reason, 'time-limit');
  t.is(k.ticks, 10, 'wake-ups at 10, 20, ..., 100 inclusive');
  t.is(out.now, 100);
  // The run can be resumed where it stopped.
  const again = sim.run({ untilNs: 150 });
  t.is(again.reason, 'time-limit');
  t.is(k.ticks, 15);
});

test('maxEvents stops with reason event-limit after exactly that many events', (t) => {
  const sim = new Simulation();
  const k = periodic(sim, 10);
  const out = sim.run({ maxEvents: 7 });
  t.is(out.reason, 'event-limit');
  t.is(out.events, 7);
  t.is(k.ticks, 6, 'the first event is the spawn, then one wake-up per event');
  t.is(sim.totalEvents, 7);
});

test('a periodic task that never ends does not hang a run given no limits', (t) => {
  const sim = new Simulation();
  const k = periodic(sim, 1_000_000_000); // one virtual second
  const out = sim.run();
  t.is(out.reason, 'time-limit');
  t.true(out.now <= DEFAULT_RUN_LIMITS.untilNs);
  t.is(k.ticks, DEFAULT_RUN_LIMITS.untilNs / 1_000_000_000);
});

test('a task-limited run stops when the task finishes although a kthread is still busy', (t) => {
  const sim = new Simulation();
  periodic(sim, 7);
  const job = sim.spawn('job', function* () {
    yield* sim.sleep(100);
    return 'done';
  });
  const out = sim.run({ task: job });
  t.is(out.reason, 'task-done');
  t.is(job.result, 'done');
  t.is(out.now, 100);
});
