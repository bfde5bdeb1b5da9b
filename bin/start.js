#!/usr/bin/env node
// `npm start`: every scenario under its defaults (scenarios/main.ts). Imports the
// precompiled bundle when it is fresh (bin/dist.js); otherwise registers tsx in this
// process and imports the sources.
import { pathToFileURL } from 'node:url';
import { freshDist } from './dist.js';

const bundle = freshDist('main');
if (bundle) {
  await import(pathToFileURL(bundle).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../scenarios/main.ts');
}
