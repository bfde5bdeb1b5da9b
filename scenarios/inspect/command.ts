/**
 * `lab inspect <scenario|reproducer|workload:trace> --at <instant> [--what ...] [--json] [--diff <instant>]`:
 * re-run deterministically to an instant and print the state of the world there, or what
 * changed between two instants. Bad input (an unknown scenario, an unparsable instant, an
 * instant past the run's end) is one line and exit code 2.
 */
import { existsSync, readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { PROFILE_NAMES, profileByName, type ProfileName } from '../../kernel-model/index.ts';
import { SCENARIOS, scenarioByName } from '../catalogue.ts';
import { parseSets } from '../params.ts';
import { parseReproducer } from '../fuzz/index.ts';
import { UsageError } from '../cli-errors.ts';
import { SHIPPED_TRACES, loadTrace, shippedTracePath, workloadScenario } from '../workloads/index.ts';
import { INSTANT_FORMS, parseInstant, type InstantSpec } from './at.ts';
import { captureInstants, type InspectTarget } from './capture.ts';
import { SECTIONS, type Section } from './snapshot.ts';
import { filterSnapshot, renderSnapshot } from './render.ts';
import { diffSnapshots, renderDiff } from './diff.ts';

export interface TargetOptions {
  seed: number;
  profile?: ProfileName;
  driver?: string;
  set: string[];
}

/** A scenario by name or a reproducer file; `{ error }` says why neither. */
export function resolveTarget(name: string, opts: TargetOptions): InspectTarget | { error: string } {
  if (name === 'workload' || name.startsWith('workload:')) return resolveWorkload(name, opts);
  const def = scenarioByName(name);
  if (def) {
    const driver = opts.driver ?? def.defaultDriver;
    if (!def.drivers.includes(driver)) return { error: `scenario '${def.name}' has no driver '${driver}'; valid: ${def.drivers.join(', ')}` };
    const params = parseSets(opts.set, def.params ?? []);
    if ('error' in params) return { error: params.error };
    return { kind: 'scenario', name: def.name, def, seed: opts.seed, profile: opts.profile ?? def.defaultProfile, driver, params: params.values };
  }
  if (name.endsWith('.json') || existsSync(name)) {
    let text: string;
    try {
      text = readFileSync(name, 'utf8');
    } catch (err) {
      return { error: `cannot read ${name}: ${err instanceof Error ? err.message : String(err)}` };
    }
    const parsed = parseReproducer(text);
    if ('error' in parsed) return { error: `${name}: ${parsed.error}` };
    if (opts.driver || opts.profile || opts.set.length) return { error: `${name}: a reproducer fixes its driver, profile and parameters; drop --driver, --profile and --set` };
    return { kind: 'reproducer', name, rep: parsed.rep, target: parsed.target };
  }
  return { error: `unknown scenario or reproducer '${name}'; scenarios: ${SCENARIOS.map((s) => s.name).join(', ')}; or a reproducer .json written by lab fuzz` };
}

/**
 * `workload:<trace>`: a captured program (scenarios/workloads/) replayed as `lab workload`
 * replays it, under `--driver` (pinned, holdoff or odp; the cache that driver gets by default).
 */
function resolveWorkload(name: string, opts: TargetOptions): InspectTarget | { error: string } {
  const arg = name.slice('workload:'.length);
  const shipped = Object.keys(SHIPPED_TRACES).join(', ');
  if (!arg) return { error: `'${name}': name a trace, workload:<file or shipped trace> (shipped: ${shipped})` };
  const path = arg in SHIPPED_TRACES ? shippedTracePath(arg as keyof typeof SHIPPED_TRACES) : arg;
  if (!existsSync(path)) return { error: `'${name}': no such trace file; a workload is workload:<trace file> or one of the shipped traces: ${shipped}` };
  let trace;
  try {
    trace = loadTrace(path);
  } catch (err) {
    return { error: `${arg}: ${err instanceof Error ? err.message : String(err)}` };
  }
  const def = workloadScenario(trace, name, {});
  const driver = opts.driver ?? def.defaultDriver;
  if (!def.drivers.includes(driver)) return { error: `workload '${arg}' has no driver '${driver}'; valid: ${def.drivers.join(', ')}` };
  const params = parseSets(opts.set, def.params ?? []);
  if ('error' in params) return { error: params.error };
  return { kind: 'scenario', name, def, seed: opts.seed, profile: opts.profile ?? def.defaultProfile, driver, params: params.values };
}

export function parseWhat(v: string): Set<Section> {
  const parts = v.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = parts.filter((p) => !(SECTIONS as readonly string[]).includes(p));
  if (bad.length || parts.length === 0) throw new InvalidArgumentError(`unknown section '${bad[0] ?? v}'; valid: ${SECTIONS.join(', ')} (comma-separated)`);
  return new Set(parts as Section[]);
}

function parseAt(v: string): InstantSpec {
  const r = parseInstant(v);
  if ('error' in r) throw new InvalidArgumentError(r.error);
  return r;
}

function parseSeed(v: string): number {
  if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new InvalidArgumentError(`seed must be an integer, got '${v}'`);
  return Number(v);
}

function parseProfile(v: string): ProfileName {
  const p = profileByName(v);
  if ('error' in p) throw new InvalidArgumentError(p.error);
  return p.name;
}

interface InspectOptions extends TargetOptions {
  at: InstantSpec;
  diff?: InstantSpec;
  what?: Set<Section>;
  json?: boolean;
}

export function registerInspectCommand(program: Command, out: (line: string) => void, setExit: (code: number) => void = (c) => (process.exitCode = c)): void {
  const cmd = program
    .command('inspect')
    .description('re-run a scenario, fuzz reproducer or captured workload to an instant and print the world there: page tables, device MRs, notifiers, locks, pins')
    .argument('<target>', 'a scenario name (lab list), a reproducer .json written by lab fuzz, or workload:<trace> (a trace file or a shipped trace)')
    .requiredOption('--at <instant>', INSTANT_FORMS, parseAt)
    .option('--diff <instant>', 'print what changed from --at to this instant instead', parseAt)
    .option('--what <sections>', `sections to show, comma-separated: ${SECTIONS.join(', ')} (default all)`, parseWhat)
    .option('--json', 'print the snapshot (or the two snapshots and their changes) as JSON')
    .option('--seed <n>', 'simulation seed (scenarios)', parseSeed, 1)
    .option('--profile <name>', `kernel profile (scenarios): ${PROFILE_NAMES.join(', ')}`, parseProfile)
    .option('--driver <name>', 'driver variant (scenarios; lab list shows each scenario\'s)')
    .option('--set <key=value>', 'override a documented parameter (scenarios; repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[]);
  cmd.action((name: string, opts: InspectOptions) => {
    const fail = (message: string): never => {
      throw new UsageError(message);
    };
    const target = resolveTarget(name, opts);
    if ('error' in target) return fail(target.error);
    const what = opts.what ?? new Set(SECTIONS);
    const instants = opts.diff ? [opts.at, opts.diff] : [opts.at];
    const { snapshots, errors } = captureInstants(target, instants);
    if (errors.length) return fail(errors[0] as string);
    const [a, b] = snapshots;
    if (!a) return fail('no snapshot');
    if (opts.diff && b) {
      if (opts.json) out(JSON.stringify({ from: filterSnapshot(a, what), to: filterSnapshot(b, what), changes: diffSnapshots(a, b, what).map(({ lines: _l, ...c }) => c) }));
      else for (const l of renderDiff(a, b, target.name, what)) out(l);
    } else if (opts.json) {
      out(JSON.stringify(filterSnapshot(a, what)));
    } else {
      for (const l of renderSnapshot(a, target.name, what)) out(l);
    }
    setExit(0);
  });
}
