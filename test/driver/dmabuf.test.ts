/**
 * dma-buf MRs (rdma G1 to G7): the verbs checks, the dynamic importer on a faultable NIC
 * (whole-MR invalidation and whole-MR refault after the exporter's fence), the pinned
 * importer on a NIC without ODP, and revocation under the 2026 revocable-importer
 * proposal as the application sees it (error completions; the opt-in MR event).
 */
import test, { type ExecutionContext } from 'ava';
import {
  DmaBuf, EBUSY, EINVAL, ENODEV, EOPNOTSUPP, PAGE_SIZE, Simulation, type Co, type DmaBufExporterOptions, type Process,
} from '../../kernel-model/index.ts';
import {
  Fabric, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_MW_BIND, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE,
  IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, IBV_SEND_SIGNALED, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, NO_ODP_CAPS,
  type CompletionQueue, type DeviceAccess, type QueuePair, type SendWr,
} from '../../device/index.ts';
import {
  IBV_ACCESS_RELAXED_ORDERING, createRdmaNode, openDevice, type DmabufUmem, type IbvContext, type IbvMr, type RdmaNode,
  type UmemStrategy,
} from '../../driver/index.ts';
import { ALL_ACCESS, TEST_ATTR, statusNames } from '../device/helpers.ts';

const RW = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
const S = IBV_SEND_SIGNALED;

/** These tests register only dma-buf MRs: a process-memory strategy that refuses everything. */
const noProcessMemory: UmemStrategy = {
  name: 'none',
  *regMr() {
    return -EOPNOTSUPP;
  },
};

interface Side {
  node: RdmaNode;
  proc: Process;
  ctx: IbvContext;
  pd: number;
  cq: CompletionQueue;
}

interface Rig {
  sim: Simulation;
  a: Side;
  b: Side;
}

function side(sim: Simulation, fabric: Fabric, name: string, odp: boolean): Side {
  const node = createRdmaNode(sim, fabric, {
    name,
    kernel: { frames: 4096 },
    nic: odp ? {} : { caps: { odp: NO_ODP_CAPS } },
    device: { nonOdp: noProcessMemory },
  });
  const proc = node.kernel.createProcess('app');
  const ctx = openDevice(node.device, proc);
  const pd = ctx.allocPd();
  const cq = ctx.createCq(1024) as CompletionQueue;
  return { node, proc, ctx, pd, cq };
}

function rig(odp: boolean): Rig {
  const sim = new Simulation({ seed: 1 });
  const fabric = new Fabric(sim);
  return { sim, a: side(sim, fabric, 'a', odp), b: side(sim, fabric, 'b', odp) };
}

/** A connected RC QP on each side. */
function rcPair(a: Side, b: Side): [QueuePair, QueuePair] {
  const mk = (s: Side) => s.ctx.createQp({ qpType: IBV_QPT_RC, pd: s.pd, sendCq: s.cq, recvCq: s.cq, cap: { maxSendWr: 256, maxRecvWr: 256 } }) as QueuePair;
  const qa = mk(a);
  const qb = mk(b);
  for (const [s, q, peer, pq] of [[a, qa, b, qb], [b, qb, a, qa]] as const) {
    must(s.ctx.modifyQp(q, { qpState: IBV_QPS_INIT, qpAccessFlags: ALL_ACCESS }), 'INIT');
    must(s.ctx.modifyQp(q, { ...TEST_ATTR, qpState: IBV_QPS_RTR, destQpNum: pq.qpNum, ahAttr: { dlid: peer.node.nic.lid } }), 'RTR');
    must(s.ctx.modifyQp(q, { ...TEST_ATTR, qpState: IBV_QPS_RTS }), 'RTS');
  }
  return [qa, qb];
}

function must(r: number, what: string): void {
  if (r !== 0) throw new Error(`${what}: ${r}`);
}

function buffer(s: Side, name: string, pages: number, opts: Partial<DmaBufExporterOptions> = {}): DmaBuf {
  const buf = DmaBuf.create(s.node.kernel, name, pages * PAGE_SIZE, opts);
  if (typeof buf === 'number') throw new Error(`DmaBuf.create: ${buf}`);
  return buf;
}

/** Page `p` of a buffer holds bytes (seed + p + i) & 0xff, written as the exporter (the CPU) would. */
function fillBuffer(buf: DmaBuf, seed: number): void {
  buf.frames.forEach((f, p) => {
    const bytes = new Uint8Array(PAGE_SIZE);
    for (let i = 0; i < PAGE_SIZE; i++) bytes[i] = (seed + p + i) & 0xff;
    buf.kernel.phys.write(f, 0, bytes);
  });
}

function pageOf(buf: DmaBuf, p: number): Uint8Array {
  return buf.kernel.phys.read(buf.frames[p] as number, 0, PAGE_SIZE);
}

function expected(seed: number, p: number): Uint8Array {
  const bytes = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < PAGE_SIZE; i++) bytes[i] = (seed + p + i) & 0xff;
  return bytes;
}

function* reg(s: Side, buf: DmaBuf, iova: number, access = RW, offset = 0, length = buf.size): Co<IbvMr> {
  const mr = yield* s.ctx.regDmabufMr(s.pd, offset, length, iova, buf, access);
  if (typeof mr === 'number') throw new Error(`regDmabufMr: ${mr}`);
  return mr;
}

function umemOf(mr: IbvMr): DmabufUmem {
  return mr.umem as DmabufUmem;
}

function write(qp: QueuePair, wrId: number, src: IbvMr, srcOff: number, dst: IbvMr, dstOff: number, length: number): SendWr & { qp: QueuePair } {
  return { wrId, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.addr + srcOff, length, lkey: src.lkey }], rdma: { remoteAddr: dst.addr + dstOff, rkey: dst.rkey }, qp };
}

function* post(s: Side, w: ReturnType<typeof write>): Co<void> {
  const { qp, ...wr } = w;
  const r = yield* s.ctx.postSend(qp, wr);
  if (r !== 0) throw new Error(`postSend: ${r}`);
}

function run(t: ExecutionContext, sim: Simulation, body: () => Co<void>): void {
  const task = sim.spawn('test', body);
  const out = sim.run({ untilNs: 60_000_000_000, task });
  t.is(out.failure, undefined, out.failure);
  t.true(task.done, `script did not finish (run ended: ${out.reason} at ${out.now} ns, seed ${out.seed})`);
}

// ---- G1 ----------------------------------------------------------------------------------

test('rdma G1: ibv_reg_dmabuf_mr takes only LOCAL_WRITE, REMOTE_WRITE, REMOTE_READ, REMOTE_ATOMIC, RELAXED_ORDERING, and iova must share the offset\'s page offset', (t) => {
  const { sim, a } = rig(true);
  run(t, sim, function* () {
    const buf = buffer(a, 'vram', 8);
    const regErr = function* (offset: number, length: number, iova: number, access: number, pd = a.pd) {
      const r = yield* a.ctx.regDmabufMr(pd, offset, length, iova, buf, access);
      return typeof r === 'number' ? r : 0;
    };
    t.is(yield* regErr(0, PAGE_SIZE, 0x10000, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND), -EINVAL, 'ON_DEMAND is not in the dma-buf access set');
    t.is(yield* regErr(0, PAGE_SIZE, 0x10000, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND), -EINVAL, 'MW_BIND neither');
    t.is(yield* regErr(0x10, PAGE_SIZE, 0x10020, RW), -EINVAL, 'iova and offset differ in page offset');
    t.is(yield* regErr(0, PAGE_SIZE, 0x10000, IBV_ACCESS_REMOTE_WRITE), -EINVAL, 'rdma A1: remote write without local write');
    t.is(yield* regErr(4 * PAGE_SIZE, 5 * PAGE_SIZE, 0x10000, RW), -EINVAL, 'range past the buffer end');
    t.is(yield* regErr(0, 0, 0x10000, RW), -EINVAL, 'empty range');
    t.is(yield* regErr(0, PAGE_SIZE, 0x10000, RW, 999), -EINVAL, 'unknown PD');
    t.is(a.node.device.umemByKey.size, 0, 'no failed registration left an MR behind');
    t.is(buf.attachments.length, 0, 'no failed registration left an attachment behind');

    // Same page offset (0x10) with different pages: accepted; the MR spans two pages.
    const mr = yield* reg(a, buf, 0x7000_0010, RW | IBV_ACCESS_RELAXED_ORDERING, PAGE_SIZE + 0x10, PAGE_SIZE);
    t.is(mr.addr, 0x7000_0010);
    t.is(mr.umem.mr.pages, 2);
    t.is(mr.umem.access & IBV_ACCESS_RELAXED_ORDERING, 0, 'the optional bit is not passed to a device without it');
    t.is(a.node.device.umemByKey.get(mr.lkey), mr.umem, 'faults on its key route to it');
    t.is(yield* a.ctx.deregMr(mr), 0);
    t.is(buf.attachments.length, 0, 'dereg detaches');
  });
});

// ---- G2 ----------------------------------------------------------------------------------

test('rdma G2: a dynamic attach without an invalidate callback is refused with EINVAL; with one it is accepted', (t) => {
  const { sim, a } = rig(true);
  run(t, sim, function* () {
    const buf = buffer(a, 'vram', 2);
    t.is(yield* buf.attach({}, { dynamic: true }), -EINVAL);
    const at = yield* buf.attach({ invalidateMappings: () => undefined }, { dynamic: true });
    t.not(typeof at, 'number');
    t.is(buf.attachments.length, 1);
  });
});

test('rdma G2: the invalidate callback runs with the reservation lock held, and the dynamic importer maps only under it', (t) => {
  const { sim, a, b } = rig(true);
  const warnings: string[] = [];
  sim.trace$.subscribe((r) => {
    if (r.type === 'notifier-warn') warnings.push(r.message);
  });
  run(t, sim, function* () {
    const src = buffer(a, 'src', 2);
    const dst = buffer(b, 'dst', 2);
    const srcMr = yield* reg(a, src, 0x10000);
    const dstMr = yield* reg(b, dst, 0x20000);
    const [qa] = rcPair(a, b);
    yield* post(a, write(qa, 1, srcMr, 0, dstMr, 0, 2 * PAGE_SIZE));
    yield* a.cq.wait();
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_SUCCESS']);
    // The importer's callback throws without the lock; a clean move shows it had it.
    t.is(yield* dst.move(), 0);
    t.is(umemOf(dstMr).counters.invalidations, 1);
  });
  t.deepEqual(warnings, [], 'no dma_buf_map_attachment without the reservation lock');
});

// ---- G3 ----------------------------------------------------------------------------------

test('rdma G3: after a move the first access refaults every page of the MR after the exporter\'s fence, the copied data is intact, and the device never touches the old frames after the callback returned', (t) => {
  const { sim, a, b } = rig(true);
  const PAGES = 8;
  const accesses: DeviceAccess[] = [];
  b.node.nic.access$.subscribe((x) => accesses.push(x));
  run(t, sim, function* () {
    const src = buffer(a, 'src', PAGES);
    // A slow copy (2 ms), so that a fault handler that did not wait for it would be seen.
    const dst = buffer(b, 'dst', PAGES, { moveFenceNs: 2_000_000 });
    fillBuffer(src, 1);
    const srcMr = yield* reg(a, src, 0x10000);
    const dstMr = yield* reg(b, dst, 0x40000);
    const umem = umemOf(dstMr);
    t.is(umem.importer, 'dynamic', 'a faultable NIC imports dynamically');
    t.false(umem.mapped, 'nothing is mapped at registration');
    t.is(umem.mr.pageTable.presentPages, 0);
    const [qa] = rcPair(a, b);

    // One page written: the responder's fault maps the whole MR.
    yield* post(a, write(qa, 1, srcMr, 0, dstMr, 0, PAGE_SIZE));
    yield* a.cq.wait();
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_SUCCESS']);
    t.is(umem.mr.counters.faults, 1);
    t.is(umem.counters.faultsHandled, 1);
    t.is(umem.counters.faultPages, PAGES, 'the fault mapped every page of the MR, not just the one written');
    t.is(umem.mr.pageTable.presentPages, PAGES);
    // Now fill the rest, without any further fault.
    yield* post(a, write(qa, 2, srcMr, PAGE_SIZE, dstMr, PAGE_SIZE, (PAGES - 1) * PAGE_SIZE));
    yield* a.cq.wait();
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_SUCCESS']);
    t.is(umem.mr.counters.faults, 1, 'no fault once mapped');
    for (let p = 0; p < PAGES; p++) t.deepEqual(pageOf(dst, p), expected(1, p), `page ${p} written`);

    // The exporter moves the buffer: the callback zaps every entry, syncs, unmaps.
    const oldFrames = [...dst.frames];
    const syncsBefore = b.node.nic.stats.syncs;
    t.is(yield* dst.move(), 0);
    const callbackReturned = sim.now();
    const fence = dst.fenceUntil;
    t.true(fence > callbackReturned, 'the copy fence is still pending when move returns');
    t.is(umem.counters.invalidations, 1);
    t.is(umem.counters.invalidationPages, PAGES);
    t.is(umem.mr.pageTable.presentPages, 0, 'every device entry of the MR was zapped');
    t.is(b.node.nic.stats.syncs, syncsBefore + 1, 'and the device was fenced before the callback returned');
    t.false(umem.mapped);
    t.true(dst.frames.every((f) => !oldFrames.includes(f)), 'the data moved to other frames');

    // The next access, to one page, refaults the whole MR, only once the fence has signalled.
    const src2 = buffer(a, 'src2', 1);
    fillBuffer(src2, 77);
    const src2Mr = yield* reg(a, src2, 0x90000);
    yield* post(a, write(qa, 3, src2Mr, 0, dstMr, 5 * PAGE_SIZE, PAGE_SIZE));
    yield* a.cq.wait();
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_SUCCESS']);
    t.is(umem.mr.counters.faults, 2);
    t.is(umem.counters.faultPages, 2 * PAGES, 'the refault mapped every page again');
    t.is(umem.mr.pageTable.presentPages, PAGES);
    for (let p = 0; p < PAGES; p++) t.is(umem.mr.pageTable.frameOf(p), dst.frames[p] as number, `page ${p} points at the new frame`);
    for (let p = 0; p < PAGES; p++) t.deepEqual(pageOf(dst, p), p === 5 ? expected(77, 0) : expected(1, p), `page ${p} after the move`);

    const onDst = accesses.filter((x) => x.mrKey === dstMr.rkey);
    const late = onDst.filter((x) => x.time >= callbackReturned && oldFrames.includes(x.frame));
    t.deepEqual(late, [], 'no access to an old frame after the callback returned');
    const afterMove = onDst.filter((x) => x.time >= callbackReturned);
    t.true(afterMove.length > 0);
    t.true(afterMove.every((x) => x.time >= fence), 'no access to the new frames before the copy fence signalled');
  });
});

// ---- G4 ----------------------------------------------------------------------------------

test('rdma G4: the callback fires with nothing mapped and does nothing; a second move after an invalidation is a no-op too', (t) => {
  const { sim, a, b } = rig(true);
  run(t, sim, function* () {
    const buf = buffer(b, 'dst', 4);
    const mr = yield* reg(b, buf, 0x40000);
    const umem = umemOf(mr);
    const nic = b.node.nic;
    const before = { zaps: nic.stats.zapCommands, syncs: nic.stats.syncs };
    t.is(yield* buf.move(), 0, 'never mapped');
    t.is(umem.counters.invalidations, 0);
    t.deepEqual({ zaps: nic.stats.zapCommands, syncs: nic.stats.syncs }, before, 'no zap, no sync');

    // Map it (a READ faults the whole MR in), move (a real invalidation), move again.
    const sink = yield* reg(a, buffer(a, 'sink', 1), 0x10000);
    const [qa] = rcPair(a, b);
    const r = yield* a.ctx.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_READ, sendFlags: S, sgList: [{ addr: sink.addr, length: 64, lkey: sink.lkey }], rdma: { remoteAddr: mr.addr, rkey: mr.rkey } });
    t.is(r, 0);
    yield* a.cq.wait();
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_SUCCESS']);
    t.true(umem.mapped);
    t.is(yield* buf.move(), 0);
    t.is(umem.counters.invalidations, 1);
    const after = { zaps: nic.stats.zapCommands, syncs: nic.stats.syncs };
    t.is(yield* buf.move(), 0, 'unmapped since the last move');
    t.is(umem.counters.invalidations, 1);
    t.deepEqual({ zaps: nic.stats.zapCommands, syncs: nic.stats.syncs }, after);
    t.is(buf.moves, 3);
  });
});

// ---- G5 ----------------------------------------------------------------------------------

test('rdma G5: on a NIC without ODP the importer pins and maps once, every entry is programmed, and the exporter cannot move the buffer (-EBUSY)', (t) => {
  const { sim, a, b } = rig(false);
  run(t, sim, function* () {
    const src = buffer(a, 'src', 4);
    const dst = buffer(b, 'dst', 4);
    fillBuffer(src, 9);
    const srcMr = yield* reg(a, src, 0x10000);
    const dstMr = yield* reg(b, dst, 0x20000);
    const umem = umemOf(dstMr);
    t.is(umem.importer, 'pinned');
    t.true(umem.attachment.pinned);
    t.true(umem.mapped);
    t.false(umem.mr.onDemand);
    t.is(umem.mr.pageTable.presentPages, 4, 'every entry programmed at registration');
    const frames = [...dst.frames];
    t.is(yield* dst.move(), -EBUSY, 'a pinned buffer does not move');
    t.deepEqual(dst.frames, frames);
    t.is(umem.counters.invalidations, 0, 'and the importer was not told');
    const [qa] = rcPair(a, b);
    yield* post(a, write(qa, 1, srcMr, 0, dstMr, 0, 4 * PAGE_SIZE));
    yield* a.cq.wait();
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_SUCCESS']);
    for (let p = 0; p < 4; p++) t.deepEqual(pageOf(dst, p), expected(9, p));
    t.is(yield* b.ctx.deregMr(dstMr), 0);
    t.false(umem.attachment.pinned, 'dereg unpins');
    t.is(yield* dst.move(), 0, 'and then the exporter may move it');
  });
});

test('rdma G5: an exporter that cannot pin (VFIO) refuses the pinned importer with EOPNOTSUPP', (t) => {
  const { sim, b } = rig(false);
  run(t, sim, function* () {
    const bar = buffer(b, 'vfio-bar', 4, { canPin: false });
    const r = yield* b.ctx.regDmabufMr(b.pd, 0, bar.size, 0x20000, bar, RW);
    t.is(r, -EOPNOTSUPP);
    t.is(bar.attachments.length, 0, 'the failed attach was undone');
    t.is(b.node.device.umemByKey.size, 0);
  });
});

// ---- G6 / G7 -----------------------------------------------------------------------------

test('rdma G6/G7: revoking a pinned dma-buf MR (2026 revocable-importer proposal): remote access gets REM_ACCESS_ERR, local use LOC_PROT_ERR, the opt-in event fires only when enabled, revoke is idempotent, maps fail with EINVAL, dereg still works', (t) => {
  const { sim, a, b } = rig(false);
  const revokedOnB: number[] = [];
  const revokedOnA: number[] = [];
  b.ctx.enableMrEvents();
  b.ctx.on('mr:revoked', (mr) => revokedOnB.push(mr.lkey));
  a.ctx.on('mr:revoked', (mr) => revokedOnA.push(mr.lkey));
  run(t, sim, function* () {
    const src = buffer(a, 'src', 2);
    const dst = buffer(b, 'vfio-bar', 2);
    const srcMr = yield* reg(a, src, 0x10000);
    const dstMr = yield* reg(b, dst, 0x20000);
    const umem = umemOf(dstMr);
    const [qa] = rcPair(a, b);
    yield* post(a, write(qa, 1, srcMr, 0, dstMr, 0, PAGE_SIZE));
    yield* a.cq.wait();
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_SUCCESS'], 'works before the revoke');

    const oldFrames = [...dst.frames];
    t.is(yield* dst.revoke(), 0);
    t.true(umem.revoked);
    t.false(umem.mapped, 'unmapped');
    t.false(umem.attachment.pinned, 'unpinned');
    t.is(umem.mr.state, 'revoked');
    t.deepEqual(revokedOnB, [dstMr.lkey], 'the opt-in mr:revoked event');
    yield* sim.sleep(1);
    t.true(oldFrames.every((f) => !b.node.kernel.phys.isAllocated(f)), 'the pages are released at once, before dereg');

    // Idempotent: from the exporter and from the driver side.
    t.is(yield* dst.revoke(), 0);
    yield* umem.revoke();
    t.deepEqual(revokedOnB, [dstMr.lkey], 'one event');
    // Later maps fail with EINVAL (at the umem and at the exporter).
    yield* dst.resv.lock();
    t.is(yield* umem.mapPages(), -EINVAL);
    t.is(dst.mapAttachment(umem.attachment), -EINVAL);
    dst.resv.unlock();
    t.is(yield* dst.attach({ invalidateMappings: () => undefined }, { dynamic: true }), -ENODEV, 'no new importer either');

    // Remote: the peer's next RDMA WRITE to the revoked rkey.
    yield* post(a, write(qa, 2, srcMr, 0, dstMr, 0, PAGE_SIZE));
    yield* a.cq.wait();
    t.deepEqual(statusNames(a.cq.poll(1)), ['IBV_WC_REM_ACCESS_ERR']);

    // Local: the owner's next RDMA WRITE from the revoked lkey (on a fresh connection).
    const [qb2] = rcPair(b, a);
    yield* post(b, write(qb2, 3, dstMr, 0, srcMr, 0, PAGE_SIZE));
    yield* b.cq.wait();
    const wcs = b.cq.poll(8).filter((w) => w.wrId === 3);
    t.deepEqual(statusNames(wcs), ['IBV_WC_LOC_PROT_ERR']);

    // The umem stays until dereg, and dereg after revoke works.
    t.is(b.node.device.umemByKey.get(dstMr.lkey), umem);
    t.true(b.ctx.ucontext.umems.has(umem));
    t.is(yield* b.ctx.deregMr(dstMr), 0);
    t.false(b.node.device.umemByKey.has(dstMr.lkey));
    t.is(umem.mr.state, 'destroyed');
    t.is(dst.attachments.length, 0);

    // Side a never enabled the extension: a revoke there is seen only through completions.
    t.is(yield* src.revoke(), 0);
    t.true(umemOf(srcMr).revoked);
  });
  t.deepEqual(revokedOnA, [], 'no MR event without enableMrEvents()');
});
