import type { SchedulerLike } from 'rxjs';
import {
  batchPolicyByName, byEventType, noBatching, windowBatching, windowOrCount, type BatchPolicy, type BatchPolicyDefinition,
  type StrategyDefinition, type StrategyEnv, type UmemStrategy,
} from '../../driver/index.ts';
import { moduleParams, type ParamValues } from '../params.ts';
import { displayPath, isModuleRef, loadedBatchPolicy, loadedStrategy } from '../user-module.ts';
import type { PointParams } from './grid.ts';

/** A point's user-module parameters as the `--set`-style values moduleParams reads. */
function userValues(p: PointParams): ParamValues {
  const out: ParamValues = {};
  for (const [k, v] of Object.entries(p.user ?? {})) if (v !== null) out[k] = v;
  return out;
}

/**
 * The batching policy of a sweep point: every built-in one through driver/batching's
 * batchPolicyByName (a window of 0 is built directly: by name a window must be >= 1, but a
 * sweep's window series starts at 0 = "flush at once"), or the user's module, loaded by
 * the worker before the point runs. Throws one line for what it cannot build.
 */
export function pointPolicy(p: PointParams, scheduler: SchedulerLike): { name: string; policy: BatchPolicy } {
  if (isModuleRef(p.policy)) {
    const m = loadedBatchPolicy(p.policy);
    if (!m) throw new Error(`batching policy ${p.policy} was not loaded`);
    const r = moduleParams('batching', m.file, m.def.params, userValues(p));
    if ('error' in r) throw new Error(r.error);
    return { name: m.def.name, policy: (m.def as BatchPolicyDefinition<unknown>).policy(r.params, scheduler) };
  }
  if (p.policy === 'none') return { name: 'none', policy: noBatching() };
  const zeroWindow = p.windowNs === 0;
  if (zeroWindow && (p.policy === 'window' || p.policy === 'window-or-count')) {
    const policy = p.policy === 'window' ? windowBatching(0, scheduler) : windowOrCount(0, p.count ?? 1, scheduler);
    return { name: `${p.policy}(windowNs=0${p.count !== null ? `, count=${p.count}` : ''})`, policy };
  }
  if (zeroWindow && p.policy === 'by-event-type' && (p.inner === 'window' || p.inner === 'window-or-count')) {
    const inner = p.inner === 'window' ? windowBatching(0, scheduler) : windowOrCount(0, p.count ?? 1, scheduler);
    return { name: `by-event-type(inner=${p.inner}, windowNs=0${p.count !== null ? `, count=${p.count}` : ''})`, policy: byEventType(inner) };
  }
  const params: Record<string, number | string> = {};
  if (p.inner !== undefined) params['inner'] = p.inner;
  if (p.windowNs !== null) params['windowNs'] = p.windowNs;
  if (p.count !== null) params['count'] = p.count;
  if (p.minWindowNs !== undefined) params['minWindowNs'] = p.minWindowNs;
  if (p.maxWindowNs !== undefined) params['maxWindowNs'] = p.maxWindowNs;
  const r = batchPolicyByName(p.policy, params, scheduler);
  if ('error' in r) throw new Error(r.error);
  return r;
}

/** A point's user strategy (loaded by the worker), built with its own parameters; null for a built-in name. */
export function pointStrategy(p: PointParams, env: StrategyEnv): { def: StrategyDefinition; strategy: UmemStrategy } | null {
  if (!isModuleRef(p.strategy)) return null;
  const m = loadedStrategy(p.strategy);
  if (!m) throw new Error(`strategy ${p.strategy} was not loaded`);
  const r = moduleParams('strategy', m.file, m.def.params, userValues(p));
  if ('error' in r) throw new Error(r.error);
  try {
    return { def: m.def, strategy: (m.def as StrategyDefinition<unknown>).strategy(r.params, env) };
  } catch (err) {
    throw new Error(`${displayPath(m.file)}: ${m.def.name}.strategy() threw: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  }
}
