// lab compare: one story under the seed threads' kernel variants, side by side.
export { runCompare, renderCompare, costText, type CompareResult, type CompareRow, type CompareRowSpec } from './compare.ts';
export { ProposalCostObserver, type ProposalCosts } from './costs.ts';
export { outcomeLabels, mismatches } from './outcome.ts';
export { registerCompareCommands, resolveVariantSpec, checkVariantsOn } from './cli.ts';
export { readmeSection, README_COMPARISONS } from './readme.ts';
