import { z } from 'zod';
import {
  MADV_DONTNEED, MAP_FIXED, errnoName, migratePage, pteFrame, ptePresent, vpn,
  type Co, type Task,
} from '../kernel-model/index.ts';
import {
  IBV_ACCESS_ON_DEMAND, IBV_SEND_SIGNALED, IBV_WR_RDMA_WRITE, MLX5_ODP_CAPS, type QueuePair, type WorkCompletion,
} from '../device/index.ts';
import {
  odpStrategy, pinnedStrategy, type BatchPolicy, type IbvMr, type UmemStrategy,
} from '../driver/index.ts';
import { deferredInvalidationStrategy, type DeferredInvalidationStats } from '../driver/broken/deferred-invalidation.ts';
import {
  ALL_ACCESS, ANON, P, RW, completions, connectRc, equalBytes, load, mapAnon, must, openApp, pattern, regOk, statusNames, store,
  type App,
} from './app.ts';
import { COMMON_PARAMS, batchingFromParams, type ParamDoc } from './params.ts';
import type { ScenarioDefinition } from './scenario.ts';

// ---- helpers other scenarios share ---------------------------------------------------------

/** The batching policy the common parameters describe (moved to params.ts; other scenarios import it from here). */
export { batchingFromParams } from './params.ts';

/** The nearest-rank percentile of `values` (0 for none). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

/** Virtual ns as microseconds for narrative lines. */
export const us = (ns: number): string => `${(ns / 1000).toFixed(1)} µs`;

/** A signalled RDMA WRITE of `length` bytes from `src` (lkey) to `dst` (rkey); its completion. */
export function* rdmaWrite(app: App, qp: QueuePair, wrId: number, src: number, lkey: number, dst: number, rkey: number, length: number): Co<WorkCompletion> {
  must(yield* app.ctx.postSend(qp, {
    wrId, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
    sgList: [{ addr: src, length, lkey }], rdma: { remoteAddr: dst, rkey },
  }), 'post RDMA WRITE');
  const [wc] = yield* completions(app, 1);
  return wc as WorkCompletion;
}

const paramDoc = (key: string): ParamDoc => COMMON_PARAMS.find((d) => d.key === key) as ParamDoc;

// ---- the scenario ------------------------------------------------------------------------

/** Pages of the buffer the story is about. */
const BUF_PAGES = 4;
/** Pages of each MR in the batching phase. */
const PHASE_PAGES = 4;

/**
 * Seed 004 (Sagi Grimberg and Andrea Arcangeli, "mmu_notifier for IB", 2011). A NIC whose
 * translation sync is expensive wants to batch invalidations. Under linux-3.0 the notifier
 * callback may not sleep, so the 2011 prototype took a page reference in the callback and
 * let a worker zap and sync later (driver/broken/deferred-invalidation.ts). Then the process
 * munmaps a page and maps again at the same address (MAP_FIXED): the NIC, still translating
 * the old page, writes data the process never sees (use-after-invalidate; stale-translation
 * as soon as the munmap ends), and NUMA balancing fails to move a registered page because
 * of the reference the callback took (blocked-migration). Under linux-6.x the callback
 * sleeps: the ODP strategy zaps, then waits for the batch that contains its sync; the
 * peer's write refaults into the new page and the migration succeeds. The last part shows
 * what that batching costs in invalidation latency and what it saves in syncs, with one and
 * with several concurrent invalidating tasks (`reuse.tasks`, one ON_DEMAND MR each: two
 * invalidations of one MR never share a sync, since each holds the umem mutex until its
 * sync is done). The deferred driver's worker waits `batching.windowNs` before it syncs.
 */
export const deferredInvalidationReuse: ScenarioDefinition = {
  name: 'deferred-invalidation-reuse',
  summary: 'seed 004: a driver that defers invalidation past the callback (2011), then munmap + MAP_FIXED; and what batching inside the callback costs',
  seeds: ['004'],
  defaultProfile: 'linux-3.0',
  drivers: ['deferred-invalidation', 'odp'],
  defaultDriver: 'deferred-invalidation',
  untilNs: 5_000_000_000,
  params: [
    { ...paramDoc('batching.policy'), default: 'window', description: 'invalidation batching policy of the odp driver (this scenario: window)' },
    { ...paramDoc('cost.syncNs'), default: 200_000, description: 'latency of a translation sync; seed 004: "our HW sync operation is rather expensive" (assumed 200 µs)' },
    { key: 'reuse.tasks', description: 'concurrent invalidating tasks (and MRs) in the batching comparison', default: 8, schema: z.coerce.number().int().min(2).max(64) },
    { key: 'reuse.rounds', description: 'rounds of invalidations per task in the batching comparison', default: 4, schema: z.coerce.number().int().min(1).max(64) },
  ],
  expect: (_profile, driver) => (driver === 'deferred-invalidation' ? ['blocked-migration', 'stale-translation', 'use-after-invalidate'] : []),
  setup(ctx) {
    const { sim, params } = ctx;
    const windowNs = Number(params['batching.windowNs']);
    const tasks = Number(params['reuse.tasks']);
    const rounds = Number(params['reuse.rounds']);
    const deferred = ctx.driver === 'deferred-invalidation';
    let odp: UmemStrategy;
    let policyName: string;
    let deferredStats: DeferredInvalidationStats | null = null;
    if (deferred) {
      const strategy = deferredInvalidationStrategy({ batchWindowNs: windowNs });
      deferredStats = strategy.stats;
      odp = strategy;
      policyName = `deferred worker, window ${us(windowNs)}`;
    } else {
      const b = batchingFromParams(params, sim.scheduler);
      policyName = b.name;
      odp = odpStrategy({ batching: b.policy, batchingName: b.name });
    }
    const host = ctx.node('host', { caps: { odp: MLX5_ODP_CAPS }, device: { nonOdp: pinnedStrategy(), odp } });
    const peerNode = ctx.node('peer', { device: { nonOdp: pinnedStrategy() } });
    const app = openApp(host, host.kernel.createProcess('app'));
    const peer = openApp(peerNode, peerNode.kernel.createProcess('peer'));
    const [, qPeer] = connectRc(app, peer);
    const k = host.kernel;
    const nic = host.nic;
    const syncNs = nic.costs.syncNs;
    const settleNs = windowNs + syncNs + 100_000;
    let wrId = 1;
    const frameAt = (addr: number): number => {
      const pte = app.p.mm.pageTable.get(vpn(addr));
      return ptePresent(pte) ? pteFrame(pte) : -1;
    };
    const deviceFrameAt = (mr: IbvMr, addr: number): number => mr.umem.mr.pageTable.frameOf(mr.umem.mr.pageIndexOf(addr));

    return function* () {
      ctx.say(`profile ${ctx.profile.name}: notifier callbacks ${ctx.profile.atomicCallbacks ? 'run under RCU and may not sleep' : 'may sleep'}; ` +
        `driver '${ctx.driver}' (${policyName}); a translation sync costs ${us(syncNs)}`);
      const buf = yield* mapAnon(app, BUF_PAGES);
      yield* store(app, buf, pattern(1, BUF_PAGES * P));
      const reg = yield* app.ctx.regMr(app.pd, buf, BUF_PAGES * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND);
      if (typeof reg === 'number') {
        ctx.say(`ibv_reg_mr(ON_DEMAND) fails with ${errnoName(reg)}: ODP came in Linux 3.19, after ${ctx.profile.name}`);
        ctx.figure('registration', errnoName(reg));
        yield* app.ctx.close();
        yield* peer.ctx.close();
        return;
      }
      const mr = reg;
      const src = yield* mapAnon(peer, Math.max(BUF_PAGES, PHASE_PAGES));
      yield* store(peer, src, pattern(2, Math.max(BUF_PAGES, PHASE_PAGES) * P));
      const srcMr = yield* regOk(peer, src, Math.max(BUF_PAGES, PHASE_PAGES) * P);

      // 1. The peer writes the whole buffer: the NIC faults every page in.
      let wc = yield* rdmaWrite(peer, qPeer, wrId++, src, srcMr.lkey, buf, mr.rkey, BUF_PAGES * P);
      ctx.say(`the peer RDMA-writes the ${BUF_PAGES} pages: ${statusNames([wc])}; the NIC faulted them in and maps page 0 to frame ${deviceFrameAt(mr, buf)}`);

      // 2. munmap page 0 and map it again at the same address.
      const oldFrame = frameAt(buf);
      const t0 = sim.now();
      must(yield* app.p.munmap(buf, P), 'munmap');
      const munmapNs = sim.now() - t0;
      ctx.figure('munmap latency (ns)', munmapNs);
      ctx.say(deferred
        ? `munmap(page 0) returns after ${us(munmapNs)}: the callback took a reference on frame ${oldFrame} and queued the zap for its worker`
        : `munmap(page 0) returns after ${us(munmapNs)}: the callback zapped the entry and waited until its batch (${policyName}) was synced (${us(syncNs)})`);
      const again = must(yield* app.p.mmap(buf, P, RW, ANON | MAP_FIXED), 'mmap(MAP_FIXED)');
      yield* store(app, again, pattern(3, 64));
      const newFrame = frameAt(buf);
      ctx.say(`mmap(MAP_FIXED) at the same address; the process writes its new page (frame ${newFrame}); the device maps page 0 to ${deviceFrameAt(mr, buf) < 0 ? 'nothing' : `frame ${deviceFrameAt(mr, buf)}`}`);

      // 3. The peer writes page 0 again.
      const msg = pattern(4, 64);
      yield* store(peer, src, msg);
      wc = yield* rdmaWrite(peer, qPeer, wrId++, src, srcMr.lkey, buf, mr.rkey, 64);
      const seen = equalBytes(yield* load(app, buf, 64), msg);
      ctx.figure('peer write reached the process', seen ? 'yes' : 'no');
      ctx.say(seen
        ? `the peer writes page 0 (${statusNames([wc])}): the NIC refaulted and wrote the process's new page`
        : `the peer writes page 0 (${statusNames([wc])}) into the OLD frame ${oldFrame}: the process reads its own bytes, the peer's message is lost when the worker drops the reference`);

      // 4. NUMA balancing moves a registered page the NIC uses, in the context of the app's
      //    thread that touched it (as a NUMA hinting fault does).
      const frame1 = frameAt(buf + P);
      const numa: Task<number> = app.p.spawnThread('numa-hinting-fault', () => migratePage(k, frame1, 'numa'));
      const mret = yield* sim.join(numa);
      ctx.figure('migration of a registered page', mret === 0 ? 'moved' : errnoName(mret));
      ctx.say(mret === 0
        ? `NUMA balancing moves page 1 from frame ${frame1} to ${frameAt(buf + P)}: the callback dropped the translation, the NIC will refault`
        : `NUMA balancing fails to move page 1 (frame ${frame1}) with ${errnoName(mret)}: the reference the callback took is one more than migration expects`);
      yield* sim.sleep(settleNs);
      if (deferredStats) {
        ctx.figure('deferred: page references taken in callbacks', deferredStats.referencesTaken);
        ctx.figure('deferred: longest callback return to fencing sync (ns)', deferredStats.maxExposureNs);
        ctx.say(`the worker zapped and synced ${us(deferredStats.maxExposureNs)} after the callbacks returned: ` +
          `that is the window in which the NIC used pages the kernel had already given up`);
      }

      // 5. What batching costs: 1 task invalidating one MR after another, then N tasks at once.
      const bufs: number[] = [];
      const mrs: IbvMr[] = [];
      for (let i = 0; i < tasks; i++) {
        const b = yield* mapAnon(app, PHASE_PAGES);
        bufs.push(b);
        mrs.push(must(yield* app.ctx.regMr(app.pd, b, PHASE_PAGES * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND), 'reg_mr'));
      }
      const phase = function* (concurrent: boolean): Co<{ latencies: number[]; syncs: number }> {
        const latencies: number[] = [];
        let syncs = 0;
        for (let r = 0; r < rounds; r++) {
          for (let i = 0; i < tasks; i++) {
            yield* rdmaWrite(peer, qPeer, wrId++, src, srcMr.lkey, bufs[i] as number, (mrs[i] as IbvMr).rkey, PHASE_PAGES * P);
          }
          const before = nic.stats.syncs;
          const dontneed = (i: number) => function* (): Co {
            const ts = sim.now();
            must(yield* app.p.madvise(bufs[i] as number, PHASE_PAGES * P, MADV_DONTNEED), 'madvise(DONTNEED)');
            latencies.push(sim.now() - ts);
          };
          if (concurrent) {
            const threads = bufs.map((_b, i) => app.p.spawnThread(`invalidator-${i}`, dontneed(i)));
            for (const t of threads) yield* sim.join(t);
          } else {
            yield* sim.join(app.p.spawnThread('invalidator', function* () {
              for (let i = 0; i < tasks; i++) yield* dontneed(i)();
            }));
          }
          yield* sim.sleep(settleNs);
          syncs += nic.stats.syncs - before;
        }
        return { latencies, syncs };
      };
      const one = yield* phase(false);
      const many = yield* phase(true);
      const n = tasks * rounds;
      ctx.figure('tasks', tasks);
      ctx.figure('invalidations per phase', n);
      ctx.figure('1 task: invalidation p50 (ns)', percentile(one.latencies, 50));
      ctx.figure('1 task: invalidation p99 (ns)', percentile(one.latencies, 99));
      ctx.figure('1 task: syncs', one.syncs);
      ctx.figure(`${tasks} tasks: invalidation p50 (ns)`, percentile(many.latencies, 50));
      ctx.figure(`${tasks} tasks: invalidation p99 (ns)`, percentile(many.latencies, 99));
      ctx.figure(`${tasks} tasks: syncs`, many.syncs);
      ctx.say(`batching (${policyName}), ${n} MADV_DONTNEED invalidations of ${PHASE_PAGES}-page ON_DEMAND MRs per phase:`);
      ctx.say(`  1 task, one MR after another: p50 ${us(percentile(one.latencies, 50))}, p99 ${us(percentile(one.latencies, 99))}, ${one.syncs} syncs`);
      ctx.say(`  ${tasks} tasks at once, one MR each: p50 ${us(percentile(many.latencies, 50))}, p99 ${us(percentile(many.latencies, 99))}, ${many.syncs} syncs`);
      ctx.say(deferred
        ? '  the deferred callback makes every invalidation look free and batches even a lone task: the cost moved to correctness (above)'
        : `  with a window, a lone task pays the whole window and saves nothing; concurrent tasks share one sync (without batching: zap + ${us(syncNs)} each, one sync per invalidation). ` +
          'Invalidations of one MR never share a sync: each holds the umem mutex until its sync is done (rdma C3)');

      for (const m of mrs) must(yield* app.ctx.deregMr(m), 'dereg_mr');
      must(yield* app.ctx.deregMr(mr), 'dereg_mr');
      yield* app.ctx.close();
      yield* peer.ctx.close();
      yield* app.p.exit();
      yield* peer.p.exit();
    };
  },
};
