import type { Simulation, Task } from './sim/index.ts';

/**
 * Which tasks are inside a notifier callback right now: where `remove` is forbidden
 * (rule 30) and where a driver reading an interface its profile's kernel lacked is caught.
 */
const callbackDepth = new WeakMap<Task, number>();

export function enterNotifierCallback(task: Task): void {
  callbackDepth.set(task, (callbackDepth.get(task) ?? 0) + 1);
}

export function exitNotifierCallback(task: Task): void {
  callbackDepth.set(task, (callbackDepth.get(task) ?? 1) - 1);
}

/** Whether the current task is inside a notifier callback. */
export function inNotifierCallback(sim: Simulation): boolean {
  const t = sim.current;
  return t !== null && (callbackDepth.get(t) ?? 0) > 0;
}

/** Record that a call was refused because the profile's kernel did not have it. */
export function refuseInterface(sim: Simulation, api: string, message: string): void {
  sim.emit({ type: 'interface-refused', api, message });
}
