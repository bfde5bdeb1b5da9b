/**
 * Locks in virtual time, owned by tasks (DESIGN "The engine": Locks, Atomic context):
 * mutexes, rw-semaphores and wait queues; deadlocks found when a task blocks; lockdep's
 * lock-order graph; might_sleep in atomic context.
 */
import test from 'ava';
import { Mutex, RwSemaphore, Simulation, WaitQueue, type Task, type TraceRecord } from '../../kernel-model/sim/index.ts';

function record(sim: Simulation): TraceRecord[] {
  const out: TraceRecord[] = [];
  sim.trace$.subscribe((r) => out.push(r));
  return out;
}

/** A kernel thread that wakes every `period` ns forever: the run never goes idle. */
function kthread(sim: Simulation, period: number): void {
  sim.spawn('kworker', function* () {
    for (;;) yield* sim.sleep(period);
  }, { kind: 'kthread' });
}

// ---- Mutex --------------------------------------------------------------------------------

test('mutex: waiters get the lock in FIFO order, each when the previous owner unlocks', (t) => {
  const sim = new Simulation();
  const m = new Mutex(sim, 'umem_mutex');
  const got: string[] = [];
  sim.spawn('holder', function* () {
    yield* m.lock();
    got.push(`holder@${sim.now()}`);
    yield* sim.sleep(100);
    m.unlock();
  });
  // Arrive in the order w3, w1, w2 (by sleep length), spawned in another order.
  for (const [name, arrive] of [['w1', 20], ['w2', 30], ['w3', 10]] as const) {
    sim.spawn(name, function* () {
      yield* sim.sleep(arrive);
      yield* m.lock();
      got.push(`${name}@${sim.now()}`);
      yield* sim.sleep(10);
      m.unlock();
    });
  }
  const out = sim.run();
  t.is(out.reason, 'idle');
  t.deepEqual(got, ['holder@0', 'w3@100', 'w1@110', 'w2@120']);
  t.false(m.locked);
  t.is(m.owner, null);
});

test('mutex: unlock hands ownership to the first waiter, so a newcomer at that instant cannot barge', (t) => {
  const sim = new Simulation();
  const m = new Mutex(sim, 'm');
  let newcomer: boolean | undefined;
  let waiterGotAt: number | undefined;
  let waiterTask: Task | null = null;
  sim.spawn('holder', function* () {
    yield* m.lock();
    yield* sim.sleep(100);
    m.unlock(); // at t=100, before the newcomer's event at t=100
  });
  waiterTask = sim.spawn('waiter', function* () {
    yield* sim.sleep(1);
    yield* m.lock();
    waiterGotAt = sim.now();
    m.unlock();
  });
  sim.spawn('newcomer', function* () {
    yield* sim.sleep(100);
    newcomer = m.trylock();
    t.is(m.owner, waiterTask, 'the woken waiter already owns it');
  });
  sim.run();
  t.false(newcomer);
  t.is(waiterGotAt, 100);
});

test('mutex: trylock takes a free mutex and fails on a held one without waiting', (t) => {
  const sim = new Simulation();
  const m = new Mutex(sim, 'm');
  const got: [string, boolean, number][] = [];
  sim.spawn('a', function* () {
    got.push(['a', m.trylock(), sim.now()]);
    t.true(m.heldByCurrent());
    yield* sim.sleep(50);
    m.unlock();
  });
  sim.spawn('b', function* () {
    yield* sim.sleep(10);
    got.push(['b', m.trylock(), sim.now()]);
    t.false(m.heldByCurrent());
    yield* sim.sleep(50);
    got.push(['b', m.trylock(), sim.now()]);
    m.unlock();
  });
  sim.run();
  t.deepEqual(got, [['a', true, 0], ['b', false, 10], ['b', true, 60]]);
});

test('mutex: a subclass that builds its name only when asked (one per implicit ODP child) is named by it at each lock, contention and release', (t) => {
  const sim = new Simulation();
  const trace = record(sim);
  let built = 0;
  class NamedLate extends Mutex {
    constructor(s: Simulation, readonly slot: number) {
      super(s, '', 'umem_odp.umem_mutex');
    }

    override get name(): string {
      built++;
      return `child(${this.slot}).umem_mutex`;
    }
  }
  const m = new NamedLate(sim, 7);
  t.is(built, 0, 'no name is built at creation');
  sim.spawn('holder', function* () {
    sim.enterAtomic('nonblockable invalidate');
    yield* m.lock();
    sim.exitAtomic();
    yield* sim.sleep(10);
    m.unlock();
  });
  sim.spawn('waiter', function* () {
    yield* sim.sleep(1);
    yield* m.lock();
    m.unlock();
  });
  t.is(sim.run().reason, 'idle');
  t.like(trace.find((r) => r.type === 'might-sleep'), { what: 'mutex_lock(child(7).umem_mutex)', context: 'nonblockable invalidate' });
  t.like(trace.find((r) => r.type === 'lock-contend'), { lock: 'child(7).umem_mutex' });
  t.is(trace.filter((r) => r.type === 'lock-release' && r.lock === 'child(7).umem_mutex').length, 2);
  t.is(m.cls, 'umem_odp.umem_mutex', 'the lockdep class is given, not built');
});

test('mutex: unlock by a task that does not own it throws a model error', (t) => {
  const sim = new Simulation();
  const m = new Mutex(sim, 'mmap_sem_like');
  let caught: string | undefined;
  sim.spawn('owner', function* () {
    yield* m.lock();
    yield* sim.sleep(100);
    m.unlock();
  });
  sim.spawn('thief', function* () {
    yield* sim.sleep(10);
    try {
      m.unlock();
    } catch (err) {
      caught = (err as Error).message;
    }
    t.is(m.owner?.name, 'owner', 'the failed unlock changed nothing');
  });
  t.is(sim.run().reason, 'idle');
  t.regex(caught ?? '', /mutex_unlock\(mmap_sem_like\) by task \d+ that does not own it/);

  // Uncaught, the same error fails the run and names the task.
  const sim2 = new Simulation();
  const m2 = new Mutex(sim2, 'm2');
  sim2.spawn('careless', function* () {
    m2.unlock();
  });
  const out = sim2.run();
  t.is(out.reason, 'failed');
  t.regex(out.failure ?? '', /careless.*mutex_unlock\(m2\)/s);
});

// ---- RwSemaphore ----------------------------------------------------------------------------

test('rwsem: readers share the lock', (t) => {
  const sim = new Simulation();
  const sem = new RwSemaphore(sim, 'mmap_lock');
  const spans: [string, number, number][] = [];
  for (const name of ['r1', 'r2', 'r3']) {
    sim.spawn(name, function* () {
      yield* sem.downRead();
      const from = sim.now();
      t.true(sem.heldByCurrent('read'));
      t.false(sem.heldByCurrent('write'));
      yield* sim.sleep(100);
      sem.upRead();
      spans.push([name, from, sim.now()]);
    });
  }
  const out = sim.run();
  t.deepEqual(spans, [['r1', 0, 100], ['r2', 0, 100], ['r3', 0, 100]]);
  t.is(out.now, 100, 'concurrent, not one after another');
});

test('rwsem: a writer excludes readers and other writers', (t) => {
  const sim = new Simulation();
  const sem = new RwSemaphore(sim, 'mmap_lock');
  const spans: [string, number, number][] = [];
  const hold = (name: string, write: boolean, arrive: number, ns: number) =>
    sim.spawn(name, function* () {
      yield* sim.sleep(arrive);
      if (write) yield* sem.downWrite();
      else yield* sem.downRead();
      const from = sim.now();
      yield* sim.sleep(ns);
      if (write) sem.upWrite();
      else sem.upRead();
      spans.push([name, from, sim.now()]);
    });
  hold('w1', true, 0, 100);
  hold('r1', false, 10, 30);
  hold('w2', true, 20, 50);
  sim.run();
  t.deepEqual(spans, [['w1', 0, 100], ['r1', 100, 130], ['w2', 130, 180]]);
});

test('rwsem: a reader queues behind a waiting writer instead of joining the current readers', (t) => {
  const sim = new Simulation();
  const sem = new RwSemaphore(sim, 'mmap_lock');
  const spans: [string, number, number][] = [];
  let trylockWhileWriterWaits: boolean | undefined;
  const hold = (name: string, write: boolean, arrive: number, ns: number) =>
    sim.spawn(name, function* () {
      yield* sim.sleep(arrive);
      if (write) yield* sem.downWrite();
      else yield* sem.downRead();
      const from = sim.now();
      yield* sim.sleep(ns);
      if (write) sem.upWrite();
      else sem.upRead();
      spans.push([name, from, sim.now()]);
    });
  hold('r1', false, 0, 100); // holds 0..100
  hold('w', true, 10, 50); // waits for r1
  hold('r2', false, 20, 10); // r1 still holds for reading, but w is waiting: r2 waits too
  hold('r3', false, 30, 20);
  sim.spawn('probe', function* () {
    yield* sim.sleep(40);
    trylockWhileWriterWaits = sem.downReadTrylock();
  });
  sim.run();
  t.false(trylockWhileWriterWaits);
  // After w, both queued readers are let in together.
  t.deepEqual(spans, [['r1', 0, 100], ['w', 100, 150], ['r2', 150, 160], ['r3', 150, 170]]);
});

test('rwsem: up by a task that does not hold it throws', (t) => {
  const sim = new Simulation();
  const sem = new RwSemaphore(sim, 's');
  const errors: string[] = [];
  sim.spawn('x', function* () {
    try { sem.upRead(); } catch (err) { errors.push((err as Error).message); }
    try { sem.upWrite(); } catch (err) { errors.push((err as Error).message); }
    yield* sem.downRead();
    try { sem.upWrite(); } catch (err) { errors.push((err as Error).message); }
    sem.upRead();
  });
  t.is(sim.run().reason, 'idle');
  t.is(errors.length, 3);
  t.regex(errors[0] ?? '', /up_read\(s\)/);
  t.regex(errors[1] ?? '', /up_write\(s\)/);
  t.regex(errors[2] ?? '', /up_write\(s\)/);
});

// ---- WaitQueue --------------------------------------------------------------------------------

test('wait queue: waiters sleep until the condition holds, re-checking after every wake-up', (t) => {
  const sim = new Simulation();
  const wq = new WaitQueue(sim, 'invalidate_wq');
  let seq = 0;
  const woke: [string, number][] = [];
  for (const [name, want] of [['a', 1], ['b', 2]] as const) {
    sim.spawn(name, function* () {
      yield* wq.waitEvent(() => seq >= want);
      woke.push([name, sim.now()]);
    });
  }
  sim.spawn('immediate', function* () {
    yield* wq.waitEvent(() => true);
    woke.push(['immediate', sim.now()]);
  });
  sim.spawn('waker', function* () {
    yield* sim.sleep(10);
    t.is(wq.length, 2);
    wq.wakeUpAll(); // spurious: nothing changed, both go back to sleep
    yield* sim.sleep(10);
    t.is(wq.length, 2);
    seq = 1;
    wq.wakeUpAll();
    yield* sim.sleep(10);
    t.is(wq.length, 1);
    seq = 2;
    wq.wakeUpAll();
  });
  const out = sim.run();
  t.deepEqual(woke, [['immediate', 0], ['a', 20], ['b', 30]]);
  t.is(wq.length, 0);
  t.is(out.reason, 'idle');
});

// ---- deadlocks and lock order -------------------------------------------------------------------

test('ABBA deadlock is reported when the second task blocks, naming both tasks and locks, while a kthread keeps the run busy', (t) => {
  const sim = new Simulation();
  const trace = record(sim);
  const m1 = new Mutex(sim, 'm1');
  const m2 = new Mutex(sim, 'm2');
  kthread(sim, 1_000);
  const a = sim.spawn('A', function* () {
    yield* m1.lock();
    yield* sim.sleep(10);
    yield* m2.lock(); // blocks at t=10 (B holds m2): no cycle yet
    t.fail('A never gets m2');
  });
  const b = sim.spawn('B', function* () {
    yield* m2.lock();
    yield* sim.sleep(10);
    yield* m1.lock(); // blocks at t=10 too, closing the cycle
    t.fail('B never gets m1');
  });
  const out = sim.run({ untilNs: 1_000_000 });
  t.is(out.reason, 'time-limit', 'the kthread keeps the run busy: found on blocking, not on idle');
  t.is(sim.lockdep.deadlocks.length, 1);
  const report = sim.lockdep.deadlocks[0];
  t.is(report?.time, 10);
  t.deepEqual(report?.tasks.map((x) => x.name).sort(), ['A', 'B']);
  t.deepEqual(report?.locks.slice().sort(), ['m1', 'm2']);
  // Each task is paired with the lock it waits on.
  const waits = Object.fromEntries(report?.tasks.map((x, i) => [x.name, report.locks[i]]) ?? []);
  t.deepEqual(waits, { A: 'm2', B: 'm1' });
  t.deepEqual(report?.tasks.map((x) => x.id).sort(), [a.id, b.id].sort());
  t.false(a.done);
  t.false(b.done);
  const recs = trace.filter((r) => r.type === 'deadlock');
  t.is(recs.length, 1);
  t.is(recs[0]?.t, 10);
  t.is(recs[0]?.task, b.id, 'recorded in the context of the task that closed the cycle');
});

test('no deadlock is reported for plain contention, even when a task waits forever', (t) => {
  const sim = new Simulation();
  const m1 = new Mutex(sim, 'm1');
  const m2 = new Mutex(sim, 'm2');
  sim.spawn('leaker', function* () {
    yield* m1.lock(); // never unlocked
    yield* m2.lock();
    m2.unlock();
  });
  sim.spawn('victim', function* () {
    yield* sim.sleep(5);
    yield* m2.lock();
    yield* m1.lock(); // waits forever behind a holder that is not waiting: no cycle
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(sim.lockdep.deadlocks, []);
});

test('a three-task cycle through a rwsem is found when the last task blocks', (t) => {
  const sim = new Simulation();
  const m1 = new Mutex(sim, 'm1');
  const m2 = new Mutex(sim, 'm2');
  const sem = new RwSemaphore(sim, 'mmap_lock');
  kthread(sim, 100);
  sim.spawn('T1', function* () {
    yield* m1.lock();
    yield* sim.sleep(10);
    yield* m2.lock();
  });
  sim.spawn('T2', function* () {
    yield* m2.lock();
    yield* sim.sleep(20);
    yield* sem.downWrite();
  });
  sim.spawn('T3', function* () {
    yield* sem.downRead();
    yield* sim.sleep(30);
    yield* m1.lock();
  });
  sim.run({ untilNs: 10_000 });
  t.is(sim.lockdep.deadlocks.length, 1);
  const r = sim.lockdep.deadlocks[0];
  t.is(r?.time, 30);
  const waits = Object.fromEntries(r?.tasks.map((x, i) => [x.name, r.locks[i]]) ?? []);
  t.deepEqual(waits, { T1: 'm2', T2: 'mmap_lock', T3: 'm1' });
});

test('self-deadlock: re-taking a mutex one holds is reported with one task and one lock', (t) => {
  const sim = new Simulation();
  const m = new Mutex(sim, 'page_lock');
  kthread(sim, 50);
  const task = sim.spawn('recursive', function* () {
    yield* sim.sleep(7);
    yield* m.lock();
    yield* m.lock();
    t.fail('never returns');
  });
  const out = sim.run({ untilNs: 1_000 });
  t.is(out.reason, 'time-limit');
  t.deepEqual(sim.lockdep.deadlocks, [{ time: 7, tasks: [{ id: task.id, name: 'recursive' }], locks: ['page_lock'] }]);
  t.false(task.done);
});

test('lock order: A then B in one task and B then A in another, at different times, gives one lock-order report', (t) => {
  const sim = new Simulation();
  const trace = record(sim);
  const a = new Mutex(sim, 'A');
  const b = new Mutex(sim, 'B');
  const ab = sim.spawn('ab', function* () {
    yield* a.lock();
    yield* b.lock();
    b.unlock();
    a.unlock();
  });
  const ba = (name: string, at: number) =>
    sim.spawn(name, function* () {
      yield* sim.sleep(at);
      yield* b.lock();
      yield* a.lock();
      a.unlock();
      b.unlock();
    });
  ba('ba', 100);
  ba('ba-again', 200); // the same inversion again is not a second report
  const out = sim.run();
  t.is(out.reason, 'idle');
  t.true(ab.done);
  t.deepEqual(sim.lockdep.deadlocks, [], 'this run did not deadlock');
  t.is(sim.lockdep.orderViolations.length, 1);
  const v = sim.lockdep.orderViolations[0];
  t.is(v?.time, 100);
  t.is(v?.first, 'B', 'held');
  t.is(v?.second, 'A', 'taken while holding B, although A -> B was seen before');
  t.deepEqual(v?.chain, ['A', 'B']);
  t.is(trace.filter((r) => r.type === 'lock-order').length, 1);
});

test('lock order: a consistent order, direct or through a chain, gives no report', (t) => {
  const sim = new Simulation();
  const a = new Mutex(sim, 'A');
  const b = new Mutex(sim, 'B');
  const c = new Mutex(sim, 'C');
  for (const [name, at] of [['x', 0], ['y', 50]] as const) {
    sim.spawn(name, function* () {
      yield* sim.sleep(at);
      yield* a.lock();
      yield* b.lock();
      yield* c.lock();
      c.unlock();
      b.unlock();
      a.unlock();
      yield* a.lock(); // A -> C directly is consistent with A -> B -> C
      yield* c.lock();
      c.unlock();
      a.unlock();
    });
  }
  t.is(sim.run().reason, 'idle');
  t.deepEqual(sim.lockdep.orderViolations, []);
});

test('lock order: an inversion through a chain (A->B, B->C, then C->A) is reported with the chain', (t) => {
  const sim = new Simulation();
  const [a, b, c] = ['A', 'B', 'C'].map((n) => new Mutex(sim, n)) as [Mutex, Mutex, Mutex];
  const nest = (name: string, at: number, outer: Mutex, inner: Mutex) =>
    sim.spawn(name, function* () {
      yield* sim.sleep(at);
      yield* outer.lock();
      yield* inner.lock();
      inner.unlock();
      outer.unlock();
    });
  nest('ab', 0, a, b);
  nest('bc', 10, b, c);
  nest('ca', 20, c, a);
  sim.run();
  t.is(sim.lockdep.orderViolations.length, 1);
  t.like(sim.lockdep.orderViolations[0], { time: 20, first: 'C', second: 'A', chain: ['A', 'B', 'C'] });
});

// ---- atomic context ----------------------------------------------------------------------------

test('atomic context: mutex_lock on a FREE mutex is recorded as might-sleep; trylock is not', (t) => {
  const sim = new Simulation();
  const trace = record(sim);
  const m = new Mutex(sim, 'umem_mutex');
  const n = new Mutex(sim, 'other');
  let acquired = false;
  sim.spawn('notifier-callback', function* () {
    t.true(n.trylock());
    sim.enterAtomic('nonblockable invalidate');
    t.true(m.trylock(), 'trylock works and never sleeps');
    m.unlock();
    t.is(sim.sleepInAtomic, 0, 'trylock in atomic context records nothing');
    yield* m.lock(); // uncontended, yet might sleep
    acquired = m.heldByCurrent();
    sim.exitAtomic();
    m.unlock();
    n.unlock();
    yield* m.lock(); // outside atomic context: fine
    m.unlock();
  });
  const out = sim.run();
  t.is(out.reason, 'idle');
  t.true(acquired, 'the lock is still taken: recording is not refusing');
  t.is(sim.sleepInAtomic, 1);
  const ms = trace.filter((r) => r.type === 'might-sleep');
  t.is(ms.length, 1);
  t.like(ms[0], { type: 'might-sleep', what: 'mutex_lock(umem_mutex)', context: 'nonblockable invalidate', t: 0 });
});

test('atomic context: a sleep, a rwsem down and a wait are recorded, naming the innermost context', (t) => {
  const sim = new Simulation();
  const trace = record(sim);
  const sem = new RwSemaphore(sim, 'mmap_lock');
  const wq = new WaitQueue(sim, 'wq');
  let ready = false;
  sim.spawn('cb', function* () {
    sim.enterAtomic('outer');
    sim.enterAtomic('inner');
    yield* sim.sleep(5);
    t.true(sem.downReadTrylock(), 'trylock: not recorded');
    sem.upRead();
    yield* sem.downRead();
    sem.upRead();
    sim.exitAtomic();
    ready = true;
    yield* wq.waitEvent(() => ready); // condition already true: does not sleep, not recorded
    ready = false;
    sim.spawn('setter', function* () {
      yield* sim.sleep(1);
      ready = true;
      wq.wakeUpAll();
    });
    yield* wq.waitEvent(() => ready);
    sim.exitAtomic();
    yield* sim.sleep(1); // not atomic any more
  });
  sim.run();
  const ms = trace.filter((r) => r.type === 'might-sleep').map((r) => (r.type === 'might-sleep' ? [r.what, r.context] : []));
  t.deepEqual(ms, [
    ['sleep 5 ns', 'inner'],
    ['down_read(mmap_lock)', 'inner'],
    ['wait_event(wq)', 'outer'],
  ]);
  t.is(sim.sleepInAtomic, 3);
});
