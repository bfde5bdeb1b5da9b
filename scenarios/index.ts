// The public face of the scenarios folder: the catalogue and the CLI entry point.
export { SCENARIOS, scenarioByName, type Scenario, type ScenarioOptions, type ScenarioResult } from './catalogue.ts';
export { main as runCli, buildCli } from './cli.ts';
export { runDemo } from './demo.ts';
