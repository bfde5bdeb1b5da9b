/**
 * The reproducer format's version 3 (the one versioned format `lab replay` reads; see
 * `Reproducer` in scenarios/fuzz/fuzz.ts). Version 2 reserved `schedule`; version 3 fills it:
 *
 * - `schedule`: the run's scheduling option (kernel-model/sim/schedule.ts) as JSON, or null
 *   for the run's default (`preempt`): `{ mode: 'explore', decisions: [[point, task], ...] }`
 *   for a schedule `lab explore` found, `{ mode: 'pct', depth, steps }` for a PCT fuzz run.
 * - `scenario`: null for a fuzz run (the command list in `commands`); for a story `lab
 *   explore` explored, its name and, when it came from a user's module, that module (path
 *   relative to the reproducer, sha256). The story runs with `driver` (or the strategy in
 *   `module`), `sets`, `profile` and `simSeed` as its seed; the fuzz-world fields
 *   (`preempt`, `frames`, the phase bounds, `commands`) are kept at their defaults and ignored.
 *
 * Versions 1 and 2 still replay unchanged.
 */
import { z } from 'zod';
import type { ScheduleOption } from '../../kernel-model/index.ts';

const moduleSchema = z.object({ path: z.string().min(1), export: z.string().min(1), sha256: z.string().regex(/^[0-9a-f]{64}$/) });

/** A scheduling option as a reproducer keeps it (the explorer's own fields, sleep sets and footprints, are never written). */
export const scheduleJsonSchema = z.discriminatedUnion('mode', [
  z.object({ mode: z.literal('plain') }),
  z.object({ mode: z.literal('jitter'), probability: z.number().min(0).max(1), maxDelayNs: z.number().int().min(0) }),
  z.object({ mode: z.literal('pct'), depth: z.number().int().min(1).max(10), steps: z.number().int().min(1) }),
  z.object({ mode: z.literal('explore'), decisions: z.array(z.tuple([z.number().int().min(0), z.number().int().min(1)])) }),
]);

export const scenarioRefSchema = z.object({ name: z.string().min(1), module: moduleSchema.nullable() });

export type ScenarioRef = z.infer<typeof scenarioRefSchema>;

/** The option as written to a reproducer: only what a replay needs. */
export function scheduleForFile(s: ScheduleOption): ScheduleOption {
  return s.mode === 'explore' ? { mode: 'explore', decisions: s.decisions.map(([p, t]) => [p, t] as const) } : s;
}
