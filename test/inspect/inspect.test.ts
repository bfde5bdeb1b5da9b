import test from 'ava';
import { runCli, runScenario, scenarioByName, type ScenarioDefinition } from '../../scenarios/index.ts';
import { captureInstants, parseInstant, resolveTarget, type InspectTarget, type InstantSpec, type WorldSnapshot } from '../../scenarios/inspect/index.ts';
import { diffSnapshots } from '../../scenarios/inspect/diff.ts';

const def = scenarioByName('deferred-invalidation-reuse') as ScenarioDefinition;

function target(driver?: string, profile?: 'linux-6.x'): InspectTarget {
  const r = resolveTarget('deferred-invalidation-reuse', { seed: 1, set: [], ...(driver ? { driver } : {}), ...(profile ? { profile } : {}) });
  if ('error' in r) throw new Error(r.error);
  return r;
}

function at(...texts: string[]): InstantSpec[] {
  return texts.map((s) => {
    const r = parseInstant(s);
    if ('error' in r) throw new Error(r.error);
    return r;
  });
}

async function cli(...argv: string[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const saved = process.exitCode;
  const code = await runCli(argv, (l) => lines.push(...l.split('\n')));
  process.exitCode = saved;
  return { code, lines };
}

// One run of the 2011 deferred driver (seed 004), snapshots at the first violation, just
// before the munmap, after mmap(MAP_FIXED) and the peer's second write, and at record 40.
const deferred = captureInstants(target(), at('violation', '253.29us', '259.7us', 'record:40'));
const [atViolation, beforeMunmap, afterReuse, atRecord] = deferred.snapshots as WorldSnapshot[];

test('at the first violation of deferred-invalidation-reuse the stale device entry shows beside what the CPU maps (seed 004, kernel rule 24, rdma C5)', (t) => {
  t.deepEqual(deferred.errors, []);
  const s = atViolation as WorldSnapshot;
  t.is(s.violation?.id, 'stale-translation');
  t.is(s.t, 253_364);
  const stale = s.stale.filter((e) => !e.inWindow && e.kind === 'mirrored');
  t.is(stale.length, 1);
  const e = stale[0]!;
  t.is(e.nic, 'host-nic');
  t.is(e.index, 0);
  t.is(e.source, 'page-table');
  t.is(e.device.frame, 1);
  t.is(e.device.perm, 'rw');
  // munmap zapped the CPU side; the callback kept a reference so the frame is still allocated, mapped nowhere.
  t.is(e.cpu.state, 'none');
  t.true(e.deviceFrame.allocated);
  t.is(e.deviceFrame.mapcount, 0);
  t.deepEqual(e.deviceFrame.mappedAt, []);
  t.true(s.violation?.message.includes(`page 0 at 0x${e.va.toString(16)}`));
});

test('after mmap(MAP_FIXED) the device still maps the old frame while the CPU maps the new one', (t) => {
  const s = afterReuse as WorldSnapshot;
  const e = s.stale.find((x) => x.key === 0x100 && x.index === 0 && x.nic === 'host-nic');
  t.truthy(e);
  t.is(e!.device.frame, 1);
  t.is(e!.cpu.state, 'present');
  t.not(e!.cpu.frame, 1);
  t.deepEqual(e!.cpuFrame?.mappedAt, [`mm1 0x${e!.va.toString(16)}`]);
  t.deepEqual(e!.deviceFrame.mappedAt, []);
});

test('before the munmap nothing is stale, PTEs and device entries collapse into runs, the NIC shows its MR and QP', (t) => {
  const s = beforeMunmap as WorldSnapshot;
  t.is(s.t, 253_290);
  t.deepEqual(s.stale, []);
  const host = s.nodes.find((n) => n.name === 'host')!;
  const app = host.processes.find((p) => p.name === 'app')!;
  t.deepEqual(app.ptes.map((r) => [r.pages, r.frame, r.flags]), [[4, 1, 'wad']]);
  const mr = host.nics[0]!.mrs.find((m) => m.key === 0x100)!;
  t.deepEqual(mr.entries.map((e) => [e.index, e.pages, e.frame, e.perm]), [[0, 4, 1, 'rw']]);
  t.is(mr.strategy, 'deferred-invalidation');
  t.is(host.nics[0]!.qps[0]?.state, 'IBV_QPS_RTS');
  // The classic notifier the 2011 driver registered, and the mm's sequence.
  t.deepEqual(host.notifiers[0]?.classic, ['deferred-mr-100']);
  // The peer pinned its source buffer with FOLL_GET (linux-3.0 has no FOLL_PIN): one get per page.
  const peer = s.nodes.find((n) => n.name === 'peer')!;
  t.deepEqual(peer.pins.map((p) => [p.frame, p.pins, p.gets]), [[1, 0, 1], [2, 0, 1], [3, 0, 1], [4, 0, 1]]);
});

test('record:N snapshots as trace record N is emitted', (t) => {
  const s = atRecord as WorldSnapshot;
  t.is(JSON.parse(s.record ?? '{}').seq, 40);
});

test('--diff: the munmap and MAP_FIXED show as a PTE run split and a new stale entry', (t) => {
  const changes = diffSnapshots(beforeMunmap as WorldSnapshot, afterReuse as WorldSnapshot);
  const procs = changes.find((c) => c.id === 'host process 100')!;
  t.true(procs.removed.some((l) => /pte 0x7effffffc000-0x7f0000000000 +4 pages -> frame 1\.\.4/.test(l)), procs.lines.join('\n'));
  t.true(procs.added.some((l) => /pte 0x7effffffc000-0x7effffffd000 +1 page +-> frame 5/.test(l)), procs.lines.join('\n'));
  t.true(changes.find((c) => c.id === 'stale')!.added.some((l) => l.startsWith('STALE: host-nic key 0x100')));
  t.deepEqual(diffSnapshots(beforeMunmap as WorldSnapshot, beforeMunmap as WorldSnapshot), []);
});

test('the ODP driver under linux-6.x leaves nothing stale at any of those instants (rdma C4, C5)', (t) => {
  const r = captureInstants(target('odp', 'linux-6.x'), at('253.29us', '259.7us', '1ms'));
  t.deepEqual(r.errors, []);
  for (const s of r.snapshots) t.deepEqual(s!.stale.filter((e) => !e.inWindow), []);
});

test('inspecting observes only: the report is the same with and without the observer', (t) => {
  const opts = { seed: 3, profile: def.defaultProfile, driver: def.defaultDriver, params: {} };
  const plain = runScenario(def, opts);
  const watched = captureInstants({ kind: 'scenario', name: def.name, def, ...opts }, at('20us', 'violation:2')).run.report!;
  t.deepEqual(watched, plain);
});

test('lab inspect prints the stale entry, the page it points at and what the CPU maps there', async (t) => {
  const { code, lines } = await cli('inspect', 'deferred-invalidation-reuse', '--at', 'violation', '--what', 'stale');
  t.is(code, 0, lines.join('\n'));
  const text = lines.join('\n');
  t.regex(text, /violation 1 \[error\] stale-translation/);
  t.regex(text, /STALE: host-nic key 0x100 \(deferred-invalidation\) page 0 at 0x7effffffc000 of mm1/);
  t.regex(text, /device maps: frame 1 read-write/);
  t.regex(text, /frame 1: refcount \d+, mapcount 0/);
  t.regex(text, /CPU maps: +nothing \(PTE none\)/);
  t.false(text.includes('-- locks'));
});

test('lab inspect --json and --diff --json parse', async (t) => {
  const one = await cli('inspect', 'deferred-invalidation-reuse', '--at', '259.7us', '--json');
  t.is(one.code, 0);
  const s = JSON.parse(one.lines.join('\n')) as WorldSnapshot;
  t.is(s.t, 259_700);
  t.true(s.stale.some((e) => e.key === 0x100 && e.device.frame === 1));
  const two = await cli('inspect', 'deferred-invalidation-reuse', '--at', '253.29us', '--diff', '259.7us', '--json', '--what', 'processes');
  t.is(two.code, 0);
  const d = JSON.parse(two.lines.join('\n')) as { changes: { id: string }[] };
  t.deepEqual(d.changes.map((c) => c.id), ['host memory', 'host process 100']);
});

for (const [argv, pattern] of [
  [['inspect', 'nope', '--at', '1'], /unknown scenario or reproducer 'nope'; scenarios: .*deferred-invalidation-reuse/],
  [['inspect', 'deferred-invalidation-reuse', '--at', 'soon'], /cannot parse 'soon' as an instant; expected a time/],
  [['inspect', 'deferred-invalidation-reuse', '--at', '100s'], /past the end of the run of deferred-invalidation-reuse, which ends at/],
  [['inspect', 'deferred-invalidation-reuse', '--at', 'violation:100000'], /reports only \d+ violations/],
  [['inspect', 'deferred-invalidation-reuse', '--at', '1', '--what', 'everything'], /unknown section 'everything'; valid: processes/],
  [['inspect', 'workload:memcached', '--at', '1'], /'workload:memcached': no such trace file; a workload is workload:<trace file> or one of the shipped traces: node-gc, cpython-lists, sort-large/],
  [['inspect', 'deferred-invalidation-reuse'], /--at/],
] as const) {
  test(`lab inspect bad input (${argv.slice(1).join(' ')}) is one line, exit 2`, async (t) => {
    const { code, lines } = await cli(...argv);
    t.is(code, 2, lines.join('\n'));
    t.is(lines.length, 1, lines.join('\n'));
    t.regex(lines[0] ?? '', pattern);
  });
}

test('lab inspect opens a fuzz reproducer (two nodes, ODP MRs with interval notifiers)', async (t) => {
  const { code, lines } = await cli('inspect', 'test/fuzz/corpus/odp-migrate-vs-munmap.json', '--at', '100us', '--what', 'notifiers');
  t.is(code, 0, lines.join('\n'));
  t.regex(lines[0] ?? '', /odp-migrate-vs-munmap\.json at time 100\.000 µs/);
  t.regex(lines.join('\n'), /interval \S+ \[0x[0-9a-f]+, 0x[0-9a-f]+\] invalidate_seq \d+/);
});
