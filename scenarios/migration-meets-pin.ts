import { errnoName, migratePage, pteFrame, vpn, type Co } from '../kernel-model/index.ts';
import {
  IBV_ACCESS_ON_DEMAND, IBV_SEND_SIGNALED, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, MLX5_ODP_CAPS, NO_ODP_CAPS, wcStatusName,
  type QueuePair,
} from '../device/index.ts';
import { odpStrategy, pinnedStrategy, type IbvMr } from '../driver/index.ts';
import { ALL_ACCESS, P, completions, connectRc, equalBytes, load, mapAnon, must, openApp, pattern, regOk, store } from './app.ts';
import type { ScenarioDefinition } from './scenario.ts';

const PAGES = 2;

/**
 * Seed 004 (Sagi Grimberg and Andrea Arcangeli, "mmu_notifier for IB", November-December
 * 2011). Sagi worries: "say the system wants to migrate a page, we attempt to pin the page
 * during the migration, but the NUMA migrator already started migration, and will not
 * honor our pinning request, and we might end up writing on a freed page." Andrea: "Migration
 * will verify the page is not pinned by get_user_pages before starting moving it. And before
 * checking it blocks the pte, so you can't grab the page pin with get_user_pages while it's
 * being migrated."
 *
 * The story: a process registers a two-page buffer, a peer RDMA READs and WRITEs it, and
 * NUMA balancing then decides the buffer belongs on the other node: each page gets the
 * CLEAR of try_to_migrate_one, then migration checks the references (kernel rule 73).
 * - Pinned MR (`--driver pinned`): the pin is an extra reference (on 5.8 and later an
 *   exclusive anonymous page that looks pinned already fails the share step, rule 71), so
 *   migration gives up and puts the PTEs back. The NIC never writes a freed page: Andrea
 *   was right. The price is that the page cannot move (`blocked-migration`, a warning: the
 *   documented cost of pinning, H11/H12), and the process keeps paying remote-node latency.
 * - ODP MR (`--driver odp`, an mlx5-class NIC): the driver holds no page reference; the
 *   CLEAR zaps the device's entry and waits for the sync; the page moves; the peer's next
 *   access faults (RNR on a WRITE, a dropped packet and a transport retry on a READ) and the
 *   driver maps the new frame. Nothing to report.
 *
 * The migration runs in the process's own context (NUMA balancing migrates on the hinting
 * fault of the task that touched the page). Default: linux-6.x with the pinned driver, the
 * failure this scenario exists to show; `--driver odp` is the contrast. Under profiles
 * before 5.5 the model's ODP driver cannot register (no interval notifiers), so that
 * combination shows nothing.
 */
export const migrationMeetsPin: ScenarioDefinition = {
  name: 'migration-meets-pin',
  summary: 'seed 004: NUMA migration of a pinned MR page fails and leaves it (blocked-migration); on an ODP MR it moves and the NIC refaults to the new frame',
  seeds: ['004'],
  defaultProfile: 'linux-6.x',
  drivers: ['pinned', 'odp'],
  defaultDriver: 'pinned',
  untilNs: 10_000_000_000,
  expect: (_profile, driver) => (driver === 'pinned' ? ['blocked-migration'] : []),
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

    return function* (): Co<void> {
      const buf = yield* mapAnon(app, PAGES);
      yield* store(app, buf, pattern(1, PAGES * P));
      const frames = () => Array.from({ length: PAGES }, (_, i) => pteFrame(app.p.mm.pageTable.get(vpn(buf + i * P))));
      const before = frames();
      ctx.say(`the worker fills a ${PAGES}-page buffer (frames ${before.join(', ')})`);

      const reg = yield* app.ctx.regMr(app.pd, buf, PAGES * P, ALL_ACCESS | (odp ? IBV_ACCESS_ON_DEMAND : 0));
      if (typeof reg === 'number') {
        ctx.say(`ibv_reg_mr(ON_DEMAND) = ${errnoName(reg)}: ODP came in Linux 3.19, after ${ctx.profile.name}`);
        ctx.figure('registration', errnoName(reg));
        yield* app.ctx.close();
        yield* peer.ctx.close();
        return;
      }
      const mr: IbvMr = reg;
      ctx.figure('registration', 'ok');
      ctx.say(odp
        ? 'an ODP MR: no page references; the driver mirrors what the CPU maps and follows its invalidations'
        : `a pinned MR: ib_umem_get ${k.profile.follPin ? 'pinned every page (refcount + 1024 each, MMF_HAS_PINNED)' : 'took a get_user_pages reference on every page'}`);

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
      const faultsBefore = () => mr.umem.counters.faultsHandled;
      const s1 = yield* rdma(IBV_WR_RDMA_READ);
      const read1 = yield* load(peer, local, PAGES * P);
      ctx.say(`the peer RDMA READs the buffer: ${s1}, ${equalBytes(read1, pattern(1, PAGES * P)) ? 'the worker\'s bytes' : 'WRONG bytes'}` +
        (odp ? ` (${faultsBefore() === 0 ? 'no NIC fault: registration mirrored the pages already present' : `${faultsBefore()} NIC fault(s) mapped it`})` : ''));

      // NUMA balancing: the hinting fault of the worker migrates each page to the other node.
      let migrated = 0;
      let failed = 0;
      const results: string[] = [];
      const numa = app.p.spawnThread('numa-hinting-fault', function* () {
        for (const f of frames()) {
          const r = yield* migratePage(k, f, 'numa');
          if (r === 0) migrated++;
          else failed++;
          results.push(`frame ${f}: ${r === 0 ? 'moved' : errnoName(r)}`);
        }
      });
      yield* k.sim.join(numa);
      const after = frames();
      ctx.say(`NUMA balancing migrates the buffer (CLEAR per page, then the reference check of rule 73): ${results.join('; ')}`);
      if (failed > 0) {
        ctx.say(k.profile.follPin
          ? 'the pinned pages are exclusive anonymous pages that look pinned: folio_try_share_anon_rmap fails (rule 71) and the PTEs are put back at once. The pin held: the NIC never sees a freed page, and the page stays on the wrong node'
          : 'the get_user_pages references make the reference count differ from what migration expects (rule 73): -EAGAIN, the old PTEs come back. The page stays on the wrong node');
      } else {
        const reused = after.filter((f) => before.includes(f));
        ctx.say(`the pages moved to frames ${after.join(', ')}: each CLEAR zapped the device entry and waited for the sync before migration copied the page and freed the old frame` +
          reused.map((f) => `; frame ${f}, page ${before.indexOf(f)}'s old home, was handed out again at once and now holds page ${after.indexOf(f)}: ` +
            `a device still translating it for page ${before.indexOf(f)} would write into the wrong page`).join(''));
      }

      // Traffic after the migration attempt: the process writes, the peer reads and writes.
      yield* store(app, buf, pattern(2, PAGES * P));
      const faultsMid = faultsBefore();
      const s2 = yield* rdma(IBV_WR_RDMA_READ);
      const read2 = yield* load(peer, local, PAGES * P);
      const readOk = equalBytes(read2, pattern(2, PAGES * P));
      ctx.say(`the worker rewrites the buffer; the peer RDMA READs it: ${s2}, ${readOk ? 'the new bytes' : 'STALE bytes'}` +
        (odp ? ` (${faultsBefore() - faultsMid} NIC fault(s): the device refaulted to the new frames)` : ' (the device still translates the frames it pinned, which never moved)'));
      yield* store(peer, local, pattern(3, PAGES * P));
      const s3 = yield* rdma(IBV_WR_RDMA_WRITE);
      const back = yield* load(app, buf, PAGES * P);
      const writeOk = equalBytes(back, pattern(3, PAGES * P));
      ctx.say(`the peer RDMA WRITEs the buffer: ${s3}; the worker reads ${writeOk ? 'the peer\'s bytes' : 'STALE bytes'}`);

      ctx.figure('migrations attempted', migrated + failed);
      ctx.figure('migrations failed', failed);
      ctx.figure('pages moved', after.filter((f, i) => f !== before[i]).length);
      ctx.figure('NIC faults on the MR', faultsBefore());
      ctx.figure('data coherent after', readOk && writeOk ? 'yes' : 'no');

      must(yield* app.ctx.deregMr(mr), 'dereg_mr');
      yield* app.ctx.close();
      yield* peer.ctx.close();
    };
  },
};
