/**
 * Issue 11 item 6: every row of the bad-input table (and the cases each generalises), run
 * through the real command (`bin/lab.js`, a child process, in a fresh working directory):
 * one line on stderr naming what was wrong, the exit code, nothing on stdout, and nothing
 * changed outside --out (the working directory's tree and the repository's git status).
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './_fixtures.ts';

const BIN = join(REPO, 'bin', 'lab.js');

interface Done {
  code: number | null;
  stdout: string;
  stderr: string;
}

function lab(cwd: string, args: readonly string[]): Done {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8', timeout: 90_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function labAsync(cwd: string, args: readonly string[]) {
  const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const done = new Promise<Done>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

/** Every file and directory under `dir` with its size and mtime: what "nothing changed" compares. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = statSync(p);
      out.push(`${p} ${st.isDirectory() ? 'dir' : `${st.size} ${st.mtimeMs}`}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

function gitStatus(): string {
  return spawnSync('git', ['status', '--porcelain', '--untracked-files=all'], { cwd: REPO, encoding: 'utf8' }).stdout;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const ROOT = mkdtempSync(join(tmpdir(), 'lab-table-'));
let n = 0;
/** A fresh working directory with `files` in it. */
function workdir(files: Record<string, string> = {}): string {
  const d = join(ROOT, `w${n++}`);
  mkdirSync(d);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(d, name, '..'), { recursive: true });
    writeFileSync(join(d, name), text);
  }
  return d;
}

const SMOKE_META = (name: string, shard: string | null) => JSON.stringify({
  spec: { name, runner: 'synthetic', seeds: [1], durationNs: 100_000, grid: {} },
  shard: shard === null ? null : { index: Number(shard.split('/')[0]), count: Number(shard.split('/')[1]) },
});

const BILLION = JSON.stringify({
  name: 'huge', runner: 'synthetic', seeds: Array.from({ length: 10 }, (_, i) => i + 1), durationNs: 100_000,
  grid: {
    tasks: Array.from({ length: 256 }, (_, i) => i + 1),
    policy: ['window-or-count'],
    windowNs: Array.from({ length: 1000 }, (_, i) => i * 10),
    count: Array.from({ length: 1000 }, (_, i) => i + 1),
  },
});

interface Row {
  input: string;
  args: readonly string[];
  files?: Record<string, string>;
  code: number;
  stderr: RegExp;
}

const cheap = ['run', 'gup-bias-false-positive'];

const ROWS: Row[] = [
  // --set batching.policy=window --set batching.windowNs=0: was an 11-line stack trace
  { input: 'a window of 0 for window', args: [...cheap, '--set', 'batching.policy=window', '--set', 'batching.windowNs=0'], code: 2, stderr: /^error: --set batching\.policy=window: window: windowNs must be a positive integer of ns, got '0'$/ },
  { input: 'a window of 0 for window-or-count', args: [...cheap, '--set', 'batching.policy=window-or-count', '--set', 'batching.windowNs=0'], code: 2, stderr: /windowNs must be a positive integer of ns, got '0'$/ },
  { input: 'adaptive with max < min', args: [...cheap, '--set', 'batching.policy=adaptive', '--set', 'batching.minWindowNs=9', '--set', 'batching.maxWindowNs=3'], code: 2, stderr: /^error: .*maxWindowNs must be at least minWindowNs/ },
  // a sweep spec of a billion points: was a minute of silence then a V8 out-of-memory abort
  { input: 'a sweep of billions of points', args: ['sweep', 'huge.json'], files: { 'huge.json': BILLION }, code: 2, stderr: /^error: spec huge: the grid has up to 2,560,000,000 points \(256 tasks × 1000 windowNs × 1000 count × 10 seeds\), more than the limit of 100,000; shrink it or pass --max-points 2560000000$/ },
  // lab sweep smoke --out /proc/x: hung in a recursive mkdir
  { input: '--out under /proc', args: ['sweep', 'smoke', '--out', '/proc/x/y'], code: 2, stderr: /^error: --out \/proc\/x\/y: cannot create \/proc\/x: no such file or directory \(ENOENT\)$/ },
  // --out under a file, --out "", an unwritable dir; merge --out a file
  { input: '--out under a file', args: ['sweep', 'smoke', '--out', 'afile/sub'], files: { afile: 'x' }, code: 2, stderr: /^error: --out afile\/sub: a part of the path is a file, not a directory$/ },
  { input: '--out ""', args: ['sweep', 'smoke', '--out', ''], code: 2, stderr: /^error: --out must name a directory, got ''$/ },
  { input: '--out a file', args: ['sweep', 'smoke', '--out', 'afile'], files: { afile: 'x' }, code: 2, stderr: /^error: --out afile: is a file, not a directory$/ },
  { input: '--out in an unwritable place', args: ['sweep', 'smoke', '--out', '/proc/self/x'], code: 2, stderr: /^error: --out \/proc\/self\/x: cannot create \/proc\/self\/x: .*\(E[A-Z]+\)$/ },
  { input: 'merge --out a file', args: ['merge', 'a', '--out', 'afile'], files: { afile: 'x', 'a/sweep.json': SMOKE_META('s', null), 'a/results.jsonl': '' }, code: 2, stderr: /^error: --out afile: is a file, not a directory$/ },
  // lab merge a b c --out DIR where DIR holds another sweep: was data loss, exit 0
  {
    input: 'merge into a directory holding another sweep', args: ['merge', 'a', 'b', 'c', '--out', 'other'],
    files: {
      'a/sweep.json': SMOKE_META('s', '0/3'), 'a/results.jsonl': '', 'b/sweep.json': SMOKE_META('s', '1/3'), 'b/results.jsonl': '',
      'c/sweep.json': SMOKE_META('s', '2/3'), 'c/results.jsonl': '', 'other/sweep.json': SMOKE_META('other', null),
      'other/results.jsonl': '{"index":0,"id":"0123456789abcdef","seed":1,"params":{},"record":{"x":1}}\n',
    },
    code: 2, stderr: /^error: --out other holds sweep 'other'; merging would overwrite its results: choose another --out$/,
  },
  // lab fuzz … --out /nonexistent/dir/x.json: was a stack trace after the whole fuzz, finding lost
  { input: 'fuzz --out in a missing directory', args: ['fuzz', '--driver', 'no-set-seq', '--runs', '5', '--out', '/nonexistent/dir/x.json'], code: 2, stderr: /^error: --out \/nonexistent\/dir\/x\.json: its directory \/nonexistent\/dir does not exist$/ },
  { input: '--trace in a missing directory', args: [...cheap, '--trace', 'no/such/dir/t.json'], code: 2, stderr: /^error: --trace no\/such\/dir\/t\.json: its directory no\/such\/dir does not exist$/ },
  // --set cost.syncNs=1e308, cost.pcieBytesPerNs=0: was a run cut at its time limit reported "ok: clean"
  { input: 'a sync cost of 1e308', args: [...cheap, '--set', 'cost.syncNs=1e308'], code: 2, stderr: /^error: bad value for cost\.syncNs: '1e308' \(Too big: expected number to be <=1000000000; default 5000\)$/ },
  { input: 'a PCIe bandwidth of 0', args: [...cheap, '--set', 'cost.pcieBytesPerNs=0'], code: 2, stderr: /^error: bad value for cost\.pcieBytesPerNs: '0' \(Too small: expected number to be >=0\.001; default 12\.6\)$/ },
  // --set memory.frames=64 or 16777216: were ENOMEM / RangeError
  { input: 'memory.frames=64', args: [...cheap, '--set', 'memory.frames=64'], code: 2, stderr: /^error: bad value for memory\.frames: '64' \(Too small: expected number to be >=2048; default 16384\)$/ },
  { input: 'memory.frames=16777216', args: [...cheap, '--set', 'memory.frames=16777216'], code: 2, stderr: /^error: bad value for memory\.frames: '16777216' \(Too big: expected number to be <=1048576; default 16384\)$/ },
  { input: 'odp-swap-storm memory.frames=65536', args: ['run', 'odp-swap-storm', '--set', 'memory.frames=65536'], code: 2, stderr: /^error: bad value for memory\.frames: '65536' \(Too big: expected number to be <=16384; default 1024\)$/ },
  // a spec named `..` with no --out: was seven files in the repository root
  { input: "a spec named '..'", args: ['sweep', 'dots.json'], files: { 'dots.json': JSON.stringify({ name: '..', runner: 'synthetic', seeds: [1], durationNs: 100_000 }) }, code: 2, stderr: /^error: dots\.json: spec name: "\.\." is not accepted \(a letter or digit, then letters, digits, dot, dash and underscore, at most 64\)$/ },
  { input: 'a spec named .hidden', args: ['sweep', 'h.json'], files: { 'h.json': JSON.stringify({ name: '.hidden', runner: 'synthetic', seeds: [1], durationNs: 100_000 }) }, code: 2, stderr: /^error: h\.json: spec name: "\.hidden" is not accepted/ },
  // --set cost.syncNs= (empty), 0x10, " 5": were taken as numbers
  { input: 'an empty number', args: [...cheap, '--set', 'cost.syncNs='], code: 2, stderr: /^error: bad value for cost\.syncNs: '' \(not a plain decimal number; default 5000\)$/ },
  { input: 'a hex number', args: [...cheap, '--set', 'cost.syncNs=0x10'], code: 2, stderr: /^error: bad value for cost\.syncNs: '0x10' \(not a plain decimal number; default 5000\)$/ },
  { input: 'a number with a blank', args: [...cheap, '--set', 'cost.syncNs= 5'], code: 2, stderr: /^error: bad value for cost\.syncNs: ' 5' \(not a plain decimal number; default 5000\)$/ },
  { input: "a scenario's own number in hex", args: ['run', 'odp-swap-storm', '--set', 'storm.rounds=0x2'], code: 2, stderr: /^error: bad value for storm\.rounds: '0x2' \(not a plain decimal number; default 4\)$/ },
  // lab fuzz --driver odp --profile linux-3.0: was "nothing found", exit 0
  { input: 'fuzz a driver that cannot register under the profile', args: ['fuzz', '--driver', 'odp', '--profile', 'linux-3.0', '--runs', '3', '--out', 'f.json'], code: 2, stderr: /^error: odp registered no memory region in 3 runs under linux-3\.0 \(every reg_mr failed\), so nothing was tested; try its default profile \(linux-6\.x\) or another --profile$/ },
  // and the generalisations: every unreadable input is one line
  { input: 'replay of a missing file', args: ['replay', 'missing.json'], code: 2, stderr: /^error: cannot read missing\.json: no such file$/ },
  { input: 'replay of a directory', args: ['replay', 'adir'], files: { 'adir/x': '' }, code: 2, stderr: /^error: cannot read adir: is a directory$/ },
  { input: 'a spec that is a directory', args: ['sweep', 'adir.json'], files: { 'adir.json/x': '' }, code: 2, stderr: /^error: cannot read spec file adir\.json: EISDIR$/ },
  { input: 'an unknown command', args: ['frobnicate'], code: 2, stderr: /^error: unknown command 'frobnicate'; commands: list, demo, run, params, calibrate, schema, sweep, merge, fuzz, replay/ },
  { input: 'a user module that is missing', args: ['run', 'odp-swap-storm', '--driver', './nope.ts'], code: 2, stderr: /^error: nope\.ts: no such file$/ },
];

for (const row of ROWS) {
  test.serial(`bad input: ${row.input} -> one line on stderr, exit ${row.code}, nothing changed`, (t) => {
    const cwd = workdir(row.files);
    const before = tree(cwd);
    const git = gitStatus();
    const r = lab(cwd, row.args);
    t.is(r.code, row.code, r.stdout + r.stderr);
    t.is(r.stdout, '', 'nothing on stdout');
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    t.is(lines.length, 1, r.stderr);
    t.regex(lines[0] ?? '', row.stderr);
    t.false(/\n\s+at /.test(r.stderr), 'no stack trace');
    t.deepEqual(tree(cwd), before, 'nothing in the working directory changed');
    t.is(gitStatus(), git, 'nothing in the repository changed');
  });
}

test.serial('a --set the scenario does not use: the run goes on, one warning line on stderr', (t) => {
  const cwd = workdir();
  const r = lab(cwd, [...cheap, '--set', 'batching.windowNs=5']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, 'warning: --set batching.windowNs had no effect: gup-bias-false-positive never read it\n');
  t.regex(r.stdout, /outcome: ok/);
  t.deepEqual(tree(cwd), []);
});

test.serial('replay lines keep every --set; a run ended by its time limit is NOT OK', (t) => {
  const cwd = workdir();
  // a sync of 1 s per invalidation runs the story past its 10 s bound (it used to say "ok: clean", exit 0)
  const r = lab(cwd, ['run', 'holdoff-non-faultable', '--set', 'cost.syncNs=1000000000', '--set', 'cpu.odpFaultWorkNs=0']);
  t.is(r.code, 1, r.stdout.slice(-2000) + r.stderr);
  t.regex(r.stdout, /outcome: NOT OK: clean; the story did not finish: stopped by its time limit \(10000000000 ns\)/);
  t.true(r.stdout.includes('replay: npx lab run holdoff-non-faultable --seed 1 --profile linux-6.x --driver holdoff --set cost.syncNs=1000000000 --set cpu.odpFaultWorkNs=0'), r.stdout.slice(-500));
});

test.serial('lab --version; lab run all | head ends quietly (EPIPE)', (t) => {
  const cwd = workdir();
  const v = lab(cwd, ['--version']);
  t.is(v.code, 0);
  t.is(v.stdout, `${JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version}\n`);
  const r = spawnSync('sh', ['-c', `node ${BIN} run all | head -1`], { cwd, encoding: 'utf8', timeout: 90_000 });
  t.is(r.status, 0);
  t.is(r.stdout.split('\n').filter(Boolean).length, 1);
  t.is(r.stderr, '', 'no EPIPE trace');
});

test.serial('two sweeps into one --out at once: the second stops with one line (lock file), the first completes', async (t) => {
  const cwd = workdir();
  const first = labAsync(cwd, ['sweep', 'smoke', '--out', 'out', '--jobs', '1', '--quiet']);
  for (let i = 0; i < 600 && !existsSync(join(cwd, 'out', '.lock')); i++) await sleep(50);
  t.true(existsSync(join(cwd, 'out', '.lock')));
  const second = lab(cwd, ['sweep', 'smoke', '--out', 'out', '--resume']);
  t.is(second.code, 2);
  t.regex(second.stderr, /^error: out is in use by another sweep or merge \(pid \d+, lock file out\/\.lock\); wait for it to finish, or choose another --out\n$/);
  const r = await first.done;
  t.is(r.code, 0, r.stderr);
  t.false(existsSync(join(cwd, 'out', '.lock')), 'the lock is released');
});

test.serial('Ctrl-C during a sweep: keeps what is written, one line with the count and the --resume command; resume completes it; a line without a record is rerun', async (t) => {
  const cwd = workdir();
  const run = labAsync(cwd, ['sweep', 'smoke', '--out', 'out', '--jobs', '1', '--quiet']);
  const results = join(cwd, 'out', 'results.jsonl');
  const count = () => (existsSync(results) ? readFileSync(results, 'utf8').split('\n').filter(Boolean).length : 0);
  for (let i = 0; i < 1200 && count() < 2; i++) await sleep(25);
  run.child.kill('SIGINT');
  const r = await run.done;
  t.is(r.code, 130, r.stderr);
  t.is(r.stdout, '');
  const kept = count();
  t.regex(r.stderr, new RegExp(`^interrupted: ${kept} of 32 points kept in out/results\\.jsonl; continue with: lab sweep smoke --out out --resume\\n$`));
  t.false(existsSync(join(cwd, 'out', '.lock')));
  // a result line that lost its record (edited, or written by an older version) is not "done"
  const lines = readFileSync(results, 'utf8').split('\n').filter(Boolean);
  const broken = JSON.parse(lines[0]!);
  delete broken.record;
  writeFileSync(results, [JSON.stringify(broken), ...lines.slice(1)].map((l) => `${l}\n`).join(''));
  const again = lab(cwd, ['sweep', 'smoke', '--out', 'out', '--resume', '--progress', 'none']);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stderr, new RegExp(`^sweep smoke: 32 points, ${kept - 1} already done; running ${32 - kept + 1} on`));
  t.is(count(), 32);
  t.true(readFileSync(results, 'utf8').split('\n').filter(Boolean).every((l) => JSON.parse(l).record));
});
