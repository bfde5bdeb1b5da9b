import { MADV_MERGEABLE, pteFrame, startKsmd, vpn, type Co } from '../kernel-model/index.ts';
import {
  IBV_ACCESS_ON_DEMAND, IBV_SEND_SIGNALED, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, MLX5_ODP_CAPS, NO_ODP_CAPS, wcStatusName,
  type QueuePair,
} from '../device/index.ts';
import { odpStrategy, pinnedStrategy } from '../driver/index.ts';
import { ALL_ACCESS, P, completions, connectRc, equalBytes, load, mapAnon, must, openApp, pattern, regOk, store } from './app.ts';
import type { ScenarioDefinition } from './scenario.ts';

const PAGES = 8;
const HALF = PAGES / 2;

/** Page i and page i + HALF hold the same bytes (a duplicated image, as KSM's users have). */
function duplicated(seed: number): Uint8Array {
  const half = pattern(seed, HALF * P);
  const out = new Uint8Array(PAGES * P);
  out.set(half, 0);
  out.set(half, HALF * P);
  return out;
}

/**
 * KSM under a registered buffer (issue 14 item 9; kernel rules 21g, 75; mm/ksm.c). A
 * worker's 8-page buffer holds two copies of the same 4 pages and is registered with the
 * NIC; the worker marks it MADV_MERGEABLE and ksmd (100 pages every 20 ms, the defaults)
 * merges the copies: per merged pair, a one-page CLEAR to write-protect each page
 * (write_protect_page) and one to replace the second (replace_page).
 * - ODP MR (`--driver odp`, default): each CLEAR zaps the device's entries. The peer's next
 *   READ makes the NIC fault, and mlx5 faults a writable MR for write (only a prefetch
 *   downgrades), so the fault breaks every KSM page it covers (a COW copy, another CLEAR):
 *   ksmd's work is undone by the first access and redone at its next pass (a page
 *   identical to a KSM page merges at first sight). The bytes stay right. Nothing to report.
 * - Pinned MR (`--driver pinned`): the pinned pages are exclusive and look pinned, so
 *   write_protect_page gives up after its CLEAR (the share step fails, rule 71/75):
 *   nothing merges, and the NIC keeps its pages.
 */
export const ksmMergesMr: ScenarioDefinition = {
  name: 'ksm-merges-mr',
  summary: 'KSM merges identical pages of a registered buffer: CLEARs, NIC refaults onto KSM pages and a COW break on write (ODP); pinned pages are never merged',
  seeds: [],
  defaultProfile: 'linux-6.x',
  drivers: ['odp', 'pinned'],
  defaultDriver: 'odp',
  untilNs: 10_000_000_000,
  expect: () => [],
  setup(ctx) {
    const odp = ctx.driver === 'odp';
    const host = ctx.node('host', {
      device: odp ? { nonOdp: pinnedStrategy(), odp: odpStrategy() } : { nonOdp: pinnedStrategy() },
      caps: { odp: odp ? MLX5_ODP_CAPS : NO_ODP_CAPS },
    });
    const peerNode = ctx.node('peer', { device: { nonOdp: pinnedStrategy() } });
    const k = host.kernel;
    const app = openApp(host, k.createProcess('worker'));
    const peer = openApp(peerNode, peerNode.kernel.createProcess('peer'));
    const stats = startKsmd(k); // pages_to_scan 100 every 20 ms, the kernel's defaults
    const invalidations: string[] = [];
    k.notifier$.subscribe((e) => {
      if (e.phase === 'start' && e.mm === app.p.mm.id) invalidations.push(`${e.range.start}`);
    });

    return function* (): Co<void> {
      if (odp && !ctx.profile.intervalNotifiers) {
        ctx.say(`the ODP driver registers through interval notifiers (Linux 5.5), which ${ctx.profile.name} lacks: nothing to show`);
        return;
      }
      const buf = yield* mapAnon(app, PAGES);
      yield* store(app, buf, duplicated(1));
      const frames = () => Array.from({ length: PAGES }, (_, i) => pteFrame(app.p.mm.pageTable.get(vpn(buf + i * P))));
      const mr = yield* regOk(app, buf, PAGES * P, ALL_ACCESS | (odp ? IBV_ACCESS_ON_DEMAND : 0));
      const [qp] = connectRc(peer, app);
      const local = yield* mapAnon(peer, PAGES);
      const localMr = yield* regOk(peer, local, PAGES * P, ALL_ACCESS);
      let wrId = 0;
      const rdma = function* (opcode: typeof IBV_WR_RDMA_READ | typeof IBV_WR_RDMA_WRITE): Co<string> {
        must(yield* peer.ctx.postSend(qp as QueuePair, {
          wrId: ++wrId, opcode, sendFlags: IBV_SEND_SIGNALED,
          sgList: [{ addr: local, length: PAGES * P, lkey: localMr.lkey }],
          rdma: { remoteAddr: buf, rkey: mr.rkey },
        }), 'post');
        const [wc] = yield* completions(peer, 1);
        return wc ? wcStatusName(wc.status) : 'no completion';
      };
      ctx.say(`the worker's ${PAGES}-page buffer holds two copies of 4 pages (frames ${frames().join(', ')}), registered ${odp ? 'on demand (ODP)' : 'pinned'}`);

      const before = invalidations.length;
      must(yield* app.p.madvise(buf, PAGES * P, MADV_MERGEABLE), 'madvise');
      yield* k.sim.sleep(50_000_000);
      const merged = frames();
      const distinct = new Set(merged).size;
      ctx.say(`MADV_MERGEABLE, then 50 ms of ksmd: ${stats.merged} page(s) merged into KSM pages, ${distinct} distinct frames left ` +
        `(${merged.join(', ')}); ${invalidations.length - before} CLEAR invalidation(s) of the worker's mm` +
        (stats.wpFailed > 0 ? `; write_protect_page gave up ${stats.wpFailed} time(s): the pages are pinned (rule 75)` : ''));

      const s1 = yield* rdma(IBV_WR_RDMA_READ);
      const read = yield* load(peer, local, PAGES * P);
      const readOk = equalBytes(read, duplicated(1));
      ctx.say(`the peer RDMA READs the buffer: ${s1}, ${readOk ? 'the worker\'s bytes' : 'WRONG bytes'}` +
        (odp ? ` (${mr.umem.counters.faultsHandled} NIC fault(s) so far, each for write: frames now ${frames().join(', ')}, the KSM pages broken again)` : ''));
      yield* store(peer, local, pattern(9, PAGES * P));
      const s2 = yield* rdma(IBV_WR_RDMA_WRITE);
      const back = yield* load(app, buf, PAGES * P);
      const writeOk = equalBytes(back, pattern(9, PAGES * P));
      ctx.say(`the peer RDMA WRITEs the buffer: ${s2}; the worker reads ${writeOk ? 'the peer\'s bytes' : 'STALE bytes'} ` +
        `(frames now ${frames().join(', ')}${odp ? '' : ': the pinned pages never moved'})`);

      ctx.figure('pages merged by KSM', stats.merged);
      ctx.figure('merges refused by write_protect_page', stats.wpFailed);
      ctx.figure('CLEAR invalidations of the worker', invalidations.length - before);
      ctx.figure('NIC faults on the MR', mr.umem.counters.faultsHandled);
      ctx.figure('data coherent', readOk && writeOk ? 'yes' : 'no');

      must(yield* app.ctx.deregMr(mr), 'dereg_mr');
      yield* app.ctx.close();
      yield* peer.ctx.close();
    };
  },
};
