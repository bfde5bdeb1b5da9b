/**
 * The workload trace format, version 1: what `capture.ts` writes and `lab workload`
 * replays. Line-oriented, compact, diff-friendly; documented in README.md beside this file.
 *
 *     #notifier-lab-trace 1
 *     # command: /usr/bin/python3 -c '...'
 *     # versions: Python 3.11.2; glibc 2.36; strace 6.1; Linux 6.1.0
 *     # captured: 2026-12-06T20:41:00Z
 *     <t_us> <tid> <op> <args...>
 *     ...
 *     end <number of event lines>
 *
 * Times are microseconds since the first event, non-decreasing. Addresses are hex (0x...),
 * sizes decimal. Ops: mmap, munmap, mremap, mprotect, madvise, brk, exec, fork, thread, exit,
 * exit_group (system calls, from strace) and malloc, calloc, realloc, free, memalign
 * (library calls, from the allocation logger). The closing `end` line is how a truncated
 * file is told from a complete one.
 */

export const TRACE_MAGIC = '#notifier-lab-trace';
export const TRACE_VERSION = 1;

export type TraceOp =
  | { op: 'mmap'; addr: number; length: number; prot: string; flags: string }
  | { op: 'munmap'; addr: number; length: number }
  | { op: 'mremap'; addr: number; oldLength: number; newLength: number; flags: number; ret: number }
  | { op: 'mprotect'; addr: number; length: number; prot: string }
  | { op: 'madvise'; addr: number; length: number; advice: string }
  | { op: 'brk'; request: number; ret: number }
  | { op: 'exec' }
  | { op: 'fork'; child: number }
  | { op: 'thread'; child: number }
  | { op: 'exit' }
  | { op: 'exit_group' }
  | { op: 'malloc'; size: number; ret: number }
  | { op: 'calloc'; count: number; size: number; ret: number }
  | { op: 'realloc'; old: number; size: number; ret: number }
  | { op: 'free'; addr: number }
  | { op: 'memalign'; align: number; size: number; ret: number };

export type TraceEvent = TraceOp & { t: number; tid: number; line: number };

export interface WorkloadTrace {
  /** `# key: value` header lines, in order. */
  header: Record<string, string>;
  events: TraceEvent[];
}

/** A line of the file that is not what the format expects: its 1-based number and what was expected. */
export class TraceFormatError extends Error {
  constructor(readonly line: number, readonly expected: string) {
    super(`line ${line}: ${expected}`);
    this.name = 'TraceFormatError';
  }
}

/** Operand kinds per op, in order: h hex address, d decimal, s word. */
const OPERANDS: Record<TraceOp['op'], readonly string[]> = {
  mmap: ['h:addr', 'd:length', 's:prot', 's:flags'],
  munmap: ['h:addr', 'd:length'],
  mremap: ['h:addr', 'd:oldLength', 'd:newLength', 'd:flags', 'h:ret'],
  mprotect: ['h:addr', 'd:length', 's:prot'],
  madvise: ['h:addr', 'd:length', 's:advice'],
  brk: ['h:request', 'h:ret'],
  exec: [],
  fork: ['d:child'],
  thread: ['d:child'],
  exit: [],
  exit_group: [],
  malloc: ['d:size', 'h:ret'],
  calloc: ['d:count', 'd:size', 'h:ret'],
  realloc: ['h:old', 'd:size', 'h:ret'],
  free: ['h:addr'],
  memalign: ['d:align', 'd:size', 'h:ret'],
};

export const TRACE_OPS = Object.keys(OPERANDS) as TraceOp['op'][];

const HEX = /^0x[0-9a-f]{1,16}$/;
const DEC = /^\d{1,20}$/;
const WORD = /^[a-z_-]{1,32}$/;

function describe(op: string): string {
  return `${op} ${OPERANDS[op as TraceOp['op']]!.map((o) => `<${o.slice(2)}${o[0] === 'h' ? ' hex' : ''}>`).join(' ')}`.trim();
}

/**
 * Parse a trace file. Throws a `TraceFormatError` naming the first line that is wrong and
 * what it should have been: another file's first line (foreign), a time that goes back
 * (reordered), a missing or miscounted `end` line (truncated), an unknown op or operand.
 */
export function parseTrace(text: string): WorkloadTrace {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const first = lines[0] ?? '';
  if (first !== `${TRACE_MAGIC} ${TRACE_VERSION}`) {
    const m = /^#notifier-lab-trace (\S+)$/.exec(first);
    throw new TraceFormatError(1, m ? `trace format version ${m[1]} is not supported; expected '${TRACE_MAGIC} ${TRACE_VERSION}'`
      : `expected '${TRACE_MAGIC} ${TRACE_VERSION}' (this is not a notifier-lab workload trace)`);
  }
  const header: Record<string, string> = {};
  const events: TraceEvent[] = [];
  let lastT = 0;
  let ended = false;
  for (let i = 1; i < lines.length; i++) {
    const n = i + 1;
    const l = lines[i] as string;
    if (ended) throw new TraceFormatError(n, `expected nothing after the 'end' line`);
    if (l.startsWith('#')) {
      if (events.length > 0) throw new TraceFormatError(n, 'expected an event or the end line: header lines come before the first event');
      const m = /^# ([a-z][a-z0-9 _-]*): (.*)$/.exec(l);
      if (!m) throw new TraceFormatError(n, `expected a header line '# key: value'`);
      header[m[1] as string] = m[2] as string;
      continue;
    }
    const f = l.split(' ');
    if (f[0] === 'end') {
      if (f.length !== 2 || !DEC.test(f[1] as string)) throw new TraceFormatError(n, `expected 'end <number of events>'`);
      if (Number(f[1]) !== events.length) throw new TraceFormatError(n, `expected 'end ${events.length}' (the file holds ${events.length} events, the end line says ${f[1]})`);
      ended = true;
      continue;
    }
    if (f.length < 3 || !DEC.test(f[0] as string) || !DEC.test(f[1] as string)) {
      throw new TraceFormatError(n, `expected '<time µs> <tid> <op> <operands>' or 'end <count>'`);
    }
    const t = Number(f[0]);
    if (t < lastT) throw new TraceFormatError(n, `expected a time of at least ${lastT} µs (events are in time order), got ${t}`);
    lastT = t;
    const op = f[2] as TraceOp['op'];
    const spec = OPERANDS[op];
    if (!spec) throw new TraceFormatError(n, `expected an op (${TRACE_OPS.join(', ')}), got '${f[2]}'`);
    const args = f.slice(3);
    if (args.length !== spec.length) throw new TraceFormatError(n, `expected '${describe(op)}'`);
    const ev: Record<string, unknown> = { t, tid: Number(f[1]), line: n, op };
    for (let k = 0; k < spec.length; k++) {
      const [kind, name] = (spec[k] as string).split(':') as [string, string];
      const a = args[k] as string;
      const okay = kind === 'h' ? HEX.test(a) : kind === 'd' ? DEC.test(a) : WORD.test(a);
      if (!okay) throw new TraceFormatError(n, `expected '${describe(op)}': ${name} '${a}' is not ${kind === 'h' ? 'a hex address' : kind === 'd' ? 'a decimal number' : 'a word'}`);
      ev[name] = kind === 's' ? a : Number(a);
    }
    events.push(ev as TraceEvent);
  }
  if (!ended) throw new TraceFormatError(lines.length + 1, `expected 'end ${events.length}': the trace is truncated`);
  return { header, events };
}

/** One event line (what capture.ts writes). */
export function formatEvent(e: TraceOp & { t: number; tid: number }): string {
  const spec = OPERANDS[e.op];
  const parts = [String(e.t), String(e.tid), e.op];
  for (const s of spec) {
    const [kind, name] = s.split(':') as [string, string];
    const v = (e as unknown as Record<string, number | string>)[name] as number | string;
    parts.push(kind === 'h' ? '0x' + (v as number).toString(16) : String(v));
  }
  return parts.join(' ');
}

/** The header block: the magic line and `# key: value` lines. */
export function formatHeader(header: Record<string, string>): string {
  return [`${TRACE_MAGIC} ${TRACE_VERSION}`, ...Object.entries(header).map(([k, v]) => `# ${k}: ${v.replaceAll('\n', ' ')}`)].join('\n') + '\n';
}
