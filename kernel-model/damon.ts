import type { Co } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import { PAGE_SIZE, pageAlignDown, vpn } from './constants.ts';
import { PTE_ACCESSED, pteFrame, pteHas, ptePresent, pteWith } from './page-table.ts';
import { ZERO_PFN } from './page-frames.ts';
import { mmuNotifierClearYoung, mmuNotifierTestYoung } from './mmu-notifier.ts';

export interface DamonOptions {
  /** sample_interval (virtual ns; the kernel's default is 5 ms). */
  samplingNs: number;
  /** aggr_interval: how often access counts are reported and reset (default 100 ms). */
  aggregationNs: number;
}

export interface DamonRegion {
  start: number;
  end: number;
  /** Samples found accessed in the current aggregation interval. */
  nrAccesses: number;
  sampleAddr: number;
}

export interface DamonStats {
  /** Aggregation snapshots: per region [start, end, nr_accesses]. */
  aggregated: [number, number, number][][];
  samples: number;
  regions: DamonRegion[];
}

/**
 * DAMON's virtual-address operations (mm/damon/vaddr.c), the aging path that asks the
 * secondary MMUs with the young callbacks reclaim does not use: every sampling interval,
 * the address each region sampled last time is checked (damon_va_check_accesses,
 * damon_young_pmd_entry: pte_young || !folio_test_idle || mmu_notifier_test_young), then
 * a new address is picked in each region and made old (damon_va_prepare_access_checks,
 * damon_ptep_mkold: the accessed bit is cleared, mmu_notifier_clear_young clears the
 * secondary MMUs' ones, and the folio is marked idle). Regions follow the mm's VMAs,
 * re-read at each aggregation interval (a simplification of damon_va_update's three
 * regions). A kdamond kernel thread; seeded sampling (damon_rand).
 */
export function startDamon(kernel: Kernel, mm: MmStruct, opts: Partial<DamonOptions> = {}): DamonStats {
  const samplingNs = opts.samplingNs ?? 5_000_000;
  const aggregationNs = opts.aggregationNs ?? 100_000_000;
  const rng = kernel.sim.rng('damon');
  const stats: DamonStats = { aggregated: [], samples: 0, regions: [] };
  /** Folios damon_ptep_mkold marked idle: frame -> allocation generation. */
  const idle = new Map<number, number>();
  const isIdle = (f: number) => idle.get(f) === kernel.phys.generation[f];
  const pick = (r: DamonRegion) => r.start + rng.int(0, (r.end - r.start) / PAGE_SIZE - 1) * PAGE_SIZE;
  const update = () => {
    stats.regions = mm.vmas.map((v) => ({ start: v.start, end: v.end, nrAccesses: 0, sampleAddr: -1 }));
    for (const r of stats.regions) r.sampleAddr = pick(r);
  };

  function* mkold(addr: number): Co {
    const v = vpn(addr);
    const pte = mm.pageTable.get(v);
    if (!ptePresent(pte) || pteFrame(pte) === ZERO_PFN) return;
    if (pteHas(pte, PTE_ACCESSED)) mm.pageTable.set(v, pteWith(pte, 0, PTE_ACCESSED));
    yield* mmuNotifierClearYoung(mm, addr, addr + PAGE_SIZE);
    idle.set(pteFrame(pte), kernel.phys.generation[pteFrame(pte)]!);
  }

  function* young(addr: number): Co<boolean> {
    const pte = mm.pageTable.get(vpn(addr));
    if (!ptePresent(pte) || pteFrame(pte) === ZERO_PFN) return false;
    if (pteHas(pte, PTE_ACCESSED) || !isIdle(pteFrame(pte))) return true;
    return yield* mmuNotifierTestYoung(mm, addr, addr + PAGE_SIZE);
  }

  kernel.sim.spawn('kdamond.0', function* () {
    update();
    for (const r of stats.regions) yield* mkold(r.sampleAddr);
    let sinceAggregation = 0;
    for (;;) {
      yield* kernel.sim.sleep(samplingNs);
      if (mm.exited) return;
      for (const r of stats.regions) {
        if (yield* young(r.sampleAddr)) r.nrAccesses++;
        stats.samples++;
      }
      sinceAggregation += samplingNs;
      if (sinceAggregation >= aggregationNs) {
        sinceAggregation = 0;
        stats.aggregated.push(stats.regions.map((r) => [r.start, r.end, r.nrAccesses]));
        update();
      } else {
        for (const r of stats.regions) r.sampleAddr = pageAlignDown(pick(r));
      }
      for (const r of stats.regions) yield* mkold(r.sampleAddr);
    }
  }, { kind: 'kthread' });
  return stats;
}
