/**
 * The rest of the verbs (issue 18) through the userspace API, on real nodes (kernel model,
 * NIC, driver with the ODP strategy): ibv_query_device_ex, ibv_reg_mr_ex, ibv_advise_mr's
 * unknown advice, SRQs and XRC over ODP memory, the extended QP (ibv_wr_*) with FLUSH and
 * ATOMIC_WRITE over ODP memory on rxe and refused on mlx5. Sources: rdma-core man pages
 * ibv_query_device_ex(3), ibv_reg_mr(3) (ibv_reg_mr_ex), ibv_advise_mr(3), ibv_create_srq(3),
 * ibv_post_srq_recv(3), ibv_open_xrcd(3), ibv_create_qp_ex(3), ibv_wr_post(3); kernel
 * drivers/infiniband/hw/mlx5/mr.c (`mlx5_ib_advise_mr`), core/uverbs_cmd.c
 * (`ib_uverbs_open_xrcd`), sw/rxe/rxe_odp.c (`rxe_odp_flush_pmem_iova`, `rxe_odp_do_atomic_write`).
 */
import test from 'ava';
import { DmaBuf, EAGAIN, EBUSY, EINVAL, ENOMEM, EOPNOTSUPP, Simulation, errnoName } from '../../kernel-model/index.ts';
import {
  CAPABILITY_PRESETS, Fabric, IBV_ACCESS_FLUSH_GLOBAL, IBV_ACCESS_FLUSH_PERSISTENT, IBV_ACCESS_ON_DEMAND, IBV_DEVICE_XRC,
  IBV_FLUSH_GLOBAL, IBV_FLUSH_PERSISTENT, IBV_FLUSH_RANGE, IBV_ODP_SUPPORT, IBV_ODP_SUPPORT_SRQ_RECV, IBV_QPS_INIT,
  IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, IBV_QPT_UD, IBV_QPT_XRC_RECV, IBV_QPT_XRC_SEND, IBV_SEND_SIGNALED, IBV_SRQT_XRC,
  IBV_SRQ_LIMIT, IBV_WC_ATOMIC_WRITE, IBV_WC_FLUSH, IBV_WC_RDMA_WRITE, IBV_WR_FLUSH, IBV_WR_SEND,
  IB_UVERBS_DEVICE_ATOMIC_WRITE, IB_UVERBS_DEVICE_FLUSH_GLOBAL, MLX5_ODP_CAPS, RXE_ODP_CAPS,
  type NicCapabilities, type QueuePair, type SharedReceiveQueue,
} from '../../device/index.ts';
import {
  IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_FLAG_FLUSH, IBV_QP_EX_WITH_ATOMIC_WRITE, IBV_QP_EX_WITH_FLUSH,
  IBV_QP_EX_WITH_RDMA_WRITE, IBV_QP_EX_WITH_SEND, IBV_QP_INIT_ATTR_PD,
  IBV_QP_INIT_ATTR_SEND_OPS_FLAGS, IBV_QP_INIT_ATTR_XRCD, IBV_REG_MR_MASK_ADDR, IBV_REG_MR_MASK_DMAH, IBV_REG_MR_MASK_FD,
  IBV_REG_MR_MASK_FD_OFFSET, IBV_REG_MR_MASK_IOVA, IBV_XRCD_INIT_ATTR_FD, IBV_XRCD_INIT_ATTR_OFLAGS, O_CREAT, O_EXCL,
  odpStrategy, openDevice, type IbvAsyncEvent, type IbvQpEx, type IbvXrcd,
} from '../../driver/index.ts';
import {
  ALL_ACCESS, P, TEST_QP_ATTR, completions, load, makeApp, mapAnon, must, pattern, regOk, run, statusNames, store,
  type App,
} from './_verbs-rig.ts';

const ODP = IBV_ACCESS_ON_DEMAND;
const FLUSH_ACCESS = IBV_ACCESS_FLUSH_GLOBAL | IBV_ACCESS_FLUSH_PERSISTENT;

/** Two apps on ODP-capable nodes with the given device preset and the ODP strategy. */
function odpApps(caps: Partial<NicCapabilities>, seed = 1): { sim: Simulation; a: App; b: App } {
  const sim = new Simulation({ seed });
  const fabric = new Fabric(sim);
  return { sim, a: makeApp(sim, fabric, 'a', { caps, odp: odpStrategy() }), b: makeApp(sim, fabric, 'b', { caps, odp: odpStrategy() }) };
}

/** RESET -> INIT -> RTR -> RTS through ibv_modify_qp, with the given QP access flags. */
function bring(app: App, qp: QueuePair, peer: App, peerQpNum: number, qpAccessFlags = ALL_ACCESS): void {
  must(app.ctx.modifyQp(qp, { qpState: IBV_QPS_INIT, qpAccessFlags }), 'INIT');
  must(app.ctx.modifyQp(qp, { ...TEST_QP_ATTR, qpState: IBV_QPS_RTR, destQpNum: peerQpNum, ahAttr: { dlid: peer.node.nic.lid } }), 'RTR');
  must(app.ctx.modifyQp(qp, { ...TEST_QP_ATTR, qpState: IBV_QPS_RTS }), 'RTS');
}

/** An extended RC QP on `a` with `ops`, and a plain RC QP on `b`, connected. */
function qpExPair(a: App, b: App, ops: number, qpAccessFlags = ALL_ACCESS): [IbvQpEx, QueuePair] {
  const qx = a.ctx.createQpEx({ compMask: IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS, qpType: IBV_QPT_RC, pd: a.pd,
    sendCq: a.cq, recvCq: a.cq, cap: { maxSendWr: 8 }, sendOpsFlags: ops });
  if (typeof qx === 'number') throw new Error(`createQpEx ${errnoName(qx)}`);
  const qb = b.ctx.createQp({ qpType: IBV_QPT_RC, pd: b.pd, sendCq: b.cq, recvCq: b.cq }) as QueuePair;
  bring(a, qx.qp, b, qb.qpNum, qpAccessFlags);
  bring(b, qb, a, qx.qpNum, qpAccessFlags);
  return [qx, qb];
}

test('ibv_query_device_ex(3), rdma A3: each preset reports its ODP masks per transport, its XRC mask and device_cap_flags_ex; a driver without ODP reports none', (t) => {
  const sim = new Simulation({ seed: 1 });
  const fabric = new Fabric(sim);
  const mlx5 = makeApp(sim, fabric, 'm', { caps: CAPABILITY_PRESETS.mlx5, odp: odpStrategy() }).ctx.queryDeviceEx();
  t.is(mlx5.odpCaps.generalCaps, MLX5_ODP_CAPS.generalCaps);
  t.deepEqual(mlx5.odpCaps.perTransportCaps, { rcOdpCaps: MLX5_ODP_CAPS.rcOdpCaps, ucOdpCaps: 0, udOdpCaps: MLX5_ODP_CAPS.udOdpCaps });
  t.is(mlx5.xrcOdpCaps, MLX5_ODP_CAPS.xrcOdpCaps);
  t.not(mlx5.deviceCapFlagsEx & IBV_DEVICE_XRC, 0n);
  t.is(mlx5.deviceCapFlagsEx & (IB_UVERBS_DEVICE_FLUSH_GLOBAL | IB_UVERBS_DEVICE_ATOMIC_WRITE), 0n);
  const rxe = makeApp(sim, fabric, 'r', { caps: CAPABILITY_PRESETS.rxe, odp: odpStrategy() }).ctx.queryDeviceEx();
  t.is(rxe.odpCaps.perTransportCaps.rcOdpCaps, RXE_ODP_CAPS.rcOdpCaps);
  t.is(rxe.xrcOdpCaps, 0);
  t.is(rxe.deviceCapFlagsEx & IBV_DEVICE_XRC, 0n);
  t.not(rxe.deviceCapFlagsEx & IB_UVERBS_DEVICE_ATOMIC_WRITE, 0n);
  // `{ odp: RXE_ODP_CAPS }` alone describes the same device.
  t.is(makeApp(sim, fabric, 'r2', { caps: { odp: RXE_ODP_CAPS }, odp: odpStrategy() }).ctx.queryDeviceEx().deviceCapFlagsEx, rxe.deviceCapFlagsEx);
  // An ODP-capable NIC whose driver has no ODP strategy promises nothing: it would refuse ON_DEMAND.
  const noOdpDriver = makeApp(sim, fabric, 'n', { caps: CAPABILITY_PRESETS.mlx5 });
  const q = noOdpDriver.ctx.queryDeviceEx();
  t.is(q.odpCaps.generalCaps & IBV_ODP_SUPPORT, 0);
  t.is(q.odpCaps.perTransportCaps.rcOdpCaps, 0);
  run(t, sim, function* () {
    const buf = yield* mapAnon(noOdpDriver, 1);
    t.is(yield* noOdpDriver.ctx.regMr(noOdpDriver.pd, buf, P, ALL_ACCESS | ODP), -EOPNOTSUPP);
  });
});

test('ibv_reg_mr(3) ibv_reg_mr_ex: ADDR (with or without IOVA) registers process memory, FD+FD_OFFSET+IOVA a dma-buf; bad masks are -EINVAL, DMAH -EOPNOTSUPP', (t) => {
  const { sim, a } = odpApps(CAPABILITY_PRESETS.mlx5);
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 4);
    const mr = yield* a.ctx.regMrEx(a.pd, { compMask: IBV_REG_MR_MASK_ADDR | IBV_REG_MR_MASK_IOVA, addr: buf, iova: 0x7000_0000, length: 2 * P, access: ALL_ACCESS | ODP });
    if (typeof mr === 'number') return t.fail(`reg_mr_ex ${errnoName(mr)}`);
    t.is(mr.addr, buf);
    t.is(mr.umem.mr.iova, 0x7000_0000);
    t.true(mr.umem.mr.onDemand);
    const plain = yield* a.ctx.regMrEx(a.pd, { compMask: IBV_REG_MR_MASK_ADDR, addr: buf + 2 * P, length: P, access: ALL_ACCESS | ODP });
    t.is(typeof plain === 'number' ? plain : plain.umem.mr.iova, buf + 2 * P, 'iova defaults to addr');
    t.is(yield* a.ctx.regMrEx(a.pd, { compMask: 0, length: P, access: ALL_ACCESS }), -EINVAL, 'neither ADDR nor FD');
    t.is(yield* a.ctx.regMrEx(a.pd, { compMask: IBV_REG_MR_MASK_ADDR | IBV_REG_MR_MASK_FD, addr: buf, length: P, access: ALL_ACCESS }), -EINVAL);
    t.is(yield* a.ctx.regMrEx(a.pd, { compMask: IBV_REG_MR_MASK_ADDR | 64, addr: buf, length: P, access: ALL_ACCESS }), -EINVAL, 'unknown mask bit');
    t.is(yield* a.ctx.regMrEx(a.pd, { compMask: IBV_REG_MR_MASK_ADDR | IBV_REG_MR_MASK_DMAH, addr: buf, length: P, access: ALL_ACCESS }), -EOPNOTSUPP);
    const dmabuf = DmaBuf.create(a.k, 'gpu', 2 * P) as DmaBuf;
    t.is(yield* a.ctx.regMrEx(a.pd, { compMask: IBV_REG_MR_MASK_FD | IBV_REG_MR_MASK_IOVA, fd: dmabuf, iova: 0x9000_0000, length: P, access: ALL_ACCESS }), -EINVAL, 'FD without FD_OFFSET');
    const dm = yield* a.ctx.regMrEx(a.pd, { compMask: IBV_REG_MR_MASK_FD | IBV_REG_MR_MASK_FD_OFFSET | IBV_REG_MR_MASK_IOVA, fd: dmabuf, fdOffset: P, iova: 0x9000_1000, length: P, access: ALL_ACCESS });
    if (typeof dm === 'number') t.fail(`dma-buf reg_mr_ex ${errnoName(dm)}`);
    else t.is(dm.umem.mr.iova, 0x9000_1000);
    t.is(yield* a.ctx.regMrEx(a.pd, { compMask: IBV_REG_MR_MASK_FD | IBV_REG_MR_MASK_FD_OFFSET | IBV_REG_MR_MASK_IOVA, fd: dmabuf, fdOffset: 0, iova: 0x9000_0000, length: P, access: ALL_ACCESS | ODP }), -EINVAL, 'ibv_reg_dmabuf_mr refuses ON_DEMAND (rdma G1)');
  });
});

test('ibv_advise_mr(3), mlx5_ib_advise_mr: an unknown advice is -EOPNOTSUPP (not -EINVAL); unknown flags stay -EINVAL', (t) => {
  const { sim, a } = odpApps(CAPABILITY_PRESETS.mlx5);
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 2);
    const mr = yield* regOk(a, buf, 2 * P, ALL_ACCESS | ODP);
    const sgl = [{ addr: buf, length: P, lkey: mr.lkey }];
    t.is(yield* a.ctx.adviseMr(a.pd, 3, IBV_ADVISE_MR_FLAG_FLUSH, sgl), -EOPNOTSUPP);
    t.is(yield* a.ctx.adviseMr(a.pd, -1, 0, sgl), -EOPNOTSUPP);
    t.is(yield* a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH, 2, sgl), -EINVAL, 'uverbs_get_flags32: unknown flag bits');
    t.is(yield* a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_FLAG_FLUSH, sgl), 0);
  });
});

test('ibv_wr_post(3) over ODP on rxe (rxe_odp_flush_pmem_iova, rxe_odp_do_atomic_write): RDMA WRITE, ATOMIC_WRITE and FLUSH into never-touched ODP memory fault through the driver and complete', (t) => {
  const { sim, a, b } = odpApps(CAPABILITY_PRESETS.rxe);
  const [qx] = qpExPair(a, b, IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_FLUSH | IBV_QP_EX_WITH_ATOMIC_WRITE, ALL_ACCESS | FLUSH_ACCESS);
  run(t, sim, function* () {
    const src = yield* mapAnon(a, 2);
    const dst = yield* mapAnon(b, 4);
    yield* store(a, src, pattern(3, 2 * P));
    const smr = yield* regOk(a, src, 2 * P, ALL_ACCESS | ODP);
    const dmr = yield* regOk(b, dst, 4 * P, ALL_ACCESS | ODP | FLUSH_ACCESS);
    const value = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    qx.wrStart();
    qx.wrId = 1;
    qx.wrFlags = IBV_SEND_SIGNALED;
    qx.wrRdmaWrite(dmr.rkey, dst + 100);
    qx.wrSetSge(smr.lkey, src, 2 * P);
    qx.wrId = 2;
    qx.wrAtomicWrite(dmr.rkey, dst + 3 * P + 64, value);
    qx.wrId = 3;
    qx.wrFlush(dmr.rkey, dst, 4 * P, IBV_FLUSH_GLOBAL | IBV_FLUSH_PERSISTENT, IBV_FLUSH_RANGE);
    t.is(yield* qx.wrComplete(), 0);
    const wcs = yield* completions(a, 3);
    t.deepEqual(statusNames(wcs), ['IBV_WC_SUCCESS', 'IBV_WC_SUCCESS', 'IBV_WC_SUCCESS']);
    t.deepEqual(wcs.map((w) => [w.wrId, w.opcode]), [[1, IBV_WC_RDMA_WRITE], [2, IBV_WC_ATOMIC_WRITE], [3, IBV_WC_FLUSH]]);
    t.deepEqual(yield* load(b, dst + 100, 2 * P), pattern(3, 2 * P));
    t.deepEqual(yield* load(b, dst + 3 * P + 64, 8), value);
    t.true(dmr.umem.mr.counters.faults >= 2, 'the responder faulted on the cold pages');
  });
});

test('ibv_create_qp_ex(3), ibv_wr_post(3): on mlx5 FLUSH/ATOMIC_WRITE send ops are -EOPNOTSUPP, FLUSH access -EOPNOTSUPP; a builder the QP was not created for, one outside wr_start, or too little room abort the whole batch; ibv_post_send refuses IBV_WR_FLUSH', (t) => {
  const { sim, a, b } = odpApps(CAPABILITY_PRESETS.mlx5);
  const base = { compMask: IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS, qpType: IBV_QPT_RC, pd: a.pd, sendCq: a.cq, recvCq: a.cq } as const;
  t.is(a.ctx.createQpEx({ ...base, sendOpsFlags: IBV_QP_EX_WITH_FLUSH }), -EOPNOTSUPP);
  t.is(a.ctx.createQpEx({ ...base, sendOpsFlags: IBV_QP_EX_WITH_ATOMIC_WRITE }), -EOPNOTSUPP);
  t.is(a.ctx.createQpEx({ ...base, qpType: IBV_QPT_UD, sendOpsFlags: IBV_QP_EX_WITH_RDMA_WRITE }), -EOPNOTSUPP, 'RDMA WRITE on UD: the wrong QP type');
  t.is(a.ctx.createQpEx({ ...base, compMask: IBV_QP_INIT_ATTR_SEND_OPS_FLAGS, sendOpsFlags: IBV_QP_EX_WITH_SEND }), -EINVAL, 'no PD in the mask');
  const [qx, qb] = qpExPair(a, b, IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_SEND);
  run(t, sim, function* () {
    const src = yield* mapAnon(a, 1);
    const dst = yield* mapAnon(b, 1);
    t.is(yield* b.ctx.regMr(b.pd, dst, P, ALL_ACCESS | IBV_ACCESS_FLUSH_GLOBAL), -EOPNOTSUPP, 'rdma A1 step 4');
    const smr = yield* regOk(a, src, P, ALL_ACCESS | ODP);
    const dmr = yield* regOk(b, dst, P, ALL_ACCESS | ODP);
    // A READ on a QP created without IBV_QP_EX_WITH_RDMA_READ: the batch fails as a whole.
    qx.wrStart();
    qx.wrRdmaWrite(dmr.rkey, dst);
    qx.wrSetSge(smr.lkey, src, 8);
    qx.wrRdmaRead(dmr.rkey, dst);
    qx.wrSetSge(smr.lkey, src, 8);
    t.is(yield* qx.wrComplete(), -EOPNOTSUPP);
    // A builder outside wr_start .. wr_complete.
    qx.wrRdmaWrite(dmr.rkey, dst);
    t.is(yield* qx.wrComplete(), -EINVAL);
    // More WRs than the send queue holds (max_send_wr 8).
    qx.wrStart();
    for (let i = 0; i < 9; i++) {
      qx.wrRdmaWrite(dmr.rkey, dst);
      qx.wrSetSge(smr.lkey, src, 8);
    }
    t.is(yield* qx.wrComplete(), -ENOMEM);
    // A device-level refusal (more SGEs than the QP's max_send_sge).
    qx.wrStart();
    qx.wrRdmaWrite(dmr.rkey, dst);
    qx.wrSetSgeList(Array.from({ length: 31 }, () => ({ addr: src, length: 1, lkey: smr.lkey })));
    t.is(yield* qx.wrComplete(), -EINVAL);
    // wr_abort discards.
    qx.wrStart();
    qx.wrRdmaWrite(dmr.rkey, dst);
    qx.wrSetSge(smr.lkey, src, 8);
    qx.wrAbort();
    t.is(yield* a.ctx.postSend(qx.qp, { wrId: 9, opcode: IBV_WR_FLUSH, sgList: [], rdma: { remoteAddr: dst, rkey: dmr.rkey }, flush: { type: 1, level: 0, length: 8 } }), -EINVAL);
    yield* a.node.kernel.sim.sleep(1_000_000);
    t.is(a.cq.length, 0, 'nothing was posted by any failed or aborted batch');
    t.is(qb.stats.dropped, 0);
    // And a good batch still works afterwards.
    qx.wrStart();
    qx.wrFlags = IBV_SEND_SIGNALED;
    qx.wrRdmaWrite(dmr.rkey, dst);
    qx.wrSetInlineData(new Uint8Array([9, 9, 9]));
    t.is(yield* qx.wrComplete(), 0);
    t.deepEqual(statusNames(yield* completions(a, 1)), ['IBV_WC_SUCCESS']);
    t.deepEqual(yield* load(b, dst, 3), new Uint8Array([9, 9, 9]));
  });
});

test('ibv_create_srq(3), ibv_post_srq_recv(3), ibv_modify_srq(3) over ODP: SENDs from two QPs land in never-touched ODP receive buffers of one SRQ; the limit event reaches the app', (t) => {
  const { sim, a, b } = odpApps(CAPABILITY_PRESETS.mlx5);
  const srq = b.ctx.createSrq(b.pd, { maxWr: 8, maxSge: 1 }) as SharedReceiveQueue;
  t.is(b.ctx.createSrq(b.pd, { maxWr: 1 << 20, maxSge: 1 }), -EINVAL);
  const events: IbvAsyncEvent[] = [];
  b.ctx.on('async', (e) => events.push(e));
  const mk = () => {
    const qa = a.ctx.createQp({ qpType: IBV_QPT_RC, pd: a.pd, sendCq: a.cq, recvCq: a.cq }) as QueuePair;
    const qb = b.ctx.createQp({ qpType: IBV_QPT_RC, pd: b.pd, sendCq: b.cq, recvCq: b.cq, srq }) as QueuePair;
    bring(a, qa, b, qb.qpNum);
    bring(b, qb, a, qa.qpNum);
    return qa;
  };
  const q1 = mk();
  const q2 = mk();
  run(t, sim, function* () {
    const src = yield* mapAnon(a, 1);
    const dst = yield* mapAnon(b, 4);
    yield* store(a, src, pattern(5, P));
    const smr = yield* regOk(a, src, P, ALL_ACCESS | ODP);
    const dmr = yield* regOk(b, dst, 4 * P, ALL_ACCESS | ODP);
    for (let i = 0; i < 3; i++) must(yield* b.ctx.postSrqRecv(srq, { wrId: 10 + i, sgList: [{ addr: dst + i * P, length: P, lkey: dmr.lkey }] }), 'post_srq_recv');
    must(b.ctx.modifySrq(srq, { srqLimit: 2 }, IBV_SRQ_LIMIT), 'arm');
    for (const [i, qp] of [q1, q2].entries()) {
      must(yield* a.ctx.postSend(qp, { wrId: i, opcode: IBV_WR_SEND, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: src, length: 1000 + i, lkey: smr.lkey }] }), 'send');
      yield* completions(a, 1);
    }
    const recvs = yield* completions(b, 2);
    t.deepEqual(recvs.map((w) => [w.wrId, w.byteLen]), [[10, 1000], [11, 1001]]);
    t.deepEqual(yield* load(b, dst + P, 1001), pattern(5, P).slice(0, 1001));
    t.deepEqual(events, [{ type: 'IBV_EVENT_SRQ_LIMIT_REACHED', srqNum: srq.srqNum }]);
    t.true(dmr.umem.mr.counters.faults >= 2, 'the SRQ buffers were faulted in (SRQ_RECV)');
    t.not(b.ctx.queryDeviceEx().odpCaps.perTransportCaps.rcOdpCaps & IBV_ODP_SUPPORT_SRQ_RECV, 0);
  });
});

test('ibv_open_xrcd(3), ib_uverbs_open_xrcd: opens of one file share the domain across processes; no O_CREAT is -EAGAIN, O_EXCL on an existing one -EINVAL; XRC traffic over ODP on mlx5; rxe has no XRC', (t) => {
  const { sim, a, b } = odpApps(CAPABILITY_PRESETS.mlx5);
  const xattr = (fd: number, oflags: number) => ({ compMask: IBV_XRCD_INIT_ATTR_FD | IBV_XRCD_INIT_ATTR_OFLAGS, fd, oflags });
  t.is(b.ctx.openXrcd(xattr(5, 0)), -EAGAIN, 'no domain for the file and no O_CREAT');
  t.is(b.ctx.openXrcd({ compMask: IBV_XRCD_INIT_ATTR_FD, fd: -1, oflags: O_CREAT }), -EINVAL);
  const x1 = b.ctx.openXrcd(xattr(5, O_CREAT)) as IbvXrcd;
  t.is(b.ctx.openXrcd(xattr(5, O_CREAT | O_EXCL)), -EINVAL);
  // Another process on the same node opens the same file: the same domain.
  const other = openDevice(b.node.device, b.node.kernel.createProcess('b-other'));
  const x2 = other.openXrcd(xattr(5, 0)) as IbvXrcd;
  t.is(x2.xrcd, x1.xrcd);
  t.is(other.closeXrcd(x2), 0);
  const anon = b.ctx.openXrcd(xattr(-1, 0)) as IbvXrcd;
  t.not(anon.xrcd, x1.xrcd, 'fd -1: a private domain');
  const xsrq = b.ctx.createSrqEx({ pd: b.pd, srqType: IBV_SRQT_XRC, maxWr: 4, maxSge: 1, xrcd: x1, cq: b.cq }) as SharedReceiveQueue;
  const tgt = b.ctx.createQpEx({ compMask: IBV_QP_INIT_ATTR_XRCD, qpType: IBV_QPT_XRC_RECV, pd: 0, xrcd: x1 }) as IbvQpEx;
  t.is(b.ctx.createQpEx({ compMask: IBV_QP_INIT_ATTR_PD, qpType: IBV_QPT_XRC_RECV, pd: b.pd }), -EINVAL, 'a target QP needs its XRC domain');
  const ini = a.ctx.createQpEx({ compMask: IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS, qpType: IBV_QPT_XRC_SEND, pd: a.pd,
    sendCq: a.cq, sendOpsFlags: IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_RDMA_WRITE }) as IbvQpEx;
  bring(a, ini.qp, b, tgt.qpNum);
  bring(b, tgt.qp, a, ini.qpNum);
  run(t, sim, function* () {
    const src = yield* mapAnon(a, 1);
    const dst = yield* mapAnon(b, 2);
    yield* store(a, src, pattern(8, P));
    const smr = yield* regOk(a, src, P, ALL_ACCESS | ODP);
    const dmr = yield* regOk(b, dst, 2 * P, ALL_ACCESS | ODP);
    must(yield* b.ctx.postSrqRecv(xsrq, { wrId: 42, sgList: [{ addr: dst, length: P, lkey: dmr.lkey }] }), 'post_srq_recv');
    ini.wrStart();
    ini.wrFlags = IBV_SEND_SIGNALED;
    ini.wrId = 1;
    ini.wrSend();
    ini.wrSetSge(smr.lkey, src, 512);
    ini.wrSetXrcSrqn(xsrq.srqNum);
    ini.wrId = 2;
    ini.wrRdmaWrite(dmr.rkey, dst + P);
    ini.wrSetSge(smr.lkey, src, P);
    ini.wrSetXrcSrqn(xsrq.srqNum);
    t.is(yield* ini.wrComplete(), 0);
    t.deepEqual(statusNames(yield* completions(a, 2)), ['IBV_WC_SUCCESS', 'IBV_WC_SUCCESS']);
    const [wc] = yield* completions(b, 1);
    t.deepEqual([wc!.wrId, wc!.qpNum, wc!.byteLen], [42, tgt.qpNum, 512]);
    t.deepEqual(yield* load(b, dst, 512), pattern(8, P).slice(0, 512));
    t.deepEqual(yield* load(b, dst + P, P), pattern(8, P));
    t.true(dmr.umem.mr.counters.faults >= 2);
  });
  t.is(b.ctx.closeXrcd(x1), -EBUSY, 'the XRC SRQ and target QP still use it');
  const rxe = odpApps(CAPABILITY_PRESETS.rxe);
  t.is(rxe.b.ctx.openXrcd(xattr(-1, 0)), -EOPNOTSUPP);
  t.is(rxe.b.ctx.createQpEx({ compMask: IBV_QP_INIT_ATTR_PD, qpType: IBV_QPT_XRC_SEND, pd: rxe.b.pd, sendCq: rxe.b.cq }), -EOPNOTSUPP);
});
