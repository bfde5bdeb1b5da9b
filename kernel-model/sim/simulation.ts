import { Observable, Subject, config, type Subscription } from 'rxjs';
import { timeoutProvider } from 'rxjs/internal/scheduler/timeoutProvider';
import { intervalProvider } from 'rxjs/internal/scheduler/intervalProvider';
import { dateTimestampProvider } from 'rxjs/internal/scheduler/dateTimestampProvider';
import { immediateProvider } from 'rxjs/internal/scheduler/immediateProvider';
import { SimScheduler } from './scheduler.ts';
import { SeedSplitter, type Rng } from './prng.ts';
import { PARK, Task, type Co } from './task.ts';
import type { TaskKind, TraceBody, TraceRecord } from './trace.ts';
import { Lockdep } from './lockdep.ts';
import { schedulePolicy, scheduleFromPreempt, type ScheduleOption, type SchedulePolicy } from './schedule.ts';

export interface SimulationOptions {
  seed?: number;
  /** What happens at preemption points (lock operations, sequence reads, page-table accesses); `plain` by default. */
  schedule?: ScheduleOption;
  /**
   * The older spelling of `schedule: { mode: 'jitter', ... }` (false: plain). Kept for
   * fuzz reproducers of format version 1; ignored when `schedule` is given.
   */
  preempt?: { probability: number; maxDelayNs: number } | false;
}

export interface RunLimits {
  /** Stop before running any event later than this virtual time (ns). */
  untilNs?: number;
  /** Stop after this many events. */
  maxEvents?: number;
  /** Stop as soon as this task has finished. */
  task?: Task;
}

/**
 * The bounds a run gets when `run()` is not given its own (every run is bounded: a
 * periodic kernel thread must end in a reported outcome, not a hang). One virtual hour,
 * a hundred million events; pass `untilNs: Infinity` or a larger `maxEvents` to lift them.
 */
export const DEFAULT_RUN_LIMITS = { untilNs: 3_600_000_000_000, maxEvents: 100_000_000 } as const;

export type RunReason = 'idle' | 'task-done' | 'time-limit' | 'event-limit' | 'stopped' | 'failed';

export interface RunOutcome {
  reason: RunReason;
  now: number;
  events: number;
  seed: number;
  /** The first model error, unhandled rxjs error or real-timer use, when reason is 'failed'. */
  failure?: string;
}

/**
 * The engine: one scheduler, one seed, the tasks, the trace. Everything that happens in
 * a run happens inside `run()`, synchronously, on virtual time.
 *
 * @example
 *   const sim = new Simulation({ seed: 7 });
 *   sim.spawn('hello', function* () { yield* sim.sleep(1_000); });
 *   sim.run(); // { reason: 'idle', now: 1000, ... }
 */
export class Simulation {
  readonly scheduler = new SimScheduler();
  readonly seed: number;
  readonly lockdep: Lockdep;
  private readonly seeds: SeedSplitter;
  private readonly traceSubject = new Subject<TraceRecord>();
  /** Every trace record, as an Observable (subscribe before `run`). */
  readonly trace$: Observable<TraceRecord> = this.traceSubject.asObservable();
  private traceSeq = 0;
  private nextTaskId = 1;
  private lastResumed: Task | null = null;
  private currentTask: Task | null = null;
  private failure: string | undefined;
  private stopRequested = false;
  private eventsRun = 0;
  /** The scheduling option's policy: the engine asks it at every preemption point. */
  readonly schedulePolicy: SchedulePolicy;
  /**
   * For a policy that picks tasks (PCT, exploration): each task's pending resume, in the
   * order they were made (a Map keeps insertion order, and a task has at most one pending
   * resume: it waits on one thing). Every resume still puts one event on the scheduler;
   * when such an event runs, the policy picks which of the tasks due by now resumes, so the
   * event queue itself is untouched. Unused (empty) under `plain` and `jitter`.
   */
  private readonly pendingResumes = new Map<Task, { time: number; value: unknown }>();
  /** The task a policy switched to at a preemption point: the next dispatch resumes it. */
  private switchTo: Task | null = null;
  /** Whether the event being run resumed a task (else it is an external event for the policy). */
  private dispatched = false;
  /** Task resumes scheduled so far (to tell them apart from other events a step armed). */
  private resumesScheduled = 0;
  private stepMark = { pending: 0, resumes: 0 };

  constructor(opts: SimulationOptions = {}) {
    this.seed = (opts.seed ?? 1) | 0;
    this.seeds = new SeedSplitter(this.seed);
    // The jitter draws from the stream the engine always used for preemption, so seeds
    // found before the option existed replay the same interleaving.
    this.schedulePolicy = schedulePolicy(opts.schedule ?? scheduleFromPreempt(opts.preempt), {
      rng: this.rng('preempt'), trace$: this.trace$, stop: () => this.stop(),
    });
    this.lockdep = new Lockdep(this);
  }

  /** The scheduling option this run uses. */
  get schedule(): ScheduleOption {
    return this.schedulePolicy.option;
  }

  now(): number {
    return this.scheduler.now();
  }

  /** The task being run, or null in an rxjs callback or timer event outside any task. */
  get current(): Task | null {
    return this.currentTask;
  }

  rng(stream: string): Rng {
    return this.seeds.stream(stream);
  }

  get tracing(): boolean {
    return this.traceSubject.observed;
  }

  emit(body: TraceBody): void {
    if (!this.traceSubject.observed) return;
    const rec = { seq: this.traceSeq++, t: this.now(), task: this.currentTask?.id ?? null, ...body } as TraceRecord;
    this.traceSubject.next(rec);
  }

  // ---- tasks ---------------------------------------------------------------------------

  /**
   * Start a task. `node` names the kernel (machine) it runs on, for traces that keep two
   * nodes' pid 100 apart; a task spawned by another inherits its node.
   */
  spawn<T>(name: string, body: () => Co<T>, opts: { kind?: TaskKind; pid?: number | null; node?: string | null } = {}): Task<T> {
    const node = opts.node !== undefined ? opts.node : (this.currentTask?.node ?? null);
    const task = new Task<T>(this.nextTaskId++, name, opts.kind ?? 'script', body(), opts.pid ?? null, node);
    this.schedulePolicy.onSpawn(task);
    if (this.tracing) this.emit({ type: 'task-spawn', id: task.id, name, kind: task.kind, pid: task.pid, node });
    this.scheduleResume(task, 0, undefined);
    return task;
  }

  /**
   * Resume `task` after `delay` ns. Under `plain` and `jitter` this is one event that
   * resumes it; under a picking policy the event resumes whichever due task the policy picks.
   */
  /** A task's wake-up as an event: `scheduler.call(ns, wakeTask, task)` allocates nothing. */
  private readonly wakeTask = (task: Task): void => this.resume(task, undefined);
  private readonly dispatchFn = (): void => this.dispatch();

  private scheduleResume(task: Task, delay: number, value: unknown): void {
    const policy = this.schedulePolicy;
    if (!policy.picksTasks) {
      // The common wake-up (no value) allocates nothing: one slot in the scheduler's arrays.
      if (value === undefined) this.scheduler.call(delay, this.wakeTask, task);
      else this.scheduler.call(delay, () => this.resume(task, value), undefined);
      return;
    }
    this.resumesScheduled++;
    const d = delay > 0 ? Math.round(delay) : 0;
    this.pendingResumes.set(task, { time: this.now() + d, value });
    if (d === 0) policy.onWake?.(this.currentTask, task);
    this.scheduler.call(d, this.dispatchFn, undefined);
  }

  /** The tasks whose resume is due by now, longest-waiting first (picking policies only). */
  private readyNow(): Task[] {
    const now = this.now();
    const out: Task[] = [];
    for (const [t, r] of this.pendingResumes) if (r.time <= now) out.push(t);
    return out;
  }

  /** One resume event under a picking policy: resume the task switched to, or the one the policy picks. */
  private dispatch(): void {
    this.dispatched = true;
    const ready = this.readyNow();
    if (ready.length === 0) return;
    let task: Task;
    if (this.switchTo && this.pendingResumes.has(this.switchTo)) task = this.switchTo;
    else if (ready.length === 1) task = ready[0] as Task;
    else task = this.schedulePolicy.pick?.(ready) ?? (ready[0] as Task);
    this.switchTo = null;
    const r = this.pendingResumes.get(task) as { value: unknown };
    this.pendingResumes.delete(task);
    this.resume(task, r.value);
  }

  private beginStep(task: Task): void {
    this.stepMark = { pending: this.scheduler.pending, resumes: this.resumesScheduled };
    this.schedulePolicy.onStepStart?.(task);
  }

  private endStep(task: Task, site?: string): void {
    const policy = this.schedulePolicy;
    if (!policy.onStepEnd) return;
    const armed = this.scheduler.pending - this.stepMark.pending - (this.resumesScheduled - this.stepMark.resumes);
    policy.onStepEnd(task, Math.max(0, armed), site);
  }

  private resume(task: Task, value: unknown): void {
    if (task.state === 'done') return;
    if (this.lastResumed !== task) {
      this.lastResumed = task;
      this.currentTask = task;
      if (this.tracing) this.emit({ type: 'task-switch', to: task.id });
    }
    this.currentTask = task;
    task.state = 'running';
    const picks = this.schedulePolicy.picksTasks;
    if (picks) this.beginStep(task);
    let step: IteratorResult<unknown, unknown>;
    try {
      step = task.gen.next(value);
    } catch (err) {
      task.state = 'done';
      task.error = err;
      if (picks) this.endStep(task);
      this.currentTask = null;
      this.fail(`task ${task.id} (${task.name}) threw: ${describe(err)}`);
      return;
    }
    if (picks && this.currentTask === task) this.endStep(task);
    this.currentTask = null;
    if (step.done) {
      task.state = 'done';
      task.result = step.value;
      if (this.tracing) this.emit({ type: 'task-exit', id: task.id });
      for (const j of task.joiners.splice(0)) j();
    } else {
      if (step.value !== PARK) {
        this.fail(`task ${task.id} (${task.name}) yielded something other than a park (use yield*)`);
        return;
      }
      task.state = 'parked';
    }
  }

  /**
   * Park the current task until `register`'s wake function is called (once; later calls
   * are ignored). The wake-up is itself an event, so waking never runs a task re-entrantly.
   */
  *park<T = void>(register: (wake: (value: T) => void) => void): Co<T> {
    const task = this.requireTask('park');
    let woken = false;
    register((v: T) => {
      if (woken) return;
      woken = true;
      this.scheduleResume(task, 0, v);
    });
    return (yield PARK) as T;
  }

  /** Sleep in virtual time. Might sleep: recorded if called in atomic context. */
  *sleep(ns: number): Co {
    const task = this.requireTask('sleep');
    if (task.atomic.length > 0) this.mightSleep(`sleep ${ns} ns`);
    this.scheduleResume(task, ns, undefined);
    yield PARK;
  }

  /**
   * Spend `ns` of CPU time in the current task (a cost of the CPU-side cost model). Not a
   * sleep: allowed in atomic context, records nothing. Outside a task, or for 0, a no-op.
   */
  *cpu(ns: number): Co {
    const task = this.currentTask;
    if (!task || !(ns > 0)) return;
    this.scheduler.after(ns, () => this.resume(task, undefined));
    yield PARK;
  }

  /** Wait until a task finishes and return its result. */
  *join<T>(task: Task<T>): Co<T> {
    if (!task.done) yield* this.park<void>((wake) => task.joiners.push(() => wake()));
    return task.result as T;
  }

  /**
   * Wait for an Observable's first value (or its completion, giving undefined).
   * An error from the Observable is thrown into the waiting coroutine.
   */
  *waitFor<T>(source: Observable<T>): Co<T | undefined> {
    this.mightSleep('wait for observable');
    let sub: Subscription | undefined;
    const got = yield* this.park<{ v?: T; err?: unknown; isErr: boolean }>((wake) => {
      sub = source.subscribe({
        next: (v) => wake({ v, isErr: false }),
        error: (err) => wake({ err, isErr: true }),
        complete: () => wake({ isErr: false }),
      });
    });
    sub?.unsubscribe();
    if (got.isErr) throw got.err;
    return got.v;
  }

  /** An Observable that runs a coroutine as a task on subscribe and emits its result. */
  fromTask<T>(name: string, body: () => Co<T>, kind: TaskKind = 'worker'): Observable<T> {
    return new Observable<T>((subscriber) => {
      const task = this.spawn(name, body, { kind });
      task.joiners.push(() => {
        if (task.error === undefined) {
          subscriber.next(task.result as T);
          subscriber.complete();
        }
      });
    });
  }

  private requireTask(what: string): Task {
    const t = this.currentTask;
    if (!t) throw new Error(`${what} outside a task: only coroutines run by the engine may sleep`);
    return t;
  }

  // ---- preemption and atomic context -----------------------------------------------------

  /**
   * A preemption point (lock operation, sequence read, page-table access). The scheduling
   * option's policy decides whether the current task steps aside for others ready at the
   * same instant, or for a short delay. It is not a sleep in the kernel's sense (it models
   * being scheduled out or racing with another CPU), so it is allowed in atomic context.
   */
  *preemptPoint(site: string): Co {
    const task = this.currentTask;
    if (!task) return;
    const policy = this.schedulePolicy;
    if (!policy.picksTasks) {
      const d = policy.atPreemptionPoint(task, site, NO_TASKS);
      if (d === null) return;
      const delay = typeof d === 'number' ? d : 0;
      this.emit({ type: 'preempt', site, delay });
      this.scheduler.call(delay, this.wakeTask, task);
      yield PARK;
      return;
    }
    // A picking policy: the step ends here; the policy runs the task on, or switches to a
    // ready task (the next dispatch resumes that one), or delays it.
    this.endStep(task, site);
    const d = policy.atPreemptionPoint(task, site, this.readyNow());
    if (d === null) {
      this.beginStep(task);
      return;
    }
    const delay = typeof d === 'number' ? d : 0;
    if (typeof d !== 'number') this.switchTo = d;
    this.emit({ type: 'preempt', site, delay });
    this.scheduleResume(task, delay, undefined);
    // Parked: resume() must not end this step a second time.
    this.currentTask = null;
    yield PARK;
  }

  /** Enter a context where sleeping is forbidden (a non-blockable notifier range). */
  enterAtomic(reason: string): void {
    this.currentTask?.atomic.push(reason);
  }

  exitAtomic(): void {
    this.currentTask?.atomic.pop();
  }

  /** The kernel's might_sleep(): records a call that may sleep made in atomic context. */
  mightSleep(what: string): void {
    const t = this.currentTask;
    if (t && t.atomic.length > 0) {
      this.sleepInAtomic++;
      this.emit({ type: 'might-sleep', what, context: t.atomic[t.atomic.length - 1] as string });
    }
  }

  /** How many might-sleep calls were made in atomic context so far. */
  sleepInAtomic = 0;

  // ---- running -------------------------------------------------------------------------

  /** Record a failure (model bug, unhandled rxjs error, real timer) and stop the run. */
  fail(message: string): void {
    if (this.failure === undefined) this.failure = message;
  }

  stop(): void {
    this.stopRequested = true;
  }

  get failed(): string | undefined {
    return this.failure;
  }

  /**
   * Run events in virtual-time order until nothing is pending or a limit is reached.
   * While it runs, rxjs's timer and clock providers point into this simulation and its
   * unhandled-error hook records a failure; real timers armed by anything make the run fail.
   */
  run(limits: RunLimits = {}): RunOutcome {
    const restore = this.installHooks();
    this.stopRequested = false;
    let reason: RunReason = 'idle';
    let count = 0;
    const untilNs = limits.untilNs ?? DEFAULT_RUN_LIMITS.untilNs;
    const maxEvents = limits.maxEvents ?? DEFAULT_RUN_LIMITS.maxEvents;
    try {
      for (;;) {
        if (this.failure !== undefined) { reason = 'failed'; break; }
        if (this.stopRequested) { reason = 'stopped'; break; }
        if (limits.task?.done) { reason = 'task-done'; break; }
        const next = this.scheduler.peekTime();
        if (next === undefined) { reason = 'idle'; break; }
        if (next > untilNs) { reason = 'time-limit'; break; }
        if (count >= maxEvents) { reason = 'event-limit'; break; }
        count++;
        this.eventsRun++;
        this.dispatched = false;
        try {
          this.scheduler.runNext();
        } catch (err) {
          this.fail(`event threw: ${describe(err)}`);
        }
        if (!this.dispatched && this.schedulePolicy.picksTasks) this.schedulePolicy.onExternalEvent?.();
      }
    } finally {
      restore();
    }
    if (reason === 'time-limit' || reason === 'event-limit') this.emit({ type: 'limit', reason });
    const out: RunOutcome = { reason, now: this.now(), events: count, seed: this.seed };
    if (this.failure !== undefined) out.failure = this.failure;
    return out;
  }

  get totalEvents(): number {
    return this.eventsRun;
  }

  private installHooks(): () => void {
    const g = globalThis as Record<string, unknown>;
    const saved = {
      timeout: timeoutProvider.delegate,
      interval: intervalProvider.delegate,
      date: dateTimestampProvider.delegate,
      immediate: immediateProvider.delegate,
      onUnhandledError: config.onUnhandledError,
      setTimeout: g.setTimeout,
      setInterval: g.setInterval,
      setImmediate: g.setImmediate,
    };
    const realTimer = (api: string) => () => {
      this.emit({ type: 'real-timer', api });
      this.fail(`a real timer was armed (${api}) during the simulation; pass the simulation's scheduler`);
      return 0 as never;
    };
    // rxjs arms timeoutProvider only to report an unhandled error (or a stopped
    // notification) outside the current call stack; no operator schedules work through it.
    // Run that report as a virtual event so it reaches onUnhandledError below: failing here
    // would hide the error behind a "real timer" message.
    timeoutProvider.delegate = {
      setTimeout: ((handler: () => void, timeout?: number) => {
        return this.scheduler.after(timeout ?? 0, handler) as never;
      }) as never,
      clearTimeout: ((ev: { cancelled: boolean }) => { if (ev) ev.cancelled = true; }) as never,
    };
    intervalProvider.delegate = {
      setInterval: ((handler: () => void) => {
        realTimer('rxjs setInterval')();
        return 0 as never;
      }) as never,
      clearInterval: (() => undefined) as never,
    };
    immediateProvider.delegate = {
      setImmediate: ((handler: () => void) => {
        realTimer('rxjs setImmediate')();
        return this.scheduler.after(0, handler) as never;
      }) as never,
      clearImmediate: (() => undefined) as never,
    };
    dateTimestampProvider.delegate = { now: () => this.now() };
    config.onUnhandledError = (err: unknown) => this.fail(`unhandled rxjs error: ${describe(err)}`);
    g.setTimeout = realTimer('setTimeout');
    g.setInterval = realTimer('setInterval');
    g.setImmediate = realTimer('setImmediate');
    return () => {
      timeoutProvider.delegate = saved.timeout;
      intervalProvider.delegate = saved.interval;
      dateTimestampProvider.delegate = saved.date;
      immediateProvider.delegate = saved.immediate;
      config.onUnhandledError = saved.onUnhandledError;
      g.setTimeout = saved.setTimeout;
      g.setInterval = saved.setInterval;
      g.setImmediate = saved.setImmediate;
    };
  }
}

const NO_TASKS: readonly Task[] = [];

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}\n${err.stack ?? ''}`;
  return String(err);
}
