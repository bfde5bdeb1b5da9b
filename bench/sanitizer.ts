/**
 * Sanitizer overhead: the traffic benchmark's run time with every checker attached, against
 * without the sanitizer (target: at most 2x). Smaller than the full traffic run so that the
 * pairs stay quick: `SANITIZER_WRITES` changes the size (default 100k writes),
 * `SANITIZER_PAIRS` the number of pairs (default 3).
 *
 * Both runs of a pair are in this process, back to back (the order alternates from pair to
 * pair, so a machine getting busier or quieter does not favour one side), after a warm-up
 * of both. The slowdown is the median over the pairs of (time with) / (time without); the
 * spread is the lowest and highest pair. Wall time is what the target is about; CPU time
 * (user + system of the process) is beside it because it moves less when other processes
 * compete for the cores.
 *
 * @example
 *   npx tsx bench/sanitizer.ts
 *   SANITIZER_WRITES=20000 SANITIZER_PAIRS=5 npx tsx bench/sanitizer.ts
 */
import { pathToFileURL } from 'node:url';
import { benchTraffic } from './traffic.ts';

const DEFAULT_WRITES = 100_000;
const DEFAULT_PAIRS = 3;
const TARGET = 2;

function envInt(name: string, dflt: number): number {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v > 0 ? v : dflt;
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const r2 = (x: number) => Math.round(x * 100) / 100;

export function benchSanitizer(): Record<string, unknown> {
  const writes = envInt('SANITIZER_WRITES', DEFAULT_WRITES);
  const pairs = envInt('SANITIZER_PAIRS', DEFAULT_PAIRS);
  // Warm-up (JIT) of both paths.
  benchTraffic({ writes: Math.min(writes, 10_000) });
  benchTraffic({ writes: Math.min(writes, 10_000), sanitizer: true });
  const runs: { wallWithout: number; wallWith: number; cpuWithout: number; cpuWith: number; violations: number }[] = [];
  for (let i = 0; i < pairs; i++) {
    const first = i % 2 === 0 ? 'without' : 'with';
    const a = first === 'without' ? benchTraffic({ writes }) : benchTraffic({ writes, sanitizer: true });
    const b = first === 'without' ? benchTraffic({ writes, sanitizer: true }) : benchTraffic({ writes });
    const [bare, checked] = first === 'without' ? [a, b] : [b, a];
    runs.push({
      wallWithout: bare['wallSeconds'] as number,
      wallWith: checked['wallSeconds'] as number,
      cpuWithout: bare['cpuSeconds'] as number,
      cpuWith: checked['cpuSeconds'] as number,
      violations: (checked['sanitizer'] as { violations?: number }).violations ?? 0,
    });
  }
  const wallRatios = runs.map((r) => r.wallWith / r.wallWithout);
  const cpuRatios = runs.map((r) => r.cpuWith / r.cpuWithout);
  const slowdown = r2(median(wallRatios));
  return {
    what: 'traffic benchmark (loopback 4 KiB RDMA WRITEs into an ODP MR with background invalidations) with all checkers attached and without the sanitizer; median of back-to-back pairs',
    writes,
    pairs,
    envVars: ['SANITIZER_WRITES', 'SANITIZER_PAIRS'],
    slowdown,
    slowdownMin: r2(Math.min(...wallRatios)),
    slowdownMax: r2(Math.max(...wallRatios)),
    cpuSlowdown: r2(median(cpuRatios)),
    cpuSlowdownMin: r2(Math.min(...cpuRatios)),
    cpuSlowdownMax: r2(Math.max(...cpuRatios)),
    targetSlowdown: TARGET,
    withinTarget: slowdown <= TARGET,
    violationsFound: Math.max(...runs.map((r) => r.violations)),
    runs,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(benchSanitizer(), null, 2));
}
