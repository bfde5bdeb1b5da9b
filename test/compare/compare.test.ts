/**
 * lab compare (issue 13 items 2 and 3): one story under the seed threads' kernel variants,
 * one row each, judged against the story's expectation for that row; a user's variant
 * from its own module (`./file.ts#name`); bad input is one line naming the accepted
 * values, exit 2.
 */
import test from 'ava';
import { join } from 'node:path';
import { runMain } from '../../scenarios/cli.ts';
import type { CompareResult } from '../../scenarios/compare/index.ts';
import { REPO, userDir } from '../byod/_fixtures.ts';

async function lab(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runMain(argv, { out: (l) => out.push(...l.split('\n')), err: (l) => err.push(...l.split('\n')) });
  return { code, out, err };
}

const ITEM3 = ['compare', 'writeback-vs-longterm-pin', '--profile', 'linux-4.18', '--variants', 'none,hubbard-flag,wait-for-dma-idle,gup-dirty-forever,dirty-at-gup'];

test('issue 13 item 3: writeback-vs-longterm-pin on linux-4.18, each proposal\'s row as its thread predicted (seeds 000, 002, 003), exit 0', async (t) => {
  const r = await lab(...ITEM3, '--json');
  t.is(r.code, 0, r.out.join('\n'));
  const res = JSON.parse(r.out[0]!) as CompareResult;
  const row = (v: string) => res.rows.find((x) => x.variant === v)!;
  t.deepEqual(res.rows.map((x) => [x.variant, x.matches]), [['none', true], ['hubbard-flag', true], ['wait-for-dma-idle', true], ['gup-dirty-forever', true], ['dirty-at-gup', true]]);
  // none: the 2018 crash and lost writes.
  t.deepEqual(row('none').outcome, ['crash', 'data lost', 'incoherence']);
  t.truthy(row('none').violations['dirty-without-buffers']);
  // hubbard-flag (John Hubbard, seed 000): no crash, buffers kept, still cleaned under the NIC, lost records, flagged after release (Lameter).
  const h = row('hubbard-flag');
  t.deepEqual(Object.keys(h.violations).sort(), ['dma-write-clean-page', 'lost-write']);
  t.true(h.costs.keptFlagged > 0 && h.costs.flaggedAfterRelease > 0);
  t.deepEqual(h.proposals, [{ name: 'hubbard-flag', seedFile: '000_d0573d00011ea04d.txt', speaker: 'John Hubbard', date: '2018-06-17' }]);
  // wait-for-dma-idle (Dan Williams, seed 003): the buffer release stuck behind the long-term pin, naming the holder.
  const w = row('wait-for-dma-idle');
  t.true(w.outcome.includes('stuck'));
  t.is(w.costs.stuck.length, 1);
  t.regex(w.costs.stuck[0]!.holder, /logger \(pid \d+\)'s long-term GUP reference/);
  t.is(w.costs.stuck[0]!.caller, 'try_to_release_folio');
  // gup-dirty-forever (Jérôme Glisse, seed 002): no crash, no clean page written; fsync leaves page 1 off the disk.
  const g = row('gup-dirty-forever');
  t.deepEqual(g.violations, {});
  t.is(g.costs.cleanedWhilePinned, 0);
  t.true(g.costs.writebackSkipped > 0);
  t.is(g.figures['records lost on disk'], 36, 'page 1\'s 36 records are not on disk after fsync returned 0');
  // dirty-at-gup (Arcangeli via Glisse; Chinner's objection): cleaned about 30 s into the pin, written while clean, lost
  // writes, no crash. "About": dirty_expire_interval (30 s) plus at most one flusher period (dirty_writeback_interval, 5 s,
  // mm/page-writeback.c), since the page expires between two wake-ups.
  const d = row('dirty-at-gup');
  const cleanedS = d.costs.firstCleanIntoPinNs === null ? -1 : d.costs.firstCleanIntoPinNs / 1e9;
  t.true(cleanedS >= 30 && cleanedS <= 35, `cleaned ${cleanedS} s into the pin`);
  t.deepEqual(Object.keys(d.violations).sort(), ['dma-write-clean-page', 'lost-write']);
  t.true(d.costs.releasesNotDirtied > 0);
  // The table: one row per variant, the readings quoting the threads.
  const text = await lab(...ITEM3);
  t.is(text.code, 0);
  t.regex(text.out.join('\n'), /hubbard-flag\s+data lost \+ incoherence\s+dma-write-clean-page×2, lost-write×1/);
  t.regex(text.out.join('\n'), /Chinner: "what prevents background writeback/);
  t.regex(text.out.join('\n'), /every row as its thread predicted/);
});

test('lab compare --profiles: seed 001\'s read pins on pinned-ring-zero-page, one row per profile and variant; --json and the table agree', async (t) => {
  const r = await lab('compare', 'pinned-ring-zero-page', '--profiles', 'linux-5.8,linux-5.15', '--variants', 'none,read-pin-shared,read-pin-exclusive', '--json');
  t.is(r.code, 0, r.out.join('\n'));
  const res = JSON.parse(r.out[0]!) as CompareResult;
  t.deepEqual(res.rows.map((x) => `${x.profile} ${x.variant} ${x.outcome.join('+')}`), [
    'linux-5.8 none ok', 'linux-5.8 read-pin-shared incoherence', 'linux-5.8 read-pin-exclusive ok',
    'linux-5.15 none incoherence', 'linux-5.15 read-pin-shared incoherence', 'linux-5.15 read-pin-exclusive ok',
  ]);
  const f = await lab('compare', 'fork-with-pinned-ring', '--variants', 'none,read-pin-shared,read-pin-exclusive,read-pin-exclusive+fork-seqcount', '--json');
  t.is(f.code, 0, f.out.join('\n'));
  t.deepEqual((JSON.parse(f.out[0]!) as CompareResult).rows.map((x) => x.outcome.join('+')), ['incoherence', 'incoherence', 'ok', 'ok']);
});

test('lab compare exits 1 when a row is not what its story expects: a story with no expectation for the variant', async (t) => {
  const r = await lab('compare', 'migration-meets-pin', '--variants', 'none,hubbard-flag');
  t.is(r.code, 1, r.out.join('\n'));
  t.regex(r.out.join('\n'), /differs: the story declares no expectation for this variant/);
  t.regex(r.out.join('\n'), /NOT OK: 1 row/);
});

test('lab compare bad input: unknown story, variant or profile, a variant its profile refuses, a bad list: one line on stderr naming the accepted values, exit 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['compare', 'no-such-story', '--variants', 'none'], /unknown story 'no-such-story'; valid: writeback-vs-longterm-pin, /],
    [['compare', 'writeback-vs-longterm-pin', '--variants', 'none,hubard-flag'], /unknown variant 'hubard-flag'; accepted: none, hubbard-flag, wait-for-dma-idle, /],
    [['compare', 'writeback-vs-longterm-pin', '--profile', 'linux-9', '--variants', 'none'], /unknown profile 'linux-9'; valid profiles: linux-3.0, /],
    [['compare', 'writeback-vs-longterm-pin', '--profiles', 'linux-4.18,linux-2.6'], /unknown profile 'linux-2.6'/],
    [['compare', 'fork-with-pinned-ring', '--profile', 'linux-5.15', '--variants', 'fork-seqcount'], /part of linux-5.15 already/],
    [['compare', 'writeback-vs-longterm-pin', '--variants', 'none,,hubbard-flag'], /comma-separated list with no empty entries/],
    [['compare', 'writeback-vs-longterm-pin', '--driver', 'holdoff'], /has no driver 'holdoff'; valid: pinned, odp/],
    [['run', 'writeback-vs-longterm-pin', '--variant', 'nope'], /unknown variant 'nope'; accepted: none, hubbard-flag/],
  ];
  for (const [argv, re] of cases) {
    const r = await lab(...argv);
    t.is(r.code, 2, argv.join(' '));
    t.is(r.err.filter((l) => l).length, 1, argv.join(' '));
    t.regex(r.err[0] ?? '', re);
    t.deepEqual(r.out.filter((l) => l), [], 'nothing on stdout');
  }
});

const MINE = `
import { defineVariant } from '${join(REPO, 'index.ts')}';
// Both halves of seeds 000 and 003: flag the page, and wait for DMA-idle before dropping buffers.
export const flagAndWait = defineVariant({
  name: 'flag-and-wait', seedFile: 'my-notes.md', speaker: 'a reader', date: '2026-12-06',
  summary: 'hubbard-flag plus wait-for-dma-idle', claim: 'the flag keeps the buffers; the wait is never reached',
  switches: { dmaPinnedFlag: true, waitForDmaIdle: true },
  expect: (story) => story === 'writeback-vs-longterm-pin'
    ? { violations: ['dma-write-clean-page', 'lost-write'], outcome: ['data lost', 'incoherence'], reading: 'my claim: like hubbard-flag, the flag wins', costs: { waits: '0' } }
    : null,
});
export const wrong = defineVariant({
  name: 'wrong', seedFile: 'my-notes.md', speaker: 'a reader', date: '2026-12-06', summary: 'nothing', claim: 'nothing happens',
  expect: () => ({ violations: [], outcome: ['ok'], reading: 'a wrong prediction' }),
});
export const notAVariant = { a: 1 };
`;

test("a user's variant from its own module (./file.ts#name, defineVariant) runs in lab compare and lab run like the built-in ones; the report names its file; a wrong prediction fails its row", async (t) => {
  const dir = userDir({ 'mine.ts': MINE });
  const ref = join(dir, 'mine.ts');
  const r = await lab('compare', 'writeback-vs-longterm-pin', '--profile', 'linux-4.18', '--variants', `none,${ref}#flagAndWait`, '--json');
  t.is(r.code, 0, r.out.join('\n') + r.err.join('\n'));
  const res = JSON.parse(r.out[0]!) as CompareResult;
  t.deepEqual(res.rows[1]!.proposals, [{ name: 'flag-and-wait', seedFile: 'my-notes.md', speaker: 'a reader', date: '2026-12-06' }]);
  t.is(res.rows[1]!.costs.waits, 0, 'the flag keeps the buffers, so nothing waits');
  const run = await lab('run', 'writeback-vs-longterm-pin', '--variant', `${ref}#flagAndWait`, '--json');
  t.is(run.code, 0, run.err.join('\n'));
  const report = JSON.parse(run.out[0]!);
  t.is(report.variant.name, 'flag-and-wait');
  t.regex(report.variant.proposals[0].module, /mine\.ts#flagAndWait$/);
  t.is(report.variant.proposals[0].status, 'proposal');
  const wrong = await lab('compare', 'writeback-vs-longterm-pin', '--variants', `${ref}#wrong`);
  t.is(wrong.code, 1);
  t.regex(wrong.out.join('\n'), /differs: unexpected dirty-without-buffers, dma-write-clean-page, lost-write/);
  const bad = await lab('compare', 'writeback-vs-longterm-pin', '--variants', `${ref}#notAVariant`);
  t.is(bad.code, 2);
  t.regex(bad.err[0] ?? '', /mine\.ts#notAVariant is an object with keys a, not a kernel variant made by defineVariant; its kernel variant exports: #flagAndWait, #wrong/);
});

test('lab variants lists each proposal with its seed file, speaker and date, and the holdoff driver beside them', async (t) => {
  const r = await lab('variants');
  t.is(r.code, 0);
  const text = r.out.join('\n');
  for (const [name, who, seed] of [['hubbard-flag', 'John Hubbard', '000'], ['wait-for-dma-idle', 'Dan Williams', '003'], ['gup-dirty-forever', 'Jérôme Glisse', '002'], ['dirty-at-gup', 'Andrea Arcangeli', '002'], ['read-pin-shared', 'Linus Torvalds', '001'], ['read-pin-exclusive', 'Linus Torvalds', '001'], ['fork-seqcount', 'Linus Torvalds', '001'], ['holdoff', 'Christopher Lameter', '000']] as const) {
    t.regex(text, new RegExp(`^${name} +(driver )?proposal, ${who}.*seeds/${seed}_`, 'm'), name);
  }
});
