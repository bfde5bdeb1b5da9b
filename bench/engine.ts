/**
 * Engine benchmark: what one scheduler event costs as the number of pending events grows.
 *
 * Steady state: pre-fill the scheduler with N events at random future times, then time M
 * cycles of pop + push (`runNext` then `call` at a random delay, the path the engine takes
 * for every task wake-up, so the queue stays at N). The design target is a flat cost: 1M pending within 2x of 1k (rxjs's
 * VirtualTimeScheduler re-sorts on every schedule and grows ~75x from 1k to 50k).
 *
 * Wall time is fine here: this is bench code, not model code. The sizes run in turn,
 * `ENGINE_REPEATS` times (default 3); each figure is the median of its repeats, the ratio
 * the median of the per-repeat ratios, with the lowest and highest beside it. The time the
 * garbage collector took inside each timed loop is reported per cycle too (from the
 * runtime's `gc` performance entries): with 1M pending every event outlives the young
 * generation, so the scavenges that copy and promote them are a visible part of the cost.
 *
 * @example
 *   npx tsx bench/engine.ts   # prints the JSON figures
 *   ENGINE_REPEATS=5 npx tsx bench/engine.ts
 */
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Rng, SimScheduler, Simulation } from '../kernel-model/sim/index.ts';
import { benchNotifierDispatch } from './notifier-dispatch.ts';

const SIZES = [1_000, 10_000, 100_000, 1_000_000] as const;
const CYCLES = 500_000;
const WARMUP_CYCLES = 100_000;
/** Delays drawn in [1, MAX_DELAY_NS]; wide enough that ties are rare but present. */
const MAX_DELAY_NS = 10_000_000;

function noop(): void {}

/** CPU ns (user + system) per cycle, by pending events, one entry per repeat. */
const cpuRuns: Record<string, number[]> = {};

/** Timed loops, as performance.now() spans, to attribute GC entries to. */
const windows: { pending: number; from: number; to: number }[] = [];

/** Wall ns per pop+push cycle with `pending` events in the heap. */
function schedulerCycleNs(pending: number, rng: Rng): number {
  const s = new SimScheduler();
  for (let i = 0; i < pending; i++) s.call(rng.int(1, MAX_DELAY_NS), noop, undefined);
  // Pre-draw the delays so that the timed loop measures the heap, not the PRNG.
  const delays = new Float64Array(CYCLES + WARMUP_CYCLES);
  for (let i = 0; i < delays.length; i++) delays[i] = rng.int(1, MAX_DELAY_NS);
  let k = 0;
  for (let i = 0; i < WARMUP_CYCLES; i++) {
    s.runNext();
    s.call(delays[k++] as number, noop, undefined);
  }
  const from = performance.now();
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CYCLES; i++) {
    s.runNext();
    s.call(delays[k++] as number, noop, undefined);
  }
  const t1 = process.hrtime.bigint();
  const c1 = process.cpuUsage(c0);
  (cpuRuns[String(pending)] ??= []).push(((c1.user + c1.system) * 1000) / CYCLES);
  windows.push({ pending, from, to: performance.now() });
  if (s.pending !== pending) throw new Error(`heap drifted: ${s.pending} pending, expected ${pending}`);
  return Number(t1 - t0) / CYCLES;
}

/** Wall ns per engine event for a task that sleeps in a loop (resume + generator step + heap). */
function taskWakeNs(): number {
  const sim = new Simulation({ seed: 1 });
  sim.spawn('kthread', function* () {
    for (;;) yield* sim.sleep(1_000);
  }, { kind: 'kthread' });
  sim.run({ maxEvents: 50_000 }); // warm-up
  const t0 = process.hrtime.bigint();
  const out = sim.run({ maxEvents: 1_000_000 });
  const t1 = process.hrtime.bigint();
  return Number(t1 - t0) / out.events;
}

const round = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;
const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

export async function benchEngine(): Promise<Record<string, unknown>> {
  const envRepeats = Number(process.env['ENGINE_REPEATS']);
  const repeats = Number.isInteger(envRepeats) && envRepeats > 0 ? envRepeats : 3;
  const gcs: { start: number; duration: number }[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push({ start: e.startTime, duration: e.duration });
  });
  obs.observe({ entryTypes: ['gc'] });
  windows.length = 0;
  const rng = new Rng(0x5eed);
  const runs: Record<string, number[]> = {};
  const ratios: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const one: Record<string, number> = {};
    for (const n of SIZES) (runs[String(n)] ??= []).push((one[String(n)] = schedulerCycleNs(n, rng)));
    ratios.push((one['1000000'] as number) / (one['1000'] as number));
  }
  const taskWake = round(taskWakeNs());
  const notifierDispatch = benchNotifierDispatch(repeats);
  // The gc entries arrive once the event loop turns.
  await new Promise((resolve) => setTimeout(resolve, 50));
  obs.disconnect();
  const gcNs: Record<string, number> = {};
  for (const n of SIZES) {
    const ws = windows.filter((w) => w.pending === n);
    const ms = ws.map((w) => gcs.filter((g) => g.start >= w.from && g.start < w.to).reduce((a, g) => a + g.duration, 0));
    gcNs[String(n)] = round((median(ms) * 1e6) / CYCLES);
  }
  const perEventNs = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, round(median(v))]));
  const ratio = r2(median(ratios));
  return {
    scheduler: {
      what: 'wall ns per pop+push cycle (runNext + call, the engine\'s own path), steady state, by pending events (median of repeats)',
      cycles: CYCLES,
      repeats,
      envVars: ['ENGINE_REPEATS'],
      perEventNs,
      gcNsPerEvent: gcNs,
      cpuNsPerEvent: Object.fromEntries(Object.entries(cpuRuns).map(([k, v]) => [k, round(median(v))])),
      cpuNsPerEventMin: Object.fromEntries(Object.entries(cpuRuns).map(([k, v]) => [k, round(Math.min(...v))])),
      cpuRatio1Mto1kOfMins: r2(Math.min(...(cpuRuns['1000000'] ?? [])) / Math.min(...(cpuRuns['1000'] ?? []))),
      cpuRatio1Mto1k: r2(median((cpuRuns['1000000'] ?? []).map((v, i) => v / ((cpuRuns['1000'] ?? [])[i] as number)))),
      runs: Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, v.map(round)])),
      ratio1Mto1k: ratio,
      ratioMin: r2(Math.min(...ratios)),
      ratioMax: r2(Math.max(...ratios)),
      targetRatio: 2,
      flat: ratio <= 2,
    },
    taskWakeNsPerEvent: taskWake,
    notifierDispatch,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(await benchEngine(), null, 2));
}
