// The precompiled build (dist/, made by `npm run build`, bin/build.js) and when to use it.
// Plain JavaScript with no dependency, so asking costs a few milliseconds of stat calls and
// no TypeScript transform. The build is used only when it is present and not older than
// any source file; tests set NOTIFIER_LAB_SOURCES=1 (package.json's ava config) so they
// always run the sources.
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const DIST = join(ROOT, 'dist');

/** What the build's bundles are made from: every file here counts for freshness. */
export const SOURCE_DIRS = ['kernel-model', 'device', 'driver', 'sanitizer', 'scenarios', 'testing'];
export const SOURCE_FILES = ['index.ts', 'package.json', 'package-lock.json', 'tsconfig.json', 'bin/build.js'];

/** Entry name -> source file; the bundle is dist/NAME.js. */
export const ENTRIES = {
  lab: 'scenarios/cli.ts',
  main: 'scenarios/main.ts',
  'sweep-worker': 'scenarios/sweep/worker.ts',
};

function newestMtime(path, newest) {
  let st;
  try {
    st = statSync(path);
  } catch {
    return newest;
  }
  if (st.isDirectory()) {
    for (const name of readdirSync(path)) newest = newestMtime(join(path, name), newest);
    return newest;
  }
  return st.mtimeMs > newest ? st.mtimeMs : newest;
}

/** The newest modification time among the sources (ms since the epoch). */
export function newestSource(root = ROOT) {
  let newest = 0;
  for (const d of SOURCE_DIRS) newest = newestMtime(join(root, d), newest);
  for (const f of SOURCE_FILES) newest = newestMtime(join(root, f), newest);
  return newest;
}

/**
 * The bundle for `entry` when it may be used: present, not older than any source, and the
 * sources not forced (NOTIFIER_LAB_SOURCES=1). Otherwise null: run the sources with tsx.
 */
export function freshDist(entry) {
  if (process.env.NOTIFIER_LAB_SOURCES === '1') return null;
  const file = join(DIST, `${entry}.js`);
  let built;
  try {
    built = statSync(file).mtimeMs;
  } catch {
    return null;
  }
  return built >= newestSource() ? file : null;
}
