/**
 * Capture a real program's memory behaviour as a workload trace (trace-format.ts).
 *
 *     npx tsx scenarios/workloads/capture.ts [--out FILE] [--max-bytes N] [--min-alloc N] [--no-alloc-log] -- COMMAND [ARGS...]
 *
 * Runs COMMAND under `strace -f -tt` for the memory and process system calls (mmap,
 * munmap, mremap, mprotect, madvise, brk, execve, clone, clone3, fork, vfork, exit,
 * exit_group) and, when a C compiler is present, with the allocation logger
 * (alloc-logger.c, built into a temporary directory and passed to the command only, with
 * strace's -E) for malloc, calloc, realloc, free and posix_memalign of at least
 * `--min-alloc` bytes (default 4096). strace runs with TZ=UTC so its time of day lines up
 * with the logger's clock. The two logs are merged by time and written as one trace, cut
 * at `--max-bytes` (default 256 KiB) by time, with a header naming the command, the
 * versions of what ran and the capture date. The command's own stdout/stderr pass through.
 *
 * Not model code: it runs real processes and reads the wall clock, which the simulation
 * never does.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { callToOp, parseAllocLog, parseStrace } from './strace-parse.ts';
import { formatEvent, formatHeader, type TraceOp } from './trace-format.ts';

export const STRACE_SYSCALLS = ['mmap', 'munmap', 'mremap', 'mprotect', 'madvise', 'brk', 'execve', 'clone', 'clone3', 'fork', 'vfork', 'exit', 'exit_group'];
export const DEFAULT_MAX_BYTES = 256 * 1024;
export const DEFAULT_MIN_ALLOC = 4096;
const DAY_US = 86_400_000_000;

export interface CaptureOptions {
  command: readonly string[];
  maxBytes?: number;
  minAlloc?: number;
  /** Skip the allocation logger even when a compiler is present. */
  noAllocLog?: boolean;
  /** Extra header lines (a shipped trace's `workload` description, say). */
  header?: Record<string, string>;
  /** Where the command's output goes (default: inherit). */
  stdio?: 'inherit' | 'ignore';
}

export interface CaptureResult {
  text: string;
  events: number;
  /** Whether the allocation logger ran. */
  allocLog: boolean;
  truncated: boolean;
  exitStatus: number | null;
}

/** Whether `strace` can be run here. */
export function haveStrace(): boolean {
  return spawnSync('strace', ['-V'], { stdio: 'ignore' }).status === 0;
}

function compiler(): string | null {
  for (const cc of ['cc', 'gcc', 'clang']) if (spawnSync(cc, ['--version'], { stdio: 'ignore' }).status === 0) return cc;
  return null;
}

function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  const s = `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').find((l) => l.trim()) ?? '';
  return s.trim();
}

/** What ran: the command's own --version, glibc, strace and the kernel. */
function versions(command: readonly string[]): string {
  const parts: string[] = [];
  const own = firstLine(command[0] as string, ['--version']);
  if (own) parts.push(`${basename(command[0] as string)} ${own}`);
  const glibc = /(\d+\.\d+(?:-[\w.+]+)?)\s*$/.exec(firstLine('ldd', ['--version']))?.[1];
  if (glibc) parts.push(`glibc ${glibc}`);
  const st = /version (\S+)/.exec(firstLine('strace', ['-V']))?.[1];
  if (st) parts.push(`strace ${st}`);
  const uname = firstLine('uname', ['-r']);
  if (uname) parts.push(`Linux ${uname}`);
  return parts.join('; ');
}

function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

/** Run the capture; throws when strace is missing or cannot trace. */
export function capture(opts: CaptureOptions): CaptureResult {
  if (opts.command.length === 0) throw new Error('no command to capture');
  if (!haveStrace()) throw new Error('strace is not installed (Debian: apt-get install strace)');
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  const minAlloc = opts.minAlloc ?? DEFAULT_MIN_ALLOC;
  const dir = mkdtempSync(join(tmpdir(), 'nl-capture-'));
  try {
    const straceOut = join(dir, 'strace.txt');
    const allocOut = join(dir, 'alloc.txt');
    const args = ['-f', '-tt', '-o', straceOut, '-e', `trace=${STRACE_SYSCALLS.join(',')}`];
    let allocLog = false;
    const cc = opts.noAllocLog ? null : compiler();
    if (cc) {
      const src = join(dirname(fileURLToPath(import.meta.url)), 'alloc-logger.c');
      const so = join(dir, 'alloc-logger.so');
      const built = spawnSync(cc, ['-shared', '-fPIC', '-O2', '-o', so, src], { encoding: 'utf8' });
      if (built.status !== 0) throw new Error(`building the allocation logger failed: ${(built.stderr ?? '').split('\n')[0]}`);
      args.push('-E', `NL_ALLOC_LOG=${allocOut}`, '-E', `NL_ALLOC_MIN=${minAlloc}`, '-E', `LD_PRELOAD=${so}`);
      allocLog = true;
    }
    const run = spawnSync('strace', [...args, '--', ...opts.command], { stdio: opts.stdio ?? 'inherit', env: { ...process.env, TZ: 'UTC' } });
    if (!existsSync(straceOut)) throw new Error(`strace produced no output (exit ${run.status ?? run.signal})`);
    const calls = parseStrace(readFileSync(straceOut, 'utf8'));
    if (calls.length === 0) throw new Error('strace recorded no call (is ptrace allowed here?)');
    const t0 = (calls[0] as { tod: number }).tod;
    const rel = (tod: number) => (tod - t0 + DAY_US) % DAY_US;
    const traced = new Set(calls.map((c) => c.tid));
    const merged: { t: number; seq: number; tid: number; op: TraceOp }[] = [];
    let seq = 0;
    for (const c of calls) {
      const op = callToOp(c);
      if (op) merged.push({ t: rel(c.tod), seq: seq++, tid: c.tid, op });
    }
    if (allocLog && existsSync(allocOut)) {
      const known = new Set<number>();
      for (const a of parseAllocLog(readFileSync(allocOut, 'utf8'))) {
        if (!traced.has(a.tid)) continue;
        const op = a.op;
        if (op.op === 'free') {
          if (!known.delete(op.addr)) continue;
        } else if (op.op === 'realloc') {
          if (!known.delete(op.old)) op.old = 0;
          if (op.ret) known.add(op.ret);
        } else if ('ret' in op) known.add(op.ret);
        merged.push({ t: rel(a.epochUs % DAY_US), seq: seq++, tid: a.tid, op });
      }
    }
    merged.sort((a, b) => a.t - b.t || a.seq - b.seq);
    const header: Record<string, string> = {
      command: opts.command.map(shellWord).join(' '),
      versions: versions(opts.command),
      captured: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      source: `strace -f -tt -e trace=${STRACE_SYSCALLS.join(',')}${allocLog ? `; alloc-logger.c (LD_PRELOAD), allocations of at least ${minAlloc} bytes` : '; no allocation logger (no C compiler)'}`,
      ...opts.header,
    };
    const budget = maxBytes - formatHeader(header).length - 200;
    const lines: string[] = [];
    let size = 0;
    let truncated = false;
    for (const m of merged) {
      const l = formatEvent({ t: m.t, tid: m.tid, ...m.op }) + '\n';
      if (size + l.length > budget) {
        truncated = true;
        break;
      }
      lines.push(l);
      size += l.length;
    }
    const last = merged[merged.length - 1]?.t ?? 0;
    const kept = lines.length ? Number((lines[lines.length - 1] as string).split(' ')[0]) : 0;
    header.truncated = truncated ? `yes: the first ${kept} µs of ${last} µs kept (${lines.length} of ${merged.length} events, budget ${maxBytes} bytes)` : 'no';
    const text = formatHeader(header) + lines.join('') + `end ${lines.length}\n`;
    return { text, events: lines.length, allocLog, truncated, exitStatus: run.status };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function usage(msg: string): never {
  process.stderr.write(`capture: ${msg}; usage: capture.ts [--out FILE] [--max-bytes N] [--min-alloc N] [--no-alloc-log] [--describe TEXT] -- COMMAND [ARGS...]\n`);
  process.exit(2);
}

function main(argv: string[]): void {
  const sep = argv.indexOf('--');
  if (sep < 0 || sep === argv.length - 1) usage('expected -- followed by the command to capture');
  const opts = argv.slice(0, sep);
  let out: string | null = null;
  let maxBytes = DEFAULT_MAX_BYTES;
  let minAlloc = DEFAULT_MIN_ALLOC;
  let noAllocLog = false;
  const header: Record<string, string> = {};
  for (let i = 0; i < opts.length; i++) {
    const o = opts[i];
    const val = () => opts[++i] ?? usage(`${o} needs a value`);
    const int = (v: string) => (/^\d+$/.test(v) ? Number(v) : usage(`${o} takes a non-negative integer, got '${v}'`));
    if (o === '--out') out = val();
    else if (o === '--max-bytes') maxBytes = int(val());
    else if (o === '--min-alloc') minAlloc = int(val());
    else if (o === '--no-alloc-log') noAllocLog = true;
    else if (o === '--describe') header.workload = val();
    else usage(`unknown option '${o}' (accepted: --out, --max-bytes, --min-alloc, --no-alloc-log, --describe)`);
  }
  if (!haveStrace()) {
    process.stderr.write('capture: strace is not installed (Debian: apt-get install strace)\n');
    process.exit(2);
  }
  const r = capture({ command: argv.slice(sep + 1), maxBytes, minAlloc, noAllocLog, header, stdio: out ? 'inherit' : 'ignore' });
  if (out) writeFileSync(out, r.text);
  else process.stdout.write(r.text);
  process.stderr.write(`capture: ${r.events} events${r.truncated ? ' (truncated by time)' : ''}, allocation logger ${r.allocLog ? 'on' : 'off'}, command exit ${r.exitStatus}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main(process.argv.slice(2));
