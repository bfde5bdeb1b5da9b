/**
 * The catalogue's workload story: a shipped trace of a real program (Node.js running a
 * GC-heavy script, captured with scenarios/workloads/capture.ts) replayed into the model
 * with RDMA traffic from its large buffers through a registration cache, under the run's
 * driver (pinned with memory hooks, holdoff with the MR event, odp with none: what a
 * library would pick for each). `lab workload` replays any trace under any driver and
 * cache; this entry puts one real program where `npm start`, `lab run`, `lab check` and
 * sweeps reach it. The replay rules are in scenarios/workloads/README.md.
 */
import { loadTrace, shippedTracePath, workloadScenario, type WorkloadTrace } from './workloads/index.ts';
import type { ScenarioDefinition } from './scenario.ts';

let trace: WorkloadTrace | undefined;
let def: ScenarioDefinition | undefined;

/** The trace is read when the story first runs, not when the catalogue is imported (start-up time). */
function story(): ScenarioDefinition {
  trace ??= loadTrace(shippedTracePath('node-gc'));
  // 256 MiB of frames: the program's peak fits (it runs clean, without reclaim), at a
  // quarter of `lab workload`'s default set-up cost, which every catalogue run pays.
  def ??= workloadScenario(trace, 'workload-node-gc', { frames: 65_536 });
  return def;
}

export const workloadNodeGc: ScenarioDefinition = {
  name: 'workload-node-gc',
  summary: 'a real program (Node.js, GC-heavy) replayed from its strace/malloc trace, its buffers sent over RDMA through a registration cache',
  seeds: [],
  defaultProfile: 'linux-6.x',
  drivers: ['pinned', 'holdoff', 'odp'],
  defaultDriver: 'pinned',
  get untilNs() {
    return story().untilNs;
  },
  expect: () => [],
  setup: (ctx) => story().setup(ctx),
};
