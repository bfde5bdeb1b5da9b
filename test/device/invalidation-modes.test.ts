/**
 * How a zap becomes effective (device capability `invalidation`, DESIGN "Costs and
 * calibration"): mlx5 zaps each run with a synchronous UMR on that MR's mkey
 * (drivers/infiniband/hw/mlx5/odp.c mlx5_ib_invalidate_range -> umr.c
 * mlx5r_umr_update_xlt) and has no device-wide fence; the model assumes the UMR stalls
 * only traffic through that mkey. A `device-fence` NIC stalls every DMA in its sync.
 */
import test, { type ExecutionContext } from 'ava';
import {
  CAPABILITY_PRESETS, IBV_SEND_SIGNALED, IBV_WR_RDMA_WRITE, type DeviceAccess,
} from '../../device/index.ts';
import { buffer, mapBuffer, rcPair, runScript, twoNodes } from './helpers.ts';

const PAGES = 64;

function run(t: ExecutionContext, preset: 'mlx5' | 'fence') {
  const costs = { zapEntriesBaseNs: 50_000, syncNs: 50_000, syncDmaStallNs: 50_000 };
  const { sim, a, b } = twoNodes({ caps: CAPABILITY_PRESETS[preset], costs });
  const [qa] = rcPair(a, b);
  const zapped = buffer(a, 0x100000, 4);
  const busy = buffer(a, 0x200000, PAGES);
  const dst = buffer(b, 0x300000, PAGES);
  const accesses: DeviceAccess[] = [];
  a.nic.access$.subscribe((x) => accesses.push(x));
  let zapBegin = 0;
  let zapEnd = 0;
  let staleAfter = 0;
  runScript(t, sim, function* () {
    yield* mapBuffer(a, zapped);
    yield* mapBuffer(a, busy);
    yield* mapBuffer(b, dst);
    // Warm the translation cache with the zapped MR's entries (a read through each page).
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: zapped.iova, length: 4 * 4096, lkey: zapped.mr.lkey }], rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } });
    yield* sim.sleep(100_000);
    // A long WRITE through the other MR only, and meanwhile a zap (and, on a fence device, the sync) of the first.
    a.nic.postSend(qa, { wrId: 2, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: busy.iova, length: PAGES * 4096, lkey: busy.mr.lkey }], rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } });
    yield* sim.sleep(5_000);
    zapBegin = sim.now();
    yield* a.nic.zapEntries(zapped.mr, 0, 4);
    // On a fence device the zap is effective only after a sync (what the driver's batcher
    // issues); on mlx5 the UMR was the whole invalidation (the batcher issues none).
    if (preset === 'fence') {
      zapBegin = sim.now();
      yield* a.nic.sync();
    }
    zapEnd = sim.now();
    const before = accesses.length;
    // Reading the zapped MR again: no access may use a dropped translation.
    a.nic.postSend(qa, { wrId: 3, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: zapped.iova, length: 4096, lkey: zapped.mr.lkey }], rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } });
    yield* sim.sleep(200_000);
    staleAfter = accesses.slice(before).filter((x) => x.mrKey === zapped.mr.lkey && x.stale).length;
  });
  const during = accesses.filter((x) => x.mrKey === busy.mr.lkey && x.time > zapBegin && x.time < zapEnd).length;
  return { during, zapNs: zapEnd - zapBegin, staleAfter, syncs: a.nic.stats.syncs, busyTotal: accesses.filter((x) => x.mrKey === busy.mr.lkey).length };
}

test('rdma C4, C5 (mlx5 preset, mlx5_ib_invalidate_range -> mlx5r_umr_update_xlt): a zap on one MR does not stall a QP that uses only another MR', (t) => {
  const r = run(t, 'mlx5');
  t.is(r.busyTotal, PAGES);
  // The UMR took its 50 µs; the other MR's WRITE kept moving pages all the while.
  t.true(r.zapNs >= 50_000);
  t.true(r.during >= 20, `accesses through the other MR during the zap: ${r.during}`);
  // The UMR itself dropped the zapped mkey's cached translations: nothing stale afterwards.
  t.is(r.staleAfter, 0);
});

test('rdma C5 (device-wide fence, the `fence` preset): the sync stalls every DMA, including a QP that uses only another MR', (t) => {
  const r = run(t, 'fence');
  t.is(r.busyTotal, PAGES);
  t.true(r.syncs >= 1);
  // During the sync's 50 µs stall nothing moves (an access already in flight may commit as the sync begins),
  // where the mlx5 UMR of the same length let the other MR's traffic run.
  const f = r;
  const m = run(t, 'mlx5');
  t.true(f.during <= 2, `accesses through the other MR during the sync: ${f.during}`);
  t.true(m.during > f.during + 10);
  t.is(r.staleAfter, 0);
});
