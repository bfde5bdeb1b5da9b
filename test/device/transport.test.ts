/**
 * The RC transport around the faults: pipelining, in-order completion while the send side
 * is stalled, recovery from packet loss (rdma (d) 3), determinism, and the real kernel
 * model's physical memory behind the DmaBus.
 */
import test from 'ava';
import { Simulation } from '../../kernel-model/sim/index.ts';
import { PhysicalMemory } from '../../kernel-model/page-frames.ts';
import { DmaBus } from '../../kernel-model/dma-bus.ts';
import {
  CompletionQueue, Fabric, IBV_QPS_RESET, IBV_SEND_SIGNALED, IBV_WC_SUCCESS, IBV_WR_RDMA_READ,
  IBV_WR_RDMA_WRITE, MemoryRegion, Nic, QueuePair, type DeviceAccess, type SendWr,
} from '../../device/index.ts';

import {
  ALL_ACCESS, buffer, connect, contents, fill, mapBuffer, pager, rcPair, runScript, twoNodes, type Buffer,
} from './helpers.ts';

const S = IBV_SEND_SIGNALED;

function wr(wrId: number, opcode: typeof IBV_WR_RDMA_WRITE | typeof IBV_WR_RDMA_READ, local: Buffer, remote: Buffer, page: number): SendWr {
  return { wrId, opcode, sendFlags: S, sgList: [{ addr: local.iova + page * 4096, length: 4096, lkey: local.mr.lkey }],
    rdma: { remoteAddr: remote.iova + page * 4096, rkey: remote.mr.rkey } };
}

test('RC pipelining: many WRITEs are in flight at once, so throughput is bandwidth-bound, not RTT-bound', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const src = buffer(a, 0x1000_0000, 1);
  const dst = buffer(b, 0x2000_0000, 1);
  const n = 1_000;
  let start = 0;
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    start = sim.now();
    for (let i = 0; i < n; i++) {
      const w = wr(i, IBV_WR_RDMA_WRITE, src, dst, 0);
      while (a.nic.postSend(qa, w) !== 0) yield* a.cq.wait();
      while (a.cq.length > 0) a.cq.poll(64);
    }
    while (qa.sendQueueDepth > 0) yield* sim.sleep(1_000);
  });
  const elapsed = sim.now() - start;
  const gbps = (n * 4096) / elapsed; // bytes per ns = GB/s
  t.true(gbps > 4, `${gbps.toFixed(2)} GB/s over ${elapsed} ns`);
  t.true(a.cq.written === n);
});

test('rdma B7: earlier WQEs complete while the send side is stalled on a later WQE\'s fault', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa] = rcPair(a, b);
  const warm = buffer(a, 0x10000, 1);
  const cold = buffer(a, 0x20000, 1, { onDemand: true });
  const dst = buffer(b, 0x90000, 1);
  pager(a, [cold], { delayNs: 500_000 });
  runScript(t, sim, function* () {
    yield* mapBuffer(a, warm);
    yield* mapBuffer(b, dst);
    a.nic.postSend(qa, wr(1, IBV_WR_RDMA_WRITE, warm, dst, 0));
    a.nic.postSend(qa, wr(2, IBV_WR_RDMA_WRITE, cold, dst, 0));
    a.nic.postSend(qa, wr(3, IBV_WR_RDMA_WRITE, warm, dst, 0));
    yield* a.cq.waitFor(3);
  });
  const wcs = a.cq.poll(3);
  t.deepEqual(wcs.map((w) => w.wrId), [1, 2, 3]);
  t.true(wcs.every((w) => w.status === IBV_WC_SUCCESS));
  t.true(wcs[0]!.time < 50_000, `first completed at ${wcs[0]!.time}`);
  t.true(wcs[1]!.time > 500_000);
});

test('rdma (d) 3: with packet loss, RC recovers by timeout and go-back-N; every WRITE and READ still completes in order', (t) => {
  const { sim, a, b, fabric } = twoNodes({ seed: 11, fabric: { lossRate: 0.2 } });
  const [qa] = rcPair(a, b, { timeout: 6, retryCnt: 7 });
  const local = buffer(a, 0x100000, 16);
  const remote = buffer(b, 0x200000, 16);
  fill(a, local, (i) => i * 3);
  fill(b, remote, (i) => i * 5 + 1);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, local);
    yield* mapBuffer(b, remote);
    for (let i = 0; i < 16; i++) a.nic.postSend(qa, wr(i, i % 2 === 0 ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ, local, remote, i));
    yield* a.cq.waitFor(16);
  });
  const wcs = a.cq.poll(16);
  t.deepEqual(wcs.map((w) => w.wrId), [...Array(16).keys()]);
  t.true(wcs.every((w) => w.status === IBV_WC_SUCCESS), wcs.map((w) => w.status).join());
  t.true(fabric.lost > 0, 'some packets were lost');
  t.true(qa.stats.retransmits > 0);
  for (let i = 0; i < 16; i++) {
    t.deepEqual(contents(a, local, i * 4096, 4096), contents(b, remote, i * 4096, 4096), `page ${i}`);
  }
});

test('determinism: the same seed gives the same access stream, fault stream and completion times', (t) => {
  const once = () => {
    const { sim, a, b } = twoNodes({ seed: 5 });
    const [qa] = rcPair(a, b);
    const src = buffer(a, 0x100000, 4, { onDemand: true });
    const dst = buffer(b, 0x200000, 4, { onDemand: true });
    pager(a, [src], { delayNs: 30_000 });
    pager(b, [dst], { delayNs: 70_000 });
    const log: string[] = [];
    for (const n of [a, b]) {
      n.nic.access$.subscribe((x: DeviceAccess) => log.push(`A ${x.time} ${x.nic} ${x.iova} ${x.frame} ${x.write} ${x.generation}`));
      n.nic.fault$.subscribe((f) => log.push(`F ${f.time} ${f.nic} ${f.iova} ${f.length}`));
    }
    const task = sim.spawn('s', function* () {
      for (let i = 0; i < 4; i++) a.nic.postSend(qa, wr(i, IBV_WR_RDMA_WRITE, src, dst, i));
      yield* a.cq.waitFor(4);
      for (const w of a.cq.poll(4)) log.push(`C ${w.time} ${w.wrId} ${w.status}`);
    });
    sim.run({ task });
    return log.join('\n');
  };
  const first = once();
  t.true(first.length > 100);
  t.is(once(), first);
});

test('modify to RESET cancels everything in flight; the QP can be brought up again', (t) => {
  const { sim, a, b } = twoNodes();
  const [qa, qb] = rcPair(a, b);
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x9000, 1);
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    a.nic.postSend(qa, wr(1, IBV_WR_RDMA_WRITE, src, dst, 0));
    t.is(a.nic.modifyQp(qa, { qpState: IBV_QPS_RESET }), 0);
    t.is(b.nic.modifyQp(qb, { qpState: IBV_QPS_RESET }), 0);
    yield* sim.sleep(100_000);
    t.is(a.cq.length, 0, 'RESET generates no completions');
    connect(a, qa, b, qb);
    a.nic.postSend(qa, wr(2, IBV_WR_RDMA_WRITE, src, dst, 0));
    yield* a.cq.wait();
    t.is(a.cq.poll(1)[0]!.wrId, 2);
  });
});

test('the kernel model\'s PhysicalMemory and DmaBus work behind the NIC', (t) => {
  const sim = new Simulation();
  const phys = new PhysicalMemory(sim, 64, true);
  const bus = new DmaBus(phys);
  const fabric = new Fabric(sim);
  const nic = new Nic(sim, bus, { name: 'nic', fabric });
  const pd = nic.allocPd();
  const cq = nic.createCq(16) as CompletionQueue;
  const mk = () => nic.createQp({ qpType: 2, pd, sendCq: cq, recvCq: cq }) as QueuePair;
  const q1 = mk();
  const q2 = mk();
  const node = { sim, nic, pd, cq, mem: null as never };
  connect(node, q1, node, q2);
  const f1 = phys.allocPage();
  const f2 = phys.allocPage();
  phys.write(f1, 0, new TextEncoder().encode('hello, device'));
  const src = nic.createMr({ pd, iova: 0x1000, length: 4096, access: ALL_ACCESS }) as MemoryRegion;
  const dst = nic.createMr({ pd, iova: 0x8000, length: 4096, access: ALL_ACCESS }) as MemoryRegion;
  runScript(t, sim, function* () {
    yield* nic.updateEntries(src, 0, [f1], false);
    yield* nic.updateEntries(dst, 0, [f2], true);
    nic.postSend(q1, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: 0x1000, length: 13, lkey: src.lkey }],
      rdma: { remoteAddr: 0x8000 + 100, rkey: dst.rkey } });
    yield* cq.wait();
  });
  t.is(cq.poll(1)[0]!.status, IBV_WC_SUCCESS);
  t.is(new TextDecoder().decode(phys.read(f2, 100, 13)), 'hello, device');
});
