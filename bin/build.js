#!/usr/bin/env node
// `npm run build`: bundles the CLI, `npm start` and the sweep worker into dist/ with
// esbuild (one ES module each, npm dependencies bundled in but for the few listed below),
// so that a start pays no TypeScript transform. bin/lab.js and `npm start` use a bundle
// only while it is not older than any source file (bin/dist.js); tests run the sources.
//
// `import.meta.url` keeps meaning "where this source file is" inside a bundle: each source
// module's own is replaced by its source file's URL, so paths built from it (the package
// root, the sweep worker's file, package.json) come out as they do under tsx. An entry
// file keeps the bundle's own URL, so its "am I the main module" check still works.
import { build } from 'esbuild';
import { readFileSync, rmSync } from 'node:fs';
import { join, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DIST, ENTRIES, ROOT } from './dist.js';

const entryFiles = new Set(Object.values(ENTRIES).map((f) => join(ROOT, f)));

const sourceUrlPlugin = {
  name: 'source-import-meta-url',
  setup(b) {
    // The project's own files only (bin/dist.js too: it finds the package root from its
    // own URL); bundled npm dependencies load as they are.
    b.onLoad({ filter: /\.(ts|js)$/ }, (args) => {
      if (args.path.includes(`${sep}node_modules${sep}`) || !args.path.startsWith(ROOT)) return undefined;
      let text = readFileSync(args.path, 'utf8');
      if (!entryFiles.has(args.path) && text.includes('import.meta.url')) {
        text = text.replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href));
      }
      return { contents: text, loader: args.path.endsWith('.ts') ? 'ts' : 'js' };
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
  // npm dependencies are bundled too: loaded from node_modules, rxjs alone is hundreds of
  // module files, which made most of a worker's start (bench/README.md, issue 22 item 4).
  // Left external: vega and vega-lite (large, loaded only when plots are drawn),
  // hdr-histogram-js (its WebAssembly build is loaded from its own files), and the tools.
  external: ['vega', 'vega-lite', 'hdr-histogram-js', 'esbuild', 'tsx'],
  // ES module builds where a package has them (rxjs), not its CommonJS main.
  mainFields: ['module', 'main'],
  // A bundled CommonJS dependency that calls require() for a Node built-in needs one.
  banner: { js: "import { createRequire as __labCreateRequire } from 'node:module'; const require = __labCreateRequire(import.meta.url);" },
  // Names are part of output (error and class names in reports): keep them as written.
  keepNames: true,
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  chunkNames: 'chunks/[name]-[hash]',
  logLevel: 'warning',
  plugins: [sourceUrlPlugin],
});
process.stderr.write(`build: dist/ (${Object.keys(ENTRIES).map((e) => `${e}.js`).join(', ')}) in ${Date.now() - t0} ms\n`);
