/**
 * Work requests as rdma-core's `struct ibv_send_wr` / `struct ibv_recv_wr`, in TypeScript
 * casing, with the opcode and flag values of `enum ibv_wr_opcode` / `enum ibv_send_flags`.
 *
 * @example
 *   const wr: SendWr = {
 *     wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
 *     sgList: [{ addr: buf, length: 4096, lkey: mr.lkey }],
 *     rdma: { remoteAddr: peerBuf, rkey: peerMr.rkey },
 *   };
 */

export const IBV_WR_RDMA_WRITE = 0;
export const IBV_WR_RDMA_WRITE_WITH_IMM = 1;
export const IBV_WR_SEND = 2;
export const IBV_WR_SEND_WITH_IMM = 3;
export const IBV_WR_RDMA_READ = 4;
export const IBV_WR_ATOMIC_CMP_AND_SWP = 5;
export const IBV_WR_ATOMIC_FETCH_AND_ADD = 6;
/** RDMA FLUSH (IBA 1.5 memory placement extensions): rdma-core `IBV_WR_FLUSH`. */
export const IBV_WR_FLUSH = 14;
/** RDMA ATOMIC WRITE: an 8-byte write the responder performs atomically (`IBV_WR_ATOMIC_WRITE`). */
export const IBV_WR_ATOMIC_WRITE = 15;

/** `enum ibv_placement_type` (ibv_wr_flush(3)): what a FLUSH makes durable or visible. */
export const IBV_FLUSH_GLOBAL = 1;
export const IBV_FLUSH_PERSISTENT = 2;
/** `enum ibv_selectivity_level`: flush the given range, or the whole MR. */
export const IBV_FLUSH_RANGE = 0;
export const IBV_FLUSH_MR = 1;

/** The opcodes this NIC executes (the *_WITH_IMM variants are not modelled: EINVAL). */
export type WrOpcode =
  | typeof IBV_WR_RDMA_WRITE
  | typeof IBV_WR_SEND
  | typeof IBV_WR_RDMA_READ
  | typeof IBV_WR_ATOMIC_CMP_AND_SWP
  | typeof IBV_WR_ATOMIC_FETCH_AND_ADD
  | typeof IBV_WR_FLUSH
  | typeof IBV_WR_ATOMIC_WRITE;

export const IBV_SEND_FENCE = 1;
export const IBV_SEND_SIGNALED = 2;
export const IBV_SEND_SOLICITED = 4;
export const IBV_SEND_INLINE = 8;

/** A scatter/gather element (`struct ibv_sge`). */
export interface Sge {
  addr: number;
  length: number;
  lkey: number;
}

/** Where a UD send goes: the destination port (an address handle's `dlid`). */
export interface AddressHandle {
  dlid: number;
}

export interface SendWr {
  wrId: number;
  opcode: WrOpcode;
  sgList: readonly Sge[];
  sendFlags?: number;
  /**
   * IBV_SEND_INLINE: the bytes the CPU copied into the WQE at post time. The device then
   * gathers nothing (and can take no fault on the send buffer; rdma B5 skips inline data).
   */
  inlineData?: Uint8Array;
  rdma?: { remoteAddr: number; rkey: number };
  atomic?: { remoteAddr: number; compareAdd: bigint; swap: bigint; rkey: number };
  ud?: { ah: AddressHandle; remoteQpn: number; remoteQkey: number };
  /** XRC send QPs: the XRC SRQ at the target that receives a SEND (`qp_type.xrc.remote_srqn`). */
  xrc?: { remoteSrqn: number };
  /** IBV_WR_FLUSH (ibv_wr_flush(3)): placement type bits and selectivity level; `rdma` names the range. */
  flush?: { type: number; level: number; length: number };
  /** IBV_WR_ATOMIC_WRITE (ibv_wr_atomic_write(3)): the 8 bytes to write at `rdma.remoteAddr`. */
  atomicWrite?: Uint8Array;
}

export interface RecvWr {
  wrId: number;
  sgList: readonly Sge[];
}

export function wrOpcodeName(op: number): string {
  switch (op) {
    case IBV_WR_RDMA_WRITE: return 'IBV_WR_RDMA_WRITE';
    case IBV_WR_RDMA_WRITE_WITH_IMM: return 'IBV_WR_RDMA_WRITE_WITH_IMM';
    case IBV_WR_SEND: return 'IBV_WR_SEND';
    case IBV_WR_SEND_WITH_IMM: return 'IBV_WR_SEND_WITH_IMM';
    case IBV_WR_RDMA_READ: return 'IBV_WR_RDMA_READ';
    case IBV_WR_ATOMIC_CMP_AND_SWP: return 'IBV_WR_ATOMIC_CMP_AND_SWP';
    case IBV_WR_ATOMIC_FETCH_AND_ADD: return 'IBV_WR_ATOMIC_FETCH_AND_ADD';
    case IBV_WR_FLUSH: return 'IBV_WR_FLUSH';
    case IBV_WR_ATOMIC_WRITE: return 'IBV_WR_ATOMIC_WRITE';
    default: return `IBV_WR_${op}`;
  }
}

export function isAtomic(op: number): boolean {
  return op === IBV_WR_ATOMIC_CMP_AND_SWP || op === IBV_WR_ATOMIC_FETCH_AND_ADD;
}

/**
 * READ, atomics and FLUSH: the requests answered with a response (FLUSH with a zero-length
 * READ response, rxe `process_flush`), that count against max_rd_atomic and that
 * IBV_SEND_FENCE waits for. ATOMIC_WRITE is acknowledged like a WRITE (rxe `atomic_write_reply`
 * returns RESPST_ACKNOWLEDGE).
 */
export function isReadOrAtomic(op: number): boolean {
  return op === IBV_WR_RDMA_READ || op === IBV_WR_FLUSH || isAtomic(op);
}
