import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { canonicalJson, expandGrid, formatShard } from './grid.ts';
import { META_FILE, RESULTS_FILE, metaJson, readMeta, readResults, sortedResultsText, writeFileAtomic, type ResultLine } from './results.ts';
import { parseSpec, type SweepSpec } from './spec.ts';
import { SweepUsageError, defaultOutDir, lockOutDir } from './run-sweep.ts';
import { prepareOutputDir } from '../cli-errors.ts';

export interface MergeResult {
  points: number;
  failed: number;
  files: string[];
}

/**
 * `lab merge DIR... [--out OUT]` (default sweep-results/NAME): join the result directories of shards (or of partial runs
 * of the same sweep) into one result set, identical byte for byte to a single-machine
 * run: the same results.jsonl in point order, the same summaries, plots and page. Every
 * directory must hold the same spec; together they must cover every point.
 */
export async function mergeSweeps(dirs: readonly string[], outDirOpt?: string, out: (line: string) => void = console.log): Promise<MergeResult> {
  if (dirs.length === 0) throw new SweepUsageError('merge needs at least one result directory');
  let specJson: string | null = null;
  let first = '';
  const byId = new Map<string, ResultLine>();
  const shardsSeen: string[] = [];
  for (const dir of dirs) {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new SweepUsageError(`${dir} is not a directory`);
    let meta;
    try {
      meta = readMeta(dir);
    } catch (err) {
      throw new SweepUsageError((err as Error).message);
    }
    if (!meta) throw new SweepUsageError(`${dir} has no ${META_FILE}: not a sweep result directory`);
    const sj = canonicalJson(meta.spec);
    if (specJson === null) {
      specJson = sj;
      first = dir;
    } else if (sj !== specJson) {
      throw new SweepUsageError(`${dir} holds sweep '${meta.spec?.name}' with a different spec than ${first}; merge joins shards of one sweep`);
    }
    shardsSeen.push(formatShard(meta.shard));
    let read;
    try {
      read = readResults(join(dir, RESULTS_FILE));
    } catch (err) {
      throw new SweepUsageError((err as Error).message);
    }
    for (const l of read.lines) {
      const had = byId.get(l.result.id);
      if (!had || (had.result.error !== undefined && l.result.error === undefined)) byId.set(l.result.id, l);
      else if (had.line !== l.line && l.result.error === undefined && had.result.error === undefined) {
        throw new SweepUsageError(`point ${l.result.id} has different results in two directories (a nondeterministic runner?)`);
      }
    }
  }
  let spec;
  try {
    spec = parseSpec(JSON.parse(specJson as string));
  } catch (err) {
    throw new SweepUsageError(`${first}/${META_FILE}: ${(err as Error).message}`);
  }
  const outDir = outDirOpt ?? defaultOutDir(spec.name);
  const clash = dirs.find((d) => resolve(d) === resolve(outDir));
  if (clash !== undefined) throw new SweepUsageError(`--out ${outDir} is also an input; merge into another directory`);
  if (outDir.trim() === '') throw new SweepUsageError(`--out must name a directory, got ''`);
  if (existsSync(outDir) && !statSync(outDir).isDirectory()) throw new SweepUsageError(`--out ${outDir}: is a file, not a directory`);
  // Never overwrite another sweep's results: --out may hold nothing, or this sweep's merged result.
  let held;
  try {
    held = existsSync(outDir) && statSync(outDir).isDirectory() ? readMeta(outDir) : null;
  } catch (err) {
    throw new SweepUsageError(`--out ${outDir}: ${(err as Error).message}`);
  }
  if (held && canonicalJson({ spec: held.spec, shard: held.shard }) !== canonicalJson({ spec, shard: null })) {
    const what = canonicalJson(held.spec) !== canonicalJson(spec) ? `sweep '${held.spec?.name}'` : `shard ${formatShard(held.shard)} of this sweep`;
    throw new SweepUsageError(`--out ${outDir} holds ${what}; merging would overwrite its results: choose another --out`);
  }
  if (!held && existsSync(join(outDir, RESULTS_FILE))) throw new SweepUsageError(`--out ${outDir} holds a ${RESULTS_FILE} of an unknown sweep; choose another --out`);
  const points = expandGrid(spec);
  const missing = points.filter((p) => !byId.has(p.id));
  if (missing.length > 0) {
    const examples = missing.slice(0, 3).map((p) => `#${p.index}`).join(', ');
    throw new SweepUsageError(
      `the directories cover ${points.length - missing.length} of ${points.length} points (shards seen: ${shardsSeen.join(', ')}); missing ${missing.length}, e.g. ${examples}: run or resume the missing shards first`,
    );
  }
  const ids = new Set(points.map((p) => p.id));
  const lines = [...byId.values()].filter((l) => ids.has(l.result.id));
  prepareOutputDir(outDir, '--out');
  const release = lockOutDir(outDir);
  try {
    return await writeMerged(outDir, spec, lines, dirs, shardsSeen, out);
  } finally {
    release();
  }
}

async function writeMerged(
  outDir: string, spec: SweepSpec, lines: ResultLine[], dirs: readonly string[], shardsSeen: string[], out: (line: string) => void,
): Promise<MergeResult> {
  writeFileAtomic(join(outDir, META_FILE), metaJson({ spec, shard: null }));
  writeFileAtomic(join(outDir, RESULTS_FILE), sortedResultsText(lines));
  const { files } = await (await import('./outputs.ts')).writeOutputs(outDir, spec, lines.map((l) => l.result));
  const failed = lines.filter((l) => l.result.error !== undefined).length;
  out(`merged ${dirs.length} director${dirs.length === 1 ? 'y' : 'ies'} (shards ${shardsSeen.join(', ')}): ${lines.length} points; wrote ${RESULTS_FILE}, ${files.join(', ')} in ${outDir}`);
  if (failed > 0) out(`${failed} point${failed === 1 ? '' : 's'} failed (see "error" in ${RESULTS_FILE})`);
  return { points: lines.length, failed, files };
}
