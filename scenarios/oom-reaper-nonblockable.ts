import {
  EAGAIN, MAX_OOM_REAP_RETRIES, OOM_REAP_RETRY_NS, errnoName, oomKill, ptePresent, vpn, type Co, type OomReapResult,
} from '../kernel-model/index.ts';
import { IBV_ACCESS_ON_DEMAND, MLX5_ODP_CAPS } from '../device/index.ts';
import { odpStrategy, pinnedStrategy } from '../driver/index.ts';
import { sleepInNonblockableStrategy } from '../driver/broken/sleep-in-nonblockable.ts';
import { ALL_ACCESS, P, connectRc, mapAnon, openApp, pattern, regOk, statusNames, store } from './app.ts';
import { batchingFromParams, rdmaWrite, us } from './deferred-invalidation-reuse.ts';
import type { ScenarioDefinition } from './scenario.ts';

/** The victim's heap (no MR on it) and its ODP-registered buffer, in pages. */
const HEAP_PAGES = 64;
const BUF_PAGES = 16;
/** How long the victim stays stuck in the kernel before its SIGKILL makes it exit. */
const STUCK_NS = 250_000_000;

/**
 * Kernel rules 15-17, rdma C2, hazard H5: the OOM reaper frees a killed process's memory
 * without waiting for the process, so its invalidations are non-blockable, and a subscriber
 * that would have to sleep must answer false (-EAGAIN) instead. The victim here has a heap
 * and a buffer registered as an ODP MR that a peer has been writing; it is stuck in the
 * kernel for 250 ms when the OOM killer picks it. With the reference ODP strategy the
 * reaper frees the heap at once, gets -EAGAIN for the buffer's VMA (mlx5 refuses every
 * non-blockable range: it would need the umem mutex and a device sync), skips it, retries
 * every 100 ms, and the buffer comes back only when the victim finally exits (exit_mmap's
 * blockable invalidation). On linux-4.18 (before 4.19's non-blocking start) the reaper
 * gives up at once on an mm with notifiers: one attempt, a HZ sleep, MMF_OOM_SKIP, nothing
 * reaped (mm/oom_kill.c oom_reap_task_mm, 4.16-4.18). With the broken driver (driver/broken/sleep-in-nonblockable.ts)
 * the callback takes its mutex and waits for the device inside the reaper's atomic
 * section: the reap "succeeds" at the first attempt, and the sanitizer reports
 * sleep-in-atomic, as the kernel's might_sleep check would, contended or not.
 */
export const oomReaperNonblockable: ScenarioDefinition = {
  name: 'oom-reaper-nonblockable',
  summary: 'the OOM reaper\'s non-blockable invalidation meets an ODP MR: -EAGAIN, skip, retry; or a driver that sleeps there',
  seeds: [],
  defaultProfile: 'linux-6.x',
  drivers: ['odp', 'broken-sleep'],
  defaultDriver: 'odp',
  untilNs: 5_000_000_000,
  expect: (_profile, driver) => (driver === 'broken-sleep' ? ['sleep-in-atomic'] : []),
  setup(ctx) {
    const { sim, params } = ctx;
    const batching = batchingFromParams(params, sim.scheduler);
    const opts = { batching: batching.policy, batchingName: batching.name };
    const odp = ctx.driver === 'broken-sleep' ? sleepInNonblockableStrategy(opts) : odpStrategy(opts);
    const host = ctx.node('host', { caps: { odp: MLX5_ODP_CAPS }, device: { nonOdp: pinnedStrategy(), odp } });
    const peerNode = ctx.node('peer', { device: { nonOdp: pinnedStrategy() } });
    const k = host.kernel;
    const victim = openApp(host, k.createProcess('victim'));
    const peer = openApp(peerNode, peerNode.kernel.createProcess('peer'));
    const [, qPeer] = connectRc(victim, peer);
    // What the reaper's attempts answered.
    const answers: number[] = [];
    k.sim.trace$.subscribe((r) => {
      if (r.type === 'oom-reap') answers.push(r.ret);
    });

    return function* () {
      const heap = yield* mapAnon(victim, HEAP_PAGES);
      yield* store(victim, heap, pattern(1, HEAP_PAGES * P));
      const buf = yield* mapAnon(victim, BUF_PAGES);
      yield* store(victim, buf, pattern(2, BUF_PAGES * P));
      const reg = yield* victim.ctx.regMr(victim.pd, buf, BUF_PAGES * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND);
      if (typeof reg === 'number') {
        ctx.say(`ibv_reg_mr(ON_DEMAND) fails with ${errnoName(reg)}: ODP came in Linux 3.19, after ${ctx.profile.name}`);
        yield* victim.ctx.close();
        yield* peer.ctx.close();
        return;
      }
      const mr = reg;
      const src = yield* mapAnon(peer, BUF_PAGES);
      yield* store(peer, src, pattern(3, BUF_PAGES * P));
      const srcMr = yield* regOk(peer, src, BUF_PAGES * P, ALL_ACCESS);
      const wc = yield* rdmaWrite(peer, qPeer, 1, src, srcMr.lkey, buf, mr.rkey, BUF_PAGES * P);
      const resident = (start: number, pages: number) => {
        let n = 0;
        for (const [, pte] of victim.p.mm.pageTable.entriesIn(vpn(start), vpn(start + pages * P))) if (ptePresent(pte)) n++;
        return n;
      };
      const mapped = () => mr.umem.mr.pageTable.presentPages;
      ctx.say(`the victim has a ${HEAP_PAGES}-page heap and a ${BUF_PAGES}-page ODP MR the peer wrote (${statusNames([wc])}): ` +
        `${resident(heap, HEAP_PAGES) + resident(buf, BUF_PAGES)} pages resident, ${mapped()} mapped by the NIC`);

      // The victim is stuck in the kernel (an uninterruptible wait) when the OOM killer picks it.
      const stuck = victim.p.spawnThread('main', function* (): Co {
        yield* sim.sleep(STUCK_NS);
        yield* victim.p.exit(); // SIGKILL is acted on when the wait ends
      });
      const freeBefore = k.phys.freeFrames;
      const t0 = sim.now();
      let result: OomReapResult | undefined;
      yield* sim.join(sim.spawn('oom-killer', function* (): Co {
        result = oomKill(k, victim.p);
      }, { kind: 'kthread' }));
      const reap = result as OomReapResult;
      yield* sim.sleep(1_000_000); // the reaper's first attempt
      const freedByReaper = k.phys.freeFrames - freeBefore;
      const afterReap = resident(buf, BUF_PAGES);
      ctx.figure('reaper: pages freed at the first attempt', freedByReaper);
      ctx.figure('reaper: first attempt answer', answers[0] === -EAGAIN ? '-EAGAIN' : String(answers[0] ?? 'none'));
      const ev = k.profile.oomReapEvent;
      ctx.say(!k.profile.blockableFlag
        ? `${k.profile.name} has no non-blocking invalidation (4.19): the reaper finds blockable notifiers on the mm (mm_has_blockable_invalidate_notifiers), ` +
          `sleeps HZ and will give up; the mm gets MMF_OOM_SKIP with nothing reaped (${freedByReaper} frames freed, ${afterReap} buffer pages mapped, ${mapped()} on the NIC)`
        : answers.includes(-EAGAIN)
        ? `the reaper frees the heap (${freedByReaper} frames) but its non-blockable ${ev} over the buffer gets false from the ODP callback: ` +
          `-EAGAIN, the VMA is skipped (${afterReap} of its pages stay mapped, ${mapped()} on the NIC)`
        : `the reaper's non-blockable ${ev} over the buffer went through: the callback locked its mutex, zapped and waited for a sync ` +
          `inside the reaper's atomic section; ${freedByReaper} frames freed, ${mapped()} pages left on the NIC`);
      yield* sim.join(stuck);
      const exitAt = sim.now() - t0;
      const freedByExit = k.phys.freeFrames - freeBefore - freedByReaper;
      ctx.figure('reaper: pages left mapped under the MR', afterReap);
      yield* sim.sleep(MAX_OOM_REAP_RETRIES * OOM_REAP_RETRY_NS);
      ctx.figure('reaper: attempts', reap.attempts);
      ctx.figure('reaper: VMAs skipped', reap.skippedVmas);
      ctx.figure('reaper: reaped', reap.reaped ? 'yes' : 'no');
      ctx.figure('reaper: -EAGAIN answers', answers.filter((r) => r === -EAGAIN).length);
      ctx.figure('victim exit after the kill (ns)', exitAt);
      ctx.figure('pages freed by the victim\'s exit', freedByExit);
      ctx.say(reap.gaveUp
        ? `one attempt, given up; the buffer and the heap come back only when the victim exits ${us(exitAt)} after the kill (${freedByExit} frames freed by exit_mmap)`
        : reap.reaped
        ? `reaped at the first attempt; the victim exits ${us(exitAt)} after the kill with ${freedByExit} frames left to free`
        : `${reap.attempts} attempts, ${reap.skippedVmas} VMAs skipped (one every ${us(OOM_REAP_RETRY_NS)}); the buffer comes back when the victim exits ` +
          `${us(exitAt)} after the kill: exit_mmap's blockable invalidation lets the callback lock, zap and sync (${freedByExit} frames freed), and the reaper stops`);

      yield* victim.ctx.close();
      yield* peer.ctx.close();
      yield* peer.p.exit();
    };
  },
};
