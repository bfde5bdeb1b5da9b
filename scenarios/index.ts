// The public face of the scenarios folder: the catalogue and the CLI entry point.
export { SCENARIOS, scenarioByName } from './catalogue.ts';
export { runScenario, type ScenarioDefinition, type ScenarioContext, type ScenarioReport } from './scenario.ts';
export { renderReport, renderSummary } from './report.ts';
export { COMMON_PARAMS, parseSets, type ParamDoc, type ParamValues } from './params.ts';
export { runMain as runCli, buildCli } from './cli.ts';
export { loadStrategy, loadBatchPolicy, isModuleRef, ModuleError, type LoadedStrategy, type LoadedPolicy } from './user-module.ts';
export { runDemo } from './demo.ts';
