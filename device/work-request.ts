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

/** The opcodes this NIC executes (the *_WITH_IMM variants are not modelled: EINVAL). */
export type WrOpcode =
  | typeof IBV_WR_RDMA_WRITE
  | typeof IBV_WR_SEND
  | typeof IBV_WR_RDMA_READ
  | typeof IBV_WR_ATOMIC_CMP_AND_SWP
  | typeof IBV_WR_ATOMIC_FETCH_AND_ADD;

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
    default: return `IBV_WR_${op}`;
  }
}

export function isAtomic(op: number): boolean {
  return op === IBV_WR_ATOMIC_CMP_AND_SWP || op === IBV_WR_ATOMIC_FETCH_AND_ADD;
}

/** READ and atomics: the requests that count against max_rd_atomic and that IBV_SEND_FENCE waits for. */
export function isReadOrAtomic(op: number): boolean {
  return op === IBV_WR_RDMA_READ || isAtomic(op);
}
