/**
 * From `strace -f -tt` output and the allocation logger's lines to trace events
 * (trace-format.ts). strace prints one call per line, prefixed with the thread id and the
 * time of day (UTC: capture.ts runs strace with TZ=UTC), and splits a call that another
 * thread interrupted into `<unfinished ...>` and `<... name resumed>` halves, which are
 * joined here. Failed calls (`= -1 ENOMEM ...`) changed nothing and are dropped.
 */
import type { TraceOp } from './trace-format.ts';

export interface RawCall {
  tid: number;
  /** Microseconds since midnight UTC. */
  tod: number;
  name: string;
  /** The text between the call's parentheses (joined if it was split). */
  args: string;
  /** The return value as printed: `0`, `0x7f…`, `12345`, `?`, `-1 ENOMEM (…)`. */
  ret: string;
}

const LINE = /^(\d+)\s+(\d\d):(\d\d):(\d\d)\.(\d{6}) (.*)$/;

/** Parse strace's output into whole calls (joined across `unfinished`/`resumed`), in file order. */
export function parseStrace(text: string): RawCall[] {
  const out: RawCall[] = [];
  const pending = new Map<number, { tod: number; head: string }>();
  for (const line of text.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const tid = Number(m[1]);
    const tod = ((Number(m[2]) * 60 + Number(m[3])) * 60 + Number(m[4])) * 1_000_000 + Number(m[5]);
    let body = m[6] as string;
    if (body.startsWith('+++') || body.startsWith('---')) continue;
    let start = tod;
    const resumed = /^<\.\.\. (\w+) resumed>(.*)$/.exec(body);
    if (resumed) {
      const p = pending.get(tid);
      pending.delete(tid);
      if (!p) continue;
      body = p.head + (resumed[2] as string);
      start = p.tod;
    } else if (body.endsWith('<unfinished ...>')) {
      pending.set(tid, { tod, head: body.slice(0, -'<unfinished ...>'.length).trimEnd() });
      continue;
    }
    const call = /^(\w+)\((.*)\)\s+=\s+(.*)$/.exec(body);
    if (!call) continue;
    out.push({ tid, tod: start, name: call[1] as string, args: call[2] as string, ret: (call[3] as string).trim() });
  }
  return out;
}

/** Split top-level comma-separated arguments (braces, brackets and quotes nest). */
function splitArgs(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quote = false;
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as string;
    if (quote) {
      cur += c;
      if (c === '\\') cur += s[++i] ?? '';
      else if (c === '"') quote = false;
      continue;
    }
    if (c === '"') quote = true;
    else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    if (c === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += c;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

function num(s: string | undefined): number {
  if (!s || s === 'NULL') return 0;
  return Number(s);
}

function prot(s: string | undefined): string {
  const p = s ?? '';
  return (p.includes('PROT_READ') ? 'r' : '-') + (p.includes('PROT_WRITE') ? 'w' : '-') + (p.includes('PROT_EXEC') ? 'x' : '-');
}

/** One call as a trace op, or null when it failed or is not one the format keeps. */
export function callToOp(c: RawCall): TraceOp | null {
  const failed = c.ret.startsWith('-');
  const a = splitArgs(c.args);
  switch (c.name) {
    case 'mmap': {
      if (failed) return null;
      const flags = a[3] ?? '';
      const anon = flags.includes('MAP_ANONYMOUS');
      return { op: 'mmap', addr: num(c.ret), length: num(a[1]), prot: prot(a[2]), flags: (flags.includes('MAP_SHARED') ? 's' : 'p') + (anon ? 'a' : 'f') };
    }
    case 'munmap':
      return failed ? null : { op: 'munmap', addr: num(a[0]), length: num(a[1]) };
    case 'mremap': {
      if (failed) return null;
      const f = a[3] ?? '';
      const flags = (f.includes('MREMAP_MAYMOVE') ? 1 : 0) | (f.includes('MREMAP_FIXED') ? 2 : 0) | (f.includes('MREMAP_DONTUNMAP') ? 4 : 0);
      return { op: 'mremap', addr: num(a[0]), oldLength: num(a[1]), newLength: num(a[2]), flags, ret: num(c.ret) };
    }
    case 'mprotect':
      return failed ? null : { op: 'mprotect', addr: num(a[0]), length: num(a[1]), prot: prot(a[2]) };
    case 'madvise':
      return failed ? null : { op: 'madvise', addr: num(a[0]), length: num(a[1]), advice: (a[2] ?? 'unknown').replace(/^MADV_/, '').toLowerCase().replace(/[^a-z_-]/g, '') || 'unknown' };
    case 'brk':
      return { op: 'brk', request: num(a[0]), ret: num(c.ret) };
    case 'execve':
      return failed ? null : { op: 'exec' };
    case 'clone':
    case 'clone3': {
      if (failed || !/^\d+/.test(c.ret)) return null;
      const child = Number(/^\d+/.exec(c.ret)![0]);
      return c.args.includes('CLONE_THREAD') ? { op: 'thread', child } : { op: 'fork', child };
    }
    case 'fork':
    case 'vfork':
      return failed ? null : { op: 'fork', child: num(c.ret) };
    case 'exit':
      return { op: 'exit' };
    case 'exit_group':
      return { op: 'exit_group' };
    default:
      return null;
  }
}

export interface AllocLine {
  tid: number;
  /** Microseconds since the epoch. */
  epochUs: number;
  op: TraceOp;
}

/** The allocation logger's lines (alloc-logger.c) as ops. Malformed lines are skipped. */
export function parseAllocLog(text: string): AllocLine[] {
  const out: AllocLine[] = [];
  for (const l of text.split('\n')) {
    const f = l.split(' ');
    const m = /^(\d+)\.(\d{6})$/.exec(f[0] ?? '');
    if (!m || f.length < 4) continue;
    const epochUs = Number(m[1]) * 1_000_000 + Number(m[2]);
    const tid = Number(f[1]);
    const n = f.slice(3).map((x) => Number(x));
    if (n.some((x) => !Number.isFinite(x))) continue;
    let op: TraceOp | null = null;
    switch (f[2]) {
      case 'malloc': if (n.length === 2) op = { op: 'malloc', size: n[0]!, ret: n[1]! }; break;
      case 'calloc': if (n.length === 3) op = { op: 'calloc', count: n[0]!, size: n[1]!, ret: n[2]! }; break;
      case 'realloc': if (n.length === 3) op = { op: 'realloc', old: n[0]!, size: n[1]!, ret: n[2]! }; break;
      case 'free': if (n.length === 1) op = { op: 'free', addr: n[0]! }; break;
      case 'memalign': if (n.length === 3) op = { op: 'memalign', align: n[0]!, size: n[1]!, ret: n[2]! }; break;
      default: break;
    }
    if (op) out.push({ tid, epochUs, op });
  }
  return out;
}
