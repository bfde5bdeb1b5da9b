import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ModuleError } from './user-module.ts';

/**
 * The CLI's one error wrapper: whatever goes wrong in a command (bad input, a file
 * operation, a user module, a model error) becomes one line on stderr and exit 2. Bad
 * output paths are found before any work starts (`checkOutputFile`, `prepareOutputDir`).
 */

/** Bad input: one line naming what was wrong and what is accepted (exit 2). */
export class UsageError extends Error {}

/** Where the lines of a command go: results to `out` (stdout), errors, warnings and progress to `err` (stderr). */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
}

const ERRNO: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a part of the path is not a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EEXIST: 'already exists',
  EISDIR: 'is a directory',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  EMFILE: 'too many open files',
  ENAMETOOLONG: 'file name too long',
  ELOOP: 'too many symbolic links',
  EBUSY: 'busy',
  EINVAL: 'invalid argument',
};

/** A Node file error as one line: what was done to which path, and why it failed. */
export function fileErrorLine(err: NodeJS.ErrnoException, what?: string): string {
  const code = err.code ?? 'error';
  const target = err.path ?? '';
  const op = what ?? (err.syscall ? `${err.syscall}` : 'file operation');
  return `${op}${target ? ` ${target}` : ''}: ${ERRNO[code] ?? err.message.split('\n')[0]} (${code})`;
}

function isErrno(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && /^E[A-Z]+$/.test((err as NodeJS.ErrnoException).code!);
}

/** Known error classes whose message is already the line to print. */
const ONE_LINE: (abstract new (...a: never[]) => Error)[] = [UsageError, ModuleError];

export function registerOneLineError(cls: abstract new (...a: never[]) => Error): void {
  if (!ONE_LINE.includes(cls)) ONE_LINE.push(cls);
}

/** Any error as the one line the CLI prints for it. */
export function errorLine(err: unknown): string {
  if (ONE_LINE.some((c) => err instanceof c)) return firstLine((err as Error).message);
  if (isErrno(err)) return fileErrorLine(err);
  if (err instanceof Error) return `internal error: ${err.name}: ${firstLine(err.message)} (this is a bug in notifier-lab; please report the command)`;
  return `internal error: ${firstLine(String(err))}`;
}

function firstLine(s: string): string {
  return (s.split('\n').find((l) => l.trim()) ?? s).trim();
}

/**
 * An output file the command will write: not empty, not a directory, in an existing
 * directory it may write to. Checked before the work starts.
 */
export function checkOutputFile(path: string, option: string): void {
  if (path.trim() === '') throw new UsageError(`${option} must name a file, got ''`);
  const abs = resolve(path);
  let st;
  try {
    st = statSync(abs);
  } catch {
    st = null;
  }
  if (st?.isDirectory()) throw new UsageError(`${option} ${path} is a directory; give a file name`);
  const dir = dirname(abs);
  let dst;
  try {
    dst = statSync(dir);
  } catch (err) {
    throw new UsageError(`${option} ${path}: its directory ${dirname(path)} ${isErrno(err) && err.code === 'ENOTDIR' ? 'is under a file' : 'does not exist'}`);
  }
  if (!dst.isDirectory()) throw new UsageError(`${option} ${path}: ${dirname(path)} is not a directory`);
  try {
    accessSync(st ? abs : dir, constants.W_OK);
  } catch (err) {
    throw new UsageError(`${option} ${path}: ${isErrno(err) ? fileErrorLine(err, 'cannot write') : 'cannot write'}`);
  }
}

/**
 * An output directory: created if missing (one level at a time, so a path under /proc or
 * under a file fails at once instead of looping), and checked to be a writable directory.
 */
export function prepareOutputDir(path: string, option: string): void {
  if (path.trim() === '') throw new UsageError(`${option} must name a directory, got ''`);
  const abs = resolve(path);
  const missing: string[] = [];
  let cur = abs;
  for (;;) {
    let st;
    try {
      st = statSync(cur);
    } catch (err) {
      if (isErrno(err) && err.code === 'ENOTDIR') throw new UsageError(`${option} ${path}: a part of the path is a file, not a directory`);
      if (isErrno(err) && err.code !== 'ENOENT') throw new UsageError(`${option} ${path}: ${fileErrorLine(err)}`);
      st = null;
    }
    if (st) {
      if (!st.isDirectory()) throw new UsageError(`${option} ${path}: ${cur === abs ? 'is a file, not a directory' : `${cur} is a file, not a directory`}`);
      break;
    }
    missing.unshift(cur);
    const up = dirname(cur);
    if (up === cur) break;
    cur = up;
  }
  for (const d of missing) {
    try {
      mkdirSync(d);
    } catch (err) {
      if (isErrno(err) && err.code === 'EEXIST') continue;
      throw new UsageError(`${option} ${path}: ${isErrno(err) ? fileErrorLine(err, 'cannot create') : String(err)}`);
    }
  }
  try {
    accessSync(abs, constants.W_OK);
  } catch (err) {
    throw new UsageError(`${option} ${path}: ${isErrno(err) ? fileErrorLine(err, 'cannot write') : 'cannot write'}`);
  }
}
