import {
  MADV_PAGEOUT, eventName, pteHas, PTE_SWAP, vpn, type Co, type NotifierStreamEvent,
} from '../kernel-model/index.ts';
import {
  IBV_QPS_ERR, IBV_SEND_SIGNALED, IBV_WR_SEND, NO_ODP_CAPS, qpStateName, type QueuePair, type WorkCompletion,
} from '../device/index.ts';
import { holdoffStrategy, newHoldoffStats, type HoldoffStats, type HoldoffStrategy, type IbvMr } from '../driver/index.ts';
import {
  ALL_ACCESS, P, completions, connectRc, equalBytes, load, mapAnon, must, openApp, pattern, regOk, statusNames, store,
} from './app.ts';
import { batchingFromParams, rdmaWrite, us } from './deferred-invalidation-reuse.ts';
import type { ScenarioDefinition } from './scenario.ts';

/** Pages of the long transfers (4 MiB). */
const LONG_PAGES = 1024;
/** Pages proactive reclaim pages out in the second part. */
const RECLAIM_PAGES = 16;

/**
 * The holdoff statistics of an MR. A driver author's strategy standing in for holdoff
 * (`lab check`, `--driver ./file.ts`) may keep none: its figures then read zero.
 */
const holdoffOf = (mr: IbvMr): { stats: HoldoffStats; revoked: boolean } => {
  const u = mr.umem as { stats?: HoldoffStats; revoked?: boolean };
  const stats = u.stats ?? newHoldoffStats();
  return {
    stats,
    get revoked() {
      return u.revoked === true;
    },
  };
};

/**
 * Seed 000 (John Hubbard and Christopher Lameter, linux-mm, June 2018): "If a NIC does not
 * support a hardware mmu then it can still simulate it in software by holding off the
 * unmapping [in] the mmu notifier callback until any pending operation is complete and then
 * invalidate the mapping so that future operations require a remapping." A NIC without page
 * faults runs the holdoff strategy (driver/umem-holdoff.ts, a design under study, rdma H3):
 * no pins, and an invalidation waits until the DMA touching its range has drained, then
 * zaps and syncs. How long does the kernel then wait? A munmap during a 4 MiB RDMA WRITE
 * waits for the rest of the transfer; proactive reclaim (MADV_PAGEOUT) of pages under a
 * transfer holds its CLEAR window open just as long, and the next post remaps them (swap-in)
 * with one system call. A send that cannot finish (the peer posted no receive: RNR, retried
 * for ever) would hold reclaim off for ever: the holdoff timeout revokes the MR instead, the
 * QP goes to ERROR, the application sees error completions (no MR-level event exists, rdma
 * F4), and recovers by registering and connecting again. Nothing here violates a contract:
 * a revocation is the designed way out.
 */
export const holdoffNonFaultable: ScenarioDefinition = {
  name: 'holdoff-non-faultable',
  summary: 'seed 000: a NIC without page faults holds off munmap and reclaim until its DMA drains; the holdoff timeout revokes',
  seeds: ['000'],
  defaultProfile: 'linux-6.x',
  drivers: ['holdoff'],
  defaultDriver: 'holdoff',
  untilNs: 10_000_000_000,
  expect: () => [],
  setup(ctx) {
    const { sim, params } = ctx;
    const timeoutNs = Number(params['holdoff.timeoutNs']);
    const batching = batchingFromParams(params, sim.scheduler);
    const strategy = () => holdoffStrategy({ holdoffTimeoutNs: timeoutNs, batching: batching.policy, batchingName: batching.name });
    const host = ctx.node('host', { caps: { odp: NO_ODP_CAPS }, device: { nonOdp: strategy() } });
    const peerNode = ctx.node('peer', { caps: { odp: NO_ODP_CAPS }, device: { nonOdp: strategy() } });
    const app = openApp(host, host.kernel.createProcess('app'));
    const peer = openApp(peerNode, peerNode.kernel.createProcess('peer'));
    const k = host.kernel;
    const nic = host.nic;
    const costs = nic.costs;
    const pageAccessNs = Math.round(P / costs.pcieBytesPerNs + costs.translationMissNs);
    const zapNs = (pages: number) => costs.zapEntriesBaseNs + pages * costs.zapEntriesPerPageNs;
    // Invalidation windows (start to end) of the host's mm, per event, as they close.
    const windows: { event: string; ns: number; end: number }[] = [];
    const open = new Map<object, number>();
    k.notifier$.subscribe((e: NotifierStreamEvent) => {
      if (e.phase === 'start') open.set(e.range, e.time);
      else {
        const t = open.get(e.range);
        open.delete(e.range);
        if (t !== undefined && e.phase === 'end') windows.push({ event: eventName(e.range.event), ns: e.time - t, end: e.time });
      }
    });
    let wrId = 1;

    return function* () {
      if (!ctx.profile.intervalNotifiers) {
        ctx.say(`this driver registers through interval notifiers (Linux 5.5), which ${ctx.profile.name} lacks: nothing to show`);
        return;
      }
      ctx.say(`a NIC without page faults; holdoff timeout ${us(timeoutNs)}; batching ${batching.name}; ` +
        `the NIC reads or writes a page in about ${us(pageAccessNs)}, so 4 MiB takes about ${us(LONG_PAGES * pageAccessNs)} on each side`);
      let [qa, qb] = connectRc(app, peer);
      const dst = yield* mapAnon(peer, LONG_PAGES);
      yield* store(peer, dst, pattern(9, P));
      const dstMr = yield* regOk(peer, dst, LONG_PAGES * P, ALL_ACCESS);

      // 1. munmap of the source of a long RDMA WRITE.
      const src = yield* mapAnon(app, LONG_PAGES);
      yield* store(app, src, pattern(1, LONG_PAGES * P));
      const srcMr = yield* regOk(app, src, LONG_PAGES * P, ALL_ACCESS);
      ctx.say(`registration faulted ${LONG_PAGES} pages in without pinning them (pinned_vm ${app.p.mm.pinnedVm})`);
      let done: WorkCompletion | undefined;
      const writer = app.p.spawnThread('writer', function* (): Co {
        done = yield* rdmaWrite(app, qa, wrId++, src, srcMr.lkey, dst, dstMr.rkey, LONG_PAGES * P);
      });
      // The munmap arrives half-way through the transfer (seeds other than 1: anywhere from a quarter to three quarters).
      yield* sim.sleep(costs.doorbellNs + ctx.vary('munmap arrival page', LONG_PAGES / 2, LONG_PAGES / 4, (3 * LONG_PAGES) / 4) * pageAccessNs);
      const heldBefore = holdoffOf(srcMr).stats.holdoffNs;
      let t0 = sim.now();
      must(yield* app.p.munmap(src, LONG_PAGES * P), 'munmap');
      const munmapNs = sim.now() - t0;
      const heldNs = holdoffOf(srcMr).stats.holdoffNs - heldBefore;
      yield* sim.join(writer);
      const wc = done as WorkCompletion;
      const arrived = equalBytes(yield* load(peer, dst, LONG_PAGES * P), pattern(1, LONG_PAGES * P));
      ctx.figure('munmap latency (ns)', munmapNs);
      ctx.figure('munmap held off for DMA (ns)', heldNs);
      ctx.figure('munmap zap + sync (ns)', munmapNs - heldNs);
      ctx.figure('write completed after munmap began (ns)', wc.time - t0);
      ctx.say(holdoffOf(srcMr).revoked
        ? `munmap half-way through the gather waits ${us(munmapNs)}: the holdoff timeout (${us(heldNs)}), then the QP goes to ERROR, ` +
          `the MR is revoked, zapped (${us(zapNs(LONG_PAGES))}) and synced (${us(costs.syncNs)})`
        : `munmap half-way through the gather waits ${us(munmapNs)}: ${us(heldNs)} for the WRITE to drain (it completes ${us(wc.time - t0)} after the munmap began), ` +
          `then zap ${us(zapNs(LONG_PAGES))} and sync ${us(costs.syncNs)}`);
      ctx.say(`the WRITE: ${statusNames([wc])}; every byte of the unmapped buffer reached the peer: ${arrived ? 'yes' : 'no'}`);
      const reconnect = (why: string) => {
        if (qa.state !== IBV_QPS_ERR) return;
        [qa, qb] = connectRc(app, peer);
        ctx.say(`${why}: the QP is in ERROR; the application connects a new pair`);
      };
      reconnect('the holdoff timed out during the munmap');

      // 2. Proactive reclaim of pages under a long transfer.
      const src2 = yield* mapAnon(app, LONG_PAGES);
      yield* store(app, src2, pattern(2, LONG_PAGES * P));
      const src2Mr = yield* regOk(app, src2, LONG_PAGES * P, ALL_ACCESS);
      const umem2 = holdoffOf(src2Mr);
      const writer2 = app.p.spawnThread('writer', function* (): Co {
        done = yield* rdmaWrite(app, qa, wrId++, src2, src2Mr.lkey, dst, dstMr.rkey, LONG_PAGES * P);
      });
      yield* sim.sleep(costs.doorbellNs + (LONG_PAGES / 4) * pageAccessNs);
      const swapBefore = k.swap.used;
      const firstWindow = windows.length;
      t0 = sim.now();
      yield* sim.join(app.p.spawnThread('pageout', function* (): Co {
        must(yield* app.p.madvise(src2, RECLAIM_PAGES * P, MADV_PAGEOUT), 'madvise(PAGEOUT)');
      }));
      const pageoutNs = sim.now() - t0;
      yield* sim.join(writer2);
      const clears = windows.slice(firstWindow).filter((w) => w.event === 'CLEAR');
      const longest = Math.max(0, ...clears.map((w) => w.ns));
      let swapped = 0;
      for (let i = 0; i < RECLAIM_PAGES; i++) if (pteHas(app.p.mm.pageTable.get(vpn(src2 + i * P)), PTE_SWAP)) swapped++;
      ctx.figure('reclaim: MADV_PAGEOUT latency (ns)', pageoutNs);
      ctx.figure('reclaim: longest CLEAR window (ns)', longest);
      ctx.figure('reclaim: CLEAR windows', clears.length);
      ctx.figure('reclaim: pages swapped out', swapped);
      ctx.say(`proactive reclaim (MADV_PAGEOUT) of ${RECLAIM_PAGES} pages a quarter into a second WRITE: ${clears.length} CLEAR windows, ` +
        `the longest held open ${us(longest)} while the WRITE (${statusNames([done as WorkCompletion])}) drained; ` +
        `${swapped} pages swapped out (swap slots ${swapBefore} -> ${k.swap.used}) in ${us(pageoutNs)}`);
      reconnect('the holdoff timed out during the reclaim');
      const remapsBefore = umem2.stats.remaps;
      const wc2 = yield* rdmaWrite(app, qa, wrId++, src2, src2Mr.lkey, dst, dstMr.rkey, RECLAIM_PAGES * P);
      reconnect('the second WRITE used a revoked MR');
      const back = equalBytes(yield* load(peer, dst, RECLAIM_PAGES * P), pattern(2, RECLAIM_PAGES * P));
      ctx.figure('remap system calls after reclaim', umem2.stats.remaps - remapsBefore);
      ctx.say(umem2.revoked
        ? `the next WRITE from those pages uses the revoked MR: ${statusNames([wc2])}; only a new registration would do`
        : `the next WRITE from those pages: the provider saw them invalid and made ${umem2.stats.remaps - remapsBefore} remap system call(s) ` +
          `(swap-in, ${us(umem2.stats.remapNs)}) before ringing the doorbell: ${statusNames([wc2])}, the peer got the swapped-in bytes: ${back ? 'yes' : 'NO'}`);

      // 3. A send that cannot finish, and the holdoff timeout.
      const ring = yield* mapAnon(app, 1);
      yield* store(app, ring, pattern(3, P));
      const ringMr = yield* regOk(app, ring, P, ALL_ACCESS);
      const sendOn = (qp: QueuePair, mr: IbvMr) => app.ctx.postSend(qp, {
        wrId: wrId++, opcode: IBV_WR_SEND, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: ring, length: P, lkey: mr.lkey }],
      });
      must(yield* sendOn(qa, ringMr), 'post SEND');
      yield* sim.sleep(50_000);
      ctx.say(`a SEND from a 1-page ring to a peer that has posted no receive: RNR NAKs, retried for ever (rnr_retry 7); ` +
        `${qa.stats.rnrNaksReceived} so far`);
      t0 = sim.now();
      yield* sim.join(app.p.spawnThread('pageout', function* (): Co {
        must(yield* app.p.madvise(ring, P, MADV_PAGEOUT), 'madvise(PAGEOUT)');
      }));
      const revokeNs = sim.now() - t0;
      const failed = yield* completions(app, 1);
      const revoked = holdoffOf(ringMr).revoked;
      ctx.figure('timeout: reclaim latency (ns)', revokeNs);
      ctx.figure('timeout: revocations', holdoffOf(ringMr).stats.revocations);
      ctx.figure('timeout: completion', statusNames(failed));
      ctx.say(`reclaim of the ring page waits the holdoff timeout, then fences the device: ${us(revokeNs)} (timeout ${us(timeoutNs)} + zap + sync); ` +
        `MR ${revoked ? 'revoked' : 'NOT revoked'}, QP ${qpStateName(qa.state)}, the application polls ${statusNames(failed)}`);

      // Recovery: deregister the dead MR, register again, connect new QPs, and resend once the peer is ready.
      must(yield* app.ctx.deregMr(ringMr), 'dereg_mr');
      const ringMr2 = yield* regOk(app, ring, P, ALL_ACCESS);
      [qa, qb] = connectRc(app, peer);
      const inbox = yield* mapAnon(peer, 1);
      const inboxMr = yield* regOk(peer, inbox, P, ALL_ACCESS);
      must(yield* peer.ctx.postRecv(qb, { wrId: 1000, sgList: [{ addr: inbox, length: P, lkey: inboxMr.lkey }] }), 'post RECV');
      must(yield* sendOn(qa, ringMr2), 'post SEND');
      const ok = yield* completions(app, 1);
      const got = yield* completions(peer, 1);
      const delivered = equalBytes(yield* load(peer, inbox, P), pattern(3, P));
      ctx.figure('recovery: resend', statusNames(ok));
      ctx.say(`recovery: dereg the revoked MR, register the ring again (which faults the reclaimed page back in), new QPs; the peer posts its receive: ` +
        `${statusNames(ok)} / ${statusNames(got)}, message ${delivered ? 'delivered' : 'NOT delivered'}`);
      const s = (host.device.opts.nonOdp as Partial<HoldoffStrategy>).stats ?? newHoldoffStats();
      ctx.figure('holdoff: invalidations', s.invalidations);
      ctx.figure('holdoff: waits for DMA', s.heldOff);
      ctx.figure('holdoff: longest wait (ns)', s.maxHoldoffNs);
      ctx.figure('holdoff: timeouts', s.timeouts);

      yield* app.ctx.close();
      yield* peer.ctx.close();
      yield* app.p.exit();
      yield* peer.p.exit();
    };
  },
};
