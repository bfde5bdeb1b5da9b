/**
 * Runs every benchmark module and prints one JSON object, keyed by module.
 * To add one: import its function and add a line to BENCHES.
 *
 * @example
 *   npm run bench   # { "engine": { ... } }
 */
import { benchEngine } from './engine.ts';
import { benchTraffic } from './traffic.ts';
import { benchImplicit } from './implicit.ts';

const BENCHES: Record<string, () => Record<string, unknown>> = {
  engine: benchEngine,
  traffic: benchTraffic,
  implicit: benchImplicit,
};

const results: Record<string, Record<string, unknown>> = {};
for (const [name, bench] of Object.entries(BENCHES)) results[name] = bench();
console.log(JSON.stringify(results, null, 2));
