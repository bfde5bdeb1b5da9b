import { z } from 'zod';
import { DEFAULT_COSTS, COST_MODEL_SOURCES, type CostModel } from '../device/index.ts';

/** One documented parameter that `--set key=value` may override. */
export interface ParamDoc {
  key: string;
  description: string;
  default: number | string | boolean;
  schema: z.ZodType<number | string | boolean>;
}

const ns = z.coerce.number().int().nonnegative();
const positiveInt = z.coerce.number().int().positive();

/** Parameters every scenario accepts: the device cost model, batching, memory, holdoff. */
export const COMMON_PARAMS: readonly ParamDoc[] = [
  ...(Object.keys(DEFAULT_COSTS) as (keyof CostModel)[]).map((k) => ({
    key: `cost.${k}`,
    description: COST_MODEL_SOURCES[k],
    default: DEFAULT_COSTS[k],
    schema: z.coerce.number().nonnegative() as z.ZodType<number>,
  })),
  { key: 'batching.policy', description: 'invalidation batching policy: none, window, count, window-or-count, by-event-type, adaptive', default: 'none', schema: z.enum(['none', 'window', 'count', 'window-or-count', 'by-event-type', 'adaptive']) },
  { key: 'batching.windowNs', description: 'batching window (virtual ns)', default: 100_000, schema: ns },
  { key: 'batching.count', description: 'batch size that flushes a count policy', default: 16, schema: positiveInt },
  { key: 'memory.frames', description: 'physical memory per node, in 4 KiB frames', default: 16_384, schema: z.coerce.number().int().min(64).max(16_777_216) },
  { key: 'holdoff.timeoutNs', description: 'holdoff strategy: longest an invalidation waits for DMA to drain (virtual ns)', default: 10_000_000, schema: ns },
  { key: 'odp.faultHandlingNs', description: 'driver share of an ODP fault (assumed so device + driver is about 220 us, ASPLOS 2017 second-hand)', default: 200_000, schema: ns },
];

export type ParamValues = Record<string, number | string | boolean>;

/**
 * Parse `key=value` overrides against the documented parameters (common ones plus the
 * scenario's own). Returns the full value set, or one line naming what was wrong and
 * what is accepted.
 */
export function parseSets(sets: readonly string[], extra: readonly ParamDoc[] = []): { values: ParamValues } | { error: string } {
  const docs = [...COMMON_PARAMS, ...extra];
  const byKey = new Map(docs.map((d) => [d.key, d]));
  const values: ParamValues = Object.fromEntries(docs.map((d) => [d.key, d.default]));
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) return { error: `--set expects key=value, got '${s}'` };
    const key = s.slice(0, eq);
    const doc = byKey.get(key);
    if (!doc) return { error: `unknown parameter '${key}'; accepted: ${docs.map((d) => d.key).join(', ')}` };
    const parsed = doc.schema.safeParse(s.slice(eq + 1));
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return { error: `bad value for ${key}: '${s.slice(eq + 1)}' (${issue?.message ?? 'invalid'}; default ${String(doc.default)})` };
    }
    values[key] = parsed.data;
  }
  return { values };
}

/** The cost-model overrides in a value set. */
export function costsFrom(values: ParamValues): Partial<CostModel> {
  const out: Partial<Record<keyof CostModel, number>> = {};
  for (const k of Object.keys(DEFAULT_COSTS) as (keyof CostModel)[]) out[k] = Number(values[`cost.${k}`]);
  return out;
}
