import { z } from 'zod';
import { startKswapd, type Co, type Simulation } from '../kernel-model/index.ts';
import { IBV_ACCESS_ON_DEMAND, MLX5_ODP_CAPS, wcStatusName, type DeviceFault, type WorkCompletion } from '../device/index.ts';
import {
  IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_FLAG_FLUSH, odpStrategy, pinnedStrategy, type IbUmem, type UmemStrategy,
} from '../driver/index.ts';
import { ALL_ACCESS, P, connectRc, mapAnon, must, openApp, pattern, regOk, store } from './app.ts';
import { COMMON_PARAMS, strictNumber, type ParamDoc } from './params.ts';
import { batchingFromParams, percentile, rdmaWrite, us } from './deferred-invalidation-reuse.ts';
import type { ScenarioDefinition, WrappingStrategy } from './scenario.ts';


const paramDoc = (key: string): ParamDoc => COMMON_PARAMS.find((d) => d.key === key) as ParamDoc;

/** Pages of each RDMA WRITE (128 KiB). */
const CHUNK_PAGES = 32;
/** Shares of memory: a neighbour's pinned MR, and the ODP buffer. */
const PINNED_SHARE = 0.5;
const BUF_SHARE = 0.375;
/** Pages touched before the CPU lets kswapd catch up (so that kswapd, not the writer's direct reclaim, does most of it). */
const TOUCH_BATCH = 32;
const TOUCH_PAUSE_NS = 100_000;

/**
 * Swap-out under ODP (DESIGN "Scenarios"; rdma (d) user pain 1). A host short of memory
 * (`memory.frames`, default 1024 frames = 4 MiB) with kswapd running; half of it is pinned
 * by a neighbour's (non-ODP) MR, which reclaim must leave alone (kernel rule 72); an
 * application streams a buffer as large as what is left above kswapd's low watermark (so
 * how much reclaim takes varies from run to run) out of an ODP MR with RDMA WRITEs.
 * The NIC sets no accessed bits and interval notifiers get no young callbacks (kernel rule
 * 37), so reclaim sees the buffer as idle and swaps it out under the transfer: every
 * eviction is a CLEAR invalidation that zaps the device entries (rdma C6), and the next
 * access is a NIC fault that swaps the page back in, at about 220 µs a minor fault plus
 * the swap read (the calibrated `cost.*` and `cpu.*` figures, `lab calibrate`). The `prefetch` parameter compares what
 * users do about it (zrlio/disni #39, meta-pytorch/monarch #4923): nothing; a synchronous
 * ibv_advise_mr(PREFETCH, FLUSH) of each chunk before posting it; an asynchronous one for
 * the next chunk while the current one is on the wire. Nothing is violated: the ODP
 * strategy is the reference one, and refaults are its designed behaviour.
 */
export const odpSwapStorm: ScenarioDefinition = {
  name: 'odp-swap-storm',
  summary: 'reclaim under memory pressure against an ODP MR under traffic: faults, refaults, fault latency, prefetch none/sync/async',
  seeds: [],
  defaultProfile: 'linux-6.x',
  drivers: ['odp'],
  defaultDriver: 'odp',
  untilNs: 10_000_000_000,
  params: [
    {
      ...paramDoc('memory.frames'), default: 1024,
      description: 'physical memory of the host, in 4 KiB frames (this scenario: 4 MiB, small on purpose; 512 to 16384: the buffer is 3/8 of it, and past 16384 one run takes minutes)',
      schema: strictNumber().pipe(z.number().int().min(512).max(16_384)),
    },
    { key: 'prefetch', description: 'what the application does before each RDMA WRITE: none, sync (advise_mr with FLUSH), async (advise_mr of the next chunk)', default: 'none', schema: z.enum(['none', 'sync', 'async']) },
    { key: 'storm.rounds', description: 'passes of the NIC over the whole buffer', default: 4, schema: z.coerce.number().int().min(1).max(64) },
  ],
  expect: () => [],
  setup(ctx) {
    const { sim, params } = ctx;
    const frames = Number(params['memory.frames']);
    const prefetch = String(params['prefetch']) as 'none' | 'sync' | 'async';
    const rounds = Number(params['storm.rounds']);
    const batching = batchingFromParams(params, sim.scheduler);
    // The NIC fault's whole cost (device, driver work item, hmm_range_fault, UMR, resume) is
    // charged by the device and the odp strategy themselves (cost.*, cpu.*; lab calibrate).
    const odp = odpStrategy({ batching: batching.policy, batchingName: batching.name });
    const host = ctx.node('host', { caps: { odp: MLX5_ODP_CAPS }, device: { nonOdp: pinnedStrategy(), odp }, frames });
    const bufPages = Math.max(CHUNK_PAGES, Math.floor((frames * BUF_SHARE) / CHUNK_PAGES) * CHUNK_PAGES);
    const pinnedPages = Math.floor(frames * PINNED_SHARE);
    const peerNode = ctx.node('peer', { device: { nonOdp: pinnedStrategy() }, frames: Math.max(4096, CHUNK_PAGES * 4) });
    const k = host.kernel;
    const app = openApp(host, k.createProcess('app'));
    const neighbour = openApp(host, k.createProcess('database'));
    const peer = openApp(peerNode, peerNode.kernel.createProcess('peer'));
    const low = Math.floor(frames / 8);
    const high = Math.floor(frames / 4);
    const kswapd = startKswapd(k, { lowWatermark: low, highWatermark: high, periodNs: 100_000 });

    // What the device did with the MR's pages: a fault on a page reclaim took away is a refault.
    let mrKey = -1;
    let mrIova = 0;
    const state = new Map<number, 'mapped' | 'zapped'>();
    let faults = 0;
    let refaults = 0;
    let remapped = 0;
    const faultNs: number[] = [];
    host.nic.command$.subscribe((c) => {
      if (c.mrKey !== mrKey || c.kind === 'sync') return;
      for (let i = c.firstPage; i < c.firstPage + c.count; i++) {
        if (c.kind === 'zap') {
          if (state.get(i) === 'mapped') state.set(i, 'zapped');
        } else {
          if (state.get(i) === 'zapped') remapped++;
          state.set(i, 'mapped');
        }
      }
    });
    host.nic.fault$.subscribe((f) => {
      if (f.mrKey !== mrKey) return;
      faults++;
      if (state.get(Math.floor((f.iova - mrIova) / P)) === 'zapped') refaults++;
    });
    host.nic.faultResume$.subscribe((r) => {
      if (r.fault.mrKey === mrKey) faultNs.push(r.time - r.fault.time);
    });

    return function* () {
      if (!ctx.profile.intervalNotifiers) {
        ctx.say(`this driver registers through interval notifiers (Linux 5.5), which ${ctx.profile.name} lacks: nothing to show`);
        return;
      }
      ctx.say(`host memory ${frames} frames (${(frames * P) / (1 << 20)} MiB), kswapd between ${low} and ${high} free frames; ` +
        `a neighbour pins ${pinnedPages} pages; the NIC streams a ${bufPages}-page ODP buffer in ${CHUNK_PAGES}-page RDMA WRITEs, ${rounds} passes; prefetch: ${prefetch}`);
      const pool = yield* mapAnon(neighbour, pinnedPages);
      yield* store(neighbour, pool, pattern(7, pinnedPages * P));
      const poolMr = yield* regOk(neighbour, pool, pinnedPages * P, ALL_ACCESS);
      const [qa] = connectRc(app, peer);
      // Populate in batches, letting kswapd keep up (below the min watermark the writer would reclaim itself).
      const buf = yield* mapAnon(app, bufPages);
      for (let i = 0; i < bufPages; i += TOUCH_BATCH) {
        yield* store(app, buf + i * P, pattern(i, Math.min(TOUCH_BATCH, bufPages - i) * P));
        yield* sim.sleep(ctx.vary(`touch pause ${i}`, TOUCH_PAUSE_NS, TOUCH_PAUSE_NS / 2, TOUCH_PAUSE_NS * 2));
      }
      yield* sim.sleep(1_000_000);
      const mr = must(yield* app.ctx.regMr(app.pd, buf, bufPages * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND), 'reg_mr');
      mrKey = mr.lkey;
      mrIova = mr.umem.mr.iova;
      for (let i = 0; i < mr.umem.mr.pages; i++) if (mr.umem.mr.pageTable.frameOf(i) >= 0) state.set(i, 'mapped');
      ctx.say(`kswapd swapped out ${kswapd.swappedOut} pages while the buffer was written, and passed over pinned pages ${kswapd.keptPinned} times (kernel rule 72); ` +
        `registration found ${state.size} of ${bufPages} buffer pages resident`);
      const dst = yield* mapAnon(peer, CHUNK_PAGES);
      const dstMr = yield* regOk(peer, dst, CHUNK_PAGES * P, ALL_ACCESS);

      const chunks = bufPages / CHUNK_PAGES;
      const sge = (c: number) => [{ addr: buf + (c % chunks) * CHUNK_PAGES * P, length: CHUNK_PAGES * P, lkey: mr.lkey }];
      const wrNs: number[] = [];
      const statuses = new Map<string, number>();
      const swappedBefore = kswapd.swappedOut;
      const t0 = sim.now();
      let wrId = 1;
      if (prefetch === 'async') must(yield* app.ctx.adviseMr(app.pd, IBV_ADVISE_MR_ADVICE_PREFETCH, 0, sge(0)), 'advise_mr');
      for (let c = 0; c < rounds * chunks; c++) {
        const ts = sim.now();
        if (prefetch === 'sync') must(yield* app.ctx.adviseMr(app.pd, IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_FLAG_FLUSH, sge(c)), 'advise_mr');
        if (prefetch === 'async' && c + 1 < rounds * chunks) must(yield* app.ctx.adviseMr(app.pd, IBV_ADVISE_MR_ADVICE_PREFETCH, 0, sge(c + 1)), 'advise_mr');
        const [s] = sge(c);
        const wc: WorkCompletion = yield* rdmaWrite(app, qa, wrId++, s!.addr, mr.lkey, dst, dstMr.rkey, CHUNK_PAGES * P);
        wrNs.push(sim.now() - ts);
        statuses.set(wcStatusName(wc.status), (statuses.get(wcStatusName(wc.status)) ?? 0) + 1);
      }
      const elapsed = sim.now() - t0;
      const umem: IbUmem = mr.umem;
      const moved = rounds * bufPages * P;
      ctx.figure('prefetch', prefetch);
      ctx.figure('NIC faults', faults);
      ctx.figure('NIC refaults', refaults);
      ctx.figure('pages mapped again after reclaim', remapped);
      ctx.figure('MR invalidations (CLEAR by reclaim)', umem.counters.invalidations);
      ctx.figure('pages prefetched', umem.counters.prefetches);
      ctx.figure('kswapd: pages swapped out during traffic', kswapd.swappedOut - swappedBefore);
      ctx.figure('fault p50 (ns)', percentile(faultNs, 50));
      ctx.figure('fault p99 (ns)', percentile(faultNs, 99));
      ctx.figure('write (incl. prefetch) p50 (ns)', percentile(wrNs, 50));
      ctx.figure('write (incl. prefetch) p99 (ns)', percentile(wrNs, 99));
      ctx.figure('transfer time (ns)', elapsed);
      ctx.figure('completions', [...statuses].map(([s, n]) => `${s}×${n}`).join(', '));
      ctx.say(`${rounds * chunks} writes (${[...statuses].map(([s, n]) => `${s}×${n}`).join(', ')}) in ${us(elapsed)}, ${((moved / elapsed) * 1e9 / (1 << 20)).toFixed(0)} MiB/s`);
      ctx.say(`reclaim invalidated the MR ${umem.counters.invalidations} times and swapped out ${kswapd.swappedOut - swappedBefore} pages meanwhile; ` +
        `${remapped} pages had to be mapped again`);
      ctx.say(`NIC faults: ${faults} (${refaults} refaults on pages reclaim had taken), raise to resume p50 ${us(percentile(faultNs, 50))}, p99 ${us(percentile(faultNs, 99))}; ` +
        `${umem.counters.prefetches} pages prefetched (a mapping that collides with reclaim's invalidations retries, rdma B2/C7: that is the tail)`);
      ctx.say(`each ${CHUNK_PAGES}-page write${prefetch === 'sync' ? ' with its prefetch' : ''}: p50 ${us(percentile(wrNs, 50))}, p99 ${us(percentile(wrNs, 99))}`);

      must(yield* app.ctx.deregMr(mr), 'dereg_mr');
      must(yield* neighbour.ctx.deregMr(poolMr), 'dereg_mr');
      yield* app.ctx.close();
      yield* neighbour.ctx.close();
      yield* peer.ctx.close();
      yield* app.p.exit();
      yield* neighbour.p.exit();
      yield* peer.p.exit();
    };
  },
};
