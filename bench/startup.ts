/**
 * Start-up benchmark: how long a `lab` command and a sweep worker take to start, from the
 * sources (tsx transforms every module on each start, from its cache when warm) and from
 * the precompiled build (dist/, `npm run build`, bin/build.js). Target: a worker and
 * `lab run` start in at most 0.3 s, median of 10 starts, no user module.
 *
 * Each figure is the median of `STARTUP_RUNS` (default 10) starts of a fresh process, run
 * under /usr/bin/time for its wall and CPU (user + system) seconds and peak RSS:
 * - `lab --version`: the CLI loaded and its commands defined, nothing run;
 * - `lab run <scenario> --json`: the CLI started plus one small scenario run
 *   (`STARTUP_SCENARIO`, default pinned-ring-zero-page), so the model's modules load too;
 * - a sweep worker (scenarios/sweep/worker.ts) with its stdin closed: loaded, ready for its
 *   first point, exits at end of input.
 * Sources run with NOTIFIER_LAB_SOURCES=1 (bin/lab.js then ignores dist/); the build is
 * made first when it is missing or stale, and its build time reported.
 *
 * @example
 *   npx tsx bench/startup.ts
 *   STARTUP_RUNS=3 npx tsx bench/startup.ts
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TARGET_S = 0.3;

interface Sample { wall: number; cpu: number; rssMiB: number }

/** One start of `args` under /usr/bin/time; throws when the command fails. */
function timeOnce(args: string[], env: Record<string, string>, stdinClosed = true): Sample {
  const dir = mkdtempSync(join(tmpdir(), 'startup-'));
  const out = join(dir, 'time');
  try {
    const r = spawnSync('/usr/bin/time', ['-o', out, '-f', '%e %U %S %M', process.execPath, ...args], {
      cwd: ROOT, env: { ...process.env, ...env }, stdio: [stdinClosed ? 'ignore' : 'pipe', 'pipe', 'pipe'], encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr.slice(0, 300)}`);
    const [wall, user, sys, rss] = readFileSync(out, 'utf8').trim().split('\n').pop()!.split(' ').map(Number) as number[];
    return { wall: wall as number, cpu: (user as number) + (sys as number), rssMiB: Math.round((rss as number) / 1024) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const r3 = (x: number) => Math.round(x * 1000) / 1000;

function measure(name: string, args: string[], env: Record<string, string>, runs: number): Record<string, unknown> {
  timeOnce(args, env); // warm: tsx's transform cache, the page cache
  const xs: Sample[] = [];
  for (let i = 0; i < runs; i++) xs.push(timeOnce(args, env));
  const wall = median(xs.map((x) => x.wall));
  process.stderr.write(`startup: ${name}: median ${wall.toFixed(2)} s wall, ${median(xs.map((x) => x.cpu)).toFixed(2)} s CPU\n`);
  return {
    medianWallSeconds: r3(wall),
    medianCpuSeconds: r3(median(xs.map((x) => x.cpu))),
    minWallSeconds: r3(Math.min(...xs.map((x) => x.wall))),
    maxWallSeconds: r3(Math.max(...xs.map((x) => x.wall))),
    peakRssMiB: median(xs.map((x) => x.rssMiB)),
  };
}

export async function benchStartup(): Promise<Record<string, unknown>> {
  const envRuns = Number(process.env['STARTUP_RUNS']);
  const runs = Number.isInteger(envRuns) && envRuns > 0 ? envRuns : 10;
  const scenario = process.env['STARTUP_SCENARIO'] ?? 'pinned-ring-zero-page';
  const { freshDist } = (await import(pathToFileURL(join(ROOT, 'bin/dist.js')).href)) as { freshDist: (e: string) => string | null };
  let buildSeconds: number | null = null;
  if (!freshDist('lab') || !freshDist('sweep-worker')) {
    const t0 = Date.now();
    const b = spawnSync(process.execPath, [join(ROOT, 'bin/build.js')], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
    if (b.status !== 0) throw new Error('npm run build failed');
    buildSeconds = (Date.now() - t0) / 1000;
  }
  const src = { NOTIFIER_LAB_SOURCES: '1' };
  const dist = { NOTIFIER_LAB_SOURCES: '0' };
  const lab = join(ROOT, 'bin/lab.js');
  const figures: Record<string, unknown> = {
    labVersionSources: measure('lab --version, sources', [lab, '--version'], src, runs),
    labVersionBuild: measure('lab --version, build', [lab, '--version'], dist, runs),
    labRunSources: measure(`lab run ${scenario}, sources`, [lab, 'run', scenario, '--json'], src, runs),
    labRunBuild: measure(`lab run ${scenario}, build`, [lab, 'run', scenario, '--json'], dist, runs),
    workerSources: measure('sweep worker, sources', ['--import', 'tsx', join(ROOT, 'scenarios/sweep/worker.ts')], src, runs),
    workerBuild: measure('sweep worker, build', [join(ROOT, 'dist/sweep-worker.js')], dist, runs),
    nodeAlone: measure('node -e 0', ['-e', '0'], {}, runs),
  };
  const startOf = (k: string) => (figures[k] as { medianWallSeconds: number }).medianWallSeconds;
  return {
    what: 'process start-up, sources (tsx) vs precompiled build (dist/): median of runs, wall and CPU seconds',
    runs,
    scenario,
    envVars: ['STARTUP_RUNS', 'STARTUP_SCENARIO'],
    buildSeconds,
    ...figures,
    targetSeconds: TARGET_S,
    workerMet: startOf('workerBuild') <= TARGET_S,
    labVersionMet: startOf('labVersionBuild') <= TARGET_S,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(await benchStartup(), null, 2));
}
