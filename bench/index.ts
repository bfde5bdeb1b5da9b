/**
 * Runs every benchmark and prints one JSON object, keyed by benchmark, with a note on the
 * machine it ran on. Each benchmark runs in a child process of its own (`node --import tsx
 * bench/NAME.ts`, which prints its JSON): peak RSS figures are then those of that
 * benchmark alone, and no benchmark runs on code another one warmed up or on a heap another
 * one grew. Progress goes to stderr, the JSON to stdout.
 *
 * The defaults are the issue's sizes and take several minutes; the environment variables
 * that change them (ENGINE_REPEATS, QUEUEING_SECONDS, QUEUEING_REPEATS, TRAFFIC_WRITES, IMPLICIT_READS,
 * SANITIZER_WRITES, SANITIZER_PAIRS, SWEEP_PRESET, SWEEP_REPEATS, EXPLORE_MAX_K, STARTUP_RUNS) reach the children, and
 * `BENCH_ONLY=engine,sanitizer` picks benchmarks. bench/README.md lists the targets and
 * the last figures.
 *
 * To add one: write bench/NAME.ts printing its JSON when run directly, and add NAME below.
 *
 * @example
 *   npm run bench
 *   BENCH_ONLY=engine npm run bench
 */
import { spawn } from 'node:child_process';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** Benchmark name -> what it measures (the file is bench/NAME.ts). */
const BENCHES = {
  engine: 'scheduler cost per event by pending events, task wake-up, notifier dispatch by subscribers',
  queueing: 'a task-heavy queueing model (DMA work items, coalesced invalidation syncs) on the engine alone: events per wall and CPU second',
  traffic: '1M loopback 4 KiB RDMA WRITEs into a 1 GiB ODP MR: wall seconds, page accesses per wall second, peak RSS',
  implicit: '100k RDMA READs of never-written pages across 128 TiB through an implicit ODP MR: peak RSS',
  sanitizer: 'the traffic benchmark with and without the sanitizer: slowdown',
  startup: 'lab --version, lab run and a sweep worker started from the sources and from the precompiled build: median start seconds',
  'sweep-scaling': 'a sweep preset with 1 and 2 worker processes: speedup',
  explore: 'lab explore with and without the sleep-set reduction, preemption bounds 0 to 3: schedules explored and runs',
} as const;

type BenchName = keyof typeof BENCHES;

const ENV_VARS = [
  'ENGINE_REPEATS', 'QUEUEING_SECONDS', 'QUEUEING_REPEATS', 'TRAFFIC_WRITES', 'IMPLICIT_READS', 'SANITIZER_WRITES', 'SANITIZER_PAIRS',
  'SWEEP_PRESET', 'SWEEP_REPEATS', 'EXPLORE_MAX_K', 'STARTUP_RUNS',
] as const;

function runChild(name: BenchName): Promise<Record<string, unknown>> {
  const file = fileURLToPath(new URL(`./${name}.ts`, import.meta.url));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), file], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s: string) => (out += s));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code !== 0) {
        reject(new Error(`bench/${name}.ts exited with ${signal ?? `code ${code}`}`));
        return;
      }
      try {
        resolve(JSON.parse(out) as Record<string, unknown>);
      } catch {
        reject(new Error(`bench/${name}.ts did not print one JSON object: ${out.slice(0, 200)}`));
      }
    });
  });
}

async function runBenches(names: readonly BenchName[]): Promise<Record<string, unknown>> {
  const round = (x: number) => Math.round(x * 100) / 100;
  const results: Record<string, unknown> = {
    machine: {
      date: new Date().toISOString(),
      node: process.version,
      cpus: availableParallelism(),
      cpuModel: cpus()[0]?.model ?? 'unknown',
      loadAverage1mAtStart: round(loadavg()[0] ?? 0),
      env: Object.fromEntries(ENV_VARS.filter((v) => process.env[v]).map((v) => [v, process.env[v]])),
    },
  };
  for (const name of names) {
    const t0 = Date.now();
    process.stderr.write(`bench: ${name} (${BENCHES[name]})...\n`);
    results[name] = await runChild(name);
    process.stderr.write(`bench: ${name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  (results['machine'] as Record<string, unknown>)['loadAverage1mAtEnd'] = round(loadavg()[0] ?? 0);
  return results;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const only = process.env['BENCH_ONLY']?.split(',').map((s) => s.trim()).filter(Boolean);
  const all = Object.keys(BENCHES) as BenchName[];
  const unknown = (only ?? []).filter((n) => !all.includes(n as BenchName));
  if (unknown.length > 0) {
    console.error(`BENCH_ONLY: unknown benchmark(s) ${unknown.join(', ')}; known: ${all.join(', ')}`);
    process.exit(2);
  }
  console.log(JSON.stringify(await runBenches(only ? (only as BenchName[]) : all), null, 2));
}
