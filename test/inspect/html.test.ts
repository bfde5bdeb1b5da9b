/**
 * `lab run --html`: the page of every scenario of the catalogue fits in 20 MiB, is
 * self-contained (nothing fetched at view time), and holds a snapshot at every violation,
 * every invalidation start and end and every fault (thinned evenly past MAX_SNAPSHOTS, never
 * the violations), on top of a regular grid.
 */
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SCENARIOS, runCli } from '../../scenarios/index.ts';
import { GRID_POINTS, MAX_SNAPSHOTS, buildHtmlPage, type PageData } from '../../scenarios/inspect/index.ts';

const LIMIT = 20 * 1024 * 1024;

function dataOf(html: string): PageData {
  const m = /<script type="application\/json" id="data">([\s\S]*?)<\/script>/.exec(html);
  if (!m) throw new Error('no data element');
  return JSON.parse(m[1] as string) as PageData;
}

/** Each page takes seconds to build: one at a time, letting ava report between them. */
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

for (const def of SCENARIOS) {
  test.serial(`the time-travel page of ${def.name} is self-contained, at most 20 MiB, with a snapshot at every violation`, async (t) => {
    await tick();
    const page = buildHtmlPage({ kind: 'scenario', name: def.name, def, seed: 1, profile: def.defaultProfile, driver: def.defaultDriver, params: {} });
    const bytes = Buffer.byteLength(page.html);
    t.log(`${def.name}: ${(bytes / 1048576).toFixed(2)} MiB, ${page.snapshots} instants`);
    t.true(bytes <= LIMIT, `${bytes} bytes`);
    // Nothing loaded from elsewhere: no external script, style, image or font.
    t.notRegex(page.html, /(src|href)\s*=\s*["']?(https?:)?\/\//i);
    t.notRegex(page.html, /@import|url\(\s*["']?https?:/i);
    const d = dataOf(page.html);
    t.is(d.violations.length, page.run.report?.violations.length ?? -1);
    t.is(d.snaps.filter((s) => s[2] > 0).length, d.violations.length);
    t.true(d.snaps.length >= Math.min(GRID_POINTS, 1) && d.snaps.length <= MAX_SNAPSHOTS + d.violations.length + GRID_POINTS + 1);
    // Instants in run order, and each invalidation or fault instant has its snapshot unless thinned.
    for (let i = 1; i < d.snaps.length; i++) t.true(d.snaps[i]![0] >= d.snaps[i - 1]![0]);
    const eventMarks = d.marks.filter((m) => ['invalidate-start', 'invalidate-end', 'cpu-fault', 'device-fault'].includes(d.kinds[m[1]] as string)).length;
    const eventSnaps = d.snaps.filter((s) => /^(invalidate-start|invalidate-end|cpu-fault|device-fault) at /.test(s[1])).length;
    if (eventMarks + d.violations.length + GRID_POINTS <= MAX_SNAPSHOTS) t.is(eventSnaps, eventMarks);
    else t.true(eventSnaps > 0 && eventSnaps < eventMarks);
    // Every block a snapshot names decodes to lines.
    for (const b of d.blocks) for (let r = 0; r < b[1].length; r += 2) t.true(b[1][r]! + b[1][r + 1]! <= d.lines.length);
  });
}

test.serial('lab run --html writes the page and prints the report; bad uses are one line, exit 2', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'notifier-lab-html-'));
  try {
    const file = join(dir, 'p.html');
    const lines: string[] = [];
    const saved = process.exitCode;
    const code = await runCli(['run', 'gup-bias-false-positive', '--html', file], (l) => lines.push(...l.split('\n')));
    process.exitCode = saved;
    t.is(code, 0, lines.join('\n'));
    t.true(existsSync(file));
    t.regex(lines.join('\n'), /== gup-bias-false-positive/);
    t.true(lines.some((l) => /^time-travel page written to .*p\.html \(\d+ instants, [\d.]+ MiB\)/.test(l)), lines.join('\n'));
    t.is(dataOf(readFileSync(file, 'utf8')).title, 'gup-bias-false-positive');
    for (const [argv, pattern] of [
      [['run', 'gup-bias-false-positive', 'migration-meets-pin', '--html', file], /--html takes one scenario at a time/],
      [['run', 'gup-bias-false-positive', '--html', join(dir, 'no', 'such', 'p.html')], /--html/],
    ] as const) {
      const out: string[] = [];
      const c = await runCli([...argv], (l) => out.push(...l.split('\n')));
      process.exitCode = saved;
      t.is(c, 2);
      t.is(out.length, 1, out.join('\n'));
      t.regex(out[0] ?? '', pattern);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
