/**
 * A pinned MR over device-coherent memory (issue 17; kernel rule 62): ib_umem_get pins with
 * FOLL_LONGTERM (driver/umem-pinned.ts, drivers/infiniband/core/umem.c), and a long-term pin
 * may not stay on a device-coherent page (include/linux/mm.h folio_is_longterm_pinnable:
 * "Coherent device memory must always allow eviction"), so mm/gup.c
 * migrate_longterm_unpinnable_folios moves each such page to system memory
 * (migrate_device_coherent_folio, mm/migrate_device.c) before the pin lands. The NIC thus
 * holds system pages, the process maps those same pages, and the GPU (a coherent Dmirror,
 * lib/test_hmm.c) lost its copies through the CLEAR invalidations.
 */
import test from 'ava';
import {
  IBV_ACCESS_REMOTE_READ, IBV_SEND_SIGNALED, IBV_WC_SUCCESS, IBV_WR_RDMA_READ,
} from '../../device/index.ts';
import {
  FOLL_LONGTERM, MemoryType, isDeviceCoherentPage, isZoneDevicePage, pteFrame, ptePresent, vpn, type MmStruct,
} from '../../kernel-model/index.ts';
import { Dmirror, DmirrorDevice, type PinnedUmem } from '../../driver/index.ts';
import { P, completions, connectRc, load, mapAnon, must, pattern, regOk, run, store, twoApps } from './_verbs-rig.ts';

function frameAt(mm: MmStruct, addr: number): number {
  const pte = mm.pageTable.get(vpn(addr));
  return ptePresent(pte) ? pteFrame(pte) : -1;
}

test('kernel rule 62 (mm/gup.c migrate_longterm_unpinnable_folios -> migrate_device_coherent_folio; drivers/infiniband/core/umem.c ib_umem_get pins FOLL_LONGTERM): ibv_reg_mr over pages a GPU migrated into its device-coherent memory pins system pages the data moved to; the process maps them, the peer reads the data, the device pages went back to the GPU', (t) => {
  const { sim, a, b } = twoApps();
  const [, qb] = connectRc(a, b);
  const n = 4;
  run(t, sim, function* () {
    const gpu = new DmirrorDevice(a.k, 'gpu', 16, MemoryType.DEVICE_COHERENT);
    const d = yield* Dmirror.open(a.k, a.p.mm, 'dmirror2', gpu);
    if (typeof d === 'number') throw new Error(`Dmirror.open: ${d}`);
    const buf = yield* mapAnon(a, n);
    yield* store(a, buf, pattern(5, n * P));
    const got = yield* d.migrateToDevice(buf, n);
    if (typeof got === 'number') throw new Error(`migrate: ${got}`);
    const before = Array.from({ length: n }, (_, i) => frameAt(a.p.mm, buf + i * P));
    t.true(before.every((f) => isDeviceCoherentPage(a.k, f)), 'the buffer lives in device-coherent memory');
    const mr = yield* regOk(a, buf, n * P, IBV_ACCESS_REMOTE_READ);
    const u = mr.umem as PinnedUmem;
    t.is(u.strategy, 'pinned');
    t.true((u.gupFlags & FOLL_LONGTERM) !== 0, 'ib_umem_get pins FOLL_LONGTERM');
    t.true(u.frames.every((f) => !isZoneDevicePage(a.k, f)), 'every pinned page is a system page');
    t.deepEqual(u.frames, Array.from({ length: n }, (_, i) => frameAt(a.p.mm, buf + i * P)), 'the process maps the pinned pages');
    t.is(gpu.cfree, n, 'the device pages were freed to the GPU driver');
    t.is(d.pt.size, 0, 'the GPU mirror lost its entries (CLEAR)');
    const bbuf = yield* mapAnon(b, n);
    const bmr = yield* regOk(b, bbuf, n * P);
    must(yield* b.ctx.postSend(qb, {
      wrId: 1, opcode: IBV_WR_RDMA_READ, sendFlags: IBV_SEND_SIGNALED,
      sgList: [{ addr: bbuf, length: n * P, lkey: bmr.lkey }], rdma: { remoteAddr: buf, rkey: mr.rkey },
    }), 'post read');
    const [wc] = yield* completions(b, 1);
    t.is(wc?.status, IBV_WC_SUCCESS);
    t.deepEqual(yield* load(b, bbuf, n * P), pattern(5, n * P), 'the peer reads what the process wrote');
  });
});
