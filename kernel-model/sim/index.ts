export { Simulation, DEFAULT_RUN_LIMITS, type SimulationOptions, type RunLimits, type RunOutcome, type RunReason } from './simulation.ts';
export { SimScheduler, type SimEvent } from './scheduler.ts';
export { PARK, Task, type Co, type Park, type Blocker } from './task.ts';
export { SeedSplitter, Rng } from './prng.ts';
export { Mutex } from './mutex.ts';
export { RwSemaphore } from './rw-semaphore.ts';
export { WaitQueue } from './wait-queue.ts';
export { Lockdep, type DeadlockReport, type LockOrderReport } from './lockdep.ts';
export { serializeTrace, type TraceRecord, type TraceBody, type TaskKind } from './trace.ts';
