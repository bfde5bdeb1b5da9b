/**
 * RDMA FLUSH and ATOMIC WRITE on the NIC model (issue 18 item 2), over pinned and ODP
 * memory, on the rxe preset that has them and the mlx5 preset that does not. Sources:
 * rdma-core ibv_wr_post(3) (ibv_wr_flush, ibv_wr_atomic_write), ibv_reg_mr(3) (FLUSH access
 * bits); kernel drivers/infiniband/sw/rxe/rxe_resp.c (`process_flush`, `atomic_write_reply`,
 * `check_rkey`), rxe_odp.c (`rxe_odp_flush_pmem_iova`, `rxe_odp_do_atomic_write`),
 * include/rdma/ib_verbs.h (`ib_check_mr_access`), rxe.c (`rxe_init_device_param`).
 */
import test from 'ava';
import {
  CAPABILITY_PRESETS, EOPNOTSUPP, EINVAL, IBV_ACCESS_FLUSH_GLOBAL, IBV_ACCESS_FLUSH_PERSISTENT, IBV_ACCESS_LOCAL_WRITE,
  IBV_ACCESS_REMOTE_READ, IBV_FLUSH_GLOBAL, IBV_FLUSH_MR, IBV_FLUSH_PERSISTENT, IBV_FLUSH_RANGE, IBV_ODP_SUPPORT_ATOMIC_WRITE,
  IBV_ODP_SUPPORT_FLUSH, IBV_SEND_SIGNALED, IBV_WC_ATOMIC_WRITE, IBV_WC_FLUSH, IBV_WR_ATOMIC_WRITE, IBV_WR_FLUSH,
  IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_UD, RXE_DEVICE_CAPS, RXE_ODP_CAPS, type DeviceFault, type QueuePair,
  type SendWr,
} from '../../device/index.ts';
import {
  ALL_ACCESS, buffer, contents, mapBuffer, pager, rcPair, runScript, statusNames, twoNodes, type Buffer,
} from './helpers.ts';

const S = IBV_SEND_SIGNALED;
const FLUSH_ACCESS = IBV_ACCESS_FLUSH_GLOBAL | IBV_ACCESS_FLUSH_PERSISTENT;
const QP_FLUSH = { qpAccessFlags: ALL_ACCESS | FLUSH_ACCESS };

function flushWr(id: number, buf: Buffer, offset: number, length: number, type = IBV_FLUSH_GLOBAL, level = IBV_FLUSH_RANGE): SendWr {
  return { wrId: id, opcode: IBV_WR_FLUSH, sendFlags: S, sgList: [], rdma: { remoteAddr: buf.iova + offset, rkey: buf.mr.rkey }, flush: { type, level, length } };
}

function atomicWriteWr(id: number, buf: Buffer, offset: number, value: bigint): SendWr {
  const v = new Uint8Array(8);
  new DataView(v.buffer).setBigUint64(0, value, true);
  return { wrId: id, opcode: IBV_WR_ATOMIC_WRITE, sendFlags: S, sgList: [], rdma: { remoteAddr: buf.iova + offset, rkey: buf.mr.rkey }, atomicWrite: v };
}

function u64(bytes: Uint8Array): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
}

test('rxe atomic_write_reply: ATOMIC_WRITE stores 8 bytes at the remote address and completes with IBV_WC_ATOMIC_WRITE; errors are REM_INV_REQ (misaligned, QP without REMOTE_WRITE) or REM_ACCESS (MR without it)', (t) => {
  for (const [what, attr, access, offset, want] of [
    ['ok', {}, ALL_ACCESS, 16, 'IBV_WC_SUCCESS'],
    ['misaligned (RESPST_ERR_MISALIGNED_ATOMIC)', {}, ALL_ACCESS, 12, 'IBV_WC_REM_INV_REQ_ERR'],
    ['MR without REMOTE_WRITE (check_rkey)', {}, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ, 16, 'IBV_WC_REM_ACCESS_ERR'],
    ['QP without REMOTE_WRITE', { qpAccessFlags: IBV_ACCESS_REMOTE_READ }, ALL_ACCESS, 16, 'IBV_WC_REM_INV_REQ_ERR'],
  ] as const) {
    const { sim, a, b } = twoNodes({ caps: CAPABILITY_PRESETS.rxe });
    const [qa] = rcPair(a, b, attr);
    const dst = buffer(b, 0x8000, 1, { access });
    runScript(t, sim, function* () {
      yield* mapBuffer(b, dst);
      t.is(a.nic.postSend(qa, atomicWriteWr(1, dst, offset, 0x1122334455667788n)), 0);
      yield* a.cq.waitFor(1);
    });
    const [wc] = a.cq.drain();
    t.is(statusNames([wc!])[0], want, what);
    if (want === 'IBV_WC_SUCCESS') {
      t.is(wc!.opcode, IBV_WC_ATOMIC_WRITE);
      t.is(u64(contents(b, dst, offset, 8)), 0x1122334455667788n);
    } else {
      t.is(u64(contents(b, dst, 16, 8)), 0n, `${what}: nothing written`);
    }
  }
});

test('rxe process_flush: FLUSH needs the placement type on the QP (else REM_INV_REQ) and on the MR (else REM_ACCESS); it is answered like a zero-length READ and completes with IBV_WC_FLUSH', (t) => {
  for (const [what, qpAccess, mrAccess, type, want] of [
    ['global, both allow', ALL_ACCESS | FLUSH_ACCESS, ALL_ACCESS | FLUSH_ACCESS, IBV_FLUSH_GLOBAL, 'IBV_WC_SUCCESS'],
    ['persistent+global, both allow', ALL_ACCESS | FLUSH_ACCESS, ALL_ACCESS | FLUSH_ACCESS, IBV_FLUSH_GLOBAL | IBV_FLUSH_PERSISTENT, 'IBV_WC_SUCCESS'],
    ['QP lacks FLUSH_PERSISTENT', ALL_ACCESS | IBV_ACCESS_FLUSH_GLOBAL, ALL_ACCESS | FLUSH_ACCESS, IBV_FLUSH_PERSISTENT, 'IBV_WC_REM_INV_REQ_ERR'],
    ['MR lacks FLUSH_GLOBAL', ALL_ACCESS | FLUSH_ACCESS, ALL_ACCESS | IBV_ACCESS_FLUSH_PERSISTENT, IBV_FLUSH_GLOBAL, 'IBV_WC_REM_ACCESS_ERR'],
  ] as const) {
    const { sim, a, b } = twoNodes({ caps: CAPABILITY_PRESETS.rxe });
    const [qa] = rcPair(a, b, { qpAccessFlags: qpAccess });
    const dst = buffer(b, 0x8000, 2, { access: mrAccess });
    runScript(t, sim, function* () {
      yield* mapBuffer(b, dst);
      t.is(a.nic.postSend(qa, flushWr(1, dst, 100, 5000, type)), 0);
      yield* a.cq.waitFor(1);
    });
    const [wc] = a.cq.drain();
    t.is(statusNames([wc!])[0], want, what);
    if (want === 'IBV_WC_SUCCESS') t.is(wc!.opcode, IBV_WC_FLUSH);
  }
});

test('rxe check_rkey: FLUSH of a range outside the MR is REM_ACCESS_ERR; level IBV_FLUSH_MR flushes the whole MR whatever the range says', (t) => {
  const { sim, a, b } = twoNodes({ caps: CAPABILITY_PRESETS.rxe });
  const [qa, qb] = rcPair(a, b, QP_FLUSH);
  const dst = buffer(b, 0x8000, 2, { access: ALL_ACCESS | FLUSH_ACCESS });
  runScript(t, sim, function* () {
    yield* mapBuffer(b, dst);
    t.is(a.nic.postSend(qa, flushWr(1, dst, 0, 1 << 20, IBV_FLUSH_GLOBAL, IBV_FLUSH_MR)), 0);
    yield* a.cq.waitFor(1);
    t.is(a.nic.postSend(qa, flushWr(2, dst, 4096, 8192)), 0);
    yield* a.cq.waitFor(2);
  });
  t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_SUCCESS', 'IBV_WC_REM_ACCESS_ERR']);
  t.is(qb.stats.faults, 0);
});

test('rdma A3, rxe_odp_flush_pmem_iova / rxe_odp_do_atomic_write: over cold ODP memory FLUSH and ATOMIC_WRITE miss on the responder, are resolved inline (rxe_odp_map_range_and_lock) and complete without a drop or retry (rxe preset)', (t) => {
  const { sim, a, b } = twoNodes({ caps: CAPABILITY_PRESETS.rxe });
  const [qa, qb] = rcPair(a, b, QP_FLUSH);
  const dst = buffer(b, 0x8000, 3, { access: ALL_ACCESS | FLUSH_ACCESS, onDemand: true });
  const log: DeviceFault[] = [];
  pager(b, [dst], { log, delayNs: 20_000 });
  runScript(t, sim, function* () {
    t.is(a.nic.postSend(qa, atomicWriteWr(1, dst, 8192 + 40, 0xabcdefn)), 0);
    yield* a.cq.waitFor(1);
    t.is(a.nic.postSend(qa, flushWr(2, dst, 0, 3 * 4096, IBV_FLUSH_PERSISTENT)), 0);
    yield* a.cq.waitFor(2);
  });
  t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_SUCCESS', 'IBV_WC_SUCCESS']);
  t.deepEqual(log.map((f) => [f.opcode, f.side, f.write, dst.mr.pageIndexOf(f.iova)]), [
    [IBV_WR_ATOMIC_WRITE, 'responder', true, 2],
    // The flush maps every page it covers, writable as the MR is (RXE_PAGEFAULT_DEFAULT);
    // the pager maps to the end of the range, so page 2 (already mapped) is not refaulted.
    [IBV_WR_FLUSH, 'responder', true, 0],
  ]);
  t.is(u64(contents(b, dst, 8192 + 40, 8)), 0xabcdefn);
  // rxe maps the miss in the responder's own context: nothing dropped, nothing resent.
  t.is(qb.stats.dropped, 0, 'rxe resolves the miss inline');
  t.is(a.nic.stats.retransmits, 0);
  t.is(a.nic.stats.timeouts, 0);
});

test('rdma A3: on a device that has FLUSH and ATOMIC_WRITE but not their ODP bits, both are refused on ODP memory with REM_INV_REQ (rxe without ODP support for them: RESPST_ERR_UNSUPPORTED_OPCODE)', (t) => {
  const odp = { ...RXE_ODP_CAPS, rcOdpCaps: RXE_ODP_CAPS.rcOdpCaps & ~(IBV_ODP_SUPPORT_FLUSH | IBV_ODP_SUPPORT_ATOMIC_WRITE) };
  for (const op of ['flush', 'atomic-write'] as const) {
    const { sim, a, b } = twoNodes({ caps: { odp, deviceCapFlags: RXE_DEVICE_CAPS } });
    const [qa] = rcPair(a, b, QP_FLUSH);
    const dst = buffer(b, 0x8000, 1, { access: ALL_ACCESS | FLUSH_ACCESS, onDemand: true });
    const log: DeviceFault[] = [];
    pager(b, [dst], { log });
    runScript(t, sim, function* () {
      yield* mapBuffer(b, dst);
      t.is(a.nic.postSend(qa, op === 'flush' ? flushWr(1, dst, 0, 64) : atomicWriteWr(1, dst, 0, 5n)), 0);
      yield* a.cq.waitFor(1);
    });
    t.deepEqual(statusNames(a.cq.drain()), ['IBV_WC_REM_INV_REQ_ERR'], op);
    t.is(log.length, 0);
  }
});

test('rdma A1 step 4 (ib_check_mr_access), ibv_wr_post(3): on mlx5 (no FLUSH, no ATOMIC_WRITE) FLUSH access is -EOPNOTSUPP and both WQEs are -EINVAL; on UD (the wrong QP type) too', (t) => {
  const { a, b } = twoNodes({ caps: CAPABILITY_PRESETS.mlx5 });
  t.is(a.nic.createMr({ pd: a.pd, iova: 0x1000, length: 4096, access: IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_FLUSH_GLOBAL }), -EOPNOTSUPP);
  t.is(a.nic.createMr({ pd: a.pd, iova: 0x1000, length: 4096, access: IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_FLUSH_PERSISTENT }), -EOPNOTSUPP);
  const [qa] = rcPair(a, b);
  const dst = buffer(b, 0x8000, 1);
  t.is(a.nic.postSend(qa, flushWr(1, dst, 0, 64)), -EINVAL);
  t.is(a.nic.postSend(qa, atomicWriteWr(2, dst, 0, 1n)), -EINVAL);
  // On rxe the same WQEs are accepted, but not malformed ones.
  const r = twoNodes({ caps: CAPABILITY_PRESETS.rxe });
  const [ra] = rcPair(r.a, r.b);
  const rdst = buffer(r.b, 0x8000, 1);
  t.is(r.a.nic.postSend(ra, flushWr(1, rdst, 0, 64)), 0);
  t.is(r.a.nic.postSend(ra, flushWr(2, rdst, 0, 64, 4)), -EINVAL, 'unknown placement type');
  t.is(r.a.nic.postSend(ra, flushWr(3, rdst, 0, 64, IBV_FLUSH_GLOBAL, 2)), -EINVAL, 'unknown selectivity level');
  t.is(r.a.nic.postSend(ra, { ...atomicWriteWr(4, rdst, 0, 1n), atomicWrite: new Uint8Array(4) }), -EINVAL, 'not 8 bytes');
  // The wrong QP type: FLUSH and ATOMIC_WRITE exist on RC and XRC_SEND only (ibv_wr_post(3) table).
  const ud = r.a.nic.createQp({ qpType: IBV_QPT_UD, pd: r.a.pd, sendCq: r.a.cq, recvCq: r.a.cq }) as QueuePair;
  r.a.nic.modifyQp(ud, { qpState: IBV_QPS_INIT, qkey: 1 });
  r.a.nic.modifyQp(ud, { qpState: IBV_QPS_RTR });
  t.is(r.a.nic.modifyQp(ud, { qpState: IBV_QPS_RTS }), 0);
  const udAddr = { ud: { ah: { dlid: r.b.nic.lid }, remoteQpn: 1, remoteQkey: 1 } };
  t.is(r.a.nic.postSend(ud, { ...flushWr(5, rdst, 0, 64), ...udAddr }), -EINVAL);
  t.is(r.a.nic.postSend(ud, { ...atomicWriteWr(6, rdst, 0, 1n), ...udAddr }), -EINVAL);
});
