/**
 * `lab explore <scenario | ./story.ts#name> --preemptions K`: systematic exploration of a
 * story's interleavings (explore.ts). Prints schedules explored and pruned, virtual and
 * wall time, and every violation with the schedule that replays it; each violation's
 * reproducer is written (`lab replay` runs it). Exit 0 when nothing was found, 1 on a
 * violation, 2 on bad input. Wall time is read here only: the explorer and the model see
 * a `shouldStop` callback.
 */
import { writeFileSync } from 'node:fs';
import { relative, resolve, dirname } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { PROFILE_NAMES, profileByName, type ProfileName } from '../../kernel-model/index.ts';
import { DEFAULT_RUN_CONFIG } from '../fuzz/run.ts';
import type { Reproducer } from '../fuzz/fuzz.ts';
import { checkBatching, checkStrategyParams, moduleParamDocs, parseSets, shellQuote, type ParamDoc } from '../params.ts';
import { displayPath, isModuleRef, loadModuleExport, loadStrategy, type LoadedStrategy } from '../user-module.ts';
import { UsageError, checkOutputFile, type CliIo } from '../cli-errors.ts';
import type { ScenarioDefinition } from '../scenario.ts';
import { explore, formatExplore, type ExploreReport, type FoundViolation } from './explore.ts';
import { exploreScenarioByName, exploreScenarioNames, isScenarioDefinition, scenarioTarget } from './targets.ts';

function parseInt(what: string, lo: number, hi: number) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) < lo || Number(v) > hi) throw new InvalidArgumentError(`${what} must be an integer from ${lo} to ${hi}, got '${v}'`);
    return Number(v);
  };
}

function parseSeed(v: string): number {
  if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v)) || Math.abs(Number(v)) > 2 ** 31 - 1) {
    throw new InvalidArgumentError(`seed must be an integer in [-2147483647, 2147483647], got '${v}'`);
  }
  return Number(v);
}

function parseProfile(v: string): ProfileName {
  const p = profileByName(v);
  if ('error' in p) throw new InvalidArgumentError(p.error);
  return p.name;
}

interface ExploreCliOptions {
  preemptions: number;
  maxSchedules: number;
  time: number;
  reduction: boolean;
  json?: boolean;
  profile?: ProfileName;
  driver?: string;
  set: string[];
  seed: number;
  out?: string;
}

/** The reproducer of one violation (version 3, a story): see scenarios/explore/reproducer.ts. */
function reproducerFor(
  def: ScenarioDefinition, story: { path: string; export: string; sha256: string } | null, strategy: LoadedStrategy | null,
  driver: string, profile: ProfileName, seed: number, sets: readonly string[], v: FoundViolation, file: string,
): Reproducer {
  const rel = (abs: string) => {
    let p = relative(dirname(resolve(file)), abs);
    if (!p.startsWith('.') && !p.startsWith('/')) p = `./${p}`;
    return p;
  };
  return {
    version: 3, driver: strategy ? strategy.def.name : driver,
    module: strategy ? { path: rel(strategy.file), export: strategy.exportName, sha256: strategy.sha256 } : null,
    sets: [...sets],
    schedule: { mode: 'explore', decisions: v.schedule.decisions },
    scenario: { name: def.name, module: story ? { ...story, path: rel(story.path) } : null },
    profile, simSeed: seed, preempt: false, frames: DEFAULT_RUN_CONFIG.frames,
    commandPhaseNs: DEFAULT_RUN_CONFIG.commandPhaseNs, epilogueNs: DEFAULT_RUN_CONFIG.epilogueNs, maxEvents: DEFAULT_RUN_CONFIG.maxEvents,
    found: null, commands: [],
  };
}

export function registerExploreCommand(program: Command, io: CliIo, setExit: (code: number) => void): void {
  program
    .command('explore')
    .description('explore a story\'s interleavings systematically (preemption bounding, sleep-set reduction); every violation with the schedule that replays it')
    .argument('<target>', 'a scenario (lab list, or mirror-seq-race) or your story: ./file.ts[#export] (a ScenarioDefinition)')
    .option('--preemptions <k>', 'the preemption bound K (schedules of 0, 1, ..., K preemptions, in that order)', parseInt('--preemptions', 0, 10), 2)
    .option('--max-schedules <n>', 'stop after this many runs', parseInt('--max-schedules', 1, 10_000_000), 10_000)
    .option('--time <seconds>', 'stop after this much wall time', parseInt('--time', 1, 86_400), 300)
    .option('--no-reduction', 'explore without the sleep-set reduction (every schedule within the bound)')
    .option('--json', 'print one JSON object (the counts, the violations with their schedules and reproducer files)')
    .option('--profile <name>', `kernel profile (default: the story's): ${PROFILE_NAMES.join(', ')}`, parseProfile)
    .option('--driver <name>', 'a driver of the story, or your strategy: ./file.ts[#export] (defineStrategy)')
    .option('--set <key=value>', 'override a documented parameter (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--seed <n>', 'the story\'s seed (addresses and arrival times; 1 is the story as told)', parseSeed, 1)
    .option('--out <prefix>', 'reproducer files are <prefix>-<n>.json (default explore-<target>)')
    .action(async (targetArg: string, opts: ExploreCliOptions) => {
      let def: ScenarioDefinition;
      let story: { path: string; export: string; sha256: string } | null = null;
      if (isModuleRef(targetArg)) {
        const m = await loadModuleExport(targetArg, process.cwd(), 'story', 'a ScenarioDefinition', isScenarioDefinition);
        def = m.def;
        story = { path: m.file, export: m.exportName, sha256: m.sha256 };
      } else {
        const d = exploreScenarioByName(targetArg);
        if (!d) throw new UsageError(`unknown scenario '${targetArg}'; valid: ${exploreScenarioNames().join(', ')}, or ./file.ts#export`);
        def = d;
      }
      const strategy = opts.driver !== undefined && isModuleRef(opts.driver) ? await loadStrategy(opts.driver) : null;
      const driver = strategy ? strategy.def.like : opts.driver ?? def.defaultDriver;
      if (!def.drivers.includes(driver)) {
        throw new UsageError(strategy
          ? `scenario '${def.name}' has no '${driver}' driver for ${strategy.def.name} to stand in for; its drivers: ${def.drivers.join(', ')}`
          : `scenario '${def.name}' has no driver '${driver}'; valid: ${def.drivers.join(', ')}, or ./file.ts#export`);
      }
      const docs: ParamDoc[] = [...(def.params ?? []), ...(strategy ? moduleParamDocs('strategy', strategy.file, strategy.def.params) : [])];
      const params = parseSets(opts.set, docs);
      if ('error' in params) throw new UsageError(params.error);
      const bad = checkBatching(params.values) ?? (strategy ? checkStrategyParams(strategy.def, strategy.file, params.values) : null);
      if (bad) throw new UsageError(bad);
      const prefix = opts.out ?? `explore-${def.name}`;
      checkOutputFile(`${prefix}-1.json`, '--out');
      const profile = opts.profile ?? def.defaultProfile;
      const target = scenarioTarget(def, { seed: opts.seed, profile, driver, params: params.values, ...(strategy ? { strategy } : {}) });
      const started = Date.now();
      const report: ExploreReport = explore(target, {
        preemptions: opts.preemptions, maxSchedules: opts.maxSchedules, reduction: opts.reduction,
        shouldStop: () => Date.now() - started > opts.time * 1000,
      });
      const wallMs = Date.now() - started;
      if (story) report.target = `${def.name} (${displayPath(story.path)})`;
      const files: string[] = [];
      report.violations.forEach((v, i) => {
        const file = `${prefix}-${i + 1}.json`;
        const rep = reproducerFor(def, story, strategy, driver, profile, opts.seed, opts.set, v, file);
        writeFileSync(file, JSON.stringify(rep, null, 2) + '\n');
        files.push(file);
      });
      if (opts.json) {
        io.out(JSON.stringify({ ...report, wallMs, reproducers: files }));
      } else {
        for (const l of formatExplore(report, wallMs, files.map((f) => shellQuote(f)))) io.out(l);
      }
      setExit(report.violations.length > 0 ? 1 : 0);
    });
}
