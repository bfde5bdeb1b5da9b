import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { canonicalJson, expandGrid, formatShard, shardPoints, type Shard, type SweepPoint } from './grid.ts';
import { createProgress, type ProgressMode } from './progress.ts';
import {
  META_FILE, RESULTS_FILE, ResultsAppender, dropPartialTail, metaJson, readMeta, readResults, sortedResultsText,
  writeFileAtomic, type ResultLine,
} from './results.ts';
import type { SweepSpec } from './spec.ts';
import type { PointResult } from './worker.ts';

/** Bad input found while preparing a sweep (the CLI prints it as one line, exit 2). */
export class SweepUsageError extends Error {}

export interface SweepRunOptions {
  spec: SweepSpec;
  outDir: string;
  /** Child processes; default os.availableParallelism(). */
  jobs?: number;
  shard?: Shard | null;
  /** Skip points already in DIR/results.jsonl. */
  resume?: boolean;
  out?: (line: string) => void;
  /** Progress, warnings and per-point failures (stderr); default `out`. */
  err?: (line: string) => void;
  progress?: ProgressMode;
  /** The spec as the command line named it (for the --resume line after an interrupt). */
  specArg?: string;
  /** Only errors and the final summary line. */
  quiet?: boolean;
}

export interface SweepRunResult {
  /** Points in the slice this run owns. */
  points: number;
  /** Already done before this run (resume). */
  skipped: number;
  ran: number;
  failed: number;
  /** Files written besides results.jsonl (summaries, plots, page), relative to outDir. */
  files: string[];
  /** 0 when every point gave a record, 1 otherwise. */
  code: number;
}

/** Where a sweep writes without --out: sweep-results/NAME under the working directory. */
export function defaultOutDir(name: string): string {
  return join('sweep-results', name);
}

const WORKER_FILE = fileURLToPath(new URL('./worker.ts', import.meta.url));

/** The command line of a worker child process. */
export function workerCommand(): { command: string; args: string[] } {
  return { command: process.execPath, args: ['--import', import.meta.resolve('tsx'), WORKER_FILE] };
}

/** One long-lived child process running points one at a time. */
class WorkerProcess {
  private readonly child: ChildProcessWithoutNullStreams;
  private waiting: { point: SweepPoint; resolve: (r: PointResult) => void; reject: (e: Error) => void } | null = null;
  private stderrTail = '';
  private exited = false;

  constructor() {
    const { command, args } = workerCommand();
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (s: string) => (this.stderrTail = (this.stderrTail + s).slice(-4000)));
    this.child.stdin.on('error', () => undefined); // a dead child is reported by 'exit'
    createInterface({ input: this.child.stdout, crlfDelay: Infinity }).on('line', (line) => {
      const w = this.waiting;
      if (!w) return;
      this.waiting = null;
      let r: PointResult;
      try {
        r = JSON.parse(line) as PointResult;
      } catch {
        w.reject(new Error(`worker wrote a line that is not a result: ${line.slice(0, 120)}`));
        return;
      }
      if (r.id !== w.point.id) w.reject(new Error(`worker answered point ${r.id} for ${w.point.id}`));
      else w.resolve(r);
    });
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      const w = this.waiting;
      this.waiting = null;
      const last = this.stderrTail.trim().split('\n').slice(-1)[0] ?? '';
      w?.reject(new Error(`worker process exited (${signal ?? `code ${code}`})${last ? `: ${last}` : ''}`));
    });
  }

  get alive(): boolean {
    return !this.exited;
  }

  run(point: SweepPoint): Promise<PointResult> {
    return new Promise((resolve, reject) => {
      if (this.exited) {
        reject(new Error('worker process is gone'));
        return;
      }
      this.waiting = { point, resolve, reject };
      this.child.stdin.write(`${JSON.stringify(point)}\n`);
    });
  }

  close(): void {
    if (!this.exited) this.child.stdin.end();
  }
}

/**
 * Run a sweep (or one shard of it) into `outDir`: every finished point is appended to
 * results.jsonl and fsynced as it completes, so a killed sweep loses at most the points
 * in flight; `resume` skips the points already there (and runs failed ones again). Once the slice is complete,
 * results.jsonl is rewritten in point order, and for a whole-grid run the summaries,
 * plots and index.html are written.
 */
export async function runSweep(opts: SweepRunOptions): Promise<SweepRunResult> {
  const out = opts.out ?? ((l: string) => console.log(l));
  const { spec, outDir } = opts;
  const shard = opts.shard ?? null;
  const jobs = Math.max(1, opts.jobs ?? availableParallelism());
  const all = expandGrid(spec);
  const slice = shardPoints(all, shard);
  const sliceIds = new Set(slice.map((p) => p.id));

  if (existsSync(outDir) && !statSync(outDir).isDirectory()) throw new SweepUsageError(`--out ${outDir} is not a directory`);
  mkdirSync(outDir, { recursive: true });
  const resultsFile = join(outDir, RESULTS_FILE);
  const meta = { spec, shard };
  let oldMeta: ReturnType<typeof readMeta>;
  let prior: ReturnType<typeof readResults>;
  try {
    oldMeta = readMeta(outDir);
    prior = readResults(resultsFile);
  } catch (err) {
    throw new SweepUsageError((err as Error).message);
  }
  const existing: ResultLine[] = [];
  const hasResults = prior.lines.length > 0 || prior.partial;
  if (hasResults && !opts.resume) {
    throw new SweepUsageError(`${outDir} already holds sweep results; pass --resume to continue that sweep, or choose another --out`);
  }
  if (hasResults && oldMeta && canonicalJson(oldMeta) !== canonicalJson(meta)) {
    const what = canonicalJson(oldMeta.spec) !== canonicalJson(spec) ? `sweep '${oldMeta.spec?.name}' with another spec` : `shard ${formatShard(oldMeta.shard)}`;
    throw new SweepUsageError(`${outDir} holds ${what}; --resume needs the same spec and --shard (now '${spec.name}', shard ${formatShard(shard)})`);
  }
  if (opts.resume && hasResults) {
    if (prior.partial) dropPartialTail(resultsFile, prior.validBytes);
    const seen = new Set<string>();
    for (const l of prior.lines) {
      if (!sliceIds.has(l.result.id)) throw new SweepUsageError(`${resultsFile} holds point ${l.result.id}, which is not in this sweep`);
      if (seen.has(l.result.id) || l.result.error !== undefined) continue; // failed points are run again
      seen.add(l.result.id);
      existing.push(l);
    }
  }
  writeFileAtomic(join(outDir, META_FILE), metaJson(meta));

  const done = new Set(existing.map((l) => l.result.id));
  const todo = slice.filter((p) => !done.has(p.id));
  const nProc = Math.min(jobs, todo.length);
  out(
    `sweep ${spec.name}: ${all.length} points${shard ? `, shard ${formatShard(shard)} owns ${slice.length}` : ''}` +
      `${done.size > 0 ? `, ${done.size} already done` : ''}; running ${todo.length} on ${nProc} process${nProc === 1 ? '' : 'es'} -> ${outDir}`,
  );

  const appender = new ResultsAppender(resultsFile);
  const progress = createProgress(opts.progress ?? 'auto', slice.length, done.size, out);
  const fresh: ResultLine[] = [];
  const queue = [...todo];
  const workers: WorkerProcess[] = [];
  const label = (p: SweepPoint) =>
    `#${p.index} ${p.params.strategy} ${p.params.policy}${p.params.windowNs !== null ? ` w=${p.params.windowNs / 1000}µs` : ''}` +
    `${p.params.count !== null ? ` n=${p.params.count}` : ''} tasks=${p.params.tasks} seed=${p.seed}`;

  try {
    await Promise.all(
      Array.from({ length: nProc }, async () => {
        let worker = new WorkerProcess();
        workers.push(worker);
        try {
          for (let point = queue.shift(); point; point = queue.shift()) {
            let result: PointResult;
            try {
              result = await worker.run(point);
            } catch (err) {
              result = { index: point.index, id: point.id, seed: point.seed, params: point.params, error: (err as Error).message };
              if (!worker.alive) {
                worker = new WorkerProcess();
                workers.push(worker);
              }
            }
            const line = JSON.stringify(result);
            appender.append(line);
            fresh.push({ line, result });
            if (result.error !== undefined) {
              out(`point #${point.index} (${point.id}) failed: ${result.error}`);
            }
            progress.tick(label(point));
          }
        } finally {
          worker.close();
        }
      }),
    );
  } finally {
    progress.stop();
    appender.close();
  }

  const lines = [...existing, ...fresh];
  writeFileAtomic(resultsFile, sortedResultsText(lines));
  let files: string[] = [];
  if (!shard) {
    files = (await (await import('./outputs.ts')).writeOutputs(outDir, spec, lines.map((l) => l.result))).files;
    out(`wrote ${RESULTS_FILE}, ${files.join(', ')} in ${outDir}`);
  } else {
    out(`shard ${formatShard(shard)} complete: ${lines.length} points in ${resultsFile}; join the shards with: lab merge DIR...`);
  }
  const totalFailed = lines.filter((l) => l.result.error !== undefined).length;
  if (totalFailed > 0) out(`${totalFailed} point${totalFailed === 1 ? '' : 's'} failed (see "error" in ${RESULTS_FILE})`);
  return { points: slice.length, skipped: existing.length, ran: fresh.length, failed: totalFailed, files, code: totalFailed > 0 ? 1 : 0 };
}
