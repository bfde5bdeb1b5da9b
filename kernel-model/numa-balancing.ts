import type { Kernel } from './kernel.ts';
import { migratePage } from './migrate.ts';

export interface NumaBalancingOptions {
  /** How often the scanner wakes (virtual ns, default 100 ms). */
  periodNs: number;
  /** Pages it tries to migrate per wake-up. */
  pagesPerScan: number;
}

export interface NumaBalancingStats {
  attempted: number;
  migrated: number;
  failed: number;
}

/**
 * NUMA balancing, reduced to what matters to a device: a kernel thread that now and then
 * picks pages (seeded, from the LRU) and migrates them to "the other node", each attempt
 * sending CLEAR to every mapping whether or not the move then succeeds (rule 73).
 */
export function startNumaBalancing(kernel: Kernel, opts: Partial<NumaBalancingOptions> = {}): NumaBalancingStats {
  const periodNs = opts.periodNs ?? 100_000_000;
  const perScan = opts.pagesPerScan ?? 4;
  const stats: NumaBalancingStats = { attempted: 0, migrated: 0, failed: 0 };
  const rng = kernel.sim.rng('numa-balancing');
  kernel.sim.spawn('numa-balancing', function* () {
    for (;;) {
      yield* kernel.sim.sleep(periodNs);
      const pages = [...kernel.lru];
      for (let i = 0; i < perScan && pages.length > 0; i++) {
        const frame = pages[rng.int(0, pages.length - 1)] as number;
        if (kernel.phys.mappingsOf(frame).length === 0) continue;
        stats.attempted++;
        if ((yield* migratePage(kernel, frame, 'numa')) === 0) stats.migrated++;
        else stats.failed++;
      }
    }
  }, { kind: 'kthread', node: kernel.node });
  return stats;
}
