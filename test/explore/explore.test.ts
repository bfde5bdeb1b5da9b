/**
 * `lab explore` (issue 19 item 6): systematic exploration with iterative preemption
 * bounding (CHESS) and a sleep-set reduction restricted to stay complete within the bound
 * (MSR-TR-2007-12's caveat; scenarios/explore/explore.ts). The fixture is a mirror whose
 * invalidate callback calls mmu_interval_set_seq after dropping its lock (kernel rule 26,
 * include/linux/mmu_notifier.h mmu_interval_set_seq; the fault path is rule 31's loop as in
 * lib/test_hmm.c dmirror_fault): the stale entry needs exactly two preemptions.
 */
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dependent, recordFootprint, siteFootprint, type ExploreOption } from '../../kernel-model/index.ts';
import { explore, replayDecisions, runSchedule } from '../../scenarios/explore/explore.ts';
import { mirrorSeqRace } from '../../scenarios/explore/mirror-seq-race.ts';
import { runScenarioUnder, scenarioTarget, scenarioViolations } from '../../scenarios/explore/targets.ts';
import { reproducerSchema } from '../../scenarios/fuzz/cli.ts';
import { runMain } from '../../scenarios/cli.ts';

const SPEC = { seed: 1, profile: 'linux-6.x' as const, driver: 'broken-mirror', params: {} };
const target = scenarioTarget(mirrorSeqRace, SPEC);

const tmp = mkdtempSync(join(tmpdir(), 'notifier-lab-explore-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

async function lab(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runMain(args, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out, err };
}

test('kernel rule 26/31 race: found exhaustively at K=2 (with and without the reduction), not within K=1; counts reported', (t) => {
  for (const reduction of [true, false]) {
    const k1 = explore(target, { preemptions: 1, maxSchedules: 10_000, reduction });
    t.true(k1.complete, 'K=1 explored to the end');
    t.deepEqual(k1.violations, [], `no violation within 1 preemption (reduction ${reduction})`);
    t.true(k1.explored > 1);
    const k2 = explore(target, { preemptions: 2, maxSchedules: 10_000, reduction });
    t.true(k2.complete);
    t.is(k2.violations.length, 1, `reduction ${reduction}`);
    const v = k2.violations[0]!;
    t.is(v.id, 'run-failed');
    t.regex(v.message, /stale mirror entry/);
    t.is(v.preemptions, 2, 'the fewest preemptions that show it');
    t.is(k2.byPreemptions.length, 3);
    t.is(k2.byPreemptions.reduce((a, b) => a + b, 0), k2.explored);
    t.true(k2.byPreemptions[2]! > 0);
    if (reduction) t.true(k2.pruned > 0, 'the reduction pruned something');
    else t.is(k2.pruned, 0);
  }
});

test('the reduction explores fewer schedules and finds the same violations at every bound up to 3', (t) => {
  for (let k = 0; k <= 3; k++) {
    const on = explore(target, { preemptions: k, maxSchedules: 10_000, reduction: true });
    const off = explore(target, { preemptions: k, maxSchedules: 10_000, reduction: false });
    t.deepEqual(on.violations.map((v) => `${v.id}@${v.preemptions}`), off.violations.map((v) => `${v.id}@${v.preemptions}`), `K=${k}`);
    if (k >= 1) t.true(on.explored < off.explored, `K=${k}: ${on.explored} < ${off.explored}`);
    t.true(on.runs <= off.runs, `K=${k}: runs ${on.runs} <= ${off.runs}`);
  }
});

test('replaying the found schedule reproduces the violation; the default order does not', (t) => {
  const r = explore(target, { preemptions: 2, maxSchedules: 10_000 });
  const schedule = r.violations[0]!.schedule;
  t.true(schedule.decisions.length >= 2);
  for (let i = 0; i < 2; i++) {
    const again = scenarioViolations(mirrorSeqRace, runScenarioUnder(mirrorSeqRace, SPEC, schedule));
    t.is(again.length, 1);
    t.regex(again[0]!.message, /stale mirror entry/);
  }
  t.deepEqual(scenarioViolations(mirrorSeqRace, runScenarioUnder(mirrorSeqRace, SPEC, { mode: 'explore', decisions: [] })), []);
  // The replayed run takes the same decisions, and two of them are preemptions.
  const { policy } = runSchedule(target, schedule);
  t.is(policy.mismatch, null);
  t.is(policy.preemptions, 2);
  t.deepEqual(replayDecisions(policy.decisions), schedule.decisions);
});

test('a decision that does not fit the run is reported, not followed silently', (t) => {
  const { policy } = runSchedule(target, { mode: 'explore', decisions: [[0, 99]] });
  t.regex(policy.mismatch ?? '', /decision point 0: task 99 is not ready there/);
});

test('footprints: records and sites name what a step touched; dependence is a shared key, a family wildcard, or *', (t) => {
  t.deepEqual(recordFootprint({ seq: 0, t: 0, task: 1, type: 'lock-acquire', lock: 'm', mode: 'excl' }), ['lock:m']);
  t.deepEqual(recordFootprint({ seq: 0, t: 0, task: 1, type: 'task-switch', to: 2 }), []);
  t.deepEqual(recordFootprint({ seq: 0, t: 0, task: 1, type: 'migrate', frame: 1, to: 2, reason: 'x', ret: 0, node: 'n' }), ['*']);
  t.deepEqual(siteFootprint('down_write(mm3.mmap_lock)'), ['lock:mm3.mmap_lock']);
  t.deepEqual(siteFootprint('no such site'), ['*']);
  t.false(dependent(['lock:a', 'task:1'], ['lock:b', 'task:2']));
  t.true(dependent(['lock:a'], ['lock:a']));
  t.true(dependent(['mm:*'], ['mm:7']));
  t.false(dependent(['mm:*'], ['sub:x']));
  t.true(dependent(['*'], ['task:3']));
});

test('lab explore: counts, the violation with its schedule and reproducer; lab replay reproduces it; K=1 says none within 1', async (t) => {
  const prefix = join(tmp, 'race');
  const found = await lab(['explore', 'mirror-seq-race', '--preemptions', '2', '--out', prefix]);
  t.is(found.code, 1, found.err.join('\n'));
  const text = found.out.join('\n');
  t.regex(text, /schedules explored \d+ \(by preemptions: 0:\d+ 1:\d+ 2:\d+\), pruned \d+/);
  t.regex(text, /time: [0-9.]+ ms virtual over all runs, [0-9.]+ s wall/);
  t.regex(text, /violation run-failed \(2 preemptions/);
  const file = `${prefix}-1.json`;
  t.true(existsSync(file));
  const rep = JSON.parse(readFileSync(file, 'utf8'));
  t.is(rep.version, 3);
  t.is(rep.scenario.name, 'mirror-seq-race');
  t.is(rep.schedule.mode, 'explore');
  t.true(reproducerSchema.safeParse(rep).success, 'one versioned format');
  const replay = await lab(['replay', file]);
  t.is(replay.code, 1, replay.err.join('\n'));
  t.true(replay.out.some((l) => /^violation run-failed: .*stale mirror entry/.test(l)), replay.out.join('\n'));

  const none = await lab(['explore', 'mirror-seq-race', '--preemptions', '1', '--out', join(tmp, 'none')]);
  t.is(none.code, 0);
  t.true(none.out.includes('no violation within 1 preemption'), none.out.join('\n'));
  t.false(existsSync(join(tmp, 'none-1.json')));

  const json = await lab(['explore', 'mirror-seq-race', '--preemptions', '2', '--no-reduction', '--json', '--out', join(tmp, 'j')]);
  t.is(json.code, 1);
  const r = JSON.parse(json.out.join('\n'));
  t.is(r.reduction, false);
  t.is(r.pruned, 0);
  t.is(r.violations[0].preemptions, 2);
  t.deepEqual(r.reproducers, [`${join(tmp, 'j')}-1.json`]);
  t.true(typeof r.wallMs === 'number');
});

test('lab explore takes a story from a module (./file.ts#name), and --max-schedules bounds the search', async (t) => {
  const r = await lab(['explore', './scenarios/explore/mirror-seq-race.ts#mirrorSeqRace', '--preemptions', '2', '--json', '--out', join(tmp, 'mod')]);
  t.is(r.code, 1, r.err.join('\n'));
  const j = JSON.parse(r.out.join('\n'));
  t.regex(j.target, /mirror-seq-race \(.*mirror-seq-race\.ts\)/);
  const rep = JSON.parse(readFileSync(join(tmp, 'mod-1.json'), 'utf8'));
  t.is(rep.scenario.module.export, 'mirrorSeqRace');
  t.is((await lab(['replay', join(tmp, 'mod-1.json')])).code, 1, 'the module path is relative to the reproducer');
  const capped = await lab(['explore', 'mirror-seq-race', '--preemptions', '3', '--max-schedules', '5', '--out', join(tmp, 'cap')]);
  t.is(capped.code, 0);
  t.true(capped.out.some((l) => l.startsWith('incomplete: stopped by --max-schedules')), capped.out.join('\n'));
});

test('lab explore bad input: one line, exit 2, nothing written', async (t) => {
  for (const args of [
    ['explore', 'no-such-story'],
    ['explore', 'mirror-seq-race', '--preemptions', '-1'],
    ['explore', 'mirror-seq-race', '--preemptions', '11'],
    ['explore', 'mirror-seq-race', '--max-schedules', '0'],
    ['explore', 'mirror-seq-race', '--driver', 'odp'],
    ['explore', './no/such/file.ts#x'],
    ['explore', './scenarios/explore/mirror-seq-race.ts#nothing'],
  ]) {
    const r = await lab([...args, '--out', join(tmp, 'bad')]);
    t.is(r.code, 2, args.join(' '));
    t.is(r.err.length, 1, `${args.join(' ')}: ${r.err.join(' | ')}`);
    t.is(r.out.length, 0);
  }
  t.false(existsSync(join(tmp, 'bad-1.json')));
});

test('an explore option without decisions is the default order: the story as told', (t) => {
  const plain = scenarioViolations(mirrorSeqRace, runScenarioUnder(mirrorSeqRace, SPEC, { mode: 'plain' }));
  const dflt: ExploreOption = { mode: 'explore', decisions: [] };
  t.deepEqual(scenarioViolations(mirrorSeqRace, runScenarioUnder(mirrorSeqRace, SPEC, dflt)), plain);
});
