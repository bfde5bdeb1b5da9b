/**
 * Engine benchmark on a task-heavy model: the batching study's queueing skeleton on the
 * engine alone (no kernel model, no NIC), so the figure is what the engine itself costs
 * per event when every event is a task being spawned, parked, woken or handed a mutex.
 *
 * The model (issue 22, item 7):
 * - DMA work items arrive as a Poisson process, one every 2 µs on average; each is a task
 *   that takes the engine's mutex, works 0.4 µs (a sleep) and releases it.
 * - Invalidations arrive as a Poisson process, one every 100 µs on average. The first one
 *   after a sync opens a 50 µs coalescing window; when it closes, one sync task takes the
 *   engine's mutex and holds it 20 µs (every invalidation of the window is served by it).
 * - 2 virtual seconds (`QUEUEING_SECONDS` changes it).
 *
 * Figures: engine events, events per wall second and per CPU second (user + system of the
 * process: it moves less than wall time when other processes compete for the cores), and
 * the simulated counts (work items, syncs, coalesced invalidations, the worst queue behind
 * the mutex), which are exact: same seed, same counts, on any machine and before and after
 * any engine change that keeps the simulation's semantics. `QUEUEING_REPEATS` (default 3)
 * runs it several times in one process; rates are the median, with the lowest and highest.
 *
 * @example
 *   npx tsx bench/queueing.ts
 *   QUEUEING_SECONDS=0.2 QUEUEING_REPEATS=1 npx tsx bench/queueing.ts   # quick, or under callgrind
 */
import { pathToFileURL } from 'node:url';
import { Mutex, Simulation, type Rng } from '../kernel-model/sim/index.ts';

const SEED = 0x9ee0e;
const DMA_EVERY_NS = 2_000;
const DMA_WORK_NS = 400;
const INVAL_EVERY_NS = 100_000;
const WINDOW_NS = 50_000;
const SYNC_NS = 20_000;

/** An exponentially distributed delay of the given mean, in whole ns (at least 1). */
function exp(rng: Rng, mean: number): number {
  const u = rng.int(1, 0x3fffffff) / 0x40000000;
  return Math.max(1, Math.round(-mean * Math.log(u)));
}

export interface QueueingCounts {
  events: number;
  virtualNs: number;
  workItems: number;
  syncs: number;
  invalidations: number;
  maxQueue: number;
}

/** Build and run the model once; returns the simulated counts (deterministic). */
export function runQueueing(seconds: number, seed = SEED): QueueingCounts {
  const sim = new Simulation({ seed });
  const untilNs = Math.round(seconds * 1e9);
  const engine = new Mutex(sim, 'engine');
  const c = { workItems: 0, syncs: 0, invalidations: 0, maxQueue: 0 };
  let queued = 0;
  function* workItem() {
    queued++;
    if (queued > c.maxQueue) c.maxQueue = queued;
    yield* engine.lock();
    yield* sim.sleep(DMA_WORK_NS);
    engine.unlock();
    queued--;
    c.workItems++;
  }
  let windowOpen = false;
  function* sync() {
    yield* sim.sleep(WINDOW_NS);
    windowOpen = false; // invalidations from here on wait for the next window
    yield* engine.lock();
    yield* sim.sleep(SYNC_NS);
    engine.unlock();
    c.syncs++;
  }
  const dmaRng = sim.rng('dma');
  sim.spawn('dma-arrivals', function* () {
    for (;;) {
      yield* sim.sleep(exp(dmaRng, DMA_EVERY_NS));
      sim.spawn('dma', workItem, { kind: 'worker' });
    }
  }, { kind: 'kthread' });
  const invRng = sim.rng('inval');
  sim.spawn('invalidations', function* () {
    for (;;) {
      yield* sim.sleep(exp(invRng, INVAL_EVERY_NS));
      c.invalidations++;
      if (!windowOpen) {
        windowOpen = true;
        sim.spawn('sync', sync, { kind: 'worker' });
      }
    }
  }, { kind: 'kthread' });
  const out = sim.run({ untilNs, maxEvents: Infinity });
  if (out.reason !== 'time-limit') throw new Error(`queueing model ended with ${out.reason}: ${out.failure ?? ''}`);
  return { events: out.events, virtualNs: out.now, ...c };
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

export function benchQueueing(): Record<string, unknown> {
  const envSeconds = Number(process.env['QUEUEING_SECONDS']);
  const seconds = Number.isFinite(envSeconds) && envSeconds > 0 ? envSeconds : 2;
  const envRepeats = Number(process.env['QUEUEING_REPEATS']);
  const repeats = Number.isInteger(envRepeats) && envRepeats > 0 ? envRepeats : 3;
  const walls: number[] = [];
  const cpus: number[] = [];
  let counts: QueueingCounts | undefined;
  for (let r = 0; r < repeats; r++) {
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const got = runQueueing(seconds);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    walls.push(wall);
    cpus.push((cpu.user + cpu.system) / 1e6);
    if (counts && JSON.stringify(counts) !== JSON.stringify(got)) throw new Error('queueing model is not deterministic');
    counts = got;
    process.stderr.write(`queueing: run ${r + 1}/${repeats}: ${wall.toFixed(2)} s wall, ${(cpus[r] as number).toFixed(2)} s CPU\n`);
  }
  const c = counts as QueueingCounts;
  const rate = (s: number) => Math.round(c.events / s);
  return {
    what: 'task-heavy queueing model on the engine alone: events per wall and per CPU second',
    virtualSeconds: seconds,
    repeats,
    envVars: ['QUEUEING_SECONDS', 'QUEUEING_REPEATS'],
    counts: c,
    wallSeconds: walls.map((x) => Math.round(x * 1000) / 1000),
    cpuSeconds: cpus.map((x) => Math.round(x * 1000) / 1000),
    eventsPerWallSecond: rate(median(walls)),
    eventsPerWallSecondMin: rate(Math.max(...walls)),
    eventsPerWallSecondMax: rate(Math.min(...walls)),
    eventsPerCpuSecond: rate(median(cpus)),
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(benchQueueing(), null, 2));
}
