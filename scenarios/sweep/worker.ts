/**
 * The sweep's child-process entry: `node --import tsx scenarios/sweep/worker.ts`.
 *
 * Reads points as JSON, one per line, on stdin (or one point as the first argument) and
 * writes one JSON result line per point to stdout, in the order received. A point that
 * throws gets a result with `error` instead of `record`. Nothing else goes to stdout:
 * console output of the model is sent to stderr. Exits when stdin ends.
 *
 * Child processes rather than worker threads, because tsx's loader hook does not reach
 * worker threads.
 */
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { POINT_RUNNERS, type PointRecord, type PointRunner } from './point-runners.ts';
import type { SweepPoint } from './grid.ts';
import { RUNNER_NAMES, type RunnerName } from './spec.ts';
import { isModuleRef, loadBatchPolicy, loadStrategy } from '../user-module.ts';

/** One finished point, as a line of results.jsonl (key order fixed: same point, same bytes). */
export interface PointResult {
  index: number;
  id: string;
  seed: number;
  params: SweepPoint['params'];
  record?: PointRecord;
  error?: string;
}

const loaded = new Map<RunnerName, PointRunner>();

export async function runPoint(point: SweepPoint): Promise<PointResult> {
  const base = { index: point.index, id: point.id, seed: point.seed, params: point.params };
  try {
    if (!(RUNNER_NAMES as readonly string[]).includes(point.runner)) throw new Error(`unknown runner '${point.runner}'`);
    // A user's strategy or policy module: loaded here (import caches it), relative to the spec.
    const dir = point.baseDir ?? process.cwd();
    if (isModuleRef(point.params.strategy)) await loadStrategy(point.params.strategy, dir);
    if (isModuleRef(point.params.policy)) await loadBatchPolicy(point.params.policy, dir);
    let runner = loaded.get(point.runner);
    if (!runner) {
      runner = await POINT_RUNNERS[point.runner]();
      loaded.set(point.runner, runner);
    }
    const record = runner(point.params, point.seed, point.durationNs);
    return { ...base, record };
  } catch (err) {
    const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return { ...base, error: msg.split('\n')[0] ?? msg };
  }
}

function write(line: string): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(`${line}\n`, (err) => (err ? reject(err) : resolve())));
}

async function main(): Promise<void> {
  const toStderr = (...args: unknown[]) => process.stderr.write(`${args.map(String).join(' ')}\n`);
  console.log = toStderr;
  console.info = toStderr;
  console.debug = toStderr;
  process.stdout.on('error', () => process.exit(0)); // the parent went away
  const arg = process.argv[2];
  if (arg !== undefined) {
    await write(JSON.stringify(await runPoint(JSON.parse(arg) as SweepPoint)));
    return;
  }
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    await write(JSON.stringify(await runPoint(JSON.parse(line) as SweepPoint)));
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`sweep worker: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
