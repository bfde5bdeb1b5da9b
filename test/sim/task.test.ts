/**
 * Tasks are coroutines (DESIGN "The engine"): a generator the engine resumes, sleeping
 * with `yield*` on a timer, another task, or an Observable; the engine always knows the
 * current task.
 */
import test from 'ava';
import { EMPTY, Subject, interval, map, throwError, timer } from 'rxjs';
import { PARK, Simulation, type Park, type Task } from '../../kernel-model/sim/index.ts';

test('sleep advances virtual time by exactly the requested ns', (t) => {
  const sim = new Simulation();
  const stamps: number[] = [];
  sim.spawn('sleeper', function* () {
    stamps.push(sim.now());
    yield* sim.sleep(1_234);
    stamps.push(sim.now());
    yield* sim.sleep(1);
    stamps.push(sim.now());
    yield* sim.sleep(0);
    stamps.push(sim.now());
    yield* sim.sleep(1_000_000_007);
    stamps.push(sim.now());
  });
  const out = sim.run();
  t.deepEqual(stamps, [0, 1_234, 1_235, 1_235, 1_000_001_242]);
  t.is(out.reason, 'idle');
  t.is(out.now, 1_000_001_242);
});

test('concurrent sleepers interleave by wake-up time, not by spawn order', (t) => {
  const sim = new Simulation();
  const order: string[] = [];
  for (const [name, ns] of [['slow', 300], ['fast', 100], ['mid', 200]] as const) {
    sim.spawn(name, function* () {
      yield* sim.sleep(ns);
      order.push(`${name}@${sim.now()}`);
    });
  }
  sim.run();
  t.deepEqual(order, ['fast@100', 'mid@200', 'slow@300']);
});

test('sim.current is the running task, and null outside any task', (t) => {
  const sim = new Simulation();
  const seen: [string, Task | null][] = [];
  const tasks: Record<string, Task> = {};
  for (const name of ['a', 'b']) {
    tasks[name] = sim.spawn(name, function* () {
      seen.push([name, sim.current]);
      yield* sim.sleep(name === 'a' ? 20 : 10);
      seen.push([name, sim.current]);
    });
  }
  timer(15, sim.scheduler).subscribe(() => seen.push(['timer', sim.current]));
  t.is(sim.current, null, 'before run');
  sim.run();
  t.is(sim.current, null, 'after run');
  t.is(seen.length, 5);
  const expected: [string, Task | null][] = [
    ['a', tasks.a ?? null],
    ['b', tasks.b ?? null],
    ['b', tasks.b ?? null],
    ['timer', null],
    ['a', tasks.a ?? null],
  ];
  expected.forEach(([name, task], i) => {
    t.is(seen[i]?.[0], name);
    t.is(seen[i]?.[1], task, `entry ${i} (${name})`);
  });
  t.not(tasks.a, tasks.b);
  t.true(tasks.a?.done);
});

test('join waits for the task and returns its result', (t) => {
  const sim = new Simulation();
  let got: [number, number] | undefined;
  sim.spawn('parent', function* () {
    const child = sim.spawn('child', function* () {
      yield* sim.sleep(100);
      return 42;
    });
    const v = yield* sim.join(child);
    got = [v, sim.now()];
  });
  sim.run();
  t.deepEqual(got, [42, 100]);
});

test('join on a task that already finished returns at once, without advancing time', (t) => {
  const sim = new Simulation();
  let got: [string, number] | undefined;
  const quick = sim.spawn('quick', function* () {
    return 'early';
  });
  sim.spawn('late', function* () {
    yield* sim.sleep(50);
    t.true(quick.done);
    const v = yield* sim.join(quick);
    got = [v, sim.now()];
  });
  sim.run();
  t.deepEqual(got, ['early', 50]);
});

test('several joiners of one task all wake when it ends', (t) => {
  const sim = new Simulation();
  const woke: string[] = [];
  const worker = sim.spawn('worker', function* () {
    yield* sim.sleep(30);
    return 'w';
  });
  for (const name of ['j1', 'j2', 'j3']) {
    sim.spawn(name, function* () {
      const r = yield* sim.join(worker);
      woke.push(`${name}:${r}@${sim.now()}`);
    });
  }
  sim.run();
  t.deepEqual(woke, ['j1:w@30', 'j2:w@30', 'j3:w@30']);
});

test('waitFor(Observable) returns the first value, and stops listening', (t) => {
  const sim = new Simulation();
  let got: [number | undefined, number] | undefined;
  sim.spawn('waiter', function* () {
    yield* sim.sleep(5);
    const v = yield* sim.waitFor(interval(10, sim.scheduler).pipe(map((i) => i + 100)));
    got = [v, sim.now()];
  });
  const out = sim.run();
  t.deepEqual(got, [100, 15]);
  // interval would tick forever: the run going idle proves waitFor unsubscribed.
  t.is(out.reason, 'idle');
  t.is(out.now, 15);
});

test('waitFor takes a value pushed later by another task, and ignores the ones after', (t) => {
  const sim = new Simulation();
  const events = new Subject<string>();
  const got: [string | undefined, number][] = [];
  sim.spawn('waiter', function* () {
    got.push([yield* sim.waitFor(events), sim.now()]);
  });
  sim.spawn('producer', function* () {
    yield* sim.sleep(70);
    events.next('first');
    events.next('second');
    yield* sim.sleep(10);
    events.next('third');
  });
  sim.run();
  t.deepEqual(got, [['first', 70]]);
  t.false(events.observed, 'the waiter unsubscribed');
});

test('waitFor of an Observable that completes empty gives undefined; an error is thrown into the task', (t) => {
  const sim = new Simulation();
  const got: unknown[] = [];
  sim.spawn('waiter', function* () {
    got.push(yield* sim.waitFor(EMPTY));
    try {
      yield* sim.waitFor(throwError(() => new Error('stream broke')));
      got.push('not reached');
    } catch (err) {
      got.push((err as Error).message);
    }
  });
  const out = sim.run();
  t.deepEqual(got, [undefined, 'stream broke']);
  t.is(out.reason, 'idle');
});

test('fromTask runs the coroutine on subscribe and emits its result, then completes', (t) => {
  const sim = new Simulation();
  const seen: [string, number][] = [];
  let started = false;
  const result$ = sim.fromTask('fault-handler', function* () {
    started = true;
    yield* sim.sleep(50);
    return 'resolved';
  });
  t.false(started, 'cold: nothing runs before subscription');
  sim.spawn('script', function* () {
    yield* sim.sleep(10);
    result$.subscribe({
      next: (v) => seen.push([v, sim.now()]),
      complete: () => seen.push(['complete', sim.now()]),
    });
  });
  sim.run();
  t.true(started);
  t.deepEqual(seen, [['resolved', 60], ['complete', 60]]);
});

test('a task can wait for another task through an Observable built by fromTask', (t) => {
  const sim = new Simulation();
  let got: [number | undefined, number] | undefined;
  sim.spawn('script', function* () {
    const doubled$ = sim
      .fromTask('count', function* () {
        yield* sim.sleep(5);
        return 21;
      })
      .pipe(map((n) => n * 2));
    got = [yield* sim.waitFor(doubled$), sim.now()];
  });
  sim.run();
  t.deepEqual(got, [42, 5]);
});

test('a task that throws fails the run with its name, and the run stops there', (t) => {
  const sim = new Simulation();
  let survivorRan = false;
  const bad = sim.spawn('evict-worker', function* () {
    yield* sim.sleep(10);
    throw new Error('page refcount underflow');
  });
  sim.spawn('survivor', function* () {
    yield* sim.sleep(20);
    survivorRan = true;
  });
  const out = sim.run();
  t.is(out.reason, 'failed');
  t.regex(out.failure ?? '', /evict-worker/);
  t.regex(out.failure ?? '', /page refcount underflow/);
  t.is(out.now, 10);
  t.false(survivorRan);
  t.true(bad.done);
  t.is((bad.error as Error).message, 'page refcount underflow');
  t.is(sim.failed, out.failure);
  // A failed simulation stays failed.
  t.is(sim.run().reason, 'failed');
});

test('yielding something other than PARK (yield instead of yield*) fails the run', (t) => {
  const sim = new Simulation();
  sim.spawn('forgot-the-star', function* () {
    yield* sim.sleep(3);
    yield 'sleep(100)' as unknown as Park;
  });
  const out = sim.run();
  t.is(out.reason, 'failed');
  t.regex(out.failure ?? '', /forgot-the-star/);
  t.regex(out.failure ?? '', /yielded something other than a park/);
  t.is(out.now, 3);
});

test('yielding PARK with nobody to wake the task leaves it parked, and the run goes idle', (t) => {
  const sim = new Simulation();
  const stuck = sim.spawn('stuck', function* () {
    yield PARK;
  });
  const out = sim.run();
  t.is(out.reason, 'idle');
  t.is(stuck.state, 'parked');
});

test('sleeping outside a task is a model error', (t) => {
  const sim = new Simulation();
  timer(10, sim.scheduler).subscribe(() => {
    // An rxjs callback is not a task: it cannot sleep.
    sim.sleep(5).next();
  });
  const out = sim.run();
  t.is(out.reason, 'failed');
  t.regex(out.failure ?? '', /sleep outside a task/);
});
