import type { SchedulerLike } from 'rxjs';
import type { Simulation } from '../kernel-model/index.ts';
import type { BatchPolicy } from './batching/index.ts';
import type { UmemStrategy } from './umem.ts';

/**
 * What a driver author's module exports so the lab's tools (run, fuzz, replay, sweep,
 * check) can run it by reference (`--driver ./my-driver.ts#name`): small tagged records
 * made by `defineStrategy` and `defineBatchPolicy`. Each may carry a zod object schema for
 * its own parameters; `--set strategy.KEY=V` (or `batching.KEY=V` for a policy) and sweep
 * grids are validated against it before anything runs.
 */

/**
 * Any schema with zod's `safeParse` (zod 3 or 4; the user's copy of zod need not be ours).
 * An object schema's `shape` names the keys `--set` accepts.
 */
export interface ParamsSchema<P> {
  safeParse(input: unknown): { success: true; data: P } | { success: false; error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] } };
  readonly shape?: Readonly<Record<string, unknown>>;
}

/** What the tools hand a strategy factory besides its own parameters. */
export interface StrategyEnv {
  sim: Simulation;
  /** The batching policy chosen by `--set batching.policy` or the sweep point (the reference strategies take it too). */
  batching: BatchPolicy;
  batchingName: string;
}

/** Which reference strategy a user strategy stands in for in the scenario catalogue's stories. */
export type StrategyRole = 'odp' | 'holdoff' | 'pinned';

export interface StrategyDefinition<P = Record<string, unknown>> {
  readonly kind: 'notifier-lab/strategy';
  /** Shown in reports, traces and JSON (with the module's file). */
  readonly name: string;
  /** `faultable`: registers ON_DEMAND MRs on a NIC with page faults; `non-faultable`: the others. */
  readonly nic: 'faultable' | 'non-faultable';
  /** The reference it replaces in stories: default `odp` for faultable, `holdoff` for non-faultable. */
  readonly like: StrategyRole;
  readonly description?: string;
  readonly params?: ParamsSchema<P>;
  /** A fresh strategy for one run (one per node that uses it). */
  strategy(params: P, env: StrategyEnv): UmemStrategy;
}

export interface BatchPolicyDefinition<P = Record<string, unknown>> {
  readonly kind: 'notifier-lab/batch-policy';
  readonly name: string;
  readonly description?: string;
  readonly params?: ParamsSchema<P>;
  /** A fresh policy for one run; `scheduler` is the simulation's (virtual time). */
  policy(params: P, scheduler: SchedulerLike): BatchPolicy;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function checkName(what: string, name: unknown): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new TypeError(`${what}: name must be 1 to 64 letters, digits, dot, dash or underscore, got ${JSON.stringify(name)}`);
  }
  return name;
}

/**
 * A registration strategy a tool can load from the author's module.
 *
 * @example
 *   export default defineStrategy({
 *     name: 'odp-fault-around', nic: 'faultable',
 *     params: z.object({ aroundPages: z.number().int().min(0).max(64).default(4) }),
 *     strategy: (p, env) => faultAroundStrategy(p.aroundPages, env.batching, env.batchingName),
 *   });
 */
export function defineStrategy<P = Record<string, unknown>>(def: {
  name: string;
  nic: 'faultable' | 'non-faultable';
  like?: StrategyRole;
  description?: string;
  params?: ParamsSchema<P>;
  strategy(params: P, env: StrategyEnv): UmemStrategy;
}): StrategyDefinition<P> {
  const name = checkName('defineStrategy', def.name);
  if (def.nic !== 'faultable' && def.nic !== 'non-faultable') throw new TypeError(`defineStrategy ${name}: nic must be 'faultable' or 'non-faultable'`);
  if (typeof def.strategy !== 'function') throw new TypeError(`defineStrategy ${name}: strategy must be a function (params, env) => UmemStrategy`);
  const like = def.like ?? (def.nic === 'faultable' ? 'odp' : 'holdoff');
  if ((like === 'odp') !== (def.nic === 'faultable')) throw new TypeError(`defineStrategy ${name}: a ${def.nic} strategy cannot stand in for '${like}'`);
  return Object.freeze({ ...def, kind: 'notifier-lab/strategy' as const, name, like });
}

/**
 * A batching policy a tool can load from the author's module.
 *
 * @example
 *   export const everyOther = defineBatchPolicy({
 *     name: 'every-other', params: z.object({ count: z.number().int().min(1).default(2) }),
 *     policy: (p) => countBatching(p.count),
 *   });
 */
export function defineBatchPolicy<P = Record<string, unknown>>(def: {
  name: string;
  description?: string;
  params?: ParamsSchema<P>;
  policy(params: P, scheduler: SchedulerLike): BatchPolicy;
}): BatchPolicyDefinition<P> {
  const name = checkName('defineBatchPolicy', def.name);
  if (typeof def.policy !== 'function') throw new TypeError(`defineBatchPolicy ${name}: policy must be a function (params, scheduler) => BatchPolicy`);
  return Object.freeze({ ...def, kind: 'notifier-lab/batch-policy' as const, name });
}

export function isStrategyDefinition(v: unknown): v is StrategyDefinition {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'notifier-lab/strategy' && typeof (v as StrategyDefinition).strategy === 'function';
}

export function isBatchPolicyDefinition(v: unknown): v is BatchPolicyDefinition {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'notifier-lab/batch-policy' && typeof (v as BatchPolicyDefinition).policy === 'function';
}
