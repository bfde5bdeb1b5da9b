/**
 * One seed drives everything (DESIGN "The engine": One seed, Preemption points): same
 * seed and code give a byte-identical trace; preemption, drawn from the seed, exposes
 * races that the plain schedule never shows.
 */
import test from 'ava';
import {
  Mutex,
  RwSemaphore,
  Simulation,
  serializeTrace,
  type RunOutcome,
  type Task,
  type TraceRecord,
} from '../../kernel-model/sim/index.ts';

const PREEMPT = { probability: 0.3, maxDelayNs: 50 };

interface WorkloadResult {
  trace: string;
  records: TraceRecord[];
  outcome: RunOutcome;
  tasks: Task[];
}

/**
 * Six tasks sleeping random durations and contending on two mutexes and an rwsem (readers
 * nest a mutex inside the rwsem, always in that order), plus a periodic kthread so that
 * the run ends on its time limit.
 */
function workload(seed: number, preempt: boolean): WorkloadResult {
  const sim = new Simulation({ seed, preempt: preempt ? PREEMPT : false });
  const records: TraceRecord[] = [];
  sim.trace$.subscribe((r) => records.push(r));
  const rng = sim.rng('workload');
  const mutexes = [new Mutex(sim, 'm0'), new Mutex(sim, 'm1')] as const;
  const sem = new RwSemaphore(sim, 'mmap_lock');
  let counter = 0;
  const tasks: Task[] = [];
  sim.spawn('kswapd', function* () {
    for (;;) {
      yield* sim.sleep(97);
      sim.emit({ type: 'note', text: `kswapd sees ${counter}` });
    }
  }, { kind: 'kthread' });
  for (let i = 0; i < 6; i++) {
    tasks.push(
      sim.spawn(`worker${i}`, function* () {
        for (let k = 0; k < 25; k++) {
          yield* sim.sleep(rng.int(0, 200));
          switch (rng.int(0, 3)) {
            case 0: {
              const m = rng.pick(mutexes);
              yield* m.lock();
              yield* sim.sleep(rng.int(0, 40));
              m.unlock();
              break;
            }
            case 1: {
              yield* sem.downRead();
              const m = rng.pick(mutexes);
              yield* m.lock();
              const seen = counter;
              yield* sim.preemptPoint('counter read');
              counter = seen + 1;
              m.unlock();
              yield* sim.sleep(rng.int(0, 20));
              sem.upRead();
              break;
            }
            case 2: {
              yield* sem.downWrite();
              yield* sim.sleep(rng.int(0, 60));
              sem.upWrite();
              break;
            }
            default: {
              if (mutexes[0].trylock()) mutexes[0].unlock();
              yield* sim.preemptPoint('pte read');
            }
          }
        }
        return counter;
      }, { kind: 'user', pid: 100 + i }),
    );
  }
  const outcome = sim.run({ untilNs: 200_000 });
  return { trace: serializeTrace(records), records, outcome, tasks };
}

test('same seed, preemption on: byte-identical trace', (t) => {
  const first = workload(1234, true);
  const second = workload(1234, true);
  t.is(first.outcome.reason, 'time-limit', 'the kthread keeps the run going to its limit');
  t.true(first.tasks.every((task) => task.done), 'every worker finished: no deadlock, no failure');
  t.is(first.outcome.failure, undefined);
  // The workload is doing what it claims: contention and preemption are in the trace.
  const count = (type: string) => first.records.filter((r) => r.type === type).length;
  t.true(count('lock-contend') > 10, `lock-contend ${count('lock-contend')}`);
  t.true(count('preempt') > 10, `preempt ${count('preempt')}`);
  t.true(count('task-switch') > 100);
  t.is(count('deadlock'), 0);
  t.is(count('lock-order'), 0);
  t.true(first.trace.length > 10_000);
  t.is(second.trace, first.trace);
  t.deepEqual(second.outcome, first.outcome);
});

test('same seed, preemption off: byte-identical trace, and no preemption in it', (t) => {
  const first = workload(99, false);
  const second = workload(99, false);
  t.is(second.trace, first.trace);
  t.false(first.trace.includes('"type":"preempt"'));
});

test('another seed gives a different trace', (t) => {
  const base = workload(1234, true).trace;
  for (const seed of [1235, 7, -1]) {
    t.not(workload(seed, true).trace, base, `seed ${seed}`);
  }
  // With preemption off the seed still drives the workload's own draws.
  t.not(workload(1, false).trace, workload(2, false).trace);
});

test('the preemption stream does not shift the workload stream: same seed, same first draws', (t) => {
  const a = new Simulation({ seed: 5, preempt: PREEMPT });
  const b = new Simulation({ seed: 5 });
  a.rng('preempt').int(0, 1_000); // another component drawing first
  const drawsA = Array.from({ length: 8 }, () => a.rng('workload').int(0, 1_000_000));
  const drawsB = Array.from({ length: 8 }, () => b.rng('workload').int(0, 1_000_000));
  t.deepEqual(drawsA, drawsB);
  t.notDeepEqual(drawsA, Array.from({ length: 8 }, () => b.rng('other').int(0, 1_000_000)));
});

/**
 * A check-then-act on a PTE with no lock: read the entry, (possibly be preempted), write
 * back the read value plus one. Two tasks start at the same instant; a lost update means
 * one task's write overwrote the other's.
 */
function pteRace(seed: number, preempt: boolean): { final: number; preempts: number } {
  const sim = new Simulation({ seed, preempt: preempt ? PREEMPT : false });
  let preempts = 0;
  sim.trace$.subscribe((r) => {
    if (r.type === 'preempt') preempts++;
  });
  let pte = 0;
  for (const name of ['cpu0', 'cpu1']) {
    sim.spawn(name, function* () {
      const seen = pte;
      yield* sim.preemptPoint('pte read');
      pte = seen + 1;
    });
  }
  const out = sim.run();
  if (out.reason !== 'idle') throw new Error(`unexpected outcome ${out.reason}`);
  return { final: pte, preempts };
}

const SEEDS = Array.from({ length: 50 }, (_, i) => i + 1);

test('a lost update that preemption exposes: never with preemption off, for some seeds with it on', (t) => {
  const off = SEEDS.filter((seed) => pteRace(seed, false).final !== 2);
  t.deepEqual(off, [], 'the plain schedule runs each read-modify-write atomically');

  const lost = SEEDS.filter((seed) => pteRace(seed, true).final !== 2);
  t.true(lost.length > 0, 'some seed in 1..50 loses an update');
  t.true(lost.length < SEEDS.length, 'and some does not: it is the seed that decides');
  t.deepEqual(lost, LOST_SEEDS, 'pinned: the same seeds lose on every run of this code');
  // Every losing run was preempted; replaying a losing seed loses again.
  for (const seed of lost) {
    t.true(pteRace(seed, true).preempts > 0);
    t.is(pteRace(seed, true).final, 1, `seed ${seed} replays`);
  }
});

/**
 * The seeds in 1..50 whose preemption draws put cpu0 aside between its read and its write
 * (about 30%, the preemption probability). If an engine change moves this list, old
 * failing seeds no longer replay: update it only on purpose.
 */
const LOST_SEEDS = [2, 3, 5, 12, 14, 15, 25, 31, 32, 37, 38, 39, 40, 45, 46, 47, 49];
