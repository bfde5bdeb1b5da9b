/**
 * `lab explore`'s reduction, measured: schedules explored (and runs made) with the
 * sleep-set reduction and without it, at preemption bounds 0 to EXPLORE_MAX_K, on
 *
 * - `mirror-seq-race`: the two-preemption notifier race fixture (scenarios/explore), a
 *   whole story per schedule (the kernel model, hmm_range_fault, the interval notifier);
 * - `independent-locks`: three tasks at the same instant, each taking its own mutex three
 *   times, plus a fourth that shares the first one's: the case the reduction exists for
 *   (most steps commute).
 *
 * Both sides must find the same violations (the reduction loses nothing within the bound);
 * the JSON says whether they did. Wall time is the benchmark's own, never the model's.
 *
 * @example
 *   npx tsx bench/explore.ts          # prints JSON
 *   EXPLORE_MAX_K=2 npx tsx bench/explore.ts
 */
import { pathToFileURL } from 'node:url';
import { Mutex, Simulation, type ExploreOption } from '../kernel-model/index.ts';
import { explore, type ExploreReport, type ExploreTarget } from '../scenarios/explore/explore.ts';
import { mirrorSeqRace, scenarioTarget } from '../scenarios/explore/index.ts';

const MAX_K = Number(process.env.EXPLORE_MAX_K ?? 3);
const MAX_SCHEDULES = 200_000;

/** Four tasks at the same instant; tasks 0 and 3 share a mutex, the others have their own. */
export const independentLocks: ExploreTarget = {
  name: 'independent-locks',
  run(schedule: ExploreOption, observe) {
    const sim = new Simulation({ seed: 1, schedule });
    observe(sim);
    const locks = [new Mutex(sim, 'a'), new Mutex(sim, 'b'), new Mutex(sim, 'c')];
    let shared = 0;
    for (let i = 0; i < 4; i++) {
      const m = locks[i === 3 ? 0 : i] as Mutex;
      sim.spawn(`w${i}`, function* () {
        for (let k = 0; k < 3; k++) {
          yield* m.lock();
          if (m === locks[0]) shared++;
          m.unlock();
        }
      });
    }
    sim.run();
    return { violations: shared === 6 ? [] : [{ id: 'lost-update', message: `${shared}` }], endNs: sim.now() };
  },
};

interface Side {
  explored: number;
  runs: number;
  pruned: number;
  cutShort: number;
  complete: boolean;
  violations: string[];
  wallMs: number;
}

function side(target: ExploreTarget, k: number, reduction: boolean): Side {
  const t0 = performance.now();
  const r: ExploreReport = explore(target, { preemptions: k, maxSchedules: MAX_SCHEDULES, reduction });
  return {
    explored: r.explored, runs: r.runs, pruned: r.pruned, cutShort: r.cutShort, complete: r.complete,
    violations: r.violations.map((v) => `${v.id}@${v.preemptions}`).sort(), wallMs: Math.round(performance.now() - t0),
  };
}

export function benchExplore(): Record<string, unknown> {
  const targets: ExploreTarget[] = [
    scenarioTarget(mirrorSeqRace, { seed: 1, profile: 'linux-6.x', driver: 'broken-mirror', params: {} }),
    independentLocks,
  ];
  const out: Record<string, unknown> = {};
  for (const target of targets) {
    const rows = [];
    for (let k = 0; k <= MAX_K; k++) {
      process.stderr.write(`explore ${target.name} K=${k}\n`);
      const without = side(target, k, false);
      const withR = side(target, k, true);
      rows.push({
        preemptions: k, without, with: withR,
        savedSchedules: without.explored - withR.explored,
        savedRuns: without.runs - withR.runs,
        runRatio: Number((withR.runs / Math.max(1, without.runs)).toFixed(3)),
        sameViolations: JSON.stringify(without.violations) === JSON.stringify(withR.violations),
      });
    }
    out[target.name] = rows;
  }
  return out;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write(JSON.stringify(benchExplore(), null, 2) + '\n');
}
