/**
 * The README's "Prototype your driver" tutorial, run: its strategy (driver/examples/
 * fault-around.ts) changes one step of the reference ODP strategy and is judged clean; the
 * figures the README quotes hold; its wrong turn (forgot-the-fence.ts) is caught; and its
 * batching sweep runs the module beside the reference.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertNoViolations, checkStrategy, renderCheck, runStory } from '../../testing/index.ts';
import faultAround, { FaultAroundUmemOdp } from '../../driver/examples/fault-around.ts';
import forgotTheFence from '../../driver/examples/forgot-the-fence.ts';
import { UmemOdp } from '../../driver/index.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

test.serial('step 2: fault-around overrides one step of UmemOdp (buildRange) and nothing else', (t) => {
  const own = Object.getOwnPropertyNames(FaultAroundUmemOdp.prototype).filter((n) => n !== 'constructor');
  t.deepEqual(own, ['buildRange']);
  t.true(Object.getPrototypeOf(FaultAroundUmemOdp) === UmemOdp);
});

test.serial('step 3: in odp-swap-storm fault-around is clean and takes fewer NIC faults than the reference (the README\'s figures)', (t) => {
  const mine = runStory('odp-swap-storm', faultAround);
  const ref = runStory('odp-swap-storm');
  assertNoViolations(t, mine);
  t.true(mine.outcome.ok, mine.outcome.failure);
  t.is(mine.driver, 'fault-around');
  t.is(mine.driverModule?.stands, 'odp');
  t.is(ref.extra['MR invalidations (CLEAR by reclaim)'], 1032);
  t.is(mine.extra['MR invalidations (CLEAR by reclaim)'], 645);
  t.is(ref.extra['NIC faults'], 37);
  t.is(mine.extra['NIC faults'], 26);
});

test.serial('step 6: lab check finds fault-around clean (stories beside the reference, fuzz, teardown races)', (t) => {
  const report = checkStrategy(faultAround, { runs: 20 });
  t.true(report.ok, renderCheck(report).join('\n'));
  t.deepEqual(report.rows.filter((r) => r.kind !== 'story').map((r) => r.check), ['fuzz', 'race:dereg-during-write', 'race:dereg-during-read',
    'race:dereg-during-fault', 'race:dereg-during-invalidation', 'race:rereg-while-draining']);
  t.true(report.rows.filter((r) => r.kind === 'story').length >= 5);
  t.true(report.rows.every((r) => r.result === 'pass'));
});

test.serial('the wrong turn: forgot-the-fence is caught by lab check with use-after-invalidate, its callback return in the trail (rdma C5)', (t) => {
  const report = checkStrategy(forgotTheFence, { runs: 30, only: ['fuzz'] });
  t.false(report.ok);
  const v = report.rows[0]!.violation!;
  t.is(v.id, 'use-after-invalidate');
  t.true(v.trail.some((e) => e.kind === 'callback' && /forgot-the-fence\(\w+\) returned true/.test(e.text)));
});

test.serial('step 5: the batching sweep runs the module beside the reference; fault-around takes fewer NIC faults', (t) => {
  const out = mkdtempSync(join(tmpdir(), 'lab-tutorial-sweep-'));
  const r = spawnSync(process.execPath, [join(REPO, 'bin', 'lab.js'), 'sweep', join(REPO, 'driver', 'examples', 'fault-around-sweep.json'), '--out', out, '--jobs', '2', '--quiet'],
    { encoding: 'utf8', timeout: 600_000 });
  t.is(r.status, 0, r.stdout + r.stderr);
  const rows = readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { params: { strategy: string; policy: string }; record: { faults: number } });
  t.is(rows.length, 6);
  const faults = (s: string, p: string) => rows.find((x) => x.params.strategy === s && x.params.policy === p)!.record.faults;
  for (const p of ['none', 'window', 'count']) t.true(faults('./fault-around.ts', p) <= faults('odp', p), p);
  t.true(faults('./fault-around.ts', 'none') < faults('odp', 'none'));
});
