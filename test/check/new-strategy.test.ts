/**
 * `lab new strategy --from holdoff|pinned|snapshot-mirror` (odp runs through the CLI in
 * cli.test.ts): each generated module compiles, loads, and passes lab check; and the
 * generated ava test's helpers (notifier-lab/testing) judge it as the test says.
 */
import test from 'ava';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertNoViolations, checkStrategy, findings, fuzzStrategy, renderCheck, runStory } from '../../testing/index.ts';
import type { StrategyDefinition } from '../../driver/index.ts';
import { importsFor, newStrategy } from '../../scenarios/new/new-strategy.ts';
import { PACKAGE_IMPORTS, TEMPLATE_STORY, type TemplateBase } from '../../scenarios/new/templates.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
// Outside the repository, importing this checkout by absolute path.
const DIR = mkdtempSync(join(tmpdir(), 'lab-new-'));
const IMPORTS = {
  driver: join(REPO, 'driver', 'index.ts'), kernel: join(REPO, 'kernel-model', 'index.ts'),
  device: join(REPO, 'device', 'index.ts'), testing: join(REPO, 'testing', 'index.ts'),
};

async function generate(base: TemplateBase): Promise<StrategyDefinition> {
  const r = newStrategy({ name: `my-${base}`, from: base, dir: DIR, imports: IMPORTS });
  return ((await import(r.strategyFile)) as { default: StrategyDefinition }).default;
}

test('inside the repository the files import notifier-lab by relative path; elsewhere by the package name', (t) => {
  const im = importsFor(join(REPO, 'driver', 'examples'));
  t.is(im.driver, '../index.ts');
  t.is(im.kernel, '../../kernel-model/index.ts');
  t.is(im.testing, '../../testing/index.ts');
  t.deepEqual(importsFor('/tmp/elsewhere'), PACKAGE_IMPORTS);
  t.deepEqual(importsFor(join(REPO, 'node_modules', 'x')), PACKAGE_IMPORTS);
});

for (const base of ['holdoff', 'pinned', 'snapshot-mirror'] as const) {
  test.serial(`lab new strategy --from ${base}: the module passes lab check (stories beside the reference, fuzz, teardown races)`, async (t) => {
    const def = await generate(base);
    t.is(def.name, `my-${base}`);
    t.is(def.nic, 'non-faultable');
    t.is(def.like, base === 'pinned' ? 'pinned' : 'holdoff');
    const report = checkStrategy(def, { runs: 15 });
    t.true(report.ok, renderCheck(report).join('\n'));
    t.true(report.rows.some((r) => r.kind === 'story' && r.result === 'pass'));
    t.is(report.rows.find((r) => r.check === 'race:dereg-during-fault')?.result, 'skipped');
    const text = readFileSync(join(DIR, `my-${base}.test.ts`), 'utf8');
    t.true(text.includes(`runStory('${TEMPLATE_STORY[base]}', strategy)`));
    // What the generated test does, done here with the same helpers.
    assertNoViolations(t, runStory(TEMPLATE_STORY[base], def), { severity: 'error' });
  });
}

test.serial('a pinned strategy is judged as pinned whatever its name: the story\'s own hazards are "as reference", its warnings listed, never failures', async (t) => {
  const def = ((await import(newStrategy({ name: 'other-pinned', from: 'pinned', dir: DIR, imports: IMPORTS }).strategyFile)) as { default: StrategyDefinition }).default;
  const report = checkStrategy(def, { only: ['story:writeback-vs-longterm-pin', 'story:migration-meets-pin'] });
  const wb = report.rows.find((r) => r.check === 'story:writeback-vs-longterm-pin')!;
  t.is(wb.result, 'pass');
  t.deepEqual(wb.asReference, ['dirty-without-buffers', 'dma-write-clean-page', 'lost-write']);
  const mig = report.rows.find((r) => r.check === 'story:migration-meets-pin')!;
  t.deepEqual(mig.warnings, ['blocked-migration']);
  t.regex(mig.reference ?? '', /blocked-migration/);
});

test('the testing helpers fail a wrong strategy: assertNoViolations reports the violation with its trail', (t) => {
  const calls: string[] = [];
  const fake = { pass: () => calls.push('pass'), fail: (m?: string) => calls.push(`fail: ${m}`) };
  const wrong: StrategyDefinition = {
    kind: 'notifier-lab/strategy', name: 'no-fence', nic: 'faultable', like: 'odp',
    strategy: () => {
      throw new Error('unused');
    },
  };
  // A strategy that throws while it is built is a failed run (with its seed), not a crash.
  const r = runStory('odp-swap-storm', wrong);
  t.false(r.outcome.ok);
  t.true(findings(r).some((f) => /run failed \(seed 1\)/.test(f)));
  assertNoViolations(fake, r);
  t.regex(calls[0] ?? '', /^fail: 1 finding:\nrun failed \(seed 1\)/);
  const fz = fuzzStrategy(wrong, { runs: 3 });
  t.true(fz.found);
  t.true(findings(fz).some((f) => /model failure/.test(f)));
});
