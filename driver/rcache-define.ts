import type { ParamsSchema } from './define.ts';
import { RCACHE_SOURCES, type RcachePolicy, type RcacheSource } from './rcache.ts';

/**
 * A registration-cache policy a tool can load from the author's module, as strategies and
 * batching policies are (driver/define.ts): `lab workload trace --cache ./my-cache.ts#name`.
 * It names the invalidation source it relies on and may override UCX's defaults (bounds,
 * the range registered on a miss, the eviction victim, which invalidations it honours).
 *
 * @example
 *   export const wide = defineCachePolicy({
 *     name: 'hooks-wide', source: 'memory-hooks',
 *     policy: () => ({ name: 'hooks-wide', source: 'memory-hooks', maxRegions: 64,
 *       registerRange: (s, e) => ({ start: s - (s % 2097152), end: e }) }),
 *   });
 */
export interface CachePolicyDefinition<P = Record<string, unknown>> {
  readonly kind: 'notifier-lab/cache-policy';
  readonly name: string;
  readonly source: RcacheSource;
  readonly description?: string;
  readonly params?: ParamsSchema<P>;
  policy(params: P): RcachePolicy;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function defineCachePolicy<P = Record<string, unknown>>(def: {
  name: string;
  source: RcacheSource;
  description?: string;
  params?: ParamsSchema<P>;
  policy(params: P): RcachePolicy;
}): CachePolicyDefinition<P> {
  if (typeof def.name !== 'string' || !NAME.test(def.name)) {
    throw new TypeError(`defineCachePolicy: name must be 1 to 64 letters, digits, dot, dash or underscore, got ${JSON.stringify(def.name)}`);
  }
  if (!RCACHE_SOURCES.includes(def.source)) throw new TypeError(`defineCachePolicy ${def.name}: source must be one of ${RCACHE_SOURCES.join(', ')}`);
  if (typeof def.policy !== 'function') throw new TypeError(`defineCachePolicy ${def.name}: policy must be a function (params) => RcachePolicy`);
  return Object.freeze({ ...def, kind: 'notifier-lab/cache-policy' as const });
}

export function isCachePolicyDefinition(v: unknown): v is CachePolicyDefinition {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'notifier-lab/cache-policy' && typeof (v as CachePolicyDefinition).policy === 'function';
}
