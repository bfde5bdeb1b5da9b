/**
 * PCT, a mode of the engine's one scheduling option (issue 19 item 5): priority-based
 * scheduling with d - 1 change points (Burckhardt et al., ASPLOS 2010). The same seed gives
 * the same trace byte for byte, in the engine, in a story (`lab run --schedule`) and in a
 * fuzz run (`lab fuzz --schedule`); the highest-priority ready task runs; the guarantee is
 * 1/(n·k^(d-1)).
 */
import test from 'ava';
import {
  Mutex, PCT_DEFAULT_STEPS, PctPolicy, Simulation, parseScheduleSpec, pctBound, serializeTrace,
  type ScheduleOption, type TraceRecord,
} from '../../kernel-model/sim/index.ts';
import { runScenario } from '../../scenarios/scenario.ts';
import { mirrorSeqRace } from '../../scenarios/explore/mirror-seq-race.ts';
import { runCommands } from '../../scenarios/fuzz/run.ts';
import { DEFAULT_RUN_CONFIG } from '../../scenarios/fuzz/run.ts';
import { fuzzTarget } from '../../scenarios/fuzz/targets.ts';
import { replayReproducer, type Reproducer } from '../../scenarios/fuzz/fuzz.ts';
import { reproducerSchema } from '../../scenarios/fuzz/cli.ts';
import { runMain } from '../../scenarios/cli.ts';

/** Four tasks, each taking one mutex three times, all ready at the same instants. */
function contend(seed: number, schedule: ScheduleOption): { trace: string; order: string[]; policy: PctPolicy } {
  const sim = new Simulation({ seed, schedule });
  const records: TraceRecord[] = [];
  sim.trace$.subscribe((r) => records.push(r));
  const m = new Mutex(sim, 'm');
  const order: string[] = [];
  for (let i = 0; i < 4; i++) {
    sim.spawn(`t${i}`, function* () {
      for (let k = 0; k < 3; k++) {
        yield* m.lock();
        order.push(`t${i}`);
        m.unlock();
        yield* sim.sleep(10);
      }
    });
  }
  sim.run();
  return { trace: serializeTrace(records), order, policy: sim.schedulePolicy as PctPolicy };
}

test('pct: same seed, same trace byte for byte; seeds give different priority orders', (t) => {
  const pct: ScheduleOption = { mode: 'pct', depth: 3, steps: 12 };
  const orders = new Set<string>();
  for (let seed = 1; seed <= 12; seed++) {
    const a = contend(seed, pct);
    t.is(a.trace, contend(seed, pct).trace, `seed ${seed}`);
    orders.add(a.order.slice(0, 4).join(','));
  }
  t.true(orders.size >= 4, `${orders.size} distinct first rounds over 12 seeds`);
});

test('pct with d=1 (no change point) is strict priority scheduling: every round runs the tasks in the same order', (t) => {
  for (let seed = 1; seed <= 6; seed++) {
    const { order, policy } = contend(seed, { mode: 'pct', depth: 1, steps: 100 });
    const first = order.slice(0, 4).join(',');
    t.is(order.slice(4, 8).join(','), first, `seed ${seed}`);
    t.is(order.slice(8, 12).join(','), first, `seed ${seed}`);
    t.is(policy.tasks, 4);
    t.is(policy.steps, 12, 'one step per mutex_lock preemption point');
  }
});

test('pct: a change point demotes the running task below every other (the round order changes from that step on)', (t) => {
  // d=2, k=4: one change point among the first 4 steps, which are the first round's locks.
  const d1Last = new Set<string>();
  for (let seed = 1; seed <= 10; seed++) {
    const { order, policy } = contend(seed, { mode: 'pct', depth: 2, steps: 4 });
    t.is(policy.demoted.length, 1, `seed ${seed}`);
    const demoted = `t${(policy.demoted[0] as number) - 1}`;
    // Once demoted, that task runs after every other one, in its round and the later ones.
    for (const round of [0, 1, 2]) t.is(order[round * 4 + 3], demoted, `seed ${seed} round ${round}: ${order.join(',')}`);
    d1Last.add(demoted);
  }
  t.true(d1Last.size > 1, 'different seeds demote different tasks');
});

test('the guarantee: 1/(n·k^(d-1)); the spelling pct[:d=D,k=K] parses, bad input names what is accepted', (t) => {
  t.is(pctBound(4, 10, 3), 1 / 400);
  t.is(pctBound(5, 1000, 1), 1 / 5);
  t.deepEqual(parseScheduleSpec('pct'), { mode: 'pct', depth: 3, steps: PCT_DEFAULT_STEPS });
  t.deepEqual(parseScheduleSpec('pct:d=2,k=50'), { mode: 'pct', depth: 2, steps: 50 });
  t.deepEqual(parseScheduleSpec('jitter:p=0.5,max=10'), { mode: 'jitter', probability: 0.5, maxDelayNs: 10 });
  t.deepEqual(parseScheduleSpec('plain'), { mode: 'plain' });
  for (const bad of ['pct:d=0', 'pct:x=1', 'pct:d', 'chaos', 'jitter:p=2', 'plain:d=1']) {
    const r = parseScheduleSpec(bad);
    t.true('error' in r && r.error.includes('accepted') || ('error' in r && r.error.includes(bad.split(':')[0]!)), bad);
  }
});

test('pct in a story (lab run --schedule): same seed, same trace byte for byte, and the guarantee is printed', async (t) => {
  const story = (seed: number) => {
    const records: TraceRecord[] = [];
    const report = runScenario(mirrorSeqRace, {
      seed: 1, profile: 'linux-6.x', driver: 'broken-mirror', params: {}, schedule: { mode: 'pct', depth: 3, steps: 20 },
      observe: (sim) => sim.trace$.subscribe((r) => records.push(r)),
    });
    return { trace: serializeTrace(records), report, seed };
  };
  const a = story(1);
  t.true(a.trace.length > 0);
  t.is(a.trace, story(1).trace);
  const lines: string[] = [];
  const code = await runMain(['run', 'mirror-seq-race', '--schedule', 'pct:d=3,k=20'], (l) => lines.push(l));
  t.true(code === 0 || code === 1);
  const g = lines.find((l) => l.startsWith('schedule pct d=3 k=20'));
  t.truthy(g, lines.join('\n'));
  t.regex(g!, /probability >= 1\/\(n·k\^2\) = [0-9.e-]+ \(n = \d+ tasks, k = 20 steps\)/);
  const bad: string[] = [];
  t.is(await runMain(['run', 'mirror-seq-race', '--schedule', 'pct:d=99'], (l) => bad.push(l)), 2);
  t.is(bad.length, 1);
});

test('pct in a fuzz run: same seed, same trace byte for byte; a version-3 reproducer keeps the schedule and replays it', (t) => {
  const target = fuzzTarget('odp')!;
  const schedule: ScheduleOption = { mode: 'pct', depth: 3, steps: 500 };
  const commands = [
    { node: 0, proc: 0, thread: 0, at: 0, op: 'post', verb: 'write', mr: 0, peerMr: 0, page: 0, pages: 4 },
    { node: 1, proc: 0, thread: 1, at: 0, op: 'munmap', slot: 0, first: 1, pages: 2 },
    { node: 1, proc: 0, thread: 0, at: 0, op: 'store', slot: 0, page: 2, byte: 7 },
  ] as const;
  const once = () => {
    const records: TraceRecord[] = [];
    const r = runCommands({ name: target.name, nic: target.nic, strategy: (sim) => target.strategy(sim) }, commands as never, {
      ...DEFAULT_RUN_CONFIG, seed: 5, profile: 'linux-6.x', schedule, observe: (sim) => { sim.trace$.subscribe((x) => records.push(x)); },
    });
    return { trace: serializeTrace(records), r };
  };
  const a = once();
  t.is(a.trace, once().trace);
  t.true(a.trace.includes('"type":"preempt"'), 'PCT switched tasks somewhere');
  const rep: Reproducer = {
    version: 3, driver: 'odp', module: null, sets: [], schedule, scenario: null, profile: 'linux-6.x', simSeed: 5,
    preempt: DEFAULT_RUN_CONFIG.preempt, frames: DEFAULT_RUN_CONFIG.frames, commandPhaseNs: DEFAULT_RUN_CONFIG.commandPhaseNs,
    epilogueNs: DEFAULT_RUN_CONFIG.epilogueNs, maxEvents: DEFAULT_RUN_CONFIG.maxEvents, found: null, commands: [...commands] as never,
  };
  t.true(reproducerSchema.safeParse(JSON.parse(JSON.stringify(rep))).success);
  const replayed = replayReproducer(target, rep);
  t.is(replayed.events, a.r.events, 'the replay runs the same events as the PCT run');
  t.is(replayed.endNs, a.r.endNs);
});
