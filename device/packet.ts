/**
 * What travels on the fabric. A message longer than the QP's path MTU travels as several
 * packets (SEND and RDMA WRITE requests, RDMA READ responses), each carrying its segment
 * index and byte offset in the message; every other message is one packet. PSNs count
 * messages, so a packet is named by (psn, seg) where IB would give each packet its own PSN.
 */
export type PacketKind = 'request' | 'ack' | 'nak' | 'read-response' | 'atomic-response';

/** NAK codes of the RC transport (IB AETH syndromes). */
export type NakCode = 'rnr' | 'invalid-request' | 'remote-access' | 'remote-operational';

export interface Packet {
  kind: PacketKind;
  srcLid: number;
  dstLid: number;
  srcQpn: number;
  dstQpn: number;
  /** The request's sequence number (one per message); responses carry the request's. */
  psn: number;
  /** The work request opcode (requests). */
  opcode: number;
  /** Bytes on the wire, headers included. */
  wireBytes: number;
  payload?: Uint8Array;
  remoteAddr?: number;
  rkey?: number;
  /** Requested length (RDMA READ). */
  length?: number;
  compareAdd?: bigint;
  swap?: bigint;
  /** Atomic response: the value found at the remote address. */
  original?: bigint;
  nak?: NakCode;
  /** RNR NAK: the responder's min_rnr_timer code. */
  rnrTimer?: number;
  /** UD: the Q_Key the sender used. */
  qkey?: number;
  /** XRC: the target's XRC SRQ number (XRCETH). */
  xrcSrqn?: number;
  /** Segment of a multi-packet message (0 for a single packet); a READ request: the first response segment wanted. */
  seg: number;
  /** Whether this is the message's last (or only) packet. */
  last: boolean;
  /** Byte offset of this packet's payload in the message (seg * path MTU). */
  offset: number;
  /** FLUSH (FETH): placement type bits and selectivity level. */
  flushType?: number;
  flushLevel?: number;
}

/**
 * A packet with every field present (absent ones undefined), so all packets share one
 * object shape and the hot paths that read them stay monomorphic.
 */
export function makePacket(kind: PacketKind, srcLid: number, dstLid: number, srcQpn: number, dstQpn: number, psn: number, opcode: number, wireBytes: number): Packet {
  return {
    kind, srcLid, dstLid, srcQpn, dstQpn, psn, opcode, wireBytes, seg: 0, last: true, offset: 0,
    payload: undefined, remoteAddr: undefined, rkey: undefined, length: undefined, compareAdd: undefined,
    swap: undefined, original: undefined, nak: undefined, rnrTimer: undefined, qkey: undefined,
    xrcSrqn: undefined, flushType: undefined, flushLevel: undefined,
  };
}
