/**
 * A README that cannot drift (issue 11 item 7): every command README.md shows is run, and
 * the output it quotes is checked.
 *
 * What counts as a command: in a fenced block with no language, a line starting `$ ` (a
 * transcript: the lines after it, up to the next `$ ` line, are its quoted output), or a
 * line starting `npm ` or `npx ` (shown without output: it must run, exit 0 or 1, and
 * print no stack trace). Blocks in a language (`ts`, `yaml`, `sh`) are code, not commands.
 * A plain block with no command at all must be one of NON_COMMAND_BLOCKS, so that quoted
 * output cannot sit in the README without the command that prints it.
 *
 * Quoted output matches when its lines appear in the command's output in order, each
 * right after the previous, except that a line `...` (any indentation) stands for any
 * number of lines, and a line ending ` ...` matches any line that begins with what comes
 * before it. Lines before the first quoted line and after the last are allowed (npm's
 * banner, a trailer). Trailing spaces do not count.
 *
 * Commands run in a scratch directory holding links to the repository's top-level
 * entries (so files they write, like a trace or a fuzz reproducer, land there), one
 * block's commands in order. `npm run [-s] <script>`, `npm start` and `npx tsx` run the
 * script's command line from package.json (`tsx x` as `node --import tsx x`; no npm
 * banner, no dependency install); `npx <bin>` runs package.json's `bin` entry. The script itself is
 * named by its real path: a script that runs only as the entry point compares its own
 * (real) URL with argv[1].
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string>; bin?: string | Record<string, string> };

/** Commands shown but not run here, each with the reason. A command not listed runs. */
const NOT_RUN: readonly { pattern: RegExp; reason: string }[] = [
  { pattern: /^npm test\b/, reason: 'the suite this test is part of' },
  { pattern: /^npm run lab -- sweep batching\b/, reason: 'the 324-point study takes minutes on 2 cores; test/sweep runs sweeps, resume included' },
  { pattern: /^npm run lab -- sweep my-spec\.json\b/, reason: 'an illustrative user spec file that does not exist' },
  { pattern: /^npm run lab -- merge results\/shard-\*/, reason: 'needs the shard directories of the array job above' },
];

/** Plain blocks that are not commands or their output (matched by their first line). */
const NON_COMMAND_BLOCKS: readonly RegExp[] = [
  /^kernel-model\/\s+the primary MMU/, // the layout
];

interface Command { line: number; command: string; quoted: string[] | null }
interface Block { line: number; commands: Command[] }

function parseReadme(text: string): { blocks: Block[]; stray: { line: number; first: string }[] } {
  const lines = text.split('\n');
  const blocks: Block[] = [];
  const stray: { line: number; first: string }[] = [];
  for (let i = 0; i < lines.length; i++) {
    const fence = /^```(.*)$/.exec(lines[i] as string);
    if (!fence) continue;
    const lang = (fence[1] ?? '').trim();
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !(lines[i] as string).startsWith('```'); i++) body.push(lines[i] as string);
    if (lang !== '') continue;
    const commands: Command[] = [];
    for (let j = 0; j < body.length; j++) {
      const l = body[j] as string;
      if (l.startsWith('$ ')) {
        const quoted: string[] = [];
        let k = j + 1;
        for (; k < body.length && !(body[k] as string).startsWith('$ '); k++) quoted.push(body[k] as string);
        commands.push({ line: start + 2 + j, command: l.slice(2).trim(), quoted });
        j = k - 1;
      } else if (/^(npm|npx) /.test(l)) {
        commands.push({ line: start + 2 + j, command: l.replace(/\s+#.*$/, '').trim(), quoted: null });
      }
    }
    if (commands.length > 0) blocks.push({ line: start + 1, commands });
    else if (body.length > 0 && !NON_COMMAND_BLOCKS.some((re) => re.test(body[0] as string))) stray.push({ line: start + 1, first: body[0] as string });
  }
  return { blocks, stray };
}

/** Split a shell-like command line (quotes and globs are not used by the README's commands we run). */
function words(command: string): string[] {
  return command.split(/\s+/).filter((w) => w.length > 0);
}

/** The argv to run for a README command line, from package.json's scripts and bin. */
function argvFor(command: string): string[] | { error: string } {
  const w = words(command);
  const node = [process.execPath, '--import', 'tsx'];
  const script = (name: string, rest: string[]) => {
    const line = PKG.scripts[name];
    if (!line) return { error: `package.json has no script '${name}'` };
    const parts = words(line);
    if (parts[0] === 'tsx') return [...node, join(ROOT, parts[1] as string), ...parts.slice(2), ...rest];
    if (parts[0] === 'node') {
      const file = parts.findIndex((p, k) => k > 0 && !p.startsWith('-'));
      if (file > 0) return [process.execPath, ...parts.slice(1, file), join(ROOT, parts[file] as string), ...parts.slice(file + 1), ...rest];
    }
    return { error: `script '${name}' is neither a tsx nor a node command: ${line}` };
  };
  if (w[0] === 'npm' && w[1] === 'start') return script('start', w[2] === '--' ? w.slice(3) : w.slice(2));
  if (w[0] === 'npm' && w[1] === 'run') {
    let k = 2;
    while (w[k]?.startsWith('-')) k++;
    const name = w[k];
    if (!name) return { error: 'npm run without a script' };
    const rest = w.slice(k + 1);
    return script(name, rest[0] === '--' ? rest.slice(1) : rest);
  }
  if (w[0] === 'npx' && w[1] === 'tsx' && w[2]) return [...node, join(ROOT, w[2]), ...w.slice(3)];
  if (w[0] === 'npx' && w[1]) {
    const bin = typeof PKG.bin === 'string' ? PKG.bin : PKG.bin?.[w[1]];
    if (!bin) return { error: `package.json has no bin '${w[1]}'` };
    return [process.execPath, join(ROOT, bin), ...w.slice(2)];
  }
  return { error: `not a command this test knows how to run: ${command}` };
}

/** Where quoted output fails to match (null when it matches). */
export function matchQuoted(quoted: readonly string[], actual: readonly string[]): string | null {
  const q = trimBlank(quoted.map((l) => l.trimEnd()));
  const a = actual.map((l) => l.trimEnd());
  // Segments between `...` lines must each appear contiguously, in order.
  const segments: string[][] = [[]];
  for (const l of q) {
    if (l.trim() === '...') segments.push([]);
    else (segments[segments.length - 1] as string[]).push(l);
  }
  const lineMatches = (want: string, got: string) => (want.endsWith(' ...') ? got.startsWith(want.slice(0, -4)) : want === got);
  let from = 0;
  for (const seg of segments) {
    if (seg.length === 0) continue;
    let found = -1;
    for (let i = from; i + seg.length <= a.length; i++) {
      if (seg.every((w, k) => lineMatches(w, a[i + k] as string))) { found = i; break; }
    }
    if (found < 0) {
      const missing = seg.find((w) => !a.slice(from).some((g) => lineMatches(w, g)));
      return missing !== undefined
        ? `quoted line not in the output (after the previous match): ${JSON.stringify(missing)}`
        : `the quoted lines from ${JSON.stringify(seg[0])} are all there but not one after another: mark the gap with a '...' line`;
    }
    from = found + seg.length;
  }
  return null;
}

function trimBlank(lines: string[]): string[] {
  let s = 0;
  let e = lines.length;
  while (s < e && lines[s] === '') s++;
  while (e > s && lines[e - 1] === '') e--;
  return lines.slice(s, e);
}

const { blocks, stray } = parseReadme(README);

test('README: the matcher allows elisions and prefixes, and fails drift', (t) => {
  const out = ['> banner', 'a', 'b', 'c', 'error x at 1 µs: long tail', 'd'];
  t.is(matchQuoted(['a', 'b'], out), null);
  t.is(matchQuoted(['a', '...', 'd'], out), null);
  t.is(matchQuoted(['a', '  ...', 'error x at 1 µs: ...', 'd'], out), null);
  t.not(matchQuoted(['a', 'c'], out), null, 'an elision must be written');
  t.not(matchQuoted(['b', 'a'], out), null, 'order counts');
  t.not(matchQuoted(['a', 'b 2'], out), null, 'a changed line fails');
  t.not(matchQuoted(['error y at 1 µs: ...'], out), null);
});

test('README: every plain code block is a command (with or without its output), or a known non-command block', (t) => {
  t.true(blocks.length >= 5, `${blocks.length} command blocks found`);
  t.deepEqual(stray, [], 'quoted output without the command that prints it');
  for (const b of blocks) for (const c of b.commands) {
    if (NOT_RUN.some((n) => n.pattern.test(c.command))) continue;
    const argv = argvFor(c.command);
    t.false('error' in argv, `README line ${c.line}: ${'error' in argv ? argv.error : ''}`);
  }
});

for (const block of blocks) {
  const runnable = block.commands.filter((c) => !NOT_RUN.some((n) => n.pattern.test(c.command)));
  if (runnable.length === 0) continue;
  const title = runnable.map((c) => c.command).join(' ; ');
  test.serial(`README line ${block.line}: ${title.length > 150 ? `${title.slice(0, 147)}...` : title}`, async (t) => {
    // Yield first, so the worker reports the previous test before this one blocks in spawnSync.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const dir = mkdtempSync(join(tmpdir(), 'lab-readme-'));
    try {
      for (const entry of readdirSync(ROOT)) if (entry !== '.git') symlinkSync(join(ROOT, entry), join(dir, entry));
      for (const c of runnable) {
        const argv = argvFor(c.command);
        if ('error' in argv) { t.fail(`README line ${c.line}: ${argv.error}`); return; }
        const r = spawnSync(argv[0] as string, argv.slice(1), { cwd: dir, encoding: 'utf8', timeout: 600_000, maxBuffer: 256 * 1024 * 1024, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } });
        const where = `README line ${c.line}: ${c.command}`;
        t.is(r.error, undefined, `${where}: ${String(r.error)}`);
        t.true(r.status === 0 || r.status === 1, `${where}: exit ${r.status}\n${r.stderr.slice(0, 2000)}`);
        t.false(/^\s+at .+:\d+:\d+\)?$/m.test(r.stderr), `${where}: a stack trace on stderr\n${r.stderr.slice(0, 2000)}`);
        if (c.quoted) {
          const mismatch = matchQuoted(c.quoted, r.stdout.split('\n'));
          t.is(mismatch, null, `${where}: ${mismatch}\n--- output (first 60 lines) ---\n${r.stdout.split('\n').slice(0, 60).join('\n')}`);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
