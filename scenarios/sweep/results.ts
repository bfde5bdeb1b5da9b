import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { canonicalJson, type Shard } from './grid.ts';
import type { SweepSpec } from './spec.ts';
import type { PointResult } from './worker.ts';

/** Every finished point, one JSON line each: appended as points finish, sorted by index once the run is complete. */
export const RESULTS_FILE = 'results.jsonl';
/** The spec and shard a directory's results belong to. */
export const META_FILE = 'sweep.json';

export interface SweepMeta {
  spec: SweepSpec;
  /** The slice this directory holds, or null for the whole grid. */
  shard: Shard | null;
}

export interface ResultLine {
  /** The line as written (without its newline); kept byte for byte. */
  line: string;
  result: PointResult;
}

export interface ReadResults {
  lines: ResultLine[];
  /** Bytes of complete lines; anything after (a line cut by a kill) is not a result. */
  validBytes: number;
  /** Whether the file ended in a partial line. */
  partial: boolean;
}

/** Read a results file (missing: empty). A partial last line is reported, not parsed. */
export function readResults(file: string): ReadResults {
  if (!existsSync(file)) return { lines: [], validBytes: 0, partial: false };
  const buf = readFileSync(file);
  const lastNl = buf.lastIndexOf(0x0a);
  const validBytes = lastNl + 1;
  const text = buf.subarray(0, validBytes).toString('utf8');
  const lines: ResultLine[] = [];
  let n = 0;
  for (const line of text.split('\n')) {
    n++;
    if (!line) continue;
    let result: PointResult;
    try {
      result = JSON.parse(line) as PointResult;
    } catch {
      throw new Error(`${file} line ${n} is not a result (not JSON); the file was edited or corrupted`);
    }
    if (typeof result.index !== 'number' || typeof result.id !== 'string') throw new Error(`${file} line ${n} is not a result (no index or id)`);
    lines.push({ line, result });
  }
  return { lines, validBytes, partial: validBytes < buf.length };
}

/** Cut a results file back to its complete lines (after a kill mid-line). */
export function dropPartialTail(file: string, validBytes: number): void {
  truncateSync(file, validBytes);
}

/**
 * Appends result lines in batches: one write and one fsync per `batchLines` lines, or for
 * what has waited `batchMs`, whichever comes first, and on close. A sweep's parent gets a
 * result every few milliseconds from each worker; an fsync per line costs milliseconds on
 * a network filesystem (a cluster's shared results directory). A SIGKILL loses at most one
 * batch, which `--resume` runs again; Ctrl-C closes the appender and loses nothing.
 */
export class ResultsAppender {
  private fd: number | null;
  private pending: string[] = [];
  private timer: NodeJS.Timeout | null = null;
  /** A write or fsync the timer's flush could not do: thrown at the next append or close. */
  private failure: Error | null = null;
  private readonly batchLines: number;
  private readonly batchMs: number;

  constructor(file: string, opts: { batchLines?: number; batchMs?: number } = {}) {
    this.fd = openSync(file, 'a');
    this.batchLines = Math.max(1, opts.batchLines ?? 1);
    this.batchMs = opts.batchMs ?? 0;
  }

  append(line: string): void {
    if (this.fd === null) throw new Error('results file closed');
    if (this.failure) throw this.failure;
    this.pending.push(line);
    if (this.pending.length >= this.batchLines) this.flush();
    else if (this.timer === null) {
      this.timer = setTimeout(() => {
        try {
          this.flush();
        } catch (e) {
          this.failure = e as Error;
        }
      }, this.batchMs);
      this.timer.unref();
    }
  }

  /** Write and fsync every line appended so far. */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.fd === null || this.pending.length === 0) return;
    writeSync(this.fd, `${this.pending.join('\n')}\n`);
    fsyncSync(this.fd);
    this.pending = [];
  }

  close(): void {
    try {
      if (this.failure) throw this.failure;
      this.flush();
    } finally {
      if (this.fd !== null) closeSync(this.fd);
      this.fd = null;
    }
  }
}

/** Write a file through a temporary name and a rename, so a kill leaves the old or the new one. */
export function writeFileAtomic(file: string, content: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}

/** Result lines sorted by point index, as the canonical file content. */
export function sortedResultsText(lines: readonly ResultLine[]): string {
  return [...lines].sort((a, b) => a.result.index - b.result.index).map((l) => `${l.line}\n`).join('');
}

/** sweep.json: keys sorted, so the same spec gives the same bytes whatever order it was written in. */
export function metaJson(meta: SweepMeta): string {
  return `${JSON.stringify(JSON.parse(canonicalJson({ spec: meta.spec, shard: meta.shard })), null, 2)}\n`;
}

export function readMeta(dir: string): SweepMeta | null {
  const f = join(dir, META_FILE);
  if (!existsSync(f)) return null;
  try {
    return JSON.parse(readFileSync(f, 'utf8')) as SweepMeta;
  } catch {
    throw new Error(`${f} is not valid JSON`);
  }
}
