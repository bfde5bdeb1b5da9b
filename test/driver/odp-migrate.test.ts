/**
 * The reference ODP strategy and device migrations (kernel rule 22, hazard H6): another
 * device (a Dmirror standing for a GPU, lib/test_hmm.c) migrates the pages of an ODP MR
 * into its device-private memory with migrate_vma_setup (mm/migrate_device.c), whose
 * MIGRATE invalidation carries the GPU as owner. The reference honours it (it skips only
 * MIGRATE events of its own device) and the NIC refaults the pages the CPU maps; the
 * broken variant that skips every MIGRATE (driver/broken/skip-every-migrate.ts) keeps
 * translating to the freed pages: its accesses hit frames the CPU no longer maps and the
 * peer receives the wrong bytes.
 */
import test from 'ava';
import { IBV_ACCESS_ON_DEMAND, IBV_SEND_SIGNALED, IBV_WR_RDMA_WRITE, MLX5_ODP_CAPS } from '../../device/index.ts';
import {
  MIGRATE_VMA_SELECT_SYSTEM, MemoryType, MmuNotifyEvent, isDeviceCoherentPage, isZoneDevicePage, migrateVmaFinalize, migrateVmaInit,
  migrateVmaPages, migrateVmaSetup, ptePresent, pteFrame, vpn, type MmStruct,
} from '../../kernel-model/index.ts';
import { Dmirror, DmirrorDevice, odpStrategy, type UmemStrategy } from '../../driver/index.ts';
import { skipEveryMigrateStrategy } from '../../driver/broken/index.ts';
import {
  ALL_ACCESS, P, completions, connectRc, load, mapAnon, must, pattern, regOk, run, statusNames, store, twoApps, type App,
} from './_verbs-rig.ts';

function frameAt(mm: MmStruct, va: number): number {
  const pte = mm.pageTable.get(vpn(va));
  return ptePresent(pte) ? pteFrame(pte) : -1;
}

/** Every access of the NIC to an ODP MR must hit the frame the CPU maps at that address now. */
function watchAccesses(app: App): { checked: number; bad: string[] } {
  const res = { checked: 0, bad: [] as string[] };
  app.node.nic.access$.subscribe((acc) => {
    const umem = app.node.device.umemByKey.get(acc.mrKey);
    if (!umem || umem.strategy === 'pinned') return;
    const va = umem.addr + (acc.iova - umem.mr.iova);
    res.checked++;
    const cur = frameAt(umem.ctx.mm, va);
    if (cur !== acc.frame) res.bad.push(`${acc.write ? 'write' : 'read'} va ${va.toString(16)} frame ${acc.frame}, CPU maps ${cur}`);
  });
  return res;
}

const N = 4;

for (const [name, make, broken] of [
  ['odp (reference)', () => odpStrategy(), false],
  ['skip-every-migrate (broken)', () => skipEveryMigrateStrategy(), true],
] as [string, () => UmemStrategy, boolean][]) {
  test(`kernel rule 22, hazard H6 (${name}): a GPU migrates an ODP MR's pages to its memory (MIGRATE, owner = the GPU); ${broken ? 'skipping every MIGRATE leaves the NIC on the freed pages, caught by its accesses and the data' : 'the NIC zaps them, refaults, and sends what the process wrote'}`, (t) => {
    const { sim, a, b } = twoApps({ caps: { odp: MLX5_ODP_CAPS }, odp: make() });
    const accesses = watchAccesses(a);
    let migrates = 0;
    a.k.notifier$.subscribe((e) => {
      if (e.phase === 'start' && e.range.event === MmuNotifyEvent.MIGRATE) migrates++;
    });
    let got: Uint8Array | null = null;
    run(t, sim, function* () {
      const [qa] = connectRc(a, b);
      const src = yield* mapAnon(a, N);
      yield* store(a, src, pattern(1, N * P));
      const mr = yield* regOk(a, src, N * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND);
      const dst = yield* mapAnon(b, N);
      const dmr = yield* regOk(b, dst, N * P);
      const write = function* (wrId: number) {
        must(yield* a.ctx.postSend(qa, {
          wrId, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
          sgList: [{ addr: src, length: N * P, lkey: mr.lkey }], rdma: { remoteAddr: dst, rkey: dmr.rkey },
        }), 'post_send');
        t.deepEqual(statusNames(yield* completions(a, 1)), ['IBV_WC_SUCCESS']);
      };
      yield* write(1); // the NIC maps the pages
      const gpu = yield* Dmirror.open(a.k, a.p.mm, 'gpu');
      if (typeof gpu === 'number') throw new Error(`Dmirror.open: ${gpu}`);
      const moved = yield* gpu.migrateToDevice(src, N);
      t.false(typeof moved === 'number', 'the GPU migrated the buffer');
      // The process writes new data: each page faults back into a new system page.
      yield* store(a, src, pattern(2, N * P));
      yield* write(2);
      got = yield* load(b, dst, N * P);
    });
    t.true(migrates > 0, 'migrate_vma_setup sent MIGRATE invalidations');
    t.true(accesses.checked > 0);
    if (broken) {
      t.true(accesses.bad.length > 0, 'the NIC read frames the CPU no longer maps');
      t.notDeepEqual(got, pattern(2, N * P), 'the peer did not get what the process wrote');
    } else {
      t.deepEqual(accesses.bad, []);
      t.deepEqual(got, pattern(2, N * P));
    }
  });
}

test('kernel rule 22 (lib/test_hmm.c dmirror_interval_invalidate\'s skip, in the reference ODP strategy): a MIGRATE whose owner is the NIC\'s own ib_device is skipped; the same collection with another owner invalidates the MR', (t) => {
  const { sim, a, b } = twoApps({ caps: { odp: MLX5_ODP_CAPS }, odp: odpStrategy() });
  const invalidations: number[] = [];
  run(t, sim, function* () {
    const src = yield* mapAnon(a, N);
    yield* store(a, src, pattern(1, N * P));
    const mr = yield* regOk(a, src, N * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND);
    void b;
    for (const owner of [a.node.device, { name: 'gpu' }]) {
      const before = mr.umem.counters.invalidations;
      yield* a.p.mm.mmapLock.downRead();
      const args = migrateVmaInit(a.p.mm.findVma(src)!, src, src + N * P, owner, MIGRATE_VMA_SELECT_SYSTEM);
      must(yield* migrateVmaSetup(args), 'migrate_vma_setup');
      yield* migrateVmaPages(args); // no destinations: every page stays where it is
      yield* migrateVmaFinalize(args);
      a.p.mm.mmapLock.upRead();
      invalidations.push(mr.umem.counters.invalidations - before);
    }
  });
  t.deepEqual(invalidations.map((n) => n > 0), [false, true], 'own owner skipped, another owner honoured');
});

test('kernel rules 22, 46 (mm/hmm.c hmm_vma_handle_pte: a device-coherent page is a present page, reported with its pfn; lib/test_hmm.c dmirror_migrate_to_system with MIGRATE_VMA_SELECT_DEVICE_COHERENT): an ODP MR over memory a GPU migrated into its device-coherent memory maps the GPU\'s pages in place (no migration back); when the GPU migrates them to system memory (MIGRATE, owner = the GPU) the NIC refaults the new pages', (t) => {
  const { sim, a, b } = twoApps({ caps: { odp: MLX5_ODP_CAPS }, odp: odpStrategy() });
  const accesses = watchAccesses(a);
  const frames: number[][] = [];
  const got: Uint8Array[] = [];
  run(t, sim, function* () {
    const [qa] = connectRc(a, b);
    const src = yield* mapAnon(a, N);
    yield* store(a, src, pattern(1, N * P));
    const gpuDev = new DmirrorDevice(a.k, 'gpu', 16, MemoryType.DEVICE_COHERENT);
    const gpu = yield* Dmirror.open(a.k, a.p.mm, 'gpu', gpuDev);
    if (typeof gpu === 'number') throw new Error(`Dmirror.open: ${gpu}`);
    t.false(typeof (yield* gpu.migrateToDevice(src, N)) === 'number', 'the GPU migrated the buffer');
    const mr = yield* regOk(a, src, N * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND);
    const dst = yield* mapAnon(b, N);
    const dmr = yield* regOk(b, dst, N * P);
    const write = function* (wrId: number) {
      must(yield* a.ctx.postSend(qa, {
        wrId, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
        sgList: [{ addr: src, length: N * P, lkey: mr.lkey }], rdma: { remoteAddr: dst, rkey: dmr.rkey },
      }), 'post_send');
      t.deepEqual(statusNames(yield* completions(a, 1)), ['IBV_WC_SUCCESS']);
      frames.push(Array.from({ length: N }, (_, i) => frameAt(a.p.mm, src + i * P)));
      got.push(yield* load(b, dst, N * P));
    };
    yield* write(1);
    t.is(gpuDev.cfree, 0, 'the NIC fault moved nothing back');
    t.is(yield* gpu.migrateToSystem(src, N), 0);
    yield* store(a, src, pattern(2, N * P));
    yield* write(2);
  });
  t.true(frames[0]!.every((f) => isDeviceCoherentPage(a.k, f)), 'first write: the CPU (and the NIC) use the device-coherent pages');
  t.true(frames[1]!.every((f) => !isZoneDevicePage(a.k, f)), 'second write: system pages');
  t.deepEqual(accesses.bad, [], 'every NIC access hit the frame the CPU maps');
  t.true(accesses.checked > 0);
  t.deepEqual(got, [pattern(1, N * P), pattern(2, N * P)]);
});
