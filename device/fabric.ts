import type { Simulation } from '../kernel-model/sim/index.ts';
import type { Packet } from './packet.ts';

/** Something plugged into the fabric: a NIC port. */
export interface FabricEndpoint {
  readonly name: string;
  /** Called (in a scheduler event, not a task) when a packet arrives. */
  receive(packet: Packet): void;
}

export interface FabricOptions {
  /**
   * One-way latency of a packet between two ports (propagation plus switching).
   * Default 1000 ns, assumed: the order of the end-to-end small-message RDMA latency
   * vendors publish for EDR/HDR InfiniBand (about 1 µs).
   */
  latencyNs: number;
  /**
   * Link bandwidth. Default 12.5 B/ns: 100 Gb/s (EDR InfiniBand 4x, IBTA), encoding
   * overhead ignored.
   */
  bytesPerNs: number;
  /** Bytes of headers per packet (LRH+BTH+RETH+ICRC and so on). Default 64, assumed. */
  headerBytes: number;
  /** Latency of the NIC-internal loopback path (a QP talking to a QP on the same NIC). Default 300 ns, assumed. */
  loopbackLatencyNs: number;
  /**
   * Probability that a packet between two ports is lost (seeded, rng stream
   * `fabric:loss`). Default 0. Loopback never loses. For the "packet loss during faults"
   * pathologies (rdma (d) 3).
   */
  lossRate: number;
}

export const DEFAULT_FABRIC: Readonly<FabricOptions> = Object.freeze({
  latencyNs: 1_000,
  bytesPerNs: 12.5,
  headerBytes: 64,
  loopbackLatencyNs: 300,
  lossRate: 0,
});

interface Port {
  endpoint: FabricEndpoint;
  /** When the egress link is next free (serialization). */
  busyUntil: number;
  loopBusyUntil: number;
}

/**
 * The network joining the NICs: each attached port gets a LID; a packet leaves its port
 * after the packets queued before it (the link serializes at `bytesPerNs`), then takes
 * `latencyNs` to arrive. Delivery between two ports is in order. A packet to its own
 * port takes the loopback path.
 *
 * @example
 *   const fabric = new Fabric(sim, { latencyNs: 2_000 });
 *   const a = new Nic(sim, busA, { name: 'a', fabric });
 *   const b = new Nic(sim, busB, { name: 'b', fabric }); // a.lid = 1, b.lid = 2
 */
export class Fabric {
  readonly options: FabricOptions;
  private readonly ports: Port[] = [];
  packets = 0;
  bytes = 0;
  lost = 0;

  constructor(private readonly sim: Simulation, opts: Partial<FabricOptions> = {}) {
    this.options = { ...DEFAULT_FABRIC, ...opts };
  }

  /** Plug a port in; returns its LID (1, 2, ...). */
  attach(endpoint: FabricEndpoint): number {
    this.ports.push({ endpoint, busyUntil: 0, loopBusyUntil: 0 });
    return this.ports.length;
  }

  /** The endpoint behind a LID, if any. */
  endpoint(lid: number): FabricEndpoint | undefined {
    return this.ports[lid - 1]?.endpoint;
  }

  /**
   * Put a packet on the wire, not before `notBefore` (the sender's pipelined processing);
   * packets of a port are serialized in the order they were handed over. Unknown
   * destinations are silently dropped (as on a real fabric).
   */
  send(packet: Packet, notBefore = this.sim.now()): void {
    const src = this.ports[packet.srcLid - 1];
    const dst = this.ports[packet.dstLid - 1];
    if (!src) throw new Error(`packet from unattached LID ${packet.srcLid}`);
    this.packets++;
    this.bytes += packet.wireBytes;
    const o = this.options;
    const now = Math.max(this.sim.now(), notBefore);
    const serialize = packet.wireBytes / o.bytesPerNs;
    let arrival: number;
    if (packet.srcLid === packet.dstLid) {
      const start = Math.max(now, src.loopBusyUntil);
      src.loopBusyUntil = start + serialize;
      arrival = src.loopBusyUntil + o.loopbackLatencyNs;
    } else {
      const start = Math.max(now, src.busyUntil);
      src.busyUntil = start + serialize;
      arrival = src.busyUntil + o.latencyNs;
      if (o.lossRate > 0 && this.sim.rng('fabric:loss').chance(o.lossRate)) {
        this.lost++;
        return;
      }
    }
    if (!dst) {
      this.lost++;
      return;
    }
    this.sim.scheduler.at(arrival, () => dst.endpoint.receive(packet));
  }
}
