/**
 * Sanitizer overhead: the traffic benchmark's wall time with the sanitizer attached,
 * against without it (target: at most 2x). Smaller than the full traffic run so that the
 * pair stays quick; `SANITIZER_WRITES` changes the size.
 *
 * @example
 *   npx tsx bench/sanitizer.ts
 */
import { pathToFileURL } from 'node:url';
import { benchTraffic } from './traffic.ts';

export function benchSanitizer(): Record<string, unknown> {
  const env = Number(process.env['SANITIZER_WRITES']);
  const writes = Number.isInteger(env) && env > 0 ? env : 100_000;
  benchTraffic({ writes: Math.min(writes, 10_000) }); // warm-up (JIT)
  const bare = benchTraffic({ writes });
  const checked = benchTraffic({ writes, sanitizer: true });
  const a = bare['wallSeconds'] as number;
  const b = checked['wallSeconds'] as number;
  const slowdown = Math.round((b / a) * 100) / 100;
  return {
    what: 'traffic benchmark (loopback 4 KiB RDMA WRITEs into an ODP MR with background invalidations) with and without the sanitizer',
    writes,
    wallSecondsWithout: a,
    wallSecondsWith: b,
    slowdown,
    targetSlowdown: 2,
    withinTarget: slowdown <= 2,
    violationsFound: (checked['sanitizer'] as { violations?: number }).violations ?? 0,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(benchSanitizer(), null, 2));
}
