// The package's public face (`import … from 'notifier-lab'`): what a driver author writes
// against. The driver folder (strategies, batching policies, defineStrategy and
// defineBatchPolicy), the scenario runner, and zod for a strategy's own parameters. The
// other folders have their own entry points: notifier-lab/kernel, /device, /driver,
// /sanitizer, /scenarios, /testing.
export * from './driver/index.ts';
export {
  SCENARIOS, scenarioByName, runScenario, renderReport, renderSummary, COMMON_PARAMS, parseSets, runCli,
  loadStrategy, loadBatchPolicy, isModuleRef, ModuleError,
  type ScenarioDefinition, type ScenarioContext, type ScenarioReport, type ParamDoc, type ParamValues, type LoadedStrategy, type LoadedPolicy,
} from './scenarios/index.ts';
export { z } from 'zod';
// A kernel variant of your own (a proposal to compare with the seed threads' ones: lab compare).
export { defineVariant, VARIANTS, type KernelVariant, type ProposalSwitches, type VariantExpectation } from './kernel-model/index.ts';
