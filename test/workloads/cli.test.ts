/**
 * `lab workload` (scenarios/workloads/cli.ts): a shipped trace under pinned+hooks vs ODP
 * as a table; bad input (a truncated, reordered or foreign trace; an unknown driver or
 * cache) is one line naming what was wrong, exit 2; an address beyond the model's space
 * is reported, not crashed on; a user's cache policy loads as a module.
 */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runMain } from '../../scenarios/cli.ts';

async function lab(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runMain(['workload', ...argv], { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out, err };
}

const dir = mkdtempSync(join(tmpdir(), 'nl-workload-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const HEAD = '#notifier-lab-trace 1\n# command: test\n';

test('lab workload sort-large --driver pinned,odp --cache hooks,none: a table of what each costs', async (t) => {
  const r = await lab('sort-large', '--driver', 'pinned,odp', '--cache', 'hooks,none');
  t.is(r.code, 0, r.err.join('\n'));
  const table = r.out.join('\n');
  t.regex(table, /pinned\+memory-hooks\s+odp\+none/);
  for (const row of ['invalidations per second', 'invalidations/s UNMAP from munmap', 'pages invalidated', 'NIC faults', 'registration calls', 'WR latency p99 (ns)', 'bytes misdirected', 'bytes lost', 'sanitizer']) {
    t.true(table.includes(row), row);
  }
});

test('bad traces: truncated, reordered, foreign are one line naming the line and what was expected, exit 2', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['truncated', HEAD + '0 1 exec\n5 1 mmap 0x7f0000000000 8192 rw- pa\n', /truncated\.trace: line 5: expected 'end 2': the trace is truncated$/],
    ['reordered', HEAD + '9 1 exec\n5 1 mmap 0x7f0000000000 8192 rw- pa\nend 2\n', /reordered\.trace: line 4: expected a time of at least 9 µs/],
    ['foreign', '{"traceEvents":[]}\n', /foreign\.trace: line 1: expected '#notifier-lab-trace 1'/],
  ];
  for (const [name, text, re] of cases) {
    const r = await lab(file(`${name}.trace`, text));
    t.is(r.code, 2, name);
    t.is(r.err.length, 1, `${name}: one line`);
    t.regex(r.err[0]!, re);
    t.deepEqual(r.out, []);
  }
  let r = await lab('sort-large', '--driver', 'warp');
  t.is(r.code, 2);
  t.regex(r.err.join(' '), /unknown driver 'warp'; drivers: pinned, holdoff, odp, implicit/);
  r = await lab('sort-large', '--cache', 'psychic');
  t.is(r.code, 2);
  t.regex(r.err.join(' '), /unknown cache 'psychic'; caches: memory-hooks, mr-event, none, odp, hooks-failed, off/);
  r = await lab(join(dir, 'missing.trace'));
  t.is(r.code, 2);
});

test('an address beyond the model (TASK_SIZE) is reported in the run, not crashed on', async (t) => {
  const p = file('far.trace', HEAD + '0 1 exec\n1 1 brk 0x0 0x555555554000\n2 1 mmap 0x7f0000000000 131072 rw- pa\n3 1 mmap 0xff00000000000000 4096 rw- pa\n4 1 malloc 70000 0x7f0000000010\n5 1 exit_group\nend 6\n');
  const r = await lab(p, '--json');
  t.is(r.code, 0, r.err.join('\n'));
  const [run] = JSON.parse(r.out.join('\n')) as { extra: Record<string, number>; narrative: { text: string }[] }[];
  t.is(run!.extra['workload.addresses beyond the model'], 1);
  t.true(run!.narrative.some((n) => /line 6: mmap at 0xff00000000001000 is beyond the model's address space/.test(n.text)));
  t.is(run!.extra['sends'], 1, 'the rest of the trace still replays');
});

test("a user's cache policy loads as a module (./file.ts#name) and names its column", async (t) => {
  const r = await lab('sort-large', '--cache', './test/workloads/_fixtures/deaf-cache.ts#deaf');
  t.is(r.code, 0, r.err.join('\n'));
  t.true(r.out.join('\n').includes('pinned+deaf-hooks'));
  const bad = await lab('sort-large', '--cache', './test/workloads/_fixtures/deaf-cache.ts#nope');
  t.is(bad.code, 2);
  t.regex(bad.err[0]!, /has no export 'nope'; its registration-cache policy exports: #deaf/);
});

test('lab inspect workload:<trace> re-runs a captured program to an instant (issue 21 item 1): the replayed VMAs are there', async (t) => {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runMain(['inspect', 'workload:sort-large', '--at', '100ms', '--what', 'processes'], { out: (l) => out.push(...l.split('\n')), err: (l) => err.push(l) });
  t.is(code, 0, err.join('\n'));
  const text = out.join('\n');
  t.regex(text, /== workload:sort-large at time 100\.000 ms/);
  t.regex(text, /pid20931 \(mm\d+\): \d+ VMAs/);
  t.regex(text, /vma 0x7f88b7a1d000-0x7f88b7e1e000 rw-p anon \(1025 pages\)/, "sort's 4 MiB buffer, mmapped at the traced address");
  const bad = await runMain(['inspect', 'workload:nope', '--at', '1'], { out: () => {}, err: (l) => err.push(l) });
  t.is(bad, 2);
});
