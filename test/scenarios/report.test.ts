import test from 'ava';
import { readFileSync } from 'node:fs';
import { runScenario } from '../../scenarios/scenario.ts';
import { parseSets } from '../../scenarios/params.ts';
import { scenarioReportSchema, reportJsonSchema } from '../../scenarios/report-schema.ts';
import { gupBiasFalsePositive } from '../../scenarios/gup-bias-false-positive.ts';

const defaults = () => {
  const p = parseSets([]);
  if ('error' in p) throw new Error(p.error);
  return p.values;
};

test('--json: a run report matches the documented schema, and report.schema.json is the schema generated from it', (t) => {
  const r = runScenario(gupBiasFalsePositive, { seed: 3, profile: 'linux-6.x', driver: 'pinned', params: defaults() });
  const parsed = scenarioReportSchema.safeParse(JSON.parse(JSON.stringify(r)));
  t.true(parsed.success, parsed.success ? '' : JSON.stringify(parsed.error.issues.slice(0, 3)));
  const committed = JSON.parse(readFileSync(new URL('../../scenarios/report.schema.json', import.meta.url), 'utf8'));
  t.deepEqual(committed, JSON.parse(JSON.stringify(reportJsonSchema())));
});

test('--json: a report missing a documented field is rejected by the schema', (t) => {
  const r = JSON.parse(JSON.stringify(runScenario(gupBiasFalsePositive, { seed: 3, profile: 'linux-6.x', driver: 'pinned', params: defaults() })));
  delete r.outcome.ok;
  t.false(scenarioReportSchema.safeParse(r).success);
});

test('same seed, same report, byte for byte', (t) => {
  const a = JSON.stringify(runScenario(gupBiasFalsePositive, { seed: 9, profile: 'linux-6.x', driver: 'pinned', params: defaults() }));
  const b = JSON.stringify(runScenario(gupBiasFalsePositive, { seed: 9, profile: 'linux-6.x', driver: 'pinned', params: defaults() }));
  t.is(a, b);
});
