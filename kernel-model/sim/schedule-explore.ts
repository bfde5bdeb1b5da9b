import type { ExploreOption, ScheduleContext, SchedulePolicy, SleepEntry } from './schedule.ts';
import type { Task } from './task.ts';
import type { TraceRecord } from './trace.ts';

/**
 * One decision point of an explored run, as the explorer (scenarios/explore) reads it back.
 * A decision point is a preemption point at which another task is ready at the same
 * instant (`preempt`), or a moment when the running task slept and two or more tasks are
 * ready (`dispatch`).
 */
export interface DecisionRecord {
  point: number;
  kind: 'preempt' | 'dispatch';
  /** The task at the preemption point (preempt), or null. */
  running: number | null;
  /** The preemption point's site (preempt), or null. */
  site: string | null;
  /** Task ids that could run, the default first (the running task; else the longest-waiting). */
  options: number[];
  chosen: number;
  /** Options whose next step was asleep here (never chosen: an equivalent schedule was explored). */
  asleep: number[];
  /** Preemptions (switches away from a running task that could run on) before this point. */
  preemptions: number;
  /** The sleep set when the point was reached (only when footprints are recorded). */
  sleep: SleepEntry[];
  /** The footprint of the step the chosen task ran from here (only when footprints are recorded). */
  next?: string[];
}

/**
 * What a step touched, as resource keys: `lock:NAME`, `mm:N`, `sub:NAME`, `frame:NODE:N`,
 * `alloc:NODE`, `file:NODE:N`, `proc:NODE:PID`, `nic:NAME`, `task:ID` (made ready, or ran),
 * `timer` (armed an event that resumes no task), `FAMILY:*` (some object of that family:
 * a preemption point's site names the kind of object but not which) and `*` (anything).
 */
export function recordFootprint(r: TraceRecord): string[] {
  switch (r.type) {
    case 'task-switch': case 'preempt': case 'task-exit': case 'might-sleep': case 'note': case 'limit': case 'race-guard':
      return [];
    case 'task-spawn':
      return [`task:${r.id}`];
    case 'syscall-begin': case 'syscall-end':
      return [`proc:${r.node}:${r.pid}`];
    case 'fault': case 'invalidate-start': case 'invalidate-end': case 'invalidate-eagain': case 'oom-reap':
      return [`mm:${r.mm}`];
    case 'page-alloc': case 'page-free':
      return [`alloc:${r.node}`, `frame:${r.node}:${r.frame}`];
    case 'lock-acquire': case 'lock-release': case 'lock-contend':
      return [`lock:${r.lock}`];
    case 'callback-start': case 'callback-return': case 'notifier-warn': case 'notifier-contract':
      return [`sub:${r.sub}`];
    case 'interval-insert': case 'interval-remove': case 'read-retry':
      return [`sub:${r.sub}`, `mm:${r.mm}`];
    case 'cpu-store':
      return [`mm:${r.mm}`, `frame:${r.node}:${r.frame}`];
    case 'file-write':
      return [`file:${r.node}:${r.file}`];
    case 'writeback':
      return [`file:${r.node}:${r.file}`, `frame:${r.node}:${r.frame}`];
    case 'gup':
      return [`mm:${r.mm}`, ...r.frames.map((f) => `frame:${r.node}:${f}`)];
    case 'gup-release':
      return r.frames.map((f) => `frame:${r.node}:${f}`);
    case 'sync-batch':
      return [`nic:${r.nic}`];
    default:
      // Deadlock and lock-order reports, migration, reclaim, anything added later: dependent
      // with everything (conservative: it only costs pruning).
      return ['*'];
  }
}

/** The keys of the operation a preemption point's site names (the step that starts there performs it first). */
export function siteFootprint(site: string): string[] {
  const lock = /^(?:mutex_lock|down_read|down_write)\((.*)\)$/.exec(site);
  if (lock) return [`lock:${lock[1]}`];
  switch (site) {
    case 'mmu_interval_read_begin':
      return ['sub:*', 'mm:*'];
    case 'pte read': case 'pte write': case 'hmm pte read': case 'gup pte read': case 'copy_present_pte': case 'swap-in':
      return ['mm:*'];
    case 'pwrite': case 'pread':
      return ['file:*'];
    default:
      return ['*'];
  }
}

/** Whether two footprints may not commute: a common key, a family wildcard meeting that family, or `*`. */
export function dependent(a: readonly string[] | ReadonlySet<string>, b: readonly string[] | ReadonlySet<string>): boolean {
  const as = a instanceof Set ? (a as ReadonlySet<string>) : new Set(a as readonly string[]);
  const bs = b instanceof Set ? (b as ReadonlySet<string>) : new Set(b as readonly string[]);
  if (as.has('*') || bs.has('*')) return as.size > 0 && bs.size > 0;
  for (const k of as) if (bs.has(k)) return true;
  const wild = (x: ReadonlySet<string>, y: ReadonlySet<string>) => {
    for (const k of x) {
      if (!k.endsWith(':*')) continue;
      const fam = k.slice(0, -1);
      for (const j of y) if (j.startsWith(fam)) return true;
    }
    return false;
  };
  return wild(as, bs) || wild(bs, as);
}

/**
 * The policy of one explored schedule (ScheduleOption mode `explore`): at decision point i
 * the task the option lists for i runs; elsewhere the default. It records every decision
 * point (options, choice, preemptions so far) for the explorer to branch from.
 *
 * With `reduce`, it also records each step's footprint (what the step touched, from its
 * trace records, the site it started at, the tasks it made ready and the timers it armed)
 * and keeps the sleep set the explorer installs: a sleeping task's next step is not run
 * until a step dependent with it has run; when only sleeping tasks are ready the schedule
 * is redundant and the run stops (`blocked`). Any event that resumes no task (an rxjs
 * timer, a device callback) empties the sleep set: the engine does not know what it touched.
 */
export class ExplorePolicy implements SchedulePolicy {
  readonly picksTasks = true;
  readonly decisions: DecisionRecord[] = [];
  /** Set when the option's decision did not fit this run (not one of the options there). */
  mismatch: string | null = null;
  /** Set when only sleeping tasks were ready: an equivalent schedule was explored already. */
  blocked = false;
  preemptions = 0;
  private point = 0;
  private readonly forced: Map<number, number>;
  private readonly sleep = new Map<number, Set<string>>();
  private step: { task: Task; keys: Set<string>; record: DecisionRecord | null } | null = null;
  private justDecided: DecisionRecord | null = null;
  /** Per task: the site of the preemption point it stopped at (its next step starts with that operation). */
  private readonly sites = new Map<Task, string>();

  constructor(readonly option: ExploreOption, private readonly ctx: ScheduleContext) {
    this.forced = new Map(option.decisions.map(([p, t]) => [p, t]));
    if (option.reduce) {
      ctx.trace$.subscribe((r) => {
        if (this.step && r.task === this.step.task.id) for (const k of recordFootprint(r)) this.step.keys.add(k);
      });
    }
  }

  onSpawn(): void {}

  private sleepNow(): SleepEntry[] {
    return [...this.sleep].map(([task, keys]) => ({ task, footprint: [...keys] }));
  }

  private decide(kind: 'preempt' | 'dispatch', running: Task | null, site: string | null, options: readonly Task[]): Task {
    const ids = options.map((t) => t.id);
    const asleep = ids.filter((id) => this.sleep.has(id));
    const want = this.forced.get(this.point);
    let chosen: Task | undefined;
    if (want !== undefined) {
      chosen = options.find((t) => t.id === want);
      if (!chosen && this.mismatch === null) {
        this.mismatch = `decision point ${this.point}: task ${want} is not ready there (ready: ${ids.join(', ')})`;
      }
    }
    chosen ??= options.find((t) => !this.sleep.has(t.id)) ?? (options[0] as Task);
    const rec: DecisionRecord = {
      point: this.point, kind, running: running?.id ?? null, site, options: ids, chosen: chosen.id, asleep,
      preemptions: this.preemptions, sleep: this.option.reduce ? this.sleepNow() : [],
    };
    this.decisions.push(rec);
    if (running && chosen !== running) this.preemptions++;
    if (this.option.sleep && this.option.sleep.point === this.point) {
      for (const e of this.option.sleep.entries) this.sleep.set(e.task, new Set(e.footprint));
    }
    this.point++;
    this.justDecided = rec;
    return chosen;
  }

  atPreemptionPoint(task: Task, site: string, ready: readonly Task[]): Task | null {
    this.sites.set(task, site);
    // Past a block the run is only winding down to its stop: no more decision points.
    if (ready.length === 0 || this.blocked) return null;
    const chosen = this.decide('preempt', task, site, [task, ...ready]);
    return chosen === task ? null : chosen;
  }

  pick(ready: readonly Task[]): Task {
    if (this.blocked) return ready[0] as Task;
    const chosen = this.decide('dispatch', null, null, ready);
    if (this.sleep.has(chosen.id)) this.block();
    return chosen;
  }

  private block(): void {
    this.blocked = true;
    this.ctx.stop();
  }

  onStepStart(task: Task): void {
    // A single ready task that sleeps: nothing else may run at this instant, so this schedule is redundant.
    if (this.sleep.has(task.id)) this.block();
    const record = this.justDecided && this.justDecided.chosen === task.id ? this.justDecided : null;
    this.justDecided = null;
    const keys = new Set<string>([`task:${task.id}`]);
    const site = this.sites.get(task);
    if (site !== undefined) {
      for (const k of siteFootprint(site)) keys.add(k);
      this.sites.delete(task);
    }
    this.step = { task, keys, record };
  }

  onStepEnd(task: Task, timers: number, site?: string): void {
    const s = this.step;
    if (!s || s.task !== task) return;
    if (timers > 0) s.keys.add('timer');
    // Code reads ahead of a preemption point too (mmu_interval_read_begin samples the
    // sequence before its point): the site's keys count for the step that ends there as well.
    if (site !== undefined) for (const k of siteFootprint(site)) s.keys.add(k);
    if (this.option.reduce) {
      if (s.record) s.record.next = [...s.keys];
      for (const [id, keys] of this.sleep) if (dependent(keys, s.keys)) this.sleep.delete(id);
    }
    this.step = null;
  }

  onWake(waker: Task | null, woken: Task): void {
    if (this.step && waker === this.step.task) this.step.keys.add(`task:${woken.id}`);
  }

  onExternalEvent(): void {
    this.sleep.clear();
  }
}
