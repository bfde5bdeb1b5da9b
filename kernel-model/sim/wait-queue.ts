import type { Simulation } from './simulation.ts';
import type { Co } from './task.ts';

/**
 * A wait queue in virtual time (`wait_event` / `wake_up_all`).
 *
 * @example
 *   yield* wq.waitEvent(() => seq !== mySeq); // elsewhere: wq.wakeUpAll();
 */
export class WaitQueue {
  private waiters: (() => void)[] = [];

  constructor(private readonly sim: Simulation, readonly name: string) {}

  /** Sleep until `condition()` holds, re-checking after every wake-up. */
  *waitEvent(condition: () => boolean): Co {
    if (condition()) return;
    this.sim.mightSleep(`wait_event(${this.name})`);
    while (!condition()) {
      yield* this.sim.park<void>((wake) => this.waiters.push(() => wake()));
    }
  }

  wakeUpAll(): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  get length(): number {
    return this.waiters.length;
  }
}
