/**
 * `lab new strategy NAME [--from BASE] [--dir DIR]`: write NAME.ts (a commented strategy
 * module that starts as the reference BASE) and NAME.test.ts (an ava test using
 * notifier-lab/testing) into DIR. Inside this repository the files import it by relative
 * path; anywhere else by the package's sub-paths (notifier-lab/driver, /kernel, /device,
 * /testing), as a dependent project does. Existing files are never overwritten.
 */
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  PACKAGE_IMPORTS, TEMPLATE_BASES, strategyTemplate, testTemplate, type TemplateBase, type TemplateImports,
} from './templates.ts';

/** Bad input for `lab new`: one line, exit 2. */
export class NewStrategyError extends Error {}

/** The package's root directory (where its package.json is). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

const NAME = /^[a-z][a-z0-9-]{0,62}$/;

function inside(dir: string, root: string): boolean {
  const rel = relative(root, dir);
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith(sep) && !/^[A-Za-z]:/.test(rel));
}

function relImport(fromDir: string, target: string): string {
  const r = relative(fromDir, target).split(sep).join('/');
  return r.startsWith('.') ? r : `./${r}`;
}

/** How files written into `dir` import notifier-lab. */
export function importsFor(dir: string, root = PACKAGE_ROOT): TemplateImports {
  if (!inside(resolve(dir), root) || inside(resolve(dir), join(root, 'node_modules'))) return PACKAGE_IMPORTS;
  return {
    driver: relImport(dir, join(root, 'driver', 'index.ts')),
    kernel: relImport(dir, join(root, 'kernel-model', 'index.ts')),
    device: relImport(dir, join(root, 'device', 'index.ts')),
    testing: relImport(dir, join(root, 'testing', 'index.ts')),
  };
}

export interface NewStrategyOptions {
  name: string;
  from?: string;
  dir?: string;
  /** How the files import notifier-lab (default: `importsFor(dir)`). */
  imports?: TemplateImports;
}

export interface NewStrategyResult {
  strategyFile: string;
  testFile: string;
  base: TemplateBase;
}

/** Check the input, then write both files; throws NewStrategyError (one line) on bad input. */
export function newStrategy(opts: NewStrategyOptions): NewStrategyResult {
  if (!NAME.test(opts.name)) {
    throw new NewStrategyError(`strategy name must be lower-case letters, digits and dashes, starting with a letter (at most 63), got '${opts.name}'`);
  }
  const base = (opts.from ?? 'odp') as TemplateBase;
  if (!TEMPLATE_BASES.includes(base)) throw new NewStrategyError(`--from must be one of ${TEMPLATE_BASES.join(', ')}, got '${opts.from}'`);
  const dir = resolve(opts.dir ?? '.');
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new NewStrategyError(`--dir ${opts.dir}: not a directory`);
  const strategyFile = join(dir, `${opts.name}.ts`);
  const testFile = join(dir, `${opts.name}.test.ts`);
  for (const f of [strategyFile, testFile]) {
    if (existsSync(f)) throw new NewStrategyError(`${relative(process.cwd(), f) || f} exists; remove it or choose another name (lab new never overwrites)`);
  }
  const im = opts.imports ?? importsFor(dir);
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(strategyFile, strategyTemplate(base, opts.name, im), { flag: 'wx' });
    writeFileSync(testFile, testTemplate(base, opts.name, im), { flag: 'wx' });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new NewStrategyError(`cannot write into ${opts.dir ?? '.'}: ${e.code ?? e.message}`);
  }
  return { strategyFile, testFile, base };
}
