import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
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
import { prepareOutputDir } from '../cli-errors.ts';
import { isModuleRef } from '../user-module.ts';
import { freshDist } from '../../bin/dist.js';

/** Bad input found while preparing a sweep (the CLI prints it as one line, exit 2). */
export class SweepUsageError extends Error {}

export interface SweepRunOptions {
  spec: SweepSpec;
  /** Where the spec's module references are resolved (its file's directory); default the working directory. */
  baseDir?: string;
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
  /** 0 when every point gave a record, 1 otherwise, 130 when interrupted (SIGINT). */
  code: number;
  interrupted?: boolean;
}

/** The lock file a sweep or merge holds in its output directory while it writes there. */
export const LOCK_FILE = '.lock';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Take `dir`/.lock (exclusive create, holding our pid); a lock whose process is gone is
 * stale and taken over. Returns the release function. Two sweeps into one --out: the
 * second stops at once with one line.
 */
export function lockOutDir(dir: string): () => void {
  const file = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new SweepUsageError(`cannot create the lock file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      let pid = NaN;
      try {
        pid = Number(readFileSync(file, 'utf8').trim());
      } catch {
        // unreadable: treat as stale
      }
      if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new SweepUsageError(`${dir} is in use by another sweep or merge (pid ${pid}, lock file ${file}); wait for it to finish, or choose another --out`);
      }
      try {
        unlinkSync(file);
      } catch {
        // someone else took it over; the next attempt finds out
      }
      continue;
    }
    writeSync(fd, `${process.pid}\n`);
    closeSync(fd);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      try {
        unlinkSync(file);
      } catch {
        // already gone
      }
    };
  }
  throw new SweepUsageError(`${dir}: could not take the lock file ${file}`);
}

/** Where a sweep writes without --out: sweep-results/NAME under the working directory. */
export function defaultOutDir(name: string): string {
  return join('sweep-results', name);
}

const WORKER_FILE = fileURLToPath(new URL('./worker.ts', import.meta.url));

/**
 * The command line of a worker child process: the precompiled worker (dist/sweep-worker.js,
 * `npm run build`) when it is fresh (bin/dist.js) and the grid names no user module, which
 * must load through tsx and see the same copies of the model's modules as the worker;
 * otherwise the sources under tsx. A worker from the build starts in 0.27 s, from the
 * sources in about 1 s (bench/README.md, issue 22 item 4).
 */
export function workerCommand(userModules: boolean): { command: string; args: string[] } {
  const bundle = userModules ? null : freshDist('sweep-worker');
  if (bundle) return { command: process.execPath, args: [bundle] };
  return { command: process.execPath, args: ['--import', import.meta.resolve('tsx'), WORKER_FILE] };
}

/** One long-lived child process running points one at a time. */
class WorkerProcess {
  private readonly child: ChildProcessWithoutNullStreams;
  private waiting: { point: SweepPoint; resolve: (r: PointResult) => void; reject: (e: Error) => void } | null = null;
  private stderrTail = '';
  private exited = false;

  constructor(userModules: boolean) {
    const { command, args } = workerCommand(userModules);
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

  /** End the worker's input; resolves once it has exited, so a finished sweep leaves no child behind. */
  close(): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((resolve) => {
      this.child.once('exit', () => resolve());
      this.child.stdin.end();
    });
  }

  kill(): void {
    if (!this.exited) this.child.kill('SIGTERM');
  }
}

/**
 * Run a sweep (or one shard of it) into `outDir`: finished points are appended to
 * results.jsonl in batches with an fsync each (ResultsAppender), so an interrupted sweep
 * loses the points in flight and, if killed outright, the last batch; `resume` skips the
 * points already there (and runs failed ones again). Once the slice is complete,
 * results.jsonl is rewritten in point order, and for a whole-grid run the summaries,
 * plots and index.html are written.
 */
export async function runSweep(opts: SweepRunOptions): Promise<SweepRunResult> {
  const out = opts.out ?? ((l: string) => console.log(l));
  const err = opts.err ?? out;
  const { spec, outDir } = opts;
  const shard = opts.shard ?? null;
  const jobs = Math.max(1, opts.jobs ?? availableParallelism());
  const all = expandGrid(spec, opts.baseDir);
  const slice = shardPoints(all, shard);
  const sliceIds = new Set(slice.map((p) => p.id));

  prepareOutputDir(outDir, '--out');
  const release = lockOutDir(outDir);
  try {
    return await runLocked(opts, { out, err, all, slice, sliceIds, jobs, shard });
  } finally {
    release();
  }
}

async function runLocked(
  opts: SweepRunOptions,
  c: { out: (l: string) => void; err: (l: string) => void; all: SweepPoint[]; slice: SweepPoint[]; sliceIds: Set<string>; jobs: number; shard: Shard | null },
): Promise<SweepRunResult> {
  const { spec, outDir } = opts;
  const { out, err, all, slice, sliceIds, jobs, shard } = c;
  const resultsFile = join(outDir, RESULTS_FILE);
  const meta = { spec, shard };
  let oldMeta: ReturnType<typeof readMeta>;
  let prior: ReturnType<typeof readResults>;
  try {
    oldMeta = readMeta(outDir);
    prior = readResults(resultsFile);
  } catch (e) {
    throw new SweepUsageError((e as Error).message);
  }
  const existing: ResultLine[] = [];
  const hasResults = prior.lines.length > 0 || prior.partial;
  if (hasResults && !opts.resume) {
    throw new SweepUsageError(`${outDir} already holds sweep results; pass --resume to continue that sweep, or choose another --out`);
  }
  if (oldMeta && canonicalJson(oldMeta) !== canonicalJson(meta) && (hasResults || !opts.resume)) {
    const what = canonicalJson(oldMeta.spec) !== canonicalJson(spec) ? `sweep '${oldMeta.spec?.name}' with another spec` : `shard ${formatShard(oldMeta.shard)}`;
    throw new SweepUsageError(`${outDir} holds ${what}; ${hasResults ? '--resume needs the same spec and --shard' : 'choose another --out'} (now '${spec.name}', shard ${formatShard(shard)})`);
  }
  if (opts.resume && hasResults) {
    if (prior.partial) dropPartialTail(resultsFile, prior.validBytes);
    const seen = new Set<string>();
    for (const l of prior.lines) {
      if (!sliceIds.has(l.result.id)) throw new SweepUsageError(`${resultsFile} holds point ${l.result.id}, which is not in this sweep`);
      // Only a point with a record is done: failed ones, and lines without a record, run again.
      const complete = l.result.error === undefined && typeof l.result.record === 'object' && l.result.record !== null;
      if (seen.has(l.result.id) || !complete) continue;
      seen.add(l.result.id);
      existing.push(l);
    }
  }
  writeFileAtomic(join(outDir, META_FILE), metaJson(meta));

  const done = new Set(existing.map((l) => l.result.id));
  const todo = slice.filter((p) => !done.has(p.id));
  const nProc = Math.min(jobs, todo.length);
  if (!opts.quiet) {
    err(
      `sweep ${spec.name}: ${all.length} points${shard ? `, shard ${formatShard(shard)} owns ${slice.length}` : ''}` +
        `${done.size > 0 ? `, ${done.size} already done` : ''}; running ${todo.length} on ${nProc} process${nProc === 1 ? '' : 'es'} -> ${outDir}`,
    );
  }

  // Four results per worker, or half a second's worth, per write and fsync.
  const appender = new ResultsAppender(resultsFile, { batchLines: 4 * nProc, batchMs: 500 });
  const progress = createProgress(opts.quiet ? 'none' : opts.progress ?? 'auto', slice.length, done.size, err);
  const fresh: ResultLine[] = [];
  const queue = [...todo];
  const workers: WorkerProcess[] = [];
  const label = (p: SweepPoint) =>
    `#${p.index} ${p.params.strategy} ${p.params.policy}${p.params.windowNs !== null ? ` w=${p.params.windowNs / 1000}µs` : ''}` +
    `${p.params.count !== null ? ` n=${p.params.count}` : ''} tasks=${p.params.tasks} seed=${p.seed}`;

  // Ctrl-C: stop handing out points, stop the workers, restore the terminal, keep what is written.
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
    queue.length = 0;
    for (const w of workers) w.kill();
  };
  process.on('SIGINT', onSigint);
  const userModules = [...opts.spec.grid.strategy, ...opts.spec.grid.policy].some((x) => typeof x === 'string' && isModuleRef(x));
  try {
    await Promise.all(
      Array.from({ length: nProc }, async () => {
        let worker = new WorkerProcess(userModules);
        workers.push(worker);
        try {
          for (let point = queue.shift(); point; point = queue.shift()) {
            let result: PointResult;
            try {
              result = await worker.run(point);
            } catch (e) {
              if (interrupted) break;
              result = { index: point.index, id: point.id, seed: point.seed, params: point.params, error: (e as Error).message };
              if (!worker.alive) {
                worker = new WorkerProcess(userModules);
                workers.push(worker);
              }
            }
            if (interrupted) break;
            const line = JSON.stringify(result);
            appender.append(line);
            fresh.push({ line, result });
            if (result.error !== undefined) {
              err(`point #${point.index} (${point.id}) failed: ${result.error}`);
            }
            progress.tick(label(point));
          }
        } finally {
          await worker.close();
        }
      }),
    );
  } finally {
    process.off('SIGINT', onSigint);
    progress.stop();
    appender.close();
  }

  if (interrupted) {
    // cli-progress hid the cursor and turned autowrap off; make sure both are back.
    if (process.stderr.isTTY) process.stderr.write('\x1b[?25h\x1b[?7h');
    const kept = existing.length + fresh.length;
    const again = `lab sweep ${opts.specArg ?? spec.name} --out ${outDir}${shard ? ` --shard ${formatShard(shard)}` : ''} --resume`;
    err(`interrupted: ${kept} of ${slice.length} points kept in ${resultsFile}; continue with: ${again}`);
    return { points: slice.length, skipped: existing.length, ran: fresh.length, failed: 0, files: [], code: 130, interrupted: true };
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
  if (totalFailed > 0) err(`${totalFailed} point${totalFailed === 1 ? '' : 's'} failed (see "error" in ${RESULTS_FILE})`);
  return { points: slice.length, skipped: existing.length, ran: fresh.length, failed: totalFailed, files, code: totalFailed > 0 ? 1 : 0 };
}
