/**
 * `lab replay` of a story `lab explore` explored (reproducer version 3 with a `scenario`):
 * load the story (by name, or the user's module relative to the reproducer), the strategy
 * module if the run used one, parse the `--set`s again, run it under the recorded schedule
 * and say whether the violation is back.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { PROFILE_NAMES, describeSchedule, type ProfileName, type ScheduleOption } from '../../kernel-model/index.ts';
import { renderReport } from '../report.ts';
import { moduleParamDocs, parseSets, shellQuote, type ParamDoc } from '../params.ts';
import { changedSince, loadModuleExport, loadStrategy, type LoadedStrategy } from '../user-module.ts';
import { UsageError, type CliIo } from '../cli-errors.ts';
import type { ScenarioDefinition } from '../scenario.ts';
import { scenarioRefSchema, scheduleJsonSchema } from './reproducer.ts';
import { exploreScenarioByName, exploreScenarioNames, isScenarioDefinition, runScenarioUnder, scenarioViolations } from './targets.ts';

const scenarioReproducerSchema = z.object({
  version: z.literal(3),
  driver: z.string().min(1),
  profile: z.enum(PROFILE_NAMES as [ProfileName, ...ProfileName[]]),
  simSeed: z.number().int(),
  module: z.object({ path: z.string().min(1), export: z.string().min(1), sha256: z.string() }).nullable(),
  sets: z.array(z.string()),
  schedule: scheduleJsonSchema.nullable(),
  scenario: scenarioRefSchema,
});

export type ScenarioReproducer = z.infer<typeof scenarioReproducerSchema>;

/** A module reference as written in a reproducer: `path` or `path#export`. */
function refOf(m: { path: string; export: string }): string {
  return `${m.path}${m.export === 'default' ? '' : `#${m.export}`}`;
}

/** Load the story a reproducer names. */
export async function loadStory(ref: ScenarioReproducer['scenario'], baseDir: string): Promise<{ def: ScenarioDefinition; changed: string | null }> {
  if (!ref.module) {
    const def = exploreScenarioByName(ref.name);
    if (!def) throw new UsageError(`unknown scenario '${ref.name}'; valid: ${exploreScenarioNames().join(', ')}`);
    return { def, changed: null };
  }
  const m = await loadModuleExport(refOf(ref.module), baseDir, 'story', 'a ScenarioDefinition', isScenarioDefinition);
  return { def: m.def, changed: changedSince(m.file, ref.module.sha256) };
}

/**
 * Replay `file` if it is a story reproducer: the exit code (1 when the run shows a
 * violation, 0 when not), or null when the file is something else (a fuzz reproducer).
 */
export async function replayScenarioReproducer(file: string, io: CliIo): Promise<number | null> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return null; // the fuzz reproducer path reports unreadable or non-JSON files
  }
  const obj = json as { version?: unknown; scenario?: unknown };
  if (typeof obj !== 'object' || obj === null || obj.version !== 3 || obj.scenario == null) return null;
  const r = scenarioReproducerSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new UsageError(`${file}: not a story reproducer: ${issue ? `${issue.path.join('.') || '(top)'}: ${issue.message}` : 'invalid'}`);
  }
  const rep = r.data;
  const base = dirname(resolve(file));
  const { def, changed } = await loadStory(rep.scenario, base);
  if (changed) io.err(`note: ${changed}`);
  let strategy: LoadedStrategy | undefined;
  if (rep.module) {
    strategy = await loadStrategy(refOf(rep.module), base);
    const moved = changedSince(strategy.file, rep.module.sha256);
    if (moved) io.err(`note: ${moved}`);
  }
  const docs: ParamDoc[] = [...(def.params ?? []), ...(strategy ? moduleParamDocs('strategy', strategy.file, strategy.def.params) : [])];
  const params = parseSets(rep.sets, docs);
  if ('error' in params) throw new UsageError(`${file}: ${params.error}`);
  if (!strategy && !def.drivers.includes(rep.driver)) throw new UsageError(`${file}: scenario '${def.name}' has no driver '${rep.driver}'; valid: ${def.drivers.join(', ')}`);
  const schedule: ScheduleOption = rep.schedule ?? { mode: 'plain' };
  const driver = strategy ? strategy.def.like : rep.driver;
  io.out(`replay ${file}: scenario ${def.name}, driver ${strategy ? `${strategy.def.name} (${rep.module!.path})` : driver}, profile ${rep.profile}, seed ${rep.simSeed}, schedule ${describeSchedule(schedule)}`);
  const report = runScenarioUnder(def, { seed: rep.simSeed, profile: rep.profile, driver, params: params.values, ...(strategy ? { strategy } : {}) }, schedule);
  for (const l of renderReport(report)) io.out(l);
  const found = scenarioViolations(def, report);
  io.out('');
  if (found.length === 0) io.out('the explored violation did not show in this run');
  for (const v of found) io.out(`violation ${v.id}: ${v.message.split('\n')[0]}`);
  io.out(`  npx lab replay ${shellQuote(file)}`);
  return found.length > 0 ? 1 : 0;
}
