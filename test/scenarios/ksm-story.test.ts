/**
 * The KSM story (issue 14 item 9; kernel rules 21g, 75; mm/ksm.c): ksmd merges the two
 * copies of a registered buffer. ODP: CLEARs, the NIC refaults (for write, as mlx5 does on
 * a writable MR) and the bytes stay right; pinned: write_protect_page refuses every pinned
 * page, nothing merges. Nothing violated either way.
 */
import test from 'ava';
import { parseSets } from '../../scenarios/params.ts';
import { runScenario, type ScenarioReport } from '../../scenarios/scenario.ts';
import { ksmMergesMr } from '../../scenarios/ksm-merges-mr.ts';

function run(driver: string): ScenarioReport {
  const p = parseSets([], ksmMergesMr.params ?? []);
  if ('error' in p) throw new Error(p.error);
  return runScenario(ksmMergesMr, { seed: 1, profile: 'linux-6.x', driver, params: p.values });
}

test('ksm-merges-mr, odp: 4 pages merged with write-protect and replace CLEARs, the NIC refaults, data coherent, nothing violated', (t) => {
  const r = run('odp');
  t.deepEqual(r.violations.map((v) => v.id), []);
  t.true((r.extra['pages merged by KSM'] as number) >= 4);
  t.true((r.extra['CLEAR invalidations of the worker'] as number) >= 12);
  t.true((r.extra['NIC faults on the MR'] as number) >= 1);
  t.is(r.extra['data coherent'], 'yes');
});

test('ksm-merges-mr, pinned (rule 75): write_protect_page refuses the pinned pages after its CLEAR; nothing merges; data coherent', (t) => {
  const r = run('pinned');
  t.deepEqual(r.violations.map((v) => v.id), []);
  t.is(r.extra['pages merged by KSM'], 0);
  t.true((r.extra['merges refused by write_protect_page'] as number) > 0);
  t.is(r.extra['data coherent'], 'yes');
});
