/**
 * Running sweeps in child processes (issue "Batching latency trade-offs", 2. Sweeps and
 * 3. Outputs): killing a sweep and resuming it gives the same final results as an
 * uninterrupted run; shards run as separate processes and merged equal the single-machine
 * run; summaries and plots are produced. Tiny synthetic sweeps, so this takes seconds.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expandGrid } from '../../scenarios/sweep/grid.ts';
import { parseSpec } from '../../scenarios/sweep/spec.ts';
import { runPoint } from '../../scenarios/sweep/worker.ts';
import { assertWellFormedXml } from './_xml.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(REPO, 'scenarios', 'cli.ts');
const TMP = mkdtempSync(join(tmpdir(), 'sweep-run-'));

const SPEC = {
  name: 'proc-test',
  runner: 'synthetic',
  seeds: [1, 2],
  durationNs: 20_000_000,
  grid: { workload: ['dma-heavy-reclaim'], policy: ['none', 'window', 'window-or-count'], windowNs: [0, 100_000], count: [8], tasks: [1, 4] },
};
const SPEC_FILE = join(TMP, 'spec.json');
writeFileSync(SPEC_FILE, JSON.stringify(SPEC));
const TOTAL = expandGrid(parseSpec(SPEC)).length;

interface Done {
  code: number | null;
  stdout: string;
  stderr: string;
}

function lab(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const done = new Promise<Done>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function lineCount(file: string): number {
  if (!existsSync(file)) return 0;
  return readFileSync(file, 'utf8').split('\n').length - 1;
}

/** Every file of `ref` exists in `dir` with the same bytes. */
function sameFiles(t: import('ava').ExecutionContext, ref: string, dir: string): void {
  const names = readdirSync(ref).sort();
  t.true(names.includes('results.jsonl') && names.includes('summary.csv') && names.includes('index.html'), names.join(' '));
  t.deepEqual(readdirSync(dir).filter((n) => !n.includes('.tmp-')).sort(), names);
  for (const n of names) t.true(readFileSync(join(ref, n)).equals(readFileSync(join(dir, n))), `${n} differs between ${ref} and ${dir}`);
}

const REF = join(TMP, 'ref');
let reference: Promise<Done> | undefined;
function referenceRun(): Promise<Done> {
  reference ??= lab(['sweep', SPEC_FILE, '--jobs', '2', '--out', REF]).done;
  return reference;
}

test.serial('an uninterrupted sweep writes every point, then summaries, plots and the page', async (t) => {
  const r = await referenceRun();
  t.is(r.code, 0, r.stdout + r.stderr);
  t.is(lineCount(join(REF, 'results.jsonl')), TOTAL);
  // not a terminal: plain progress lines
  t.regex(r.stderr, new RegExp(`point ${TOTAL}/${TOTAL} done`));
  t.regex(r.stdout, /^wrote results\.jsonl, summary\.csv/, 'results on stdout, progress on stderr');
  const lines = readFileSync(join(REF, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { index: number; record?: object });
  t.deepEqual(lines.map((l) => l.index), [...Array(TOTAL).keys()], 'sorted by point index once complete');
  t.true(lines.every((l) => l.record !== undefined));

  const csv = readFileSync(join(REF, 'summary.csv'), 'utf8').trim().split('\n');
  t.true(csv[0]?.startsWith('strategy,workload,profile,syncNs,tasks,policy,windowNs,count,seeds,failed,invP50Ns_mean,invP50Ns_sd,invP99Ns_mean'));
  t.is(csv.length, 1 + TOTAL / 2, 'one row per configuration (two seeds each)');
  const summary = JSON.parse(readFileSync(join(REF, 'summary.json'), 'utf8')) as { rows: { seeds: number; figures: Record<string, { mean: number; sd: number }> }[] };
  t.true(summary.rows.every((r) => r.seeds === 2 && r.figures.invP99Ns !== undefined && r.figures.throughputBytesPerSec !== undefined));

  for (const [file, titles] of [
    ['latency-vs-window.svg', ['batching window (µs)', 'invalidation latency (µs)', 'concurrent invalidating tasks', 'policy']],
    ['throughput-vs-window.svg', ['batching window (µs)', 'DMA throughput (GB/s)']],
    ['frontier.svg', ['p99 invalidation latency (µs)', 'DMA throughput (GB/s)', 'policy']],
  ] as const) {
    const svg = readFileSync(join(REF, file), 'utf8');
    t.notThrows(() => assertWellFormedXml(svg), file);
    t.regex(svg, /^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    for (const title of titles) t.true(svg.includes(`>${title}<`), `${file} has the title "${title}"`);
    for (const policy of ['none', 'window', 'window-or-count']) t.true(svg.includes(`>${policy}<`), `${file} shows policy ${policy}`);
  }
  t.true(readFileSync(join(REF, 'latency-vs-window.svg'), 'utf8').includes('p50 solid, p99 dashed'));
  const html = readFileSync(join(REF, 'index.html'), 'utf8');
  for (const f of ['latency-vs-window.svg', 'throughput-vs-window.svg', 'frontier.svg']) t.true(html.includes(`<img src="${f}"`));
  t.regex(html, /class="layout"[\s\S]*class="plots"[\s\S]*<table>/);
  t.is((html.match(/<tr>/g) ?? []).length, 1 + TOTAL / 2);
});

test.serial('killing a sweep (SIGKILL) and resuming it gives the same final results as an uninterrupted run', async (t) => {
  const ref = await referenceRun();
  t.is(ref.code, 0);
  const dir = join(TMP, 'killed');
  const results = join(dir, 'results.jsonl');
  const run = lab(['sweep', SPEC_FILE, '--jobs', '2', '--out', dir]);
  const deadline = Date.now() + 60_000;
  while (lineCount(results) < 3 && Date.now() < deadline) await sleep(20);
  run.child.kill('SIGKILL');
  const killed = await run.done;
  t.is(killed.code, null, 'killed, not finished');
  const kept = lineCount(results);
  t.true(kept >= 3 && kept < TOTAL, `killed after ${kept} of ${TOTAL} points`);
  // a kill in the middle of a write leaves a partial line: it is ignored and rewritten
  appendFileSync(results, '{"index":7,"id":"0123');

  const resumed = await lab(['sweep', SPEC_FILE, '--jobs', '2', '--out', dir, '--resume']).done;
  t.is(resumed.code, 0, resumed.stdout + resumed.stderr);
  t.regex(resumed.stderr, new RegExp(`${kept} already done; running ${TOTAL - kept} on`));
  sameFiles(t, REF, dir);

  // resuming a finished sweep runs nothing and changes nothing
  const again = await lab(['sweep', SPEC_FILE, '--out', dir, '--resume']).done;
  t.is(again.code, 0);
  t.regex(again.stderr, new RegExp(`${TOTAL} already done; running 0 on`));
  sameFiles(t, REF, dir);
});

test.serial('shards run as separate processes, then merged, equal the single-machine run', async (t) => {
  const ref = await referenceRun();
  t.is(ref.code, 0);
  const shards = [0, 1, 2].map((i) => join(TMP, `shard-${i}`));
  const runs = await Promise.all(shards.map((d, i) => lab(['sweep', SPEC_FILE, '--jobs', '1', '--shard', `${i}/3`, '--out', d]).done));
  for (const [i, r] of runs.entries()) {
    t.is(r.code, 0, r.stdout + r.stderr);
    const idx = readFileSync(join(shards[i] as string, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { index: number }).index);
    t.true(idx.length > 0 && idx.every((x) => x % 3 === i));
  }
  const partial = await lab(['merge', shards[0] as string, shards[2] as string, '--out', join(TMP, 'merged-partial')]).done;
  t.is(partial.code, 2);
  t.regex(partial.stderr.trim(), /^error: the directories cover \d+ of 20 points \(shards seen: 0\/3, 2\/3\); missing \d+, e\.g\. #1, #4, #7: run or resume the missing shards first$/);

  const merged = join(TMP, 'merged');
  const m = await lab(['merge', ...shards, '--out', merged]).done;
  t.is(m.code, 0, m.stdout + m.stderr);
  sameFiles(t, REF, merged);
});

test.serial('a directory with results is not overwritten, and --resume needs the same spec and shard', async (t) => {
  const ref = await referenceRun();
  t.is(ref.code, 0);
  const fresh = await lab(['sweep', SPEC_FILE, '--out', REF]).done;
  t.is(fresh.code, 2);
  t.regex(fresh.stderr.trim(), /^error: .*ref already holds sweep results; pass --resume to continue that sweep, or choose another --out$/);
  const otherShard = await lab(['sweep', SPEC_FILE, '--out', REF, '--resume', '--shard', '0/2']).done;
  t.is(otherShard.code, 2);
  t.regex(otherShard.stderr.trim(), /^error: .*ref holds shard all; --resume needs the same spec and --shard \(now 'proc-test', shard 0\/2\)$/);
  const otherSpec = await lab(['sweep', 'smoke', '--out', REF, '--resume']).done;
  t.is(otherSpec.code, 2);
  t.regex(otherSpec.stderr.trim(), /^error: .*ref holds sweep 'proc-test' with another spec; --resume needs the same spec/);
});

test('a point gives the same record whatever ran before it in the worker process', async (t) => {
  const pts = expandGrid(parseSpec({ ...SPEC, durationNs: 2_000_000 }));
  const forward = [];
  for (const p of pts) forward.push(JSON.stringify(await runPoint(p)));
  const backward = [];
  for (const p of [...pts].reverse()) backward.push(JSON.stringify(await runPoint(p)));
  t.deepEqual(backward.reverse(), forward);
  t.true(forward.every((l) => l.includes('"record"')));
});

test('the worker process answers one JSON line per point, in order, on stdin and on argv', async (t) => {
  const pts = expandGrid(parseSpec({ ...SPEC, durationNs: 1_000_000 })).slice(0, 3);
  const worker = join(REPO, 'scenarios', 'sweep', 'worker.ts');
  const child = spawn(process.execPath, ['--import', 'tsx', worker], { cwd: REPO, stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stdin.end(pts.map((p) => JSON.stringify(p)).join('\n') + '\n');
  await new Promise((r) => child.on('close', r));
  const got = out.trim().split('\n').map((l) => JSON.parse(l) as { id: string; record: object });
  t.deepEqual(got.map((g) => g.id), pts.map((p) => p.id));

  const one = spawn(process.execPath, ['--import', 'tsx', worker, JSON.stringify(pts[1])], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
  let out1 = '';
  one.stdout.setEncoding('utf8').on('data', (s: string) => (out1 += s));
  await new Promise((r) => one.on('close', r));
  t.is(out1.trim(), out.trim().split('\n')[1] ?? 'missing');
});

test.serial('a worker that dies on a point is replaced: that point is recorded as failed, the others run and give the records they give alone', async (t) => {
  // A user's batching policy that kills its worker process when a point builds it.
  const dir = mkdtempSync(join(TMP, 'crash-'));
  writeFileSync(join(dir, 'crash.ts'), `import { defineBatchPolicy } from '${join(REPO, 'driver', 'index.ts')}';\n` +
    `export const boom = defineBatchPolicy({ name: 'boom', policy: () => process.exit(7) });\n`);
  const spec = { ...SPEC, name: 'crash-test', durationNs: 2_000_000, grid: { workload: ['dma-heavy-reclaim'], policy: ['none', './crash.ts#boom', 'window'], windowNs: [100_000], tasks: [1] } };
  const specFile = join(dir, 'spec.json');
  writeFileSync(specFile, JSON.stringify(spec));
  const out = join(dir, 'out');
  const r = await lab(['sweep', specFile, '--jobs', '1', '--out', out]).done;
  t.is(r.code, 1, 'failed points: exit 1');
  const lines = readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; params: { policy: string }; record?: object; error?: string });
  const pts = expandGrid(parseSpec(spec), dir);
  t.is(lines.length, pts.length, 'every point has a line');
  const failed = lines.filter((l) => l.error !== undefined);
  t.deepEqual(failed.map((l) => l.id), pts.filter((p) => p.params.policy === './crash.ts#boom').map((p) => p.id));
  t.true(failed.length > 0 && failed.length < lines.length);
  for (const l of failed) t.regex(l.error ?? '', /^worker process exited \(code 7\)/);
  t.regex(r.stderr, /point #2 \(\w+\) failed: worker process exited \(code 7\)/);
  t.regex(r.stderr, new RegExp(`${failed.length} points failed`));
  // The window points ran in the workers that replaced the dead ones: same bytes as alone.
  for (const l of lines.filter((x) => x.error === undefined)) {
    const p = pts.find((x) => x.id === l.id);
    if (!p) return t.fail(`no point ${l.id}`);
    t.is(JSON.stringify(l), JSON.stringify(await runPoint(p)), `point ${l.id} (${l.params.policy})`);
  }
});
