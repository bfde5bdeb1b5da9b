/**
 * Engine benchmark: what one scheduler event costs as the number of pending events grows.
 *
 * Steady state: pre-fill the heap with N events at random future times, then time M
 * cycles of pop + push (each pop is followed by one push at a random delay, so the heap
 * stays at N). The design target is a flat cost: 1M pending within 2x of 1k (rxjs's
 * VirtualTimeScheduler re-sorts on every schedule and grows ~75x from 1k to 50k).
 *
 * Wall time is fine here: this is bench code, not model code.
 *
 * @example
 *   npx tsx bench/engine.ts   # prints the JSON figures
 */
import { pathToFileURL } from 'node:url';
import { Rng, SimScheduler, Simulation } from '../kernel-model/sim/index.ts';
import { benchNotifierDispatch } from './notifier-dispatch.ts';

const SIZES = [1_000, 10_000, 100_000, 1_000_000] as const;
const CYCLES = 500_000;
const WARMUP_CYCLES = 100_000;
/** Delays drawn in [1, MAX_DELAY_NS]; wide enough that ties are rare but present. */
const MAX_DELAY_NS = 10_000_000;

function noop(): void {}

/** Wall ns per pop+push cycle with `pending` events in the heap. */
function schedulerCycleNs(pending: number, rng: Rng): number {
  const s = new SimScheduler();
  for (let i = 0; i < pending; i++) s.after(rng.int(1, MAX_DELAY_NS), noop);
  // Pre-draw the delays so that the timed loop measures the heap, not the PRNG.
  const delays = new Float64Array(CYCLES + WARMUP_CYCLES);
  for (let i = 0; i < delays.length; i++) delays[i] = rng.int(1, MAX_DELAY_NS);
  let k = 0;
  for (let i = 0; i < WARMUP_CYCLES; i++) {
    s.pop();
    s.after(delays[k++] as number, noop);
  }
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CYCLES; i++) {
    s.pop();
    s.after(delays[k++] as number, noop);
  }
  const t1 = process.hrtime.bigint();
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

export function benchEngine(): Record<string, unknown> {
  const rng = new Rng(0x5eed);
  const perEventNs: Record<string, number> = {};
  for (const n of SIZES) perEventNs[String(n)] = round(schedulerCycleNs(n, rng));
  const small = perEventNs['1000'] as number;
  const large = perEventNs['1000000'] as number;
  const ratio = Math.round((large / small) * 100) / 100;
  return {
    scheduler: {
      what: 'wall ns per pop+push cycle, steady state, by pending events',
      cycles: CYCLES,
      perEventNs,
      ratio1Mto1k: ratio,
      targetRatio: 2,
      flat: ratio <= 2,
    },
    taskWakeNsPerEvent: round(taskWakeNs()),
    notifierDispatch: benchNotifierDispatch(),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(benchEngine(), null, 2));
}
