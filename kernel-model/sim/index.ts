export { Simulation, DEFAULT_RUN_LIMITS, type SimulationOptions, type RunLimits, type RunOutcome, type RunReason } from './simulation.ts';
export { SimScheduler, type SimEvent } from './scheduler.ts';
export { PARK, Task, type Co, type Park, type Blocker } from './task.ts';
export { SeedSplitter, Rng } from './prng.ts';
export { Mutex } from './mutex.ts';
export { RwSemaphore } from './rw-semaphore.ts';
export { WaitQueue } from './wait-queue.ts';
export { Lockdep, type DeadlockReport, type LockOrderReport } from './lockdep.ts';
export { serializeTrace, type TraceRecord, type TraceBody, type TaskKind } from './trace.ts';
export {
  PLAIN_SCHEDULE, SCENARIO_JITTER, PCT_DEFAULT_STEPS, schedulePolicy, scheduleFromPreempt, describeSchedule, parseScheduleSpec, pctBound,
  type ScheduleOption, type ScheduleMode, type SchedulePolicy, type ScheduleContext, type PctOption, type ExploreOption, type ScheduleDecision,
  type SleepEntry, type PreemptDecision,
} from './schedule.ts';
export { PctPolicy } from './schedule-pct.ts';
export { ExplorePolicy, dependent, recordFootprint, siteFootprint, type DecisionRecord } from './schedule-explore.ts';
