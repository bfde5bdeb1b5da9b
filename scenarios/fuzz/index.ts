// The shrinking fuzzer (issue part 3): command lists over two nodes, processes and threads,
// run with the engine's preemption on and the sanitizer attached.
export {
  commandsArbitrary, episodeArbitrary, singleArbitrary, commandSchema, describeCommand, slotAddress, DEFAULT_SHAPE,
  type Command, type UserCommand, type BackgroundCommand, type CommandShape, type StepKind,
} from './commands.ts';
export { runCommands, DEFAULT_RUN_CONFIG, type RunConfig, type RunResult, type RunTarget } from './run.ts';
export {
  FUZZ_TARGETS, REFERENCE_TARGETS, BROKEN_TARGETS, FUZZ_HOLDOFF_TIMEOUT_NS, fuzzTarget, unexpectedViolations, isExpectedCatch,
  type FuzzTarget,
} from './targets.ts';
export {
  fuzz, failingPart, formatFinding, replayReproducer, reproducerCommandLines, runTarget, runConfigFor, DEFAULT_SHRINK_BUDGET,
  type FuzzOptions, type FuzzReport, type Reproducer,
} from './fuzz.ts';
export { registerFuzzCommands, listLines, notFoundLine, parseReproducer, reproducerSchema } from './cli.ts';
export { fuzzKnobs, describeKnobs, FUZZ_BATCHINGS, FUZZ_HOLDOFF_TIMEOUTS_NS, type FuzzKnobs } from './knobs.ts';
export {
  runCoverage, formatCoverage, COVERAGE_ITEMS, NOT_EXPECTED_TRACE, OUTSIDE_FUZZ_WORLD, DEFAULT_COVERAGE_RUNS,
  type CoverageItem, type CoverageReport,
} from './coverage.ts';
export { likelyCause, type StrategyRole } from './likely-cause.ts';
