/**
 * Trails name the cause and nothing is hidden (issue 19, items 3 and 4): a finding's trail
 * shows the MR's registration, the notifier's insertion and removal, the callbacks'
 * returns, and ends with the likely strategy step; a broken driver's other violations are
 * listed as findings.
 */
import test from 'ava';
import { fuzz, formatFinding, runConfigFor, runTarget, type FuzzReport } from '../../scenarios/fuzz/fuzz.ts';
import { notFoundLine } from '../../scenarios/fuzz/cli.ts';
import { fuzzTarget, isExpectedCatch } from '../../scenarios/fuzz/targets.ts';
import type { Command } from '../../scenarios/fuzz/commands.ts';
import { renderText } from '../../sanitizer/index.ts';

function caught(name: string): FuzzReport {
  const r = fuzz(fuzzTarget(name)!, { runs: 200, seed: 1, shrinkBudget: 0 });
  if (!r.found) throw new Error(`${name} not caught`);
  return r;
}

test('holdoff-no-wait (rdma H3): the trail ends with the likely cause, the holdoff strategy\'s holdOff step', (t) => {
  const v = caught('holdoff-no-wait').failing![0]!;
  t.is(v.id, 'holdoff-liveness');
  t.regex(v.cause ?? '', /^likely cause: holdoff-no-wait \(holdoff\), step holdOff:/);
  t.regex(renderText([v]).trimEnd().split('\n').at(-1)!, /likely cause: .*step holdOff/);
});

test('remove-before-fence (rdma C9): the trail shows the notifier inserted and removed before the device use, and names the dereg step', (t) => {
  const v = caught('remove-before-fence').failing![0]!;
  t.is(v.id, 'teardown-order');
  const kinds = v.trail.map((e) => e.kind);
  t.true(kinds.includes('notifier-insert') && kinds.includes('notifier-remove'), kinds.join(', '));
  t.true(kinds.indexOf('notifier-remove') < kinds.lastIndexOf('dma'));
  t.regex(v.cause ?? '', /step dereg/);
});

test('mmput-under-mutex (rdma C10) and check-retry-install (kernel rule 29): causes name putMm and commit', (t) => {
  t.regex(caught('mmput-under-mutex').failing![0]!.cause ?? '', /\(odp\), step putMm/);
  t.regex(caught('check-retry-install').failing![0]!.cause ?? '', /\(odp\), step commit/);
});

test('no-clamp (kernel rule 13): a stale-translation trail shows the MR\'s registration and what the callbacks returned', (t) => {
  const v = caught('no-clamp').failing![0]!;
  const text = v.trail.map((e) => `${e.kind} ${e.text}`).join('\n');
  t.regex(text, /mr-reg .* registered over/);
  t.regex(text, /callback .* returned (true|false)/);
});

test('nothing hidden: a broken driver\'s other violations are findings, never "allowed"', (t) => {
  const r = caught('zap-without-sync');
  const fake: FuzzReport = { ...r, found: false, seen: { 'use-after-invalidate': 0, 'stale-translation': 3, 'shared-page-write': 1 } };
  delete fake.reproducer;
  const line = notFoundLine(fake);
  t.regex(line, /^not caught by use-after-invalidate in 200 runs; findings: .*stale-translation in 3 runs/);
  t.notRegex(line, /allowed/);
  const ref = fuzz(fuzzTarget('pinned')!, { runs: 1, seed: 1 });
  t.notRegex(notFoundLine({ ...ref, seen: { 'pinned-incoherence': 2, 'lost-write': 1 } }), /allowed: [^)]*lost-write/);
  t.regex(notFoundLine({ ...ref, seen: { 'pinned-incoherence': 2, 'lost-write': 1 } }), /findings: lost-write in 1 run/);
  const text = formatFinding({ ...r, violations: [...(r.violations ?? []), { id: 'lost-write', severity: 'error', time: 1, message: 'x', trail: [] }] }, 'f.json');
  t.regex(text, /other findings \(\d+\):\n[\s\S]*error lost-write at/);
});

test('lab fuzz --coverage with --driver is bad input: one line naming what it accepts, exit 2', async (t) => {
  const { runMain } = await import('../../scenarios/cli.ts');
  const lines: string[] = [];
  const code = await runMain(['fuzz', '--coverage', '--driver', 'odp'], (l) => lines.push(...l.split('\n').filter((x) => x !== '')));
  t.is(code, 2);
  t.is(lines.length, 1);
  t.regex(lines[0]!, /--coverage .* no --driver .*--runs, --seed/);
});

// Fork, then the parent writes MR 0 page 1 (slot 0 page 2).
const forkThenWrite: Command[] = [
  { node: 0, proc: 0, thread: 0, at: 0, op: 'fork' },
  { node: 0, proc: 0, thread: 0, at: 100, op: 'store', slot: 0, page: 2, byte: 5 },
];

test('foll-get-fork (kernel rules 57, 67): the trail names the COW break of the MR\'s frame (mm/memory.c do_wp_page, a write fault, not FAULT_FLAG_UNSHARE); the reference pinned strategy, whose pin fork copies, shows none', (t) => {
  const broken = fuzzTarget('foll-get-fork')!;
  const r = runTarget(broken, forkThenWrite, { ...runConfigFor(broken, {}, 1), preempt: false });
  const v = r.violations.find((x) => isExpectedCatch(broken, x));
  t.truthy(v, renderText(r.violations));
  const texts = v!.trail.map((e) => e.text);
  // The CLEAR of wp_page_copy, then the write fault that sent it, then what it replaced.
  t.true(texts.some((x) => /^CLEAR \[0x10002000, 0x10003000\) of mm1 \[task/.test(x)), texts.join('\n'));
  t.true(texts.some((x) => /^write fault \(wp\) at 0x10002000/.test(x)), texts.join('\n'));
  t.true(texts.some((x) => /^frame \d+, the MR's, replaced by a COW break/.test(x)), texts.join('\n'));
  const reference = fuzzTarget('pinned')!;
  const ref = runTarget(reference, forkThenWrite, { ...runConfigFor(reference, {}, 1), preempt: false });
  t.deepEqual(ref.violations.map((x) => x.id), [], renderText(ref.violations));
});
