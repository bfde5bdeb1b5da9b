#!/usr/bin/env node
// The `lab` command. A plain JavaScript shim. With a fresh precompiled build (dist/lab.js,
// `npm run build`; bin/dist.js says when it may be used) and no argument that names a
// file (a user module such as `./my-driver.ts#name` loads through tsx, and must see the
// same copies of the model's modules as the CLI), it runs the bundle: no TypeScript
// transform at start-up. Otherwise it registers tsx (a dependency) in this process, for ES
// modules and CommonJS alike (a user's .ts file in a project without "type": "module"
// loads as CommonJS), so the CLI and the user's own .ts modules load as TypeScript; then it
// runs the CLI. Sweep workers are child processes started with `--import tsx`
// (scenarios/sweep/run-sweep.ts).
import { freshDist } from './dist.js';

/** An argument that may name a file or a user module: the sources then, never the bundle. */
const namesFile = (a) => a.includes('/') || a.includes('#') || /\.(c|m)?[jt]s$/.test(a) || a === '.';
const bundle = process.argv.slice(2).some(namesFile) ? null : freshDist('lab');
let cli;
if (bundle) {
  cli = await import(new URL(`file://${bundle}`).href);
} else {
  const { register: registerCommonJs } = await import('tsx/cjs/api');
  const { register: registerEsm } = await import('tsx/esm/api');
  registerCommonJs();
  registerEsm();
  cli = await import('../scenarios/cli.ts');
}
cli.runProcess();
