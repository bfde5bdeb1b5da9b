/**
 * The engine's one scheduling option (issue 11 item 5; issue 19 item 5 adds PCT as another
 * mode of it): `plain` never preempts, `jitter` preempts at preemption points as the seed
 * decides, byte-identically per seed, and the older `preempt` spelling is the same option.
 */
import test from 'ava';
import {
  Mutex, PLAIN_SCHEDULE, SCENARIO_JITTER, Simulation, describeSchedule, scheduleFromPreempt, serializeTrace,
  type ScheduleOption, type SimulationOptions, type TraceRecord,
} from '../../kernel-model/sim/index.ts';

/** Four tasks contending for one mutex at the same instants: the order they get it is the interleaving. */
function contend(opts: SimulationOptions): { trace: string; order: string[]; preempts: number } {
  const sim = new Simulation(opts);
  const records: TraceRecord[] = [];
  sim.trace$.subscribe((r) => records.push(r));
  const m = new Mutex(sim, 'm');
  const order: string[] = [];
  for (let i = 0; i < 4; i++) {
    sim.spawn(`t${i}`, function* () {
      for (let k = 0; k < 5; k++) {
        yield* m.lock();
        order.push(`t${i}`);
        yield* sim.sleep(10);
        m.unlock();
        yield* sim.sleep(5);
      }
    });
  }
  sim.run();
  return { trace: serializeTrace(records), order, preempts: records.filter((r) => r.type === 'preempt').length };
}

test('plain: no preemption ever, the same order for every seed', (t) => {
  const a = contend({ seed: 1, schedule: PLAIN_SCHEDULE });
  t.is(a.preempts, 0);
  for (const seed of [2, 3, 17]) t.deepEqual(contend({ seed, schedule: PLAIN_SCHEDULE }).order, a.order);
  t.deepEqual(contend({ seed: 1 }).order, a.order, 'plain is the default');
});

test('jitter: preemption points step aside as the seed says; byte-identical per seed, different interleavings across seeds', (t) => {
  const jitter: ScheduleOption = { mode: 'jitter', probability: 0.5, maxDelayNs: 20 };
  const orders = new Set<string>();
  for (let seed = 2; seed <= 11; seed++) {
    const a = contend({ seed, schedule: jitter });
    t.is(a.trace, contend({ seed, schedule: jitter }).trace, `seed ${seed} replays byte for byte`);
    t.true(a.preempts > 0, `seed ${seed} preempted`);
    orders.add(a.order.join(','));
  }
  t.true(orders.size > 1, `${orders.size} distinct lock orders over 10 seeds`);
  const plain = contend({ seed: 1 }).order.join(',');
  t.true([...orders].some((o) => o !== plain), 'some seed leaves the plain order');
});

test('the older preempt spelling is the jitter mode of the same option (same stream: old reproducers replay)', (t) => {
  const p = { probability: 0.3, maxDelayNs: 50 };
  t.deepEqual(scheduleFromPreempt(p), { mode: 'jitter', ...p });
  t.deepEqual(scheduleFromPreempt(false), PLAIN_SCHEDULE);
  for (const seed of [3, 4]) t.is(contend({ seed, preempt: p }).trace, contend({ seed, schedule: { mode: 'jitter', ...p } }).trace);
  t.is(new Simulation({ seed: 1, preempt: p, schedule: PLAIN_SCHEDULE }).schedule.mode, 'plain', 'schedule wins over preempt');
  t.is(describeSchedule(SCENARIO_JITTER), 'jitter p=0.1 max=1000ns');
});
