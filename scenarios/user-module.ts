import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isAbsolute, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  isBatchPolicyDefinition, isCachePolicyDefinition, isStrategyDefinition, type BatchPolicyDefinition, type CachePolicyDefinition, type StrategyDefinition,
} from '../driver/index.ts';
import { isVariantDefinition, type KernelVariant } from '../kernel-model/index.ts';

/**
 * The module loader: a driver author's own strategy or batching policy, named where the
 * tools name a built-in one, as `./path/file.ts` (its default export) or
 * `./path/file.ts#name` (a named export). Loaded through the TypeScript loader the CLI,
 * its sweep workers and the tests already run under (tsx), so the author writes plain
 * TypeScript. Every way a module can be wrong (missing file, missing export, an export
 * that is not a definition, a syntax error, an exception while it loads) is one line
 * naming the file: a `ModuleError`.
 */
export class ModuleError extends Error {}

export interface ModuleRef {
  /** As written (what reproducers, replay lines and sweep results keep). */
  ref: string;
  /** Absolute path of the file. */
  file: string;
  /** `default` unless the reference names one after `#`. */
  exportName: string;
}

export interface LoadedModule<D> extends ModuleRef {
  /** sha256 of the file's content when it was loaded (hex). */
  sha256: string;
  def: D;
}

export type LoadedStrategy = LoadedModule<StrategyDefinition>;
export type LoadedPolicy = LoadedModule<BatchPolicyDefinition>;
export type LoadedVariant = LoadedModule<KernelVariant>;
type AnyDefinition = StrategyDefinition | BatchPolicyDefinition | KernelVariant;

const SOURCE = /\.(ts|mts|cts|js|mjs|cjs)$/;

/** Whether a name is a module reference rather than a built-in's name. */
export function isModuleRef(s: string): boolean {
  const path = s.split('#')[0] ?? '';
  return s.startsWith('./') || s.startsWith('../') || s.startsWith('/') || SOURCE.test(path);
}

/** Split `path[#name]` and resolve the path against `baseDir`. */
export function parseModuleRef(ref: string, baseDir: string): ModuleRef {
  const hash = ref.indexOf('#');
  const path = hash < 0 ? ref : ref.slice(0, hash);
  const exportName = hash < 0 ? 'default' : ref.slice(hash + 1);
  if (!path) throw new ModuleError(`'${ref}' names no file; a module reference is ./path/file.ts or ./path/file.ts#export`);
  if (hash >= 0 && !/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(exportName)) {
    throw new ModuleError(`'${ref}': '${exportName}' is not an export name; a module reference is ./path/file.ts or ./path/file.ts#export`);
  }
  return { ref, file: isAbsolute(path) ? path : resolve(baseDir, path), exportName };
}

/** The file as messages show it: relative to the working directory when that is shorter. */
export function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && rel.length < file.length ? rel : file;
}

export function fileSha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** The first line of what went wrong while a module loaded, TypeScript errors reduced to their position and message. */
function loadFailure(err: unknown, file: string): string {
  const text = err instanceof Error ? err.message : String(err);
  // esbuild (through tsx): "Transform failed with 1 error:\n/abs/x.ts:3:7: ERROR: Expected ";" but found "x""
  const m = /:(\d+):(\d+): ERROR: (.*)/.exec(text);
  if (m) return `TypeScript syntax error at line ${m[1]}, column ${m[2]}: ${m[3]}`;
  const first = text.split('\n').find((l) => l.trim()) ?? 'failed';
  const name = err instanceof Error && err.name !== 'Error' ? `${err.name}: ` : '';
  return `failed to load: ${name}${first.replaceAll(file, displayPath(file))}`;
}

async function importFile(r: ModuleRef): Promise<Record<string, unknown>> {
  const shown = displayPath(r.file);
  let st;
  try {
    st = statSync(r.file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ModuleError(`${shown}: ${code === 'ENOENT' ? 'no such file' : `cannot read (${code ?? String(err)})`}`);
  }
  if (!st.isFile()) throw new ModuleError(`${shown}: not a file`);
  if (!SOURCE.test(r.file)) throw new ModuleError(`${shown}: not a TypeScript or JavaScript module (.ts, .mts, .js, .mjs)`);
  try {
    return (await import(pathToFileURL(r.file).href)) as Record<string, unknown>;
  } catch (err) {
    throw new ModuleError(`${shown}: ${loadFailure(err, r.file)}`);
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'function') return 'a function';
  if (typeof v === 'object') {
    const kind = (v as { kind?: unknown }).kind;
    if (kind === 'notifier-lab/strategy') return 'a strategy';
    if (kind === 'notifier-lab/batch-policy') return 'a batching policy';
    if (kind === 'notifier-lab/cache-policy') return 'a registration-cache policy';
    if (kind === 'notifier-lab/variant') return 'a kernel variant';
    return `an object with keys ${Object.keys(v).slice(0, 6).join(', ') || '(none)'}`;
  }
  return `${typeof v} ${JSON.stringify(v)}`;
}

async function loadDefinition<D>(
  ref: string, baseDir: string, what: string, helper: string, is: (v: unknown) => v is D,
): Promise<LoadedModule<D>> {
  const r = parseModuleRef(ref, baseDir);
  const mod = await importFile(r);
  const shown = displayPath(r.file);
  const candidates = Object.keys(mod).filter((k) => is(mod[k])).sort((a, b) => (a === 'default' ? -1 : b === 'default' ? 1 : a.localeCompare(b)));
  const list = candidates.length ? `; its ${what} exports: ${candidates.map((k) => (k === 'default' ? 'default' : `#${k}`)).join(', ')}` : `; it exports no ${what} (make one with ${helper})`;
  if (!Object.hasOwn(mod, r.exportName) || mod[r.exportName] === undefined) {
    throw new ModuleError(`${shown} has no ${r.exportName === 'default' ? 'default export' : `export '${r.exportName}'`}${list}`);
  }
  const v = mod[r.exportName];
  if (!is(v)) {
    throw new ModuleError(`${shown}${r.exportName === 'default' ? ' (default export)' : `#${r.exportName}`} is ${describe(v)}, not a ${what} made by ${helper}${list}`);
  }
  let sha256: string;
  try {
    sha256 = fileSha256(r.file);
  } catch (err) {
    throw new ModuleError(`${shown}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return { ...r, sha256, def: v };
}

/** Every module loaded in this process, by reference as written: what synchronous code (a scenario's set-up) looks up. */
const registry = new Map<string, LoadedModule<AnyDefinition>>();

function remember<D extends AnyDefinition>(m: LoadedModule<D>): LoadedModule<D> {
  const had = registry.get(m.ref);
  if (had && (had.file !== m.file || had.exportName !== m.exportName)) {
    throw new ModuleError(`'${m.ref}' names ${displayPath(had.file)} and ${displayPath(m.file)} in one run; use paths that name one file`);
  }
  registry.set(m.ref, m);
  return m;
}

/** Load a strategy module (`defineStrategy`). */
export async function loadStrategy(ref: string, baseDir = process.cwd()): Promise<LoadedStrategy> {
  return remember(await loadDefinition(ref, baseDir, 'strategy', 'defineStrategy', isStrategyDefinition));
}

/** Load a batching-policy module (`defineBatchPolicy`). */
export async function loadBatchPolicy(ref: string, baseDir = process.cwd()): Promise<LoadedPolicy> {
  return remember(await loadDefinition(ref, baseDir, 'batching policy', 'defineBatchPolicy', isBatchPolicyDefinition));
}

/** Load a registration-cache policy module (`defineCachePolicy`, driver/rcache-define.ts). */
export async function loadCachePolicy(ref: string, baseDir = process.cwd()): Promise<LoadedModule<CachePolicyDefinition>> {
  return loadDefinition(ref, baseDir, 'registration-cache policy', 'defineCachePolicy', isCachePolicyDefinition);
}

/** Load a kernel variant module (`defineVariant`): a proposal of the user's, run like the seeds' ones. */
export async function loadVariant(ref: string, baseDir = process.cwd()): Promise<LoadedVariant> {
  return remember(await loadDefinition(ref, baseDir, 'kernel variant', 'defineVariant', isVariantDefinition));
}

/** A policy module loaded earlier in this process, by its reference as written. */
export function loadedBatchPolicy(ref: string): LoadedPolicy | undefined {
  const m = registry.get(ref);
  return m && isBatchPolicyDefinition(m.def) ? (m as LoadedPolicy) : undefined;
}

/** A strategy module loaded earlier in this process, by its reference as written. */
export function loadedStrategy(ref: string): LoadedStrategy | undefined {
  const m = registry.get(ref);
  return m && isStrategyDefinition(m.def) ? (m as LoadedStrategy) : undefined;
}

/**
 * Whether the file behind a loaded module changed since `sha256` was taken: null when it
 * did not, else one line saying so (for replay).
 */
export function changedSince(file: string, sha256: string): string | null {
  let now: string;
  try {
    now = fileSha256(file);
  } catch {
    return `${displayPath(file)} is gone since this reproducer was written`;
  }
  return now === sha256 ? null : `${displayPath(file)} changed since this reproducer was written (sha256 ${sha256.slice(0, 12)}, now ${now.slice(0, 12)}); replaying the current file`;
}

/**
 * Load any kind of definition a tool accepts by module reference (`lab explore` loads a
 * story this way), with the same one-line errors as strategies and policies.
 */
export async function loadModuleExport<D>(ref: string, baseDir: string, what: string, helper: string, is: (v: unknown) => v is D): Promise<LoadedModule<D>> {
  return loadDefinition(ref, baseDir, what, helper, is);
}
