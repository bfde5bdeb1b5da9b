#!/usr/bin/env node
// The `lab` command. A plain JavaScript shim: it registers tsx (a dependency) in this
// process, for ES modules and CommonJS alike (a user's .ts file in a project without
// "type": "module" loads as CommonJS), so the CLI and the user's own .ts modules load as
// TypeScript; then it runs the CLI. Sweep workers are child processes started with
// `--import tsx` (scenarios/sweep/run-sweep.ts).
import { register as registerCommonJs } from 'tsx/cjs/api';
import { register as registerEsm } from 'tsx/esm/api';

registerCommonJs();
registerEsm();
const { runProcess } = await import('../scenarios/cli.ts');
runProcess();
