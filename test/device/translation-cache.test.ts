/**
 * The translation cache and the sync command (rdma C3-C5, H3; DESIGN "Device": a zap is
 * not effective until a sync; a sync fences the cache and in-flight accesses and may stall
 * the DMA engine).
 */
import test from 'ava';
import {
  IBV_SEND_SIGNALED, IBV_WC_REM_ACCESS_ERR, IBV_WC_SUCCESS, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, PTE_READ, PTE_READ_WRITE,
  TranslationCache, newTranslation, type DeviceAccess, type DeviceFault, type QueuePair,
} from '../../device/index.ts';
import { buffer, mapBuffer, pager, rcPair, runScript, statusNames, twoNodes, type Buffer, type Node } from './helpers.ts';

function* write(a: Node, qa: QueuePair, src: Buffer, dst: Buffer, wrId: number, offset = 0, length = 4096) {
  a.nic.postSend(qa, { wrId, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
    sgList: [{ addr: src.iova + offset, length, lkey: src.mr.lkey }], rdma: { remoteAddr: dst.iova + offset, rkey: dst.mr.rkey } });
  yield* a.cq.wait();
  return a.cq.poll(1)[0]!;
}

test('rdma C5: the translation cache keeps serving a zapped entry until a sync, and the access says so', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x10000, 1);
  const dst = buffer(b, 0x50000, 1, { onDemand: true });
  const seen: DeviceAccess[] = [];
  b.nic.access$.subscribe((x) => seen.push(x));
  const faults: DeviceFault[] = [];
  let zappedAt = 0;
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    t.is((yield* write(a, qa, src, dst, 1)).status, IBV_WC_SUCCESS);
    t.is(yield* b.nic.zapEntries(dst.mr, 0, 1), 1);
    zappedAt = sim.now();
    // No sync yet: the device still has the translation cached and uses it.
    t.is((yield* write(a, qa, src, dst, 2)).status, IBV_WC_SUCCESS);
    t.is(yield* b.nic.sync(), 0);
    // Now the zap is effective: the next write faults; the pager maps it back and resumes.
    pager(b, [dst], { log: faults });
    t.is((yield* write(a, qa, src, dst, 3)).status, IBV_WC_SUCCESS);
  });
  t.is(seen.length, 3);
  const [first, stale, fresh] = seen as [DeviceAccess, DeviceAccess, DeviceAccess];
  t.false(first.fromCache);
  t.false(first.stale);
  t.true(stale.fromCache, 'served from the cache');
  t.true(stale.stale, 'through a translation the page table no longer has');
  t.is(stale.generation, first.generation, 'the very translation installed before the zap');
  t.true(stale.installedAt < zappedAt && stale.time > zappedAt);
  t.is(faults.length, 1);
  t.is(faults[0]!.side, 'responder');
  t.false(fresh.stale);
  t.true(fresh.generation > first.generation);
  t.is(b.nic.stats.syncs, 1);
  t.is(b.nic.engine.stats.staleAccesses, 1);
});

test('rdma H3: without ODP, an access to a zapped entry after the sync is a fatal REM_ACCESS_ERR; before it, it still lands', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x10000, 1);
  const dst = buffer(b, 0x50000, 1);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    t.is((yield* write(a, qa, src, dst, 1)).status, IBV_WC_SUCCESS);
    yield* b.nic.zapEntries(dst.mr, 0, 1);
    t.is((yield* write(a, qa, src, dst, 2)).status, IBV_WC_SUCCESS, 'stale translation still used');
    yield* b.nic.sync();
    t.is((yield* write(a, qa, src, dst, 3)).status, IBV_WC_REM_ACCESS_ERR);
  });
  t.is(b.nic.engine.stats.staleAccesses, 1);
});

test('rdma C5: a sync takes syncNs, fences the access in flight and stalls the DMA engine for syncDmaStallNs', (t) => {
  const costs = { syncNs: 60_000, syncDmaStallNs: 50_000 };
  const { sim, a, b } = twoNodes({ costs });
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x100000, 64);
  const dst = buffer(b, 0x800000, 64);
  const onB: DeviceAccess[] = [];
  let syncStart = -1;
  let syncEnd = -1;
  b.nic.access$.subscribe((x) => {
    onB.push(x);
    if (onB.length === 10) {
      sim.spawn('invalidate', function* () {
        syncStart = sim.now();
        t.is(yield* b.nic.sync(), 0);
        syncEnd = sim.now();
      });
    }
  });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    t.is((yield* write(a, qa, src, dst, 1, 0, 64 * 4096)).status, IBV_WC_SUCCESS);
  });
  t.is(onB.length, 64);
  t.is(syncEnd - syncStart, 60_000, 'the sync command takes syncNs');
  const fenced = onB.filter((x) => x.fenced);
  t.is(fenced.length, 1, 'exactly the access in flight when the sync began is fenced');
  t.true(fenced[0]!.time < syncStart + 2_000);
  const after = onB[11]!;
  t.true(after.time >= syncStart + 50_000, `next access at ${after.time - syncStart} ns after the sync began`);
  t.false(after.fromCache, 'the cache was flushed');
});

test('rdma C5: commands run one at a time in order; a sync waits for earlier update and zap commands', (t) => {
  const { sim, a } = twoNodes({ costs: { updateEntriesBaseNs: 1_000, updateEntriesPerPageNs: 0, zapEntriesBaseNs: 2_000, zapEntriesPerPageNs: 0, syncNs: 4_000, syncDmaStallNs: 0 } });
  const buf = buffer(a, 0x1000, 2);
  const done: [string, number][] = [];
  runScript(t, sim, function* () {
    const t0 = sim.now();
    const u = sim.spawn('u', function* () { yield* mapBuffer(a, buf); done.push(['update', sim.now() - t0]); });
    const z = sim.spawn('z', function* () { yield* a.nic.zapEntries(buf.mr, 0, 1); done.push(['zap', sim.now() - t0]); });
    const s = sim.spawn('s', function* () { yield* a.nic.sync(); done.push(['sync', sim.now() - t0]); });
    yield* sim.join(u);
    yield* sim.join(z);
    yield* sim.join(s);
  });
  t.deepEqual(done, [['update', 1_000], ['zap', 3_000], ['sync', 7_000]]);
  t.is(buf.mr.pageTable.presentPages, 1);
});

test('translation cache: FIFO replacement when full, lookups by MR and page, flush empties it', (t) => {
  const tc = new TranslationCache(2);
  const m1 = { cacheSlots: new Map<number, number>() };
  const m2 = { cacheSlots: new Map<number, number>() };
  const x = newTranslation();
  const out = newTranslation();
  tc.insert(m1, 1, { ...x, frame: 11, perm: PTE_READ, generation: 1 });
  tc.insert(m2, 1, { ...x, frame: 21, perm: PTE_READ_WRITE, generation: 2 });
  t.true(tc.lookup(m1, 1, out));
  t.is(out.frame, 11);
  t.true(out.fromCache);
  tc.insert(m1, 2, { ...x, frame: 12, perm: PTE_READ, generation: 3 }); // evicts (m1, 1)
  t.false(tc.lookup(m1, 1, out));
  t.true(tc.lookup(m2, 1, out));
  t.is(out.frame, 21);
  tc.insert(m2, 1, { ...x, frame: 22, perm: PTE_READ_WRITE, generation: 4 }); // overwrite in place
  t.true(tc.lookup(m2, 1, out));
  t.is(out.frame, 22);
  t.is(tc.size, 2);
  t.is(tc.flush(), 2);
  t.is(tc.size, 0);
  t.false(tc.lookup(m2, 1, out));
  t.is(m1.cacheSlots.size + m2.cacheSlots.size, 0);
  const off = new TranslationCache(0);
  off.insert(m1, 5, x);
  t.false(off.lookup(m1, 5, out), 'capacity 0 caches nothing');
});

test('rdma C5: with no translation cache a zap takes effect at once', (t) => {
  const { sim, a, b } = twoNodes({ translationCacheEntries: 0 });
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x10000, 1);
  const dst = buffer(b, 0x50000, 1);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    t.is((yield* write(a, qa, src, dst, 1)).status, IBV_WC_SUCCESS);
    yield* b.nic.zapEntries(dst.mr, 0, 1);
    t.deepEqual(statusNames([yield* write(a, qa, src, dst, 2)]), ['IBV_WC_REM_ACCESS_ERR']);
  });
});

test('rdma B1, C5: a remap without zap+sync is served stale; an in-place upgrade of the same frame is not stale', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x10000, 2);
  const dst = buffer(b, 0x50000, 2, { onDemand: true });
  const seen: DeviceAccess[] = [];
  b.nic.access$.subscribe((x) => seen.push(x));
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst, 0, 2, false);
    a.nic.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_READ, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: src.iova, length: 8192, lkey: src.mr.lkey }],
      rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey } });
    yield* a.cq.wait();
    // Upgrade page 0 in place; remap page 1 to another frame, both without zap or sync.
    yield* b.nic.updateEntries(dst.mr, 0, [dst.frames[0]!], true);
    yield* b.nic.updateEntries(dst.mr, 1, [b.mem.alloc()], false);
    for (const page of [0, 1]) {
      a.nic.postSend(qa, { wrId: 2 + page, opcode: IBV_WR_RDMA_READ, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: src.iova, length: 4096, lkey: src.mr.lkey }],
        rdma: { remoteAddr: dst.iova + page * 4096, rkey: dst.mr.rkey } });
    }
    yield* a.cq.waitFor(3);
  });
  t.deepEqual(a.cq.poll(3).map((w) => w.status), [IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_SUCCESS]);
  const [, , upgraded, remapped] = seen as [DeviceAccess, DeviceAccess, DeviceAccess, DeviceAccess];
  t.true(upgraded.fromCache);
  t.false(upgraded.stale, 'same frame: superseded, not stale');
  t.true(remapped.fromCache);
  t.true(remapped.stale, 'another frame now: stale');
  t.is(remapped.frame, dst.frames[1]!);
});
