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
 * Worker start-up (a Node process, and the tsx transform per worker unless `npm run build`'s
 * dist/ is fresh) is part of both. `cpuSeconds` is user + system time of this process and
 * its workers over the sweep (the workers' from /proc/self/stat, Linux only), the figure to
 * compare when other load moves the wall time; `cores` is how many cores that kept busy.
 *
 * `SWEEP_PRESET` picks the preset (default `batching`, 324 points of the batching study,
 * issue 22's target; `batching-synthetic` is the same grid on a synthetic model, `smoke` has
 * 32), `SWEEP_REPEATS` repeats the 1-then-2 pair (the figures are the best of each).
 *
 * @example
 *   npx tsx bench/sweep-scaling.ts
 *   SWEEP_PRESET=smoke npx tsx bench/sweep-scaling.ts
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PRESET_NAMES, loadSpec, runSweep } from '../scenarios/sweep/index.ts';

const DEFAULT_PRESET = 'batching';

interface Timing {
  /** Until the first point was done: mostly worker start-up (Node, tsx, the model's modules). */
  firstPointSeconds: number;
  pointsSeconds: number;
  totalSeconds: number;
  /** User + system CPU of this process and the workers it reaped, or null off Linux. */
  cpuSeconds: number | null;
  points: number;
  failed: number;
}

let clockTicks = 0;
/** Seconds of CPU this process and its reaped children used so far (/proc/self/stat utime..cstime). */
function cpuSoFar(): number | null {
  try {
    if (!clockTicks) clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })) || 100;
    // Fields after the command name's closing parenthesis: utime is the 12th, cstime the 15th.
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0) / clockTicks;
  } catch {
    return null;
  }
}

async function timeSweep(preset: string, jobs: number): Promise<Timing> {
  const dir = mkdtempSync(join(tmpdir(), `notifier-lab-bench-sweep-${jobs}-`));
  try {
    const cpu0 = cpuSoFar();
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
    const cpu1 = cpuSoFar();
    const s = (ns: bigint) => Math.round(Number(ns) / 1e6) / 1e3;
    const cpuSeconds = cpu0 === null || cpu1 === null ? null : Math.round((cpu1 - cpu0) * 100) / 100;
    return { firstPointSeconds: s(firstPoint - t0), pointsSeconds: s(lastPoint - t0), totalSeconds: s(t1 - t0), cpuSeconds, points: res.points, failed: res.failed };
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
  // CPU of the run with the best total, and the cores it kept busy over that total.
  const cpu = (ts: Timing[]) => {
    const t = ts.reduce((a, b) => (b.totalSeconds < a.totalSeconds ? b : a));
    return { cpuSeconds: t.cpuSeconds, cores: t.cpuSeconds === null ? null : r2(t.cpuSeconds / t.totalSeconds) };
  };
  const failed = [...one, ...two].reduce((n, t) => n + t.failed, 0);
  return {
    what: `wall time of the '${preset}' sweep preset through runSweep (child processes, results, summaries, plots) with 1 and 2 worker processes`,
    preset,
    points: one[0]?.points ?? 0,
    repeats,
    envVars: ['SWEEP_PRESET', 'SWEEP_REPEATS'],
    jobs1: { firstPointSeconds: best(one, 'firstPointSeconds'), pointsSeconds: best(one, 'pointsSeconds'), totalSeconds: best(one, 'totalSeconds'), ...cpu(one) },
    jobs2: { firstPointSeconds: best(two, 'firstPointSeconds'), pointsSeconds: best(two, 'pointsSeconds'), totalSeconds: best(two, 'totalSeconds'), ...cpu(two) },
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
