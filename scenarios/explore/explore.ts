/**
 * Systematic exploration of interleavings (issue 19 item 6): stateless search over the
 * engine's scheduling decisions with iterative preemption bounding (CHESS: Musuvathi and
 * Qadeer, "Iterative context bounding for systematic testing of multithreaded programs",
 * PLDI 2007) and a sleep-set reduction (Godefroid; restricted as below).
 *
 * The space. A schedule is the list of choices at the engine's decision points (see
 * kernel-model/sim/schedule-explore.ts): at a preemption point where another task is ready
 * at the same virtual instant, the running task runs on (free) or the search switches to a
 * ready task (one preemption); when the running task sleeps and several are ready, any of
 * them may run (free, as in CHESS: only preemptions are bounded). Every schedule is run
 * from the start (stateless), replaying its decisions. Bound b = 0, 1, ..., K: all
 * schedules of b preemptions are run before any of b + 1, so a violation is reported with
 * the fewest preemptions that show it. Tasks ready at different instants are ordered by
 * virtual time, as the model's costs say; exploring delays is the jitter and PCT modes' job.
 *
 * The reduction, and why it is restricted. Sleep sets prune a schedule when an equivalent
 * one (the same steps, two independent ones swapped) was explored. Musuvathi and Qadeer's
 * report on partial-order reduction for context-bounded search (MSR-TR-2007-12) warns that
 * the plain combination is unsound: the equivalent schedule may need more preemptions than
 * the pruned one and so lie beyond the bound, never explored. We only put to sleep the
 * running task's own next step, when the search preempts it: at a preemption point of T it
 * runs T on first, and in the branches that switch to another task, T's next step sleeps
 * until a step dependent with it has run. Each pruned schedule (switch to U, steps w, then
 * T's step a) is then equivalent to one explored under "T runs on" (a, then U, then w)
 * that needs no more preemptions: running a first costs nothing, switching to U after it
 * costs at most the one preemption the pruned schedule paid at the same point, the steps
 * w cost the same, and afterwards the explored schedule's next switch is free or a
 * preemption wherever the pruned one's return to T was. Entries between two switch
 * targets, or between free choices, could cost an extra preemption, so they are not made:
 * less pruning, no loss within the bound.
 *
 * Independence is what the engine knows (schedule-explore.ts `dependent`): two steps are
 * independent when their footprints (locks, mm, notifier subscribers, frames, files, NICs
 * named by the trace records the step emitted and the preemption points it passed, the
 * tasks it woke, whether it armed a timer) share nothing. The soundness limit: state that
 * model code shares without a lock or a trace record (a plain variable written by two
 * tasks, a draw from one seeded stream) is invisible, and a schedule that differs only
 * there may be pruned; any event that resumes no task (an rxjs timer, a device callback)
 * wakes every sleeping step, since the engine cannot see what it touched. `reduction:
 * false` explores without pruning.
 *
 * No state digest: task stacks are generators, which cannot be hashed, so "distinct
 * states" is not reported; schedules are counted instead.
 */
import type { DecisionRecord, ExploreOption, ExplorePolicy, ScheduleDecision, Simulation, SleepEntry } from '../../kernel-model/index.ts';

/** A violation as the explorer reports it. */
export interface ExploreViolation {
  id: string;
  message: string;
}

/** One run of the target under one schedule. */
export interface ExploreRunResult {
  violations: ExploreViolation[];
  /** Virtual time the run reached (ns). */
  endNs: number;
}

/** What the explorer explores: something that runs under a given scheduling option. */
export interface ExploreTarget {
  name: string;
  /** Run once; call `observe` with the simulation before it runs (the explorer reads its policy). */
  run(schedule: ExploreOption, observe: (sim: Simulation) => void): ExploreRunResult;
}

export interface ExploreOptions {
  /** The preemption bound K. */
  preemptions: number;
  /** Stop after this many runs (schedules explored plus redundant runs cut short). */
  maxSchedules: number;
  /** Sleep-set reduction (default on). */
  reduction?: boolean;
  /** Checked between runs: true stops the search (the CLI's wall-clock bound). */
  shouldStop?: () => boolean;
}

export interface FoundViolation extends ExploreViolation {
  /** The schedule that shows it first (fewest preemptions): a reproducer's `schedule`. */
  schedule: ExploreOption;
  preemptions: number;
  /** Schedules that showed this violation id. */
  schedules: number;
}

export interface ExploreReport {
  target: string;
  bound: number;
  reduction: boolean;
  /** Schedules run to the end. */
  explored: number;
  /** Schedules explored, by their number of preemptions (index = preemptions). */
  byPreemptions: number[];
  /** Schedules not run because the reduction showed them equivalent to explored ones (sleeping choices, plus runs cut short). */
  pruned: number;
  /** Of those, runs started and cut short when only sleeping tasks were ready. */
  cutShort: number;
  /** Every run, explored or cut short. */
  runs: number;
  /** Whether every schedule within the bound was explored or pruned. */
  complete: boolean;
  stoppedBy: 'max-schedules' | 'stop' | null;
  /** Virtual time summed over every run (ns). */
  virtualNs: number;
  /** The most decision points one run had. */
  maxDecisionPoints: number;
  violations: FoundViolation[];
  /** Runs whose decisions did not fit (a bug in the explorer or a nondeterministic target). */
  mismatches: number;
}

interface Item {
  decisions: ScheduleDecision[];
  sleep?: { point: number; entries: SleepEntry[] };
  /** Decision points at or before this are fixed by `decisions`. */
  branch: number;
  cost: number;
}

/** The decisions that replay a run without sleep sets: every choice that was not the first option. */
export function replayDecisions(records: readonly DecisionRecord[], upTo = Infinity): ScheduleDecision[] {
  const out: ScheduleDecision[] = [];
  for (const r of records) {
    if (r.point >= upTo) break;
    if (r.chosen !== r.options[0]) out.push([r.point, r.chosen]);
  }
  return out;
}

/** Run one schedule of `target` and read back its policy's records. */
export function runSchedule(target: ExploreTarget, schedule: ExploreOption): { result: ExploreRunResult; policy: ExplorePolicy } {
  let policy: ExplorePolicy | null = null;
  const result = target.run(schedule, (sim) => {
    policy = sim.schedulePolicy as ExplorePolicy;
  });
  if (!policy) throw new Error(`${target.name}: the target never built its simulation`);
  return { result, policy };
}

/** Explore `target`'s schedules of at most `opts.preemptions` preemptions. */
export function explore(target: ExploreTarget, opts: ExploreOptions): ExploreReport {
  const reduction = opts.reduction ?? true;
  const K = opts.preemptions;
  const report: ExploreReport = {
    target: target.name, bound: K, reduction, explored: 0, byPreemptions: Array.from({ length: K + 1 }, () => 0),
    pruned: 0, cutShort: 0, runs: 0, complete: false, stoppedBy: null, virtualNs: 0, maxDecisionPoints: 0, violations: [], mismatches: 0,
  };
  // One stack per preemption count: bound b is exhausted before b + 1 starts (iterative bounding).
  const levels: Item[][] = Array.from({ length: K + 1 }, () => []);
  levels[0]!.push({ decisions: [], branch: -1, cost: 0 });
  const found = new Map<string, FoundViolation>();
  for (;;) {
    const level = levels.findIndex((l) => l.length > 0);
    if (level < 0) {
      report.complete = true;
      break;
    }
    if (report.runs >= opts.maxSchedules) {
      report.stoppedBy = 'max-schedules';
      break;
    }
    if (opts.shouldStop?.()) {
      report.stoppedBy = 'stop';
      break;
    }
    const item = levels[level]!.pop() as Item;
    const schedule: ExploreOption = {
      mode: 'explore', decisions: item.decisions, reduce: reduction, ...(item.sleep ? { sleep: item.sleep } : {}),
    };
    const { result, policy } = runSchedule(target, schedule);
    report.runs++;
    report.virtualNs += result.endNs;
    const records = policy.decisions;
    report.maxDecisionPoints = Math.max(report.maxDecisionPoints, records.length);
    if (policy.mismatch) {
      report.mismatches++;
      continue;
    }
    if (policy.blocked) {
      report.cutShort++;
      report.pruned++;
    } else {
      report.explored++;
      report.byPreemptions[policy.preemptions] = (report.byPreemptions[policy.preemptions] ?? 0) + 1;
      for (const v of result.violations) {
        const f = found.get(v.id);
        if (f) f.schedules++;
        else {
          found.set(v.id, {
            ...v, schedules: 1, preemptions: policy.preemptions,
            schedule: { mode: 'explore', decisions: replayDecisions(records) },
          });
        }
      }
    }
    // Branch at every decision point past the fixed prefix (a run cut short branches up to where it stopped).
    for (const r of records) {
      if (r.point <= item.branch) continue;
      for (const o of r.options) {
        if (o === r.chosen) continue;
        if (r.asleep.includes(o)) {
          report.pruned++;
          continue;
        }
        const preempts = r.kind === 'preempt' && o !== r.running;
        const cost = r.preemptions + (preempts ? 1 : 0);
        if (cost > K) continue;
        const child: Item = { decisions: [...replayDecisions(records, r.point), [r.point, o]], branch: r.point, cost };
        if (reduction) {
          const entries = r.sleep.filter((e) => e.task !== o);
          // The running task's own next step sleeps in the branches that preempt it (see the header).
          if (preempts && r.chosen === r.running && r.next) entries.push({ task: r.running as number, footprint: r.next });
          if (entries.length > 0) child.sleep = { point: r.point, entries };
        }
        levels[cost]!.push(child);
      }
    }
  }
  report.violations = [...found.values()];
  return report;
}

/** The report as text lines for people. */
export function formatExplore(r: ExploreReport, wallMs?: number, files: readonly string[] = []): string[] {
  const lines: string[] = [];
  lines.push(`explore ${r.target}: preemption bound ${r.bound}, reduction ${r.reduction ? 'on (sleep sets)' : 'off'}`);
  lines.push(`schedules explored ${r.explored} (by preemptions: ${r.byPreemptions.map((n, i) => `${i}:${n}`).join(' ')}), pruned ${r.pruned} ` +
    `(${r.cutShort} cut short), runs ${r.runs}, decision points per run up to ${r.maxDecisionPoints}`);
  lines.push(`time: ${(r.virtualNs / 1e6).toFixed(3)} ms virtual over all runs${wallMs !== undefined ? `, ${(wallMs / 1000).toFixed(2)} s wall` : ''}`);
  if (!r.complete) lines.push(`incomplete: stopped by ${r.stoppedBy === 'max-schedules' ? '--max-schedules' : 'the time bound'} before every schedule within ${r.bound} preemptions was explored`);
  if (r.mismatches > 0) lines.push(`warning: ${r.mismatches} runs did not follow their decisions (is the target deterministic?)`);
  if (r.violations.length === 0) {
    lines.push(r.complete ? `no violation within ${r.bound} preemption${r.bound === 1 ? '' : 's'}` : `no violation in the schedules explored`);
  }
  r.violations.forEach((v, i) => {
    lines.push(`violation ${v.id} (${v.preemptions} preemption${v.preemptions === 1 ? '' : 's'}, seen in ${v.schedules} schedule${v.schedules === 1 ? '' : 's'}): ${v.message.split('\n')[0]}`);
    lines.push(`  schedule (decision point:task): ${v.schedule.decisions.length === 0 ? 'the default order' : v.schedule.decisions.map(([p, t]) => `${p}:${t}`).join(' ')}`);
    const f = files[i];
    if (f !== undefined) lines.push(`  reproducer ${f}: npx lab replay ${f}`);
  });
  return lines;
}
