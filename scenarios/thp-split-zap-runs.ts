import { MADV_DONTNEED, MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PMD_SIZE, PROT_READ, PROT_WRITE, type Co } from '../kernel-model/index.ts';
import { IBV_ACCESS_HUGETLB, IBV_ACCESS_ON_DEMAND, MLX5_ODP_CAPS } from '../device/index.ts';
import { odpStrategy, pinnedStrategy } from '../driver/index.ts';
import { ALL_ACCESS, P, must, openApp, regOk } from './app.ts';
import type { ScenarioDefinition } from './scenario.ts';

/** A 2 MiB aligned address for the worker's buffer (below any mmap_base the seeds draw). */
const BUF = 0x7e0000000000;

/**
 * A driver's zap runs over huge pages (issue 16; kernel rule 21f; rdma C4). A worker maps
 * 4 MiB under MADV_HUGEPAGE, so each 2 MiB block is one THP (do_huge_pmd_anonymous_page),
 * and registers each block as its own ODP MR: the first with 4 KiB device entries, the
 * second with IBV_ACCESS_HUGETLB, which since 5.10 gives the umem a page_shift of 21 and
 * the device one entry per 2 MiB page (ib_umem_odp_get). Then it drops one 4 KiB page of
 * each block with MADV_DONTNEED. The kernel cannot zap part of a PMD: zap_pmd_range
 * splits it first (__split_huge_pmd), a CLEAR over the whole 2 MiB nested in the
 * DONTNEED's own one-page CLEAR. The driver clamps each range to its MR and zaps what is
 * present in mlx5's runs: the first MR zaps the one page at the outer start, then, for
 * the nested split, the 511 others in two runs (the absent page closes a run at an 8-entry
 * boundary, rdma C4); the second MR's 2 MiB entry covers the one page, so the outer start
 * zaps it whole and the split finds nothing left. A one-page madvise cost each MR its
 * whole 2 MiB of device translations; the
 * first refaults it page by page, the second cannot map the now 4 KiB-mapped block with a
 * 2 MiB entry at all (the hmm_order check: EINVAL).
 */
export const thpSplitZapRuns: ScenarioDefinition = {
  name: 'thp-split-zap-runs',
  summary: 'MADV_DONTNEED of one page of a THP splits it: an ODP MR zaps a run of 512 entries, an IBV_ACCESS_HUGETLB MR one 2 MiB entry',
  seeds: [],
  defaultProfile: 'linux-6.x',
  drivers: ['odp'],
  defaultDriver: 'odp',
  untilNs: 10_000_000_000,
  expect: () => [],
  setup(ctx) {
    const host = ctx.node('host', { device: { nonOdp: pinnedStrategy(), odp: odpStrategy() }, caps: { odp: MLX5_ODP_CAPS } });
    const k = host.kernel;
    const app = openApp(host, k.createProcess('worker'));
    const zaps: { lkey: number; first: number; count: number }[] = [];
    host.nic.command$.subscribe((c) => {
      if (c.kind === 'zap') zaps.push({ lkey: c.mrKey, first: c.firstPage, count: c.count });
    });
    const events: string[] = [];
    k.notifier$.subscribe((e) => {
      if (e.phase === 'start' && e.mm === app.p.mm.id) events.push(`${e.range.end - e.range.start === PMD_SIZE ? '2 MiB' : `${(e.range.end - e.range.start) / P} page(s)`}`);
    });

    return function* (): Co<void> {
      if (!ctx.profile.hmmRangeFault) {
        ctx.say(`the ODP driver faults through hmm_range_fault (Linux 5.10 for ODP), which ${ctx.profile.name} lacks: nothing to show`);
        return;
      }
      const buf = must(yield* app.p.mmap(BUF, 2 * PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), 'mmap');
      must(yield* app.p.madvise(buf, 2 * PMD_SIZE, MADV_HUGEPAGE), 'madvise(MADV_HUGEPAGE)');
      for (const b of [0, 1]) must(yield* app.p.store(buf + b * PMD_SIZE, new Uint8Array([b + 1])), 'store');
      const huge = [0, 1].filter((b) => app.p.mm.pageTable.pmdHuge((buf + b * PMD_SIZE) / P)).length;
      ctx.say(`the worker maps 4 MiB under MADV_HUGEPAGE and touches each 2 MiB block: ${huge} THP(s), one PMD entry each`);
      const small = yield* regOk(app, buf, PMD_SIZE, ALL_ACCESS | IBV_ACCESS_ON_DEMAND);
      const big = yield* regOk(app, buf + PMD_SIZE, PMD_SIZE, ALL_ACCESS | IBV_ACCESS_ON_DEMAND | IBV_ACCESS_HUGETLB);
      const st = small.umem.mr.pageTable;
      const bt = big.umem.mr.pageTable;
      ctx.say(`ODP MR 1 (4 KiB entries) sees ${st.presentPages} pages in ${st.presentPages - st.hugeEntries * 512} entries; ` +
        `ODP MR 2 (IBV_ACCESS_HUGETLB, page_shift 21) sees ${bt.presentPages} pages in ${bt.hugeEntries} huge entr${bt.hugeEntries === 1 ? 'y' : 'ies'}`);

      events.length = 0;
      zaps.length = 0;
      for (const b of [0, 1]) must(yield* app.p.madvise(buf + b * PMD_SIZE + 8 * P, P, MADV_DONTNEED), 'madvise(MADV_DONTNEED)');
      const runs = (lkey: number) => zaps.filter((z) => z.lkey === lkey);
      const r1 = runs(small.lkey);
      const r2 = runs(big.lkey);
      ctx.say(`MADV_DONTNEED of one page in each block: invalidations of the worker's mm ${events.join(', ')} ` +
        '(each DONTNEED a one-page CLEAR with the split\'s 2 MiB CLEAR nested in it)');
      ctx.say(`MR 1 zapped ${r1.length} run(s): ${r1.map((z) => `${z.count} entries from page ${z.first}`).join(', ')}; ` +
        `MR 2 zapped ${r2.length} run(s): ${r2.map((z) => `${z.count / 512} huge entr${z.count === 512 ? 'y' : 'ies'} (${z.count} pages) from page ${z.first}`).join(', ')}`);
      ctx.say(`left on the device: MR 1 ${st.presentPages} pages, MR 2 ${bt.presentPages} pages, for one 4 KiB page dropped in each`);

      ctx.figure('THPs mapped', huge);
      ctx.figure('MR 1 zap commands', r1.length);
      ctx.figure('MR 1 entries zapped', r1.reduce((n, z) => n + z.count, 0));
      ctx.figure('MR 2 zap commands', r2.length);
      ctx.figure('MR 2 huge entries zapped', r2.reduce((n, z) => n + z.count / 512, 0));
      ctx.figure('device pages lost per 4 KiB dropped', (small.umem.counters.invalidationPages + big.umem.counters.invalidationPages) / 2);
      const total1 = r1.reduce((n, z) => n + z.count, 0);
      if (huge !== 2 || total1 !== 512 || r2.length !== 1 || r2[0]?.count !== 512 || st.presentPages !== 0 || bt.presentPages !== 0) {
        throw new Error(`unexpected zap runs: MR 1 ${JSON.stringify(r1)}, MR 2 ${JSON.stringify(r2)}`);
      }
      must(yield* app.ctx.deregMr(small), 'dereg_mr');
      must(yield* app.ctx.deregMr(big), 'dereg_mr');
      yield* app.ctx.close();
    };
  },
};
