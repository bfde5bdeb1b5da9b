// The sweep machinery: specs and presets, grid expansion and shards, the child-process
// pool with its resumable results file, merge, summaries, plots and the HTML page.
export { loadSpec, parseSpec, SpecError, PRESETS, PRESET_NAMES, RUNNER_NAMES, POLICY_NAMES, STRATEGY_NAMES, WORKLOAD_NAMES, GRID_KEYS, type SweepSpec, type SweepSpecInput } from './spec.ts';
export { expandGrid, shardPoints, parseShard, formatShard, canonicalJson, configKey, type SweepPoint, type PointParams, type Shard } from './grid.ts';
export { POINT_RUNNERS, STANDARD_FIGURES, type PointRecord, type PointRunner } from './point-runners.ts';
export { runSweep, SweepUsageError, workerCommand, type SweepRunOptions, type SweepRunResult } from './run-sweep.ts';
export { mergeSweeps, type MergeResult } from './merge.ts';
export { summarize, summaryCsv, summaryJson, type SweepSummary, type SummaryRow, type FigureStats } from './summarize.ts';
export { buildPlots, renderSvg, type Plot } from './plots.ts';
export { writeOutputs } from './outputs.ts';
export { RESULTS_FILE, META_FILE, readResults } from './results.ts';
export type { PointResult } from './worker.ts';
