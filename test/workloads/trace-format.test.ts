/**
 * The workload trace format (scenarios/workloads/trace-format.ts, README.md): the shipped
 * traces parse and carry their header; a truncated, reordered or foreign file is refused
 * with the line number and what was expected there.
 */
import test from 'ava';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { parseStrace, callToOp } from '../../scenarios/workloads/strace-parse.ts';
import { TraceFormatError, formatEvent, parseTrace } from '../../scenarios/workloads/trace-format.ts';

const DIR = new URL('../../scenarios/workloads/traces/', import.meta.url);
const SHIPPED = ['node-gc.trace', 'cpython-lists.trace', 'sort-large.trace'];

test('the three shipped traces parse, are at most 256 KiB, and keep command, versions and capture date in their header', (t) => {
  t.deepEqual(readdirSync(DIR).filter((f) => f.endsWith('.trace')).sort(), [...SHIPPED].sort());
  for (const f of SHIPPED) {
    const url = new URL(f, DIR);
    t.true(statSync(url).size <= 256 * 1024, `${f} is at most 256 KiB`);
    const tr = parseTrace(readFileSync(url, 'utf8'));
    for (const k of ['command', 'versions', 'captured', 'truncated']) t.truthy(tr.header[k], `${f} header has ${k}`);
    t.regex(tr.header.captured!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    t.true(tr.events.length > 40, `${f} has events`);
    const ops = new Set(tr.events.map((e) => e.op));
    for (const op of ['exec', 'mmap', 'munmap', 'brk', 'malloc', 'free']) t.true(ops.has(op as never), `${f} has ${op}`);
  }
  const node = parseTrace(readFileSync(new URL('node-gc.trace', DIR), 'utf8'));
  t.true(node.events.some((e) => e.op === 'thread'), 'node starts threads (clone with CLONE_THREAD)');
  t.true(node.events.some((e) => e.op === 'madvise'), 'V8 madvises its heap');
});

const GOOD = ['#notifier-lab-trace 1', '# command: x', '0 7 exec', '5 7 mmap 0x7f0000000000 8192 rw- pa', '9 7 munmap 0x7f0000000000 8192', 'end 3', ''].join('\n');

function refusal(t: import('ava').ExecutionContext, text: string): TraceFormatError {
  const e = t.throws(() => parseTrace(text), { instanceOf: TraceFormatError }) as TraceFormatError;
  return e;
}

test('bad traces: foreign, other version, reordered, truncated, unknown op, bad operand, miscounted end (one line: line number and what was expected)', (t) => {
  t.is(parseTrace(GOOD).events.length, 3);
  let e = refusal(t, '{"traceEvents": []}\n');
  t.is(e.message, "line 1: expected '#notifier-lab-trace 1' (this is not a notifier-lab workload trace)");
  e = refusal(t, GOOD.replace('trace 1', 'trace 2'));
  t.is(e.line, 1);
  t.regex(e.message, /version 2 is not supported/);
  e = refusal(t, GOOD.replace('9 7 munmap', '3 7 munmap'));
  t.is(e.message, 'line 5: expected a time of at least 5 µs (events are in time order), got 3');
  e = refusal(t, GOOD.split('\n').slice(0, 4).join('\n') + '\n');
  t.is(e.message, "line 5: expected 'end 2': the trace is truncated");
  e = refusal(t, GOOD.replace('munmap 0x7f0000000000 8192', 'munmap 0x7f0000000000'));
  t.is(e.message, "line 5: expected 'munmap <addr hex> <length>'");
  e = refusal(t, GOOD.replace('9 7 munmap', '9 7 mumble'));
  t.regex(e.message, /^line 5: expected an op \(mmap, munmap, .*\), got 'mumble'$/);
  e = refusal(t, GOOD.replace('8192 rw-', 'eight rw-'));
  t.is(e.message, "line 4: expected 'mmap <addr hex> <length> <prot> <flags>': length 'eight' is not a decimal number");
  e = refusal(t, GOOD.replace('end 3', 'end 4'));
  t.regex(e.message, /^line 6: expected 'end 3'/);
  t.false(e.message.includes('\n'));
});

test('strace -f -tt lines become trace ops: unfinished/resumed joined, threads vs forks, failed calls dropped', (t) => {
  const calls = parseStrace([
    '100 10:00:00.000001 brk(NULL)         = 0x55a226bb5000',
    '100 10:00:00.000002 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000001000',
    '100 10:00:00.000003 clone3({flags=CLONE_VM|CLONE_THREAD|CLONE_SETTLS, stack=0x7f0, stack_size=0x7fff00} <unfinished ...>',
    '101 10:00:00.000004 munmap(0x7f0000001000, 4096) = 0',
    '100 10:00:00.000005 <... clone3 resumed> => {parent_tid=[101]}, 88) = 101',
    '100 10:00:00.000006 mmap(NULL, 1099511627776, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = -1 ENOMEM (Cannot allocate memory)',
    '100 10:00:00.000007 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f) = 102',
    '100 10:00:00.000008 madvise(0x7f0000001000, 4096, MADV_DONTNEED) = 0',
    '102 10:00:00.000009 exit_group(0)     = ?',
    '102 10:00:00.000010 +++ exited with 0 +++',
  ].join('\n'));
  const ops = calls.map(callToOp).filter((o) => o !== null).map((o) => formatEvent({ t: 0, tid: 0, ...o! }).slice(4));
  t.deepEqual(ops, [
    'brk 0x0 0x55a226bb5000',
    'mmap 0x7f0000001000 8192 rw- pa',
    'munmap 0x7f0000001000 4096',
    'thread 101',
    'fork 102',
    'madvise 0x7f0000001000 4096 dontneed',
    'exit_group',
  ]);
  t.is(calls.find((c) => c.name === 'clone3')?.tod, 36_000_000_003, 'a resumed call keeps the time it started');
});
