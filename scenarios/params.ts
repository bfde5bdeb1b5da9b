import { z } from 'zod';
import { asapScheduler, type SchedulerLike } from 'rxjs';
import { DEFAULT_COSTS, COST_MODEL_SOURCES, type CostModel } from '../device/index.ts';
import { CPU_COST_SOURCES, DEFAULT_CPU_COSTS, type CpuCosts } from '../kernel-model/index.ts';
import { BATCH_POLICY_NAMES, batchPolicyByName, type BatchPolicy, type ParamsSchema, type StrategyDefinition, type BatchPolicyDefinition } from '../driver/index.ts';
import { displayPath, isModuleRef, loadedBatchPolicy } from './user-module.ts';

/** The checks a parameter's value passes: a zod schema, or anything with the same `safeParse`. */
export interface ParamSchema {
  safeParse(input: unknown): { success: true; data: unknown } | { success: false; error: { issues: readonly { message: string }[] } };
}

/** One documented parameter that `--set key=value` may override. */
export interface ParamDoc {
  key: string;
  description: string;
  default: number | string | boolean;
  schema: ParamSchema;
}

/**
 * A number as a person writes it: digits, an optional fraction and exponent, an optional
 * minus. Not empty, not hex, no surrounding blanks (what `Number()` would also accept).
 */
export const STRICT_NUMBER = /^-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** `z.coerce.number()` without its leniency: '' is not 0, '0x10' is not 16, ' 5' is not 5. */
export function strictNumber(): z.ZodType<number, unknown> {
  return z.preprocess((v) => (typeof v === 'string' ? (STRICT_NUMBER.test(v) ? Number(v) : v) : v), z.number({ error: 'not a plain decimal number' }).finite());
}

const ns = (max = 1e9) => strictNumber().pipe(z.number().int().min(0).max(max));
const positiveInt = (max = 1e6) => strictNumber().pipe(z.number().int().min(1).max(max));

/**
 * The cost model's bounds: latencies up to 1 s of virtual time (a larger one only runs a
 * story into its time limit), bandwidths from 0.001 to 10,000 bytes/ns (0 would divide by 0).
 */
function costSchema(k: keyof CostModel): ParamSchema {
  return k.endsWith('BytesPerNs') ? strictNumber().pipe(z.number().min(0.001).max(10_000)) : strictNumber().pipe(z.number().min(0).max(1e9));
}

/** Policy names: the built-in ones (driver/batching) or a module reference to the user's own. */
const POLICY_SCHEMA: ParamSchema = z.string().refine((v) => BATCH_POLICY_NAMES.includes(v) || isModuleRef(v), {
  message: `valid: ${BATCH_POLICY_NAMES.join(', ')}, or ./file.ts#export (defineBatchPolicy)`,
});

const INNER_NAMES = BATCH_POLICY_NAMES.filter((n) => n !== 'by-event-type');

/** The CPU-side cost model (kernel-model/cpu-costs.ts) as `cpu.KEY` parameters every scenario accepts. */
export const CPU_PARAMS: readonly ParamDoc[] = (Object.keys(DEFAULT_CPU_COSTS) as (keyof CpuCosts)[]).map((k) => ({
  key: `cpu.${k}`,
  description: CPU_COST_SOURCES[k],
  default: DEFAULT_CPU_COSTS[k],
  schema: strictNumber().pipe(z.number().min(0).max(1e9)),
}));

/** Parameters every scenario accepts: the device cost model, batching, memory, holdoff. */
export const COMMON_PARAMS: readonly ParamDoc[] = [
  ...(Object.keys(DEFAULT_COSTS) as (keyof CostModel)[]).map((k) => ({
    key: `cost.${k}`,
    description: COST_MODEL_SOURCES[k],
    default: DEFAULT_COSTS[k],
    schema: costSchema(k),
  })),
  ...CPU_PARAMS,
  { key: 'batching.policy', description: `invalidation batching policy: ${BATCH_POLICY_NAMES.join(', ')}, or ./file.ts#export`, default: 'none', schema: POLICY_SCHEMA },
  { key: 'batching.windowNs', description: 'batching window (virtual ns): window, window-or-count, by-event-type', default: 100_000, schema: ns() },
  { key: 'batching.count', description: 'batch size that flushes: count, window-or-count, adaptive (its largest batch), by-event-type', default: 16, schema: positiveInt() },
  { key: 'batching.minWindowNs', description: 'adaptive: the smallest window, where it starts (virtual ns)', default: 1_000, schema: ns() },
  { key: 'batching.maxWindowNs', description: 'adaptive: the largest window it grows to (virtual ns)', default: 100_000, schema: ns() },
  { key: 'batching.inner', description: `by-event-type: the policy each event type gets (${INNER_NAMES.join(', ')})`, default: 'window', schema: z.enum(INNER_NAMES as [string, ...string[]]) },
  // 2048 frames (8 MiB) is the least every story's buffers and page tables fit in; past 1 Mi frames (4 GiB) the model's per-frame arrays outgrow a test machine.
  { key: 'memory.frames', description: 'physical memory per node, in 4 KiB frames (2048 to 1048576)', default: 16_384, schema: strictNumber().pipe(z.number().int().min(2048).max(1 << 20)) },
  { key: 'holdoff.timeoutNs', description: 'holdoff strategy: longest an invalidation waits for DMA to drain (virtual ns)', default: 10_000_000, schema: ns() },
];

/** The CPU cost overrides in a value set. */
export function cpuCostsFrom(values: ParamValues): Partial<CpuCosts> {
  const out: Partial<Record<keyof CpuCosts, number>> = {};
  for (const k of Object.keys(DEFAULT_CPU_COSTS) as (keyof CpuCosts)[]) {
    const v = values[`cpu.${k}`];
    if (v !== undefined) out[k] = Number(v);
  }
  return out;
}

export type ParamValues = Record<string, number | string | boolean>;

/** A user module's parameters as `--set` keys: `strategy.KEY` or `batching.KEY`, one per key of its zod object schema. */
export function moduleParamDocs(prefix: 'strategy' | 'batching', file: string, schema: ParamsSchema<unknown> | undefined): ParamDoc[] {
  if (!schema?.shape) return [];
  const whole = schema.safeParse({});
  const defaults = whole.success ? (whole.data as Record<string, unknown>) : {};
  return Object.keys(schema.shape).map((k) => {
    const field = schema.shape![k] as ParamSchema;
    const d = defaults[k];
    return {
      key: `${prefix}.${k}`,
      description: `${displayPath(file)}: ${(field as { description?: string }).description ?? 'its own parameter'}`,
      default: typeof d === 'number' || typeof d === 'string' || typeof d === 'boolean' ? d : '(required)',
      schema: {
        // The field's own schema, given the text as the number or boolean it spells when it spells one.
        safeParse(v: unknown) {
          if (typeof v === 'string') {
            const typed = STRICT_NUMBER.test(v) ? Number(v) : v === 'true' ? true : v === 'false' ? false : undefined;
            if (typed !== undefined) {
              const r = field.safeParse(typed);
              if (r.success) return r;
              const asText = field.safeParse(v);
              return asText.success ? asText : r;
            }
          }
          return field.safeParse(v);
        },
      },
    };
  });
}

/** Quote a `--set` for a shell command line when it needs it. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./#:=@%+,-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * Parse `key=value` overrides against the documented parameters (common ones plus the
 * scenario's own plus a user module's). Returns the full value set, or one line naming
 * what was wrong and what is accepted. A parameter whose default is a number takes only a
 * plain decimal number.
 */
export function parseSets(sets: readonly string[], extra: readonly ParamDoc[] = []): { values: ParamValues } | { error: string } {
  const byKey = new Map<string, ParamDoc>();
  for (const d of [...COMMON_PARAMS, ...extra]) byKey.set(d.key, d);
  const docs = [...byKey.values()];
  const values: ParamValues = Object.fromEntries(docs.map((d) => [d.key, d.default]));
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) return { error: `--set expects key=value, got '${s}'` };
    const key = s.slice(0, eq);
    const raw = s.slice(eq + 1);
    const doc = byKey.get(key);
    if (!doc) return { error: `unknown parameter '${key}'; accepted: ${docs.map((d) => d.key).join(', ')}` };
    if (typeof doc.default === 'number' && !STRICT_NUMBER.test(raw)) {
      return { error: `bad value for ${key}: '${raw}' (not a plain decimal number; default ${String(doc.default)})` };
    }
    const parsed = doc.schema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return { error: `bad value for ${key}: '${raw}' (${issue?.message ?? 'invalid'}; default ${String(doc.default)})` };
    }
    values[key] = parsed.data as number | string | boolean;
  }
  return { values };
}

/** The user parameters of a module (`prefix.KEY` values) as the object its schema checks; or one line naming what it rejects. */
export function moduleParams<P>(prefix: 'strategy' | 'batching', file: string, schema: ParamsSchema<P> | undefined, values: ParamValues): { params: P } | { error: string } {
  if (!schema) return { params: {} as P };
  const obj: Record<string, unknown> = {};
  for (const k of Object.keys(schema.shape ?? {})) {
    const v = values[`${prefix}.${k}`];
    if (v !== undefined && v !== '(required)') obj[k] = v;
  }
  const r = schema.safeParse(obj);
  if (r.success) return { params: r.data };
  const issue = r.error.issues[0];
  const where = issue && issue.path.length ? `${prefix}.${issue.path.map(String).join('.')}` : prefix;
  return { error: `${displayPath(file)} rejects its parameters: ${where}: ${issue?.message ?? 'invalid'}` };
}

/** The cost-model overrides in a value set. */
export function costsFrom(values: ParamValues): Partial<CostModel> {
  const out: Partial<Record<keyof CostModel, number>> = {};
  for (const k of Object.keys(DEFAULT_COSTS) as (keyof CostModel)[]) out[k] = Number(values[`cost.${k}`]);
  return out;
}

/** The batching parameters `batching.policy` uses (read only those, so an unused `--set` shows as unused). */
function builtinPolicyParams(name: string, values: ParamValues): Record<string, number | string> {
  const n = (k: string) => Number(values[`batching.${k}`]);
  switch (name) {
    case 'window': return { windowNs: n('windowNs') };
    case 'count': return { count: n('count') };
    case 'window-or-count': return { windowNs: n('windowNs'), count: n('count') };
    case 'adaptive': return { minWindowNs: n('minWindowNs'), maxWindowNs: n('maxWindowNs'), count: n('count') };
    case 'by-event-type': {
      const inner = String(values['batching.inner']);
      return { inner, ...builtinPolicyParams(inner, values) };
    }
    default: return {};
  }
}

/**
 * The batching policy the parameters describe (`batching.policy` and the parameters that
 * policy uses: built-in ones through driver/batching's `batchPolicyByName`, a user's
 * through its `defineBatchPolicy`), built on `scheduler`. Throws one line for a
 * combination it cannot build; `checkBatching` finds those before a run starts.
 */
export function batchingFromParams(values: ParamValues, scheduler: SchedulerLike): { name: string; policy: BatchPolicy } {
  const r = batchingOrError(values, scheduler);
  if ('error' in r) throw new Error(`batching parameters: ${r.error}`);
  return r;
}

export function batchingOrError(values: ParamValues, scheduler: SchedulerLike): { name: string; policy: BatchPolicy } | { error: string } {
  const name = String(values['batching.policy']);
  if (isModuleRef(name)) {
    const m = loadedBatchPolicy(name);
    if (!m) return { error: `batching policy ${name} was not loaded` };
    const p = moduleParams('batching', m.file, m.def.params, values);
    if ('error' in p) return p;
    try {
      return { name: `${m.def.name} (${displayPath(m.file)})`, policy: (m.def as BatchPolicyDefinition<unknown>).policy(p.params, scheduler) };
    } catch (err) {
      return { error: `${displayPath(m.file)}: ${m.def.name}.policy() threw: ${(err as Error).message?.split('\n')[0]}` };
    }
  }
  return batchPolicyByName(name, builtinPolicyParams(name, values), scheduler);
}

/** Whether the batching parameters make a policy (checked before a run starts): null, or one line. */
export function checkBatching(values: ParamValues): string | null {
  const r = batchingOrError(values, asapScheduler);
  return 'error' in r ? `--set batching.policy=${String(values['batching.policy'])}: ${r.error}` : null;
}

/** A user strategy's own parameters checked by its schema: null, or one line naming the file. */
export function checkStrategyParams(def: StrategyDefinition, file: string, values: ParamValues): string | null {
  const r = moduleParams('strategy', file, def.params, values);
  return 'error' in r ? r.error : null;
}
