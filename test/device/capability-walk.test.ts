/**
 * Capabilities never promise what the device does not do (issue 18 item 5): for every
 * preset, every general ODP bit, every per-transport ODP bit of RC, UD and XRC, and every
 * `device_cap_flags_ex` bit the model knows is exercised. A set bit must work (an ODP bit:
 * the operation on never-mapped ODP memory faults and then completes; a device bit: the
 * feature runs); a clear bit must not (no fault, and the operation fails or is refused).
 * A bit for an operation the transport cannot carry must be clear, and no unknown device
 * bit may be set. rdma A2, A3; rdma-core ibv_query_device_ex(3); linux mlx5/odp.c
 * `internal_fill_odp_caps`, sw/rxe/rxe.c `rxe_init_device_param`, rxe_param.h.
 */
import test from 'ava';
import {
  CAPABILITY_PRESETS, DEVICE_CAP_BITS, DEVICE_PAGE_SIZE, IBV_ACCESS_FLUSH_GLOBAL, IBV_ACCESS_FLUSH_PERSISTENT,
  IBV_DEVICE_SRQ_RESIZE, IBV_DEVICE_XRC, IBV_FLUSH_GLOBAL, IBV_FLUSH_PERSISTENT, IBV_FLUSH_RANGE, IBV_ODP_SUPPORT,
  IBV_ODP_SUPPORT_ATOMIC, IBV_ODP_SUPPORT_ATOMIC_WRITE, IBV_ODP_SUPPORT_FLUSH, IBV_ODP_SUPPORT_IMPLICIT,
  IBV_ODP_SUPPORT_READ, IBV_ODP_SUPPORT_RECV, IBV_ODP_SUPPORT_SEND, IBV_ODP_SUPPORT_SRQ_RECV, IBV_ODP_SUPPORT_WRITE,
  IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, IBV_QPT_UD, IBV_QPT_XRC_RECV, IBV_QPT_XRC_SEND,
  IBV_SEND_SIGNALED, IBV_SRQT_XRC, IBV_SRQ_MAX_WR, IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_WR_ATOMIC_WRITE, IBV_WR_FLUSH,
  IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, IBV_WR_SEND, IB_UVERBS_DEVICE_ATOMIC_WRITE, IB_UVERBS_DEVICE_FLUSH_GLOBAL,
  IB_UVERBS_DEVICE_FLUSH_PERSISTENT, MemoryRegion, hasDeviceCap, isFaultable, nicCapabilities, transportOdpCaps,
  type DeviceFault, type NicCapabilities, type QueuePair, type SendWr, type SharedReceiveQueue, type Transport,
  type WorkCompletion, type XrcDomain,
} from '../../device/index.ts';
import { ALL_ACCESS, TEST_ATTR, buffer, mapBuffer, pager, runScript, twoNodes, type Buffer, type Node } from './helpers.ts';

const FLUSH_ACCESS = IBV_ACCESS_FLUSH_GLOBAL | IBV_ACCESS_FLUSH_PERSISTENT;
const ODP_BITS = [
  ['SEND', IBV_ODP_SUPPORT_SEND], ['RECV', IBV_ODP_SUPPORT_RECV], ['WRITE', IBV_ODP_SUPPORT_WRITE],
  ['READ', IBV_ODP_SUPPORT_READ], ['ATOMIC', IBV_ODP_SUPPORT_ATOMIC], ['SRQ_RECV', IBV_ODP_SUPPORT_SRQ_RECV],
  ['FLUSH', IBV_ODP_SUPPORT_FLUSH], ['ATOMIC_WRITE', IBV_ODP_SUPPORT_ATOMIC_WRITE],
] as const;
type Op = (typeof ODP_BITS)[number][0];

/** What each transport can carry in this model (UD: sends and receives only; XRC receives are SRQ receives). */
const APPLICABLE: Record<Transport, readonly Op[]> = {
  RC: ['SEND', 'RECV', 'WRITE', 'READ', 'ATOMIC', 'SRQ_RECV', 'FLUSH', 'ATOMIC_WRITE'],
  UD: ['SEND', 'RECV', 'SRQ_RECV'],
  XRC: ['SEND', 'WRITE', 'READ', 'ATOMIC', 'SRQ_RECV', 'FLUSH', 'ATOMIC_WRITE'],
};

interface Outcome {
  /** Faults raised on the ODP buffer. */
  faults: number;
  /** The operation completed successfully end to end. */
  ok: boolean;
  /** Why it did not run, when it was refused before any traffic. */
  refused?: string;
}

function bringUp(n: Node, qp: QueuePair, peer: Node, peerQpn: number): void {
  const at = { ...TEST_ATTR, qpAccessFlags: ALL_ACCESS | FLUSH_ACCESS };
  for (const attr of [{ qpState: IBV_QPS_INIT, qpAccessFlags: at.qpAccessFlags, qkey: 7 }, { ...at, qpState: IBV_QPS_RTR, destQpNum: peerQpn, ahAttr: { dlid: peer.nic.lid } }, { ...at, qpState: IBV_QPS_RTS }] as const) {
    const r = n.nic.modifyQp(qp, attr);
    if (r !== 0) throw new Error(`modifyQp ${r}`);
  }
}

/**
 * Run operation `op` on `transport` between two fresh nodes with `caps`, the ODP side of it
 * on never-mapped ODP memory (every other buffer pinned and mapped), and report what happened.
 */
function exercise(t: import('ava').ExecutionContext, caps: Partial<NicCapabilities>, transport: Transport, op: Op, onDemand = true): Outcome {
  const { sim, a, b } = twoNodes({ caps });
  const remoteOp = op !== 'SEND';
  const odpNode = remoteOp ? b : a;
  const mrAccess = ALL_ACCESS | (hasDeviceCap(b.nic.caps, IB_UVERBS_DEVICE_FLUSH_GLOBAL) ? FLUSH_ACCESS : 0);
  const odpMr = odpNode.nic.createMr({ pd: odpNode.pd, iova: 0x40000, length: 2 * DEVICE_PAGE_SIZE, access: mrAccess, onDemand });
  if (typeof odpMr === 'number') return { faults: 0, ok: false, refused: `createMr ${odpMr}` };
  const odp: Buffer = { mr: odpMr as MemoryRegion, iova: 0x40000, length: 2 * DEVICE_PAGE_SIZE, frames: [odpNode.mem.alloc(), odpNode.mem.alloc()] };
  const src = buffer(a, 0x1000, 1);
  const dst = buffer(b, 0x8000, 1, { access: mrAccess });
  // Queue pairs, and where a SEND lands.
  let qa: QueuePair;
  let srq: SharedReceiveQueue | null = null;
  let qb: QueuePair;
  let srqn = 0;
  if (transport === 'XRC') {
    const xrcd = b.nic.allocXrcd();
    if (typeof xrcd === 'number') return { faults: 0, ok: false, refused: `allocXrcd ${xrcd}` };
    srq = b.nic.createSrq({ pd: b.pd, maxWr: 4, maxSge: 1, srqType: IBV_SRQT_XRC, xrcd: xrcd as XrcDomain, cq: b.cq }) as SharedReceiveQueue;
    srqn = srq.srqNum;
    qa = a.nic.createQp({ qpType: IBV_QPT_XRC_SEND, pd: a.pd, sendCq: a.cq }) as QueuePair;
    qb = b.nic.createQp({ qpType: IBV_QPT_XRC_RECV, pd: 0, xrcd: xrcd as XrcDomain }) as QueuePair;
  } else {
    if (op === 'SRQ_RECV') srq = b.nic.createSrq({ pd: b.pd, maxWr: 4, maxSge: 1 }) as SharedReceiveQueue;
    const type = transport === 'RC' ? IBV_QPT_RC : IBV_QPT_UD;
    qa = a.nic.createQp({ qpType: type, pd: a.pd, sendCq: a.cq, recvCq: a.cq }) as QueuePair;
    qb = b.nic.createQp({ qpType: type, pd: b.pd, sendCq: b.cq, recvCq: b.cq, ...(srq ? { srq } : {}) }) as QueuePair;
  }
  bringUp(a, qa, b, qb.qpNum);
  bringUp(b, qb, a, qa.qpNum);
  const log: DeviceFault[] = [];
  pager(odpNode, [odp], { log });
  const recvBuf = op === 'RECV' || op === 'SRQ_RECV' ? odp : dst;
  const recvLen = transport === 'UD' ? 4096 : 4096;
  const sendFrom = op === 'SEND' ? odp : src;
  const wr: SendWr = (() => {
    const base = { wrId: 1, sendFlags: IBV_SEND_SIGNALED, sgList: [] as SendWr['sgList'] };
    const rdma = { remoteAddr: odp.iova + 64, rkey: odp.mr.rkey };
    switch (op) {
      case 'WRITE': return { ...base, opcode: IBV_WR_RDMA_WRITE, sgList: [{ addr: src.iova, length: 256, lkey: src.mr.lkey }], rdma };
      case 'READ': return { ...base, opcode: IBV_WR_RDMA_READ, sgList: [{ addr: src.iova, length: 256, lkey: src.mr.lkey }], rdma };
      case 'ATOMIC': return { ...base, opcode: IBV_WR_ATOMIC_FETCH_AND_ADD, sgList: [{ addr: src.iova, length: 8, lkey: src.mr.lkey }], atomic: { ...rdma, compareAdd: 1n, swap: 0n } };
      case 'FLUSH': return { ...base, opcode: IBV_WR_FLUSH, rdma, flush: { type: IBV_FLUSH_GLOBAL, level: IBV_FLUSH_RANGE, length: 256 } };
      case 'ATOMIC_WRITE': return { ...base, opcode: IBV_WR_ATOMIC_WRITE, rdma, atomicWrite: new Uint8Array(8).fill(3) };
      default: return { ...base, opcode: IBV_WR_SEND, sgList: [{ addr: sendFrom.iova, length: 100, lkey: sendFrom.mr.lkey }] };
    }
  })();
  if (transport === 'XRC') wr.xrc = { remoteSrqn: srqn };
  if (transport === 'UD') wr.ud = { ah: { dlid: b.nic.lid }, remoteQpn: qb.qpNum, remoteQkey: 7 };
  let posted = 0;
  const done: WorkCompletion[] = [];
  runScript(t, sim, function* () {
    yield* mapBuffer(a, src);
    yield* mapBuffer(b, dst);
    if (op === 'SEND' || op === 'RECV' || op === 'SRQ_RECV') {
      const recv = { wrId: 50, sgList: [{ addr: recvBuf.iova, length: recvLen, lkey: recvBuf.mr.lkey }] };
      if (srq) b.nic.postSrqRecv(srq, recv);
      else b.nic.postRecv(qb, recv);
    }
    if (!onDemand) yield* mapBuffer(odpNode, odp);
    posted = a.nic.postSend(qa, wr);
    if (posted !== 0) return;
    if (transport === 'UD') {
      // UD has no RNR: a receive that faults loses its message (the WQE stays posted). Once
      // the fault is resolved, the application's next message lands.
      yield* sim.sleep(1_000_000);
      a.nic.postSend(qa, { ...wr, wrId: 2 });
      yield* sim.sleep(1_000_000);
    }
    if (transport !== 'UD') yield* a.cq.waitFor(1);
    done.push(...a.cq.drain());
  });
  if (posted !== 0) return { faults: log.length, ok: false, refused: `postSend ${posted}` };
  const sendOk = done.length >= 1 && done[0]!.status === 0;
  const recvOk = op === 'SEND' || op === 'RECV' || op === 'SRQ_RECV' ? b.cq.drain().some((w) => w.wrId === 50 && w.status === 0) : true;
  return { faults: log.length, ok: sendOk && recvOk };
}

for (const [preset, caps] of Object.entries(CAPABILITY_PRESETS)) {
  const full = nicCapabilities(caps);
  test(`capability walk (${preset}), rdma A3: every per-transport ODP bit is exercised; set bits fault and complete, clear bits neither fault nor succeed`, (t) => {
    t.is(full.odp.ucOdpCaps, 0, 'UC is not modelled: no UC bit may be promised');
    for (const transport of ['RC', 'UD', 'XRC'] as const) {
      const mask = transportOdpCaps(full, transport);
      if (transport === 'XRC' && !hasDeviceCap(full, IBV_DEVICE_XRC)) {
        t.is(mask, 0, `${preset}: XRC ODP bits without XRC`);
        continue;
      }
      for (const [name, bit] of ODP_BITS) {
        const where = `${preset} ${transport} ${name}`;
        if (!APPLICABLE[transport].includes(name)) {
          t.is(mask & bit, 0, `${where}: a bit for an operation ${transport} cannot carry`);
          continue;
        }
        const out = exercise(t, caps, transport, name);
        if (isFaultable(full) && mask & bit) {
          t.true(out.faults > 0, `${where}: set, so the cold ODP page must fault (${JSON.stringify(out)})`);
          t.true(out.ok, `${where}: set, so the operation must complete (${JSON.stringify(out)})`);
        } else {
          t.is(out.faults, 0, `${where}: clear, so no fault`);
          t.false(out.ok, `${where}: clear, so the operation cannot succeed on unmapped ODP memory`);
        }
      }
    }
  });

  test(`capability walk (${preset}), rdma A2, A7: the general ODP bits (ODP, IMPLICIT) are exercised`, (t) => {
    const { sim, a } = twoNodes({ caps });
    const explicit = a.nic.createMr({ pd: a.pd, iova: 0x1000, length: 4096, access: ALL_ACCESS, onDemand: true });
    const implicit = a.nic.createMr({ pd: a.pd, iova: 0, length: 0, access: ALL_ACCESS, onDemand: true, implicit: true });
    if (!(full.odp.generalCaps & IBV_ODP_SUPPORT)) {
      t.is(explicit, -95, `${preset}: no ODP, so ON_DEMAND is -EOPNOTSUPP`);
      t.is(full.odp.generalCaps & IBV_ODP_SUPPORT_IMPLICIT, 0, 'IMPLICIT without ODP');
      t.is(full.odp.rcOdpCaps | full.odp.udOdpCaps | full.odp.xrcOdpCaps, 0, 'transport bits without ODP');
      return;
    }
    t.true(explicit instanceof MemoryRegion);
    if (!(full.odp.generalCaps & IBV_ODP_SUPPORT_IMPLICIT)) {
      t.is(implicit, -22, `${preset}: no implicit ODP, so an implicit MR is -EINVAL`);
      return;
    }
    t.true(implicit instanceof MemoryRegion);
    // An RDMA WRITE through the implicit MR at a high address faults there and completes.
    const b = twoNodes({ caps }).b;
    t.truthy(b);
    const mr = implicit as MemoryRegion;
    const log: DeviceFault[] = [];
    a.nic.fault$.subscribe((f) => {
      log.push(f);
      sim.spawn('pf', function* () {
        yield* a.nic.updateEntries(mr, mr.pageIndexOf(f.iova), [a.mem.alloc()], true);
        a.nic.resumeFault(f.id);
      });
    });
    const qp = a.nic.createQp({ qpType: IBV_QPT_RC, pd: a.pd, sendCq: a.cq, recvCq: a.cq }) as QueuePair;
    bringUp(a, qp, a, qp.qpNum);
    const src = buffer(a, 0x2000, 1);
    runScript(t, sim, function* () {
      yield* mapBuffer(a, src);
      t.is(a.nic.postSend(qp, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: src.iova, length: 64, lkey: src.mr.lkey }],
        rdma: { remoteAddr: 2 ** 40 + 8192, rkey: mr.rkey } }), 0);
      yield* a.cq.waitFor(1);
    });
    t.is(a.cq.drain()[0]!.status, 0);
    t.is(log.length, 1);
  });

  test(`capability walk (${preset}), ibv_query_device_ex(3): every device_cap_flags_ex bit is exercised, and no unknown bit is set`, (t) => {
    let known = 0n;
    for (const { bit } of DEVICE_CAP_BITS) known |= bit;
    t.is(full.deviceCapFlags & ~known, 0n, `${preset}: a device bit the model cannot exercise`);
    for (const { name, bit } of DEVICE_CAP_BITS) {
      const set = hasDeviceCap(full, bit);
      const where = `${preset} ${name} (${set ? 'set' : 'clear'})`;
      const { sim, a, b } = twoNodes({ caps });
      if (bit === IBV_DEVICE_SRQ_RESIZE) {
        const srq = a.nic.createSrq({ pd: a.pd, maxWr: 2, maxSge: 1 }) as SharedReceiveQueue;
        t.is(a.nic.modifySrq(srq, { maxWr: 8 }, IBV_SRQ_MAX_WR), set ? 0 : -22, where);
        t.is(srq.maxWr, set ? 8 : 2, where);
      } else if (bit === IBV_DEVICE_XRC) {
        // XRC over pinned, mapped memory: a WRITE through an XRC initiator and target.
        const out = exercise(t, caps, 'XRC', 'WRITE', false);
        t.is(out.ok, set, `${where}: ${JSON.stringify(out)}`);
        if (!set) t.is(out.refused, 'allocXrcd -95', where);
      } else {
        const flush = bit === IB_UVERBS_DEVICE_FLUSH_GLOBAL || bit === IB_UVERBS_DEVICE_FLUSH_PERSISTENT;
        const type = bit === IB_UVERBS_DEVICE_FLUSH_PERSISTENT ? IBV_FLUSH_PERSISTENT : IBV_FLUSH_GLOBAL;
        const access = ALL_ACCESS | (bit === IB_UVERBS_DEVICE_FLUSH_GLOBAL ? IBV_ACCESS_FLUSH_GLOBAL : bit === IB_UVERBS_DEVICE_FLUSH_PERSISTENT ? IBV_ACCESS_FLUSH_PERSISTENT : 0);
        const mr = b.nic.createMr({ pd: b.pd, iova: 0x8000, length: 4096, access });
        if (flush && !set) {
          t.is(mr, -95, `${where}: FLUSH access is -EOPNOTSUPP (rdma A1 step 4)`);
        }
        const dst = buffer(b, 0x10000, 1, { access: flush && !set ? ALL_ACCESS : access });
        const qa = a.nic.createQp({ qpType: IBV_QPT_RC, pd: a.pd, sendCq: a.cq, recvCq: a.cq }) as QueuePair;
        const qb = b.nic.createQp({ qpType: IBV_QPT_RC, pd: b.pd, sendCq: b.cq, recvCq: b.cq }) as QueuePair;
        bringUp(a, qa, b, qb.qpNum);
        bringUp(b, qb, a, qa.qpNum);
        const rdma = { remoteAddr: dst.iova, rkey: dst.mr.rkey };
        const wr: SendWr = flush
          ? { wrId: 1, opcode: IBV_WR_FLUSH, sendFlags: IBV_SEND_SIGNALED, sgList: [], rdma, flush: { type, level: IBV_FLUSH_RANGE, length: 64 } }
          : { wrId: 1, opcode: IBV_WR_ATOMIC_WRITE, sendFlags: IBV_SEND_SIGNALED, sgList: [], rdma, atomicWrite: new Uint8Array(8).fill(9) };
        let r = -1;
        runScript(t, sim, function* () {
          yield* mapBuffer(b, dst);
          r = a.nic.postSend(qa, wr);
          if (r === 0) yield* a.cq.waitFor(1);
        });
        t.is(r, set ? 0 : -22, where);
        if (set) t.is(a.cq.drain()[0]!.status, 0, `${where}: runs`);
        if (bit === IB_UVERBS_DEVICE_ATOMIC_WRITE && set) t.deepEqual([...b.mem.read(dst.frames[0]!, 0, 8)], [9, 9, 9, 9, 9, 9, 9, 9]);
      }
    }
  });
}
