/**
 * Sweep scaling: how the wall time of a small sweep changes from one worker process to two.
 * It runs a preset from scenarios/sweep/spec.ts through the sweep API (`runSweep`: child
 * processes, results.jsonl, summaries, plots, index.html) into a fresh temporary directory,
 * once with jobs=1 and once with jobs=2, and reports both wall times and the speedup.
 *
 * Two figures each: `pointsSeconds` runs until the last point is done (the part that the
 * worker processes share), `totalSeconds` includes writing the summaries, plots and page
 * afterwards (serial, in this process). On an idle 2-core machine the points speedup
 * approaches 2; on a shared one it says how much of a second core the sweep actually got.
 * Worker start-up (a Node process and the tsx transform per worker) is part of both.
 *
 * `SWEEP_PRESET` picks the preset (default `batching-synthetic`, 324 points; `smoke` has
 * 32), `SWEEP_REPEATS` repeats the 1-then-2 pair (the figures are the best of each).
 *
 * @example
 *   npx tsx bench/sweep-scaling.ts
 *   SWEEP_PRESET=smoke npx tsx bench/sweep-scaling.ts
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PRESET_NAMES, loadSpec, runSweep } from '../scenarios/sweep/index.ts';

const DEFAULT_PRESET = 'batching-synthetic';

interface Timing {
  /** Until the first point was done: mostly worker start-up (Node, tsx, the model's modules). */
  firstPointSeconds: number;
  pointsSeconds: number;
  totalSeconds: number;
  points: number;
  failed: number;
}

async function timeSweep(preset: string, jobs: number): Promise<Timing> {
  const dir = mkdtempSync(join(tmpdir(), `notifier-lab-bench-sweep-${jobs}-`));
  try {
    const t0 = process.hrtime.bigint();
    let lastPoint = t0;
    let firstPoint = 0n;
    const res = await runSweep({
      spec: loadSpec(preset),
      outDir: join(dir, 'out'),
      jobs,
      progress: 'lines',
      out: (line) => {
        if (!line.startsWith('point ')) return;
        lastPoint = process.hrtime.bigint();
        if (firstPoint === 0n) firstPoint = lastPoint;
      },
    });
    const t1 = process.hrtime.bigint();
    const s = (ns: bigint) => Math.round(Number(ns) / 1e6) / 1e3;
    return { firstPointSeconds: s(firstPoint - t0), pointsSeconds: s(lastPoint - t0), totalSeconds: s(t1 - t0), points: res.points, failed: res.failed };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchSweepScaling(): Promise<Record<string, unknown>> {
  const preset = process.env['SWEEP_PRESET'] || DEFAULT_PRESET;
  if (!PRESET_NAMES.includes(preset)) throw new Error(`SWEEP_PRESET=${preset}: not a preset (${PRESET_NAMES.join(', ')})`);
  const envRepeats = Number(process.env['SWEEP_REPEATS']);
  const repeats = Number.isInteger(envRepeats) && envRepeats > 0 ? envRepeats : 1;
  const one: Timing[] = [];
  const two: Timing[] = [];
  for (let i = 0; i < repeats; i++) {
    one.push(await timeSweep(preset, 1));
    two.push(await timeSweep(preset, 2));
  }
  const best = (ts: Timing[], k: 'firstPointSeconds' | 'pointsSeconds' | 'totalSeconds') => Math.min(...ts.map((t) => t[k]));
  const afterFirst = (ts: Timing[]) => Math.min(...ts.map((t) => t.pointsSeconds - t.firstPointSeconds));
  const r2 = (x: number) => Math.round(x * 100) / 100;
  const failed = [...one, ...two].reduce((n, t) => n + t.failed, 0);
  return {
    what: `wall time of the '${preset}' sweep preset through runSweep (child processes, results, summaries, plots) with 1 and 2 worker processes`,
    preset,
    points: one[0]?.points ?? 0,
    repeats,
    envVars: ['SWEEP_PRESET', 'SWEEP_REPEATS'],
    jobs1: { firstPointSeconds: best(one, 'firstPointSeconds'), pointsSeconds: best(one, 'pointsSeconds'), totalSeconds: best(one, 'totalSeconds') },
    jobs2: { firstPointSeconds: best(two, 'firstPointSeconds'), pointsSeconds: best(two, 'pointsSeconds'), totalSeconds: best(two, 'totalSeconds') },
    speedupPoints: r2(best(one, 'pointsSeconds') / best(two, 'pointsSeconds')),
    // From the first point done to the last: the part start-up does not weigh on.
    speedupAfterFirstPoint: r2(afterFirst(one) / afterFirst(two)),
    speedupTotal: r2(best(one, 'totalSeconds') / best(two, 'totalSeconds')),
    idealSpeedup: 2,
    failedPoints: failed,
    runs: { jobs1: one, jobs2: two },
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(await benchSweepScaling(), null, 2));
}
