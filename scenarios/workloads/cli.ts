import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { UsageError, type CliIo } from '../cli-errors.ts';
import { renderReport } from '../report.ts';
import { isModuleRef, loadCachePolicy, loadStrategy, type LoadedStrategy } from '../user-module.ts';
import type { RcachePolicy } from '../../driver/index.ts';
import { SHIPPED_TRACES, loadTrace, replayWorkload, shippedTracePath, type WorkloadRun } from './index.ts';
import { TraceFormatError, type WorkloadTrace } from './trace-format.ts';
import { WORKLOAD_CACHES, WORKLOAD_DRIVERS, defaultCacheFor, type WorkloadCacheName, type WorkloadDriver } from './replay.ts';

/** Short names the cache option takes besides the source names. */
const CACHE_ALIASES: Record<string, WorkloadCacheName> = { hooks: 'memory-hooks', event: 'mr-event' };

function list(v: string, acc: string[]): string[] {
  return [...acc, ...v.split(',').map((s) => s.trim()).filter(Boolean)];
}

function positiveInt(name: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 1 << 20) throw new InvalidArgumentError(`${name} must be an integer from 1 to ${1 << 20}, got '${v}'`);
    return Number(v);
  };
}

/** The trace argument: a shipped trace's short name or a file. */
function readTrace(arg: string): { trace: WorkloadTrace; shown: string } {
  const shipped = arg in SHIPPED_TRACES ? shippedTracePath(arg as keyof typeof SHIPPED_TRACES) : null;
  const path = shipped ?? arg;
  if (!shipped && !existsSync(path)) throw new UsageError(`lab workload: ${arg}: no such file; give a trace file or a shipped trace (${Object.keys(SHIPPED_TRACES).join(', ')})`);
  try {
    return { trace: loadTrace(path), shown: arg };
  } catch (err) {
    if (err instanceof TraceFormatError) throw new UsageError(`lab workload: ${arg}: ${err.message}`);
    throw err;
  }
}

interface RunSpec {
  label: string;
  driver: WorkloadDriver;
  strategy?: LoadedStrategy;
  cache: WorkloadCacheName | RcachePolicy;
}

/** The rows of the comparison table: what each run cost (issue 20 item 3's report). */
const TABLE_ROWS = [
  'invalidations per second', 'pages invalidated', 'NIC faults', 'registration calls', 'deregistration calls', 'cache hits', 'sends',
  'work requests failed', 'WR latency p50 (ns)', 'WR latency p99 (ns)', 'bytes misdirected (peer got other bytes)', 'bytes lost (peer wrote, process does not see)',
  'workload.events replayed', 'workload.addresses beyond the model',
];

export function workloadTable(runs: readonly { label: string; run: WorkloadRun }[]): string[] {
  const extraKeys = new Set<string>();
  for (const r of runs) for (const k of Object.keys(r.run.extra)) if (k.startsWith('invalidations/s ')) extraKeys.add(k);
  const rows = [...TABLE_ROWS.slice(0, 1), ...[...extraKeys].sort(), ...TABLE_ROWS.slice(1)];
  const head = ['', ...runs.map((r) => r.label)];
  const body = rows.map((k) => [k, ...runs.map((r) => String(r.run.extra[k] ?? 0))]);
  const sat = ['sanitizer', ...runs.map((r) => (Object.keys(r.run.outcome.seen).length ? Object.entries(r.run.outcome.seen).map(([id, n]) => `${id}×${n}`).join(' ') : 'clean'))];
  const all = [head, ...body, sat];
  const widths = head.map((_, i) => Math.max(...all.map((row) => (row[i] ?? '').length)));
  return all.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
}

/**
 * `lab workload <trace> [--driver …] [--cache …]`: replay a captured program (README.md in
 * scenarios/workloads/) under one or more strategies and registration caches; with several,
 * a table side by side (drivers and caches pair by position; one cache applies to all).
 */
export function registerWorkloadCommand(program: Command, io: CliIo, setExit: (code: number) => void): void {
  program
    .command('workload')
    .description('replay a captured program (strace + allocation log) into the model with NIC traffic through a registration cache')
    .argument('<trace>', `a trace file (scenarios/workloads/capture.ts) or a shipped one: ${Object.keys(SHIPPED_TRACES).join(', ')}`)
    .option('--driver <name>', `${WORKLOAD_DRIVERS.join(', ')} or ./file.ts#export (defineStrategy); comma-separated or repeated for a comparison`, list, [] as string[])
    .option('--cache <name>', `${WORKLOAD_CACHES.join(', ')} (hooks, event for short) or ./file.ts#export (defineCachePolicy); default per driver`, list, [] as string[])
    .option('--min-kib <n>', 'traffic policy: allocations of at least this many KiB are sent and written (default 64)', positiveInt('--min-kib'), 64)
    .option('--wr-kib <n>', 'bytes per work request, in KiB (default 16)', positiveInt('--wr-kib'), 16)
    .option('--touch-pages <n>', 'touch rule: pages an allocation writes at most (default 64)', positiveInt('--touch-pages'), 64)
    .option('--seed <n>', 'seed (1: plain schedule)', positiveInt('--seed'), 1)
    .option('--json', 'print the reports as JSON')
    .action(async (arg: string, o: { driver: string[]; cache: string[]; minKib: number; wrKib: number; touchPages: number; seed: number; json?: boolean }) => {
      const { trace, shown } = readTrace(arg);
      const drivers = o.driver.length ? o.driver : ['pinned'];
      if (o.cache.length > 1 && o.cache.length !== drivers.length) {
        throw new UsageError(`lab workload: ${o.cache.length} caches for ${drivers.length} drivers; give one cache, or one per driver (they pair by position)`);
      }
      const specs: RunSpec[] = [];
      for (let i = 0; i < drivers.length; i++) {
        const d = drivers[i]!;
        let driver: WorkloadDriver;
        let strategy: LoadedStrategy | undefined;
        if (isModuleRef(d)) {
          strategy = await loadStrategy(d);
          driver = strategy.def.like as WorkloadDriver;
        } else if ((WORKLOAD_DRIVERS as readonly string[]).includes(d)) driver = d as WorkloadDriver;
        else throw new UsageError(`lab workload: unknown driver '${d}'; drivers: ${WORKLOAD_DRIVERS.join(', ')}, or ./file.ts#export`);
        const c = o.cache[o.cache.length > 1 ? i : 0];
        let cache: WorkloadCacheName | RcachePolicy;
        if (c === undefined) cache = defaultCacheFor(driver);
        else if (isModuleRef(c)) {
          const m = await loadCachePolicy(c);
          cache = m.def.policy({});
        } else {
          const name = CACHE_ALIASES[c] ?? c;
          if (!(WORKLOAD_CACHES as readonly string[]).includes(name)) throw new UsageError(`lab workload: unknown cache '${c}'; caches: ${WORKLOAD_CACHES.join(', ')} (hooks, event), or ./file.ts#export`);
          cache = name as WorkloadCacheName;
        }
        if (driver === 'implicit' && cache !== 'odp') throw new UsageError(`lab workload: the implicit driver needs --cache odp (the cache holds the implicit MR's keys), got '${c}'`);
        specs.push({ label: `${strategy ? strategy.def.name : driver}+${typeof cache === 'string' ? cache : cache.name}`, driver, ...(strategy ? { strategy } : {}), cache });
      }
      const runs: { label: string; run: WorkloadRun }[] = [];
      for (const s of specs) {
        io.err(`lab workload: replaying ${shown} (${trace.events.length} events) under ${s.label}`);
        const run = replayWorkload(trace, {
          driver: s.driver, cache: s.cache, seed: o.seed, minBytes: o.minKib * 1024, wrBytes: o.wrKib * 1024, touchPages: o.touchPages,
          name: `workload ${shown}`, ...(s.strategy ? { strategy: s.strategy } : {}),
        });
        runs.push({ label: s.label, run });
      }
      if (o.json) io.out(JSON.stringify(runs.map((r) => ({ label: r.label, ...r.run })), null, 2));
      else {
        if (runs.length === 1) for (const l of renderReport(runs[0]!.run)) io.out(l);
        else io.out(`== lab workload ${shown}: ${trace.header.command ?? ''}`);
        io.out('');
        for (const l of workloadTable(runs)) io.out(l);
      }
      setExit(runs.every((r) => r.run.ok) ? 0 : 1);
    });
}
