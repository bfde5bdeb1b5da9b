/**
 * The NIC's record of DMA work in progress per MR (device/dma-activity.ts), which a driver
 * for a non-faultable NIC holds invalidations off for (rdma H3): send WQEs are active on
 * their local buffers from the doorbell to their completion, incoming requests while they
 * execute, and a posted receive waiting for a message is not active.
 */
import test from 'ava';
import { IBV_SEND_SIGNALED, IBV_WR_RDMA_WRITE, NO_ODP_CAPS, type ActiveDma } from '../../device/index.ts';
import { buffer, mapBuffer, rcPair, runScript, twoNodes } from './helpers.ts';

test('rdma H3: a WRITE is active on its source from post to completion and on its target while the responder writes; an idle receive is not', (t) => {
  const { sim, a, b } = twoNodes({ caps: { odp: NO_ODP_CAPS } });
  const [qa, qb] = rcPair(a, b);
  const src = buffer(a, 0x10000, 16);
  const dst = buffer(b, 0x40000, 16);
  const recv = buffer(b, 0x80000, 4);
  const seen: { srcAtPost?: number; recvActive?: number; targetDuring?: ActiveDma[]; srcAfter?: number; idleAt?: number; waitedUntil?: number } = {};
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    yield* mapBuffer(b, recv);
    b.nic.postRecv(qb, { wrId: 9, sgList: [{ addr: recv.iova, length: recv.length, lkey: recv.mr.lkey }] });
    seen.recvActive = b.nic.dmaActivity.active(recv.mr).length;
    b.nic.dmaActivity.activity$.subscribe((ev) => {
      if (ev.type === 'start' && ev.op.side === 'responder') seen.targetDuring = b.nic.dmaActivity.active(dst.mr, dst.iova + 4096, 4096);
    });
    a.nic.postSend(qa, {
      wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
      sgList: [{ addr: src.iova, length: src.length, lkey: src.mr.lkey }], rdma: { remoteAddr: dst.iova, rkey: dst.mr.rkey },
    });
    seen.srcAtPost = a.nic.dmaActivity.active(src.mr, src.iova, 1).length;
    const idle = yield* a.nic.dmaActivity.waitIdle(src.mr, src.iova, src.length, sim.now() + 1_000);
    seen.waitedUntil = idle ? -1 : sim.now();
    yield* a.nic.dmaActivity.waitIdle(src.mr, src.iova, src.length);
    seen.idleAt = sim.now();
    yield* a.cq.waitFor(1);
    seen.srcAfter = a.nic.dmaActivity.active(src.mr).length;
  });
  t.is(seen.recvActive, 0, 'a posted receive waiting for a message is not in flight');
  t.is(seen.srcAtPost, 1, 'active from the doorbell');
  t.true((seen.waitedUntil ?? -1) > 0, 'the deadline came first');
  t.is(seen.targetDuring?.length, 1, 'the responder is active on the target range');
  t.is(seen.targetDuring?.[0]?.side, 'responder');
  t.true((seen.idleAt ?? 0) > 0);
  t.is(seen.srcAfter, 0, 'done once the WRITE completed');
  const cqe = a.cq.poll(1)[0];
  t.is(cqe?.time, (seen.idleAt ?? 0) + a.nic.costs.cqeNs, 'the source became idle when the ACK completed the WQE (its CQE is written cqeNs later)');
});
