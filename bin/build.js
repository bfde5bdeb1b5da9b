#!/usr/bin/env node
// `npm run build`: bundles the CLI, `npm start` and the sweep worker into dist/ with
// esbuild (one ES module each; npm dependencies stay external, loaded from node_modules),
// so that a start pays no TypeScript transform. bin/lab.js and `npm start` use a bundle
// only while it is not older than any source file (bin/dist.js); tests run the sources.
//
// `import.meta.url` keeps meaning "where this source file is" inside a bundle: each source
// module's own is replaced by its source file's URL, so paths built from it (the package
// root, the sweep worker's file, package.json) come out as they do under tsx. An entry
// file keeps the bundle's own URL, so its "am I the main module" check still works.
import { build } from 'esbuild';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DIST, ENTRIES, ROOT } from './dist.js';

const entryFiles = new Set(Object.values(ENTRIES).map((f) => join(ROOT, f)));

const sourceUrlPlugin = {
  name: 'source-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, (args) => {
      let text = readFileSync(args.path, 'utf8');
      if (!entryFiles.has(args.path) && text.includes('import.meta.url')) {
        text = text.replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href));
      }
      return { contents: text, loader: 'ts' };
    });
  },
};

const t0 = Date.now();
rmSync(DIST, { recursive: true, force: true });
await build({
  absWorkingDir: ROOT,
  entryPoints: Object.fromEntries(Object.entries(ENTRIES).map(([name, file]) => [name, join(ROOT, file)])),
  outdir: DIST,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  // Names are part of output (error and class names in reports): keep them as written.
  keepNames: true,
  sourcemap: 'linked',
  chunkNames: 'chunks/[name]-[hash]',
  logLevel: 'warning',
  plugins: [sourceUrlPlugin],
});
process.stderr.write(`build: dist/ (${Object.keys(ENTRIES).map((e) => `${e}.js`).join(', ')}) in ${Date.now() - t0} ms\n`);
