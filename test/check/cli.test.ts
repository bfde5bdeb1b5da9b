/**
 * `lab check` and `lab new strategy` as a driver author meets them: child processes of the
 * package's bin, run from a temporary directory outside the repository whose
 * node_modules/notifier-lab links to this package (as `npm link` would), so the user's
 * files import notifier-lab by its own name (package.json `exports`).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(REPO, 'bin', 'lab.js');

function project(files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'lab-check-'));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(REPO, join(dir, 'node_modules', 'notifier-lab'), 'dir');
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

function lab(cwd: string, ...argv: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, ...argv], { cwd, encoding: 'utf8', timeout: 600_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** A deliberately wrong strategy: the reference ODP one whose invalidation zaps without a sync (rdma C5). */
const NO_SYNC = `
import { UmemOdp, defineStrategy, odpStrategy } from 'notifier-lab/driver';
import type { Co } from 'notifier-lab/kernel';
class NoSync extends UmemOdp {
  protected override *fence(_event: number): Co {}
}
export const noSync = defineStrategy({ name: 'no-sync', nic: 'faultable', strategy: () => odpStrategy({ name: 'no-sync' }, NoSync) });
`;

test.serial('lab check from outside the repository: a strategy that zaps without a sync is caught, exit 1, with its trail and a replay line that works (rdma C5, kernel rule 11)', (t) => {
  const dir = project({ 'no-sync.ts': NO_SYNC });
  const r = lab(dir, 'check', './no-sync.ts#noSync', '--runs', '30', '--only', 'fuzz');
  t.is(r.code, 1, r.err);
  t.regex(r.out, /lab check: strategy 'no-sync' \(faultable NIC, stands in for 'odp'\) from .*no-sync\.ts/);
  t.regex(r.out, /^fuzz +fail +use-after-invalidate: /m);
  t.regex(r.out, /^error use-after-invalidate at /m);
  t.regex(r.out, / callback +invalidate of n\d-ib\/no-sync\(\w+\) returned true/);
  t.regex(r.out, /replay: npx lab check \.\/no-sync\.ts#noSync --only fuzz --runs 30 --seed 1/);
  t.regex(r.out, /verdict: 1 finding in 1 checks/);
  t.regex(r.err, /check fuzz \(30 runs\)/, 'progress goes to stderr');
  // The replay line reproduces the finding.
  const again = lab(dir, 'check', './no-sync.ts#noSync', '--only', 'fuzz', '--runs', '30', '--seed', '1', '--json');
  t.is(again.code, 1);
  const report = JSON.parse(again.out) as { ok: boolean; strategy: { name: string; file: string }; rows: { check: string; result: string; violation: { id: string; trail: unknown[] } }[] };
  t.false(report.ok);
  t.is(report.strategy.name, 'no-sync');
  t.regex(report.strategy.file, /no-sync\.ts$/);
  t.is(report.rows[0]!.violation.id, 'use-after-invalidate');
  t.true(report.rows[0]!.violation.trail.length >= 3);
});

// The full verdict on a scaffolded strategy, in two halves so that each finishes well
// within ava's inactivity timeout on a loaded machine.
let scaffold: { dir: string; src: string } | null = null;

test.serial('lab new strategy --from odp outside the repository writes a module that imports notifier-lab by name; its stories pass lab check beside the reference', (t) => {
  const dir = project();
  const made = lab(dir, 'new', 'strategy', 'mine', '--from', 'odp');
  t.is(made.code, 0, made.err);
  t.regex(made.out, /wrote \.\/mine\.ts \(odp, as the reference\) and \.\/mine\.test\.ts/);
  const src = readFileSync(join(dir, 'mine.ts'), 'utf8');
  t.regex(src, /from 'notifier-lab\/driver'/);
  t.regex(readFileSync(join(dir, 'mine.test.ts'), 'utf8'), /from 'notifier-lab\/testing'/);
  scaffold = { dir, src };
  const r = lab(dir, 'check', './mine.ts', '--only', 'story');
  t.is(r.code, 0, r.out + r.err);
  for (const story of ['writeback-vs-longterm-pin', 'deferred-invalidation-reuse', 'migration-meets-pin', 'odp-swap-storm', 'oom-reaper-nonblockable']) {
    t.regex(r.out, new RegExp(`^story:${story} +pass`, 'm'), story);
  }
  t.regex(r.out, /reference 'odp': clean/);
  t.regex(r.out, /verdict: clean \(\d+ passed, 0 skipped\)/);
});

test.serial('the scaffolded strategy passes the fuzz campaign and every teardown race (exit 0); lab new never overwrites it', (t) => {
  if (!scaffold) return t.fail('the scaffold test did not run');
  const { dir, src } = scaffold;
  const r = lab(dir, 'check', './mine.ts', '--runs', '20', '--only', 'fuzz', '--only', 'race');
  t.is(r.code, 0, r.out + r.err);
  for (const check of ['fuzz', 'race:dereg-during-write', 'race:dereg-during-read', 'race:dereg-during-fault', 'race:dereg-during-invalidation', 'race:rereg-while-draining']) {
    t.regex(r.out, new RegExp(`^${check} +pass`, 'm'), check);
  }
  const again = lab(dir, 'new', 'strategy', 'mine');
  t.is(again.code, 2);
  t.regex(again.err, /^error: mine\.ts exists; remove it or choose another name/);
  t.is(readFileSync(join(dir, 'mine.ts'), 'utf8'), src);
});

test.serial('lab check and lab new: bad input is one line on stderr and exit 2, nothing written', (t) => {
  const dir = project({ 'no-sync.ts': NO_SYNC });
  const cases: [string[], RegExp][] = [
    [['check', './missing.ts'], /missing\.ts: no such file/],
    [['check', 'odp'], /check takes your strategy module, \.\/file\.ts or \.\/file\.ts#export/],
    [['check', './no-sync.ts'], /no default export; its strategy exports: #noSync/],
    [['check', './no-sync.ts#noSync', '--only', 'nosuch'], /--only nosuch: no such check for no-sync; checks: story, fuzz, race, story:/],
    [['check', './no-sync.ts#noSync', '--runs', '0'], /--runs must be an integer from 1 to 1000000, got '0'/],
    [['check', './no-sync.ts#noSync', '--set', 'cost.syncNs=5'], /check takes --set only for the strategy's parameters/],
    [['new', 'strategy', 'Bad_Name'], /strategy name must be lower-case letters, digits and dashes/],
    [['new', 'strategy', 'ok', '--from', 'rxe'], /--from must be one of odp, holdoff, pinned, snapshot-mirror, got 'rxe'/],
    [['new', 'driver', 'ok'], /lab new makes 'strategy', got 'driver'/],
  ];
  for (const [argv, msg] of cases) {
    const r = lab(dir, ...argv);
    t.is(r.code, 2, argv.join(' '));
    t.regex(r.err, msg, argv.join(' '));
    t.is(r.err.trim().split('\n').length, 1, argv.join(' '));
    t.is(r.out, '', argv.join(' '));
  }
  t.false(existsSync(join(dir, 'ok.ts')));
  t.false(existsSync(join(dir, 'Bad_Name.ts')));
});
