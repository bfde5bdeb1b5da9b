import type { TaskKind } from './trace.ts';

/** What a coroutine yields to the engine: "park me until someone wakes me". */
export const PARK: unique symbol = Symbol('park');
export type Park = typeof PARK;

/**
 * A coroutine: the TypeScript spelling of a kernel code path that may sleep. A sleep
 * point in C is a `yield*` here, so the code reads like the C it models.
 *
 * @example
 *   function* flush(sim: Simulation): Co<number> { yield* sim.sleep(1_000); return 0; }
 */
export type Co<T = void> = Generator<unknown, T, unknown>;

/** Anything that can hold a task waiting: a lock, for the wait-for graph. */
export interface Blocker {
  readonly name: string;
  /** Tasks that currently hold it (empty for a wait queue). */
  holders(): readonly Task[];
}

/**
 * A thread of execution (a user thread, kswapd, a driver workqueue, the NIC's fault
 * handler, a test script). The engine resumes its generator; `atomic` counts the
 * nesting of contexts that forbid sleeping (a non-blockable notifier range, or any
 * notifier callback under `linux-3.0`).
 */
export class Task<T = unknown> {
  state: 'ready' | 'running' | 'parked' | 'done' = 'ready';
  result: T | undefined;
  error: unknown;
  /** Reasons it may not sleep now, innermost last. */
  readonly atomic: string[] = [];
  /** Lock classes held, in acquisition order (for lockdep). */
  readonly held: string[] = [];
  /** The lock this task is blocked on, if any (for the wait-for graph). */
  waitingOn: Blocker | null = null;
  readonly joiners: (() => void)[] = [];

  constructor(
    readonly id: number,
    readonly name: string,
    readonly kind: TaskKind,
    readonly gen: Co<T>,
    /** The process (thread group) it belongs to, if it is a user thread. */
    readonly pid: number | null,
    /** The node (kernel) it runs on, when known. */
    readonly node: string | null = null,
  ) {}

  get done(): boolean {
    return this.state === 'done';
  }
}
