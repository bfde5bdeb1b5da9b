import type { Command } from 'commander';
import {
  DRIVER_PROPOSALS, PROFILE_NAMES, VARIANTS, VARIANT_NAMES, applyVariants, profileByName, variantByName, PROFILES,
  type KernelVariant, type ProfileName,
} from '../../kernel-model/index.ts';
import { SCENARIOS, scenarioByName } from '../catalogue.ts';
import { UsageError, type CliIo } from '../cli-errors.ts';
import { isModuleRef, loadVariant, displayPath } from '../user-module.ts';
import { renderCompare, runCompare, type CompareRowSpec } from './compare.ts';

const ACCEPTED = `none, ${VARIANT_NAMES.join(', ')}, a+b to combine, or ./file.ts#export (defineVariant)`;

/**
 * One `--variant`/`--variants` entry (`hubbard-flag`, `read-pin-exclusive+fork-seqcount`,
 * `./mine.ts#flagAndWait`, `none`) as variant definitions; user modules are loaded.
 * Unknown names are a UsageError naming the accepted ones.
 */
export async function resolveVariantSpec(spec: string, modules: Record<string, string>): Promise<KernelVariant[]> {
  if (spec === 'none') return [];
  const out: KernelVariant[] = [];
  for (const part of spec.split('+')) {
    if (part === '') throw new UsageError(`empty variant name in '${spec}'; accepted: ${ACCEPTED}`);
    if (isModuleRef(part)) {
      const m = await loadVariant(part);
      if (Object.hasOwn(VARIANTS, m.def.name)) throw new UsageError(`${displayPath(m.file)}: variant name '${m.def.name}' is a built-in variant's; name yours otherwise`);
      modules[m.def.name] = `${displayPath(m.file)}#${m.exportName}`;
      out.push(m.def);
      continue;
    }
    const v = variantByName(part);
    if ('error' in v) throw new UsageError(`unknown variant '${part}'; accepted: ${ACCEPTED}`);
    out.push(v);
  }
  return out;
}

/** The refusal of variants that cannot run on a profile, as a UsageError. */
export function checkVariantsOn(profile: ProfileName, variants: readonly KernelVariant[], label: string): void {
  const p = applyVariants(PROFILES[profile], variants);
  if ('error' in p) throw new UsageError(`variant '${label}' on ${profile}: ${p.error}`);
}

function splitList(v: string, what: string): string[] {
  const items = v.split(',').map((s) => s.trim());
  if (items.some((s) => s === '')) throw new UsageError(`${what} takes a comma-separated list with no empty entries, got '${v}'`);
  return items;
}

/** `lab compare` and `lab variants`. */
export function registerCompareCommands(program: Command, io: CliIo, setExit: (code: number) => void): void {
  program
    .command('variants')
    .description('list the kernel variants under study (the seed threads\' proposals) and the driver proposals beside them')
    .action(() => {
      for (const v of Object.values(VARIANTS)) {
        io.out(`${v.name.padEnd(20)} proposal, ${v.speaker}, ${v.date}, seeds/${v.seedFile}`);
        io.out(`${''.padEnd(20)} ${v.summary}`);
      }
      for (const d of DRIVER_PROPOSALS) {
        io.out(`${d.name.padEnd(20)} driver proposal, ${d.speaker}, ${d.date}, seeds/${d.seedFile}`);
        io.out(`${''.padEnd(20)} ${d.summary}; run: ${d.run}`);
      }
    });

  program
    .command('compare')
    .description('run one story under several kernel variants (and profiles) and print one table; exit 0 when every row is as its thread predicted')
    .argument('<story>', 'a scenario name (lab list)')
    .option('--variants <list>', `comma-separated: ${ACCEPTED}`, 'none')
    .option('--profile <name>', `kernel profile (default: the story's): ${PROFILE_NAMES.join(', ')}`)
    .option('--profiles <list>', 'comma-separated profiles: one row per profile and variant')
    .option('--driver <name>', 'a driver of the story (default: its own)')
    .option('--seed <n>', 'simulation seed', '1')
    .option('--set <key=value>', 'override a documented parameter (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--json', 'print the comparison as one JSON object')
    .action(async (story: string, opts: { variants: string; profile?: string; profiles?: string; driver?: string; seed: string; set: string[]; json?: boolean }) => {
      const def = scenarioByName(story);
      if (!def) throw new UsageError(`unknown story '${story}'; valid: ${SCENARIOS.map((s) => s.name).join(', ')}`);
      if (!/^-?\d+$/.test(opts.seed) || !Number.isSafeInteger(Number(opts.seed))) throw new UsageError(`--seed must be an integer, got '${opts.seed}'`);
      if (opts.profile !== undefined && opts.profiles !== undefined) throw new UsageError('--profile and --profiles: give one of them');
      const profileNames = opts.profiles !== undefined ? splitList(opts.profiles, '--profiles') : [opts.profile ?? def.defaultProfile];
      const profiles = profileNames.map((n) => {
        const p = profileByName(n);
        if ('error' in p) throw new UsageError(p.error);
        return p.name;
      });
      const driver = opts.driver ?? def.defaultDriver;
      if (!def.drivers.includes(driver)) throw new UsageError(`story '${def.name}' has no driver '${driver}'; valid: ${def.drivers.join(', ')}`);
      const modules: Record<string, string> = {};
      const specs: { label: string; variants: KernelVariant[] }[] = [];
      for (const label of splitList(opts.variants, '--variants')) specs.push({ label, variants: await resolveVariantSpec(label, modules) });
      const rows: CompareRowSpec[] = [];
      for (const profile of profiles) {
        for (const s of specs) {
          checkVariantsOn(profile, s.variants, s.label);
          rows.push({ profile, label: s.label, variants: s.variants });
        }
      }
      let result;
      try {
        result = runCompare(def, rows, { driver, seed: Number(opts.seed), sets: opts.set, variantModules: modules });
      } catch (err) {
        // A bad --set is input, not a failure of the comparison.
        throw new UsageError(err instanceof Error ? err.message : String(err));
      }
      if (opts.json) io.out(JSON.stringify(result));
      else for (const l of renderCompare(result)) io.out(l);
      setExit(result.ok ? 0 : 1);
    });
}
