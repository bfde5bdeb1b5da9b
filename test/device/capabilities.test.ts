/**
 * Capabilities (rdma A2, A3): ODP or not, per-transport masks, implicit ODP, per NIC.
 */
import test from 'ava';
import {
  IBV_ODP_SUPPORT, IBV_ODP_SUPPORT_IMPLICIT, IBV_ODP_SUPPORT_RECV, IBV_ODP_SUPPORT_SEND, IBV_ODP_SUPPORT_SRQ_RECV,
  IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_UD, IBV_SEND_SIGNALED, IBV_WR_SEND, MLX5_ODP_CAPS, NO_ODP_CAPS,
  RXE_ODP_CAPS, isFaultable, nicCapabilities, supportsImplicitOdp, transportOdpCaps, type DeviceFault,
  type OdpCaps, type QueuePair,
} from '../../device/index.ts';
import { buffer, mapBuffer, pager, runScript, twoNodes, type Node } from './helpers.ts';

test('rdma A3: capability presets report the general and per-transport ODP bits', (t) => {
  const mlx5 = nicCapabilities();
  t.true(isFaultable(mlx5));
  t.true(supportsImplicitOdp(mlx5));
  t.is(transportOdpCaps(mlx5, 'UD'), IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_SRQ_RECV, 'mlx5 has no UD receive bit');
  const rxe = nicCapabilities({ odp: RXE_ODP_CAPS });
  t.true(isFaultable(rxe));
  t.false(supportsImplicitOdp(rxe));
  t.true((transportOdpCaps(rxe, 'UD') & IBV_ODP_SUPPORT_RECV) !== 0);
  const none = nicCapabilities({ odp: NO_ODP_CAPS });
  t.false(isFaultable(none));
  t.is(MLX5_ODP_CAPS.generalCaps, IBV_ODP_SUPPORT | IBV_ODP_SUPPORT_IMPLICIT);
  // Overrides are per NIC and copied.
  const custom: OdpCaps = { ...MLX5_ODP_CAPS, rcOdpCaps: 0 };
  const c = nicCapabilities({ odp: custom, maxMrSize: 2 ** 40 });
  custom.rcOdpCaps = 255;
  t.is(c.odp.rcOdpCaps, 0);
  t.is(c.maxMrSize, 2 ** 40);
});

function udPair(a: Node, b: Node): [QueuePair, QueuePair] {
  const mk = (n: Node) => {
    const qp = n.nic.createQp({ qpType: IBV_QPT_UD, pd: n.pd, sendCq: n.cq, recvCq: n.cq }) as QueuePair;
    n.nic.modifyQp(qp, { qpState: IBV_QPS_INIT, qkey: 7 });
    n.nic.modifyQp(qp, { qpState: IBV_QPS_RTR });
    n.nic.modifyQp(qp, { qpState: IBV_QPS_RTS });
    return qp;
  };
  return [mk(a), mk(b)];
}

for (const [name, odp, faults] of [['rxe-like', RXE_ODP_CAPS, 1], ['mlx5-like', MLX5_ODP_CAPS, 0]] as const) {
  test(`rdma A3: a UD receive into a cold ODP buffer faults only where UD has the RECV bit (${name})`, (t) => {
    const { sim, a, b } = twoNodes({ caps: { odp } });
    const [ua, ub] = udPair(a, b);
    const src = buffer(a, 0x1000, 1);
    const dst = buffer(b, 0x8000, 1, { onDemand: true });
    const log: DeviceFault[] = [];
    pager(b, [dst], { log });
    runScript(t, sim, function* () {
      yield* mapBuffer(a, src);
      b.nic.postRecv(ub, { wrId: 1, sgList: [{ addr: dst.iova, length: 4096, lkey: dst.mr.lkey }] });
      a.nic.postSend(ua, { wrId: 2, opcode: IBV_WR_SEND, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: src.iova, length: 100, lkey: src.mr.lkey }],
        ud: { ah: { dlid: b.nic.lid }, remoteQpn: ub.qpNum, remoteQkey: 7 } });
      yield* sim.sleep(200_000);
    });
    t.is(log.length, faults);
    if (faults) {
      // rxe resolves the miss inline (rxe_odp_mr_copy): the message lands, nothing is dropped.
      t.is(ub.stats.dropped, 0);
      t.deepEqual(b.cq.poll(1).map((w) => w.status), [0], 'IBV_WC_SUCCESS');
      t.is(ub.recvQueueDepth, 0);
    } else {
      t.deepEqual(b.cq.poll(1).map((w) => w.status), [4], 'IBV_WC_LOC_PROT_ERR: cannot fault, cannot use the page');
    }
  });
}
