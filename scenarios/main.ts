import { parseSets } from './params.ts';
import { SCENARIOS } from './catalogue.ts';
import { runScenario, type ScenarioReport } from './scenario.ts';
import { renderSummary } from './report.ts';

/**
 * `npm start`: every scenario under its default profile and driver, one summary row each.
 * Exit 0 when every scenario behaves as its expectation says, 1 otherwise.
 */
const seed = 1;
const reports: ScenarioReport[] = [];
for (const def of SCENARIOS) {
  const params = parseSets([], def.params ?? []);
  if ('error' in params) throw new Error(params.error);
  reports.push(runScenario(def, { seed, profile: def.defaultProfile, driver: def.defaultDriver, params: params.values }));
}
console.log(`notifier-lab: ${SCENARIOS.length} scenarios, each under its default kernel profile and driver (seed ${seed})\n`);
for (const line of renderSummary(reports)) console.log(line);
console.log('\nok: the expected violations appeared and nothing else did; NOT OK names what differed.');
console.log('Narratives, figures and violation trails: npm run lab -- run <scenario> [--profile P] [--driver D] [--json] [--trace FILE]');
process.exitCode = reports.every((r) => r.outcome.ok) ? 0 : 1;
