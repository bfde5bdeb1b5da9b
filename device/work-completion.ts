/**
 * Work completions as rdma-core's `struct ibv_wc`, with the values of `enum ibv_wc_status`
 * and `enum ibv_wc_opcode` (rdma-core `libibverbs/verbs.h`, `ibv_poll_cq(3)`).
 *
 * In an error completion only `wrId`, `status`, `qpNum` and `vendorErr` are defined (rdma F3);
 * the device leaves `opcode` undefined and `byteLen` 0 there.
 */

export const IBV_WC_SUCCESS = 0;
export const IBV_WC_LOC_LEN_ERR = 1;
export const IBV_WC_LOC_QP_OP_ERR = 2;
export const IBV_WC_LOC_EEC_OP_ERR = 3;
export const IBV_WC_LOC_PROT_ERR = 4;
export const IBV_WC_WR_FLUSH_ERR = 5;
export const IBV_WC_MW_BIND_ERR = 6;
export const IBV_WC_BAD_RESP_ERR = 7;
export const IBV_WC_LOC_ACCESS_ERR = 8;
export const IBV_WC_REM_INV_REQ_ERR = 9;
export const IBV_WC_REM_ACCESS_ERR = 10;
export const IBV_WC_REM_OP_ERR = 11;
export const IBV_WC_RETRY_EXC_ERR = 12;
export const IBV_WC_RNR_RETRY_EXC_ERR = 13;
export const IBV_WC_LOC_RDD_VIOL_ERR = 14;
export const IBV_WC_REM_INV_RD_REQ_ERR = 15;
export const IBV_WC_REM_ABORT_ERR = 16;
export const IBV_WC_INV_EECN_ERR = 17;
export const IBV_WC_INV_EEC_STATE_ERR = 18;
export const IBV_WC_FATAL_ERR = 19;
export const IBV_WC_RESP_TIMEOUT_ERR = 20;
export const IBV_WC_GENERAL_ERR = 21;

const STATUS_NAMES = [
  'IBV_WC_SUCCESS', 'IBV_WC_LOC_LEN_ERR', 'IBV_WC_LOC_QP_OP_ERR', 'IBV_WC_LOC_EEC_OP_ERR',
  'IBV_WC_LOC_PROT_ERR', 'IBV_WC_WR_FLUSH_ERR', 'IBV_WC_MW_BIND_ERR', 'IBV_WC_BAD_RESP_ERR',
  'IBV_WC_LOC_ACCESS_ERR', 'IBV_WC_REM_INV_REQ_ERR', 'IBV_WC_REM_ACCESS_ERR', 'IBV_WC_REM_OP_ERR',
  'IBV_WC_RETRY_EXC_ERR', 'IBV_WC_RNR_RETRY_EXC_ERR', 'IBV_WC_LOC_RDD_VIOL_ERR',
  'IBV_WC_REM_INV_RD_REQ_ERR', 'IBV_WC_REM_ABORT_ERR', 'IBV_WC_INV_EECN_ERR',
  'IBV_WC_INV_EEC_STATE_ERR', 'IBV_WC_FATAL_ERR', 'IBV_WC_RESP_TIMEOUT_ERR', 'IBV_WC_GENERAL_ERR',
];

/** The enum name of a status ("IBV_WC_REM_ACCESS_ERR"), for reports and test messages. */
export function wcStatusName(status: number): string {
  return STATUS_NAMES[status] ?? `IBV_WC_STATUS_${status}`;
}

export const IBV_WC_SEND = 0;
export const IBV_WC_RDMA_WRITE = 1;
export const IBV_WC_RDMA_READ = 2;
export const IBV_WC_COMP_SWAP = 3;
export const IBV_WC_FETCH_ADD = 4;
export const IBV_WC_BIND_MW = 5;
export const IBV_WC_LOCAL_INV = 6;
export const IBV_WC_TSO = 7;
export const IBV_WC_FLUSH = 8;
export const IBV_WC_ATOMIC_WRITE = 9;
export const IBV_WC_RECV = 1 << 7;
export const IBV_WC_RECV_RDMA_WITH_IMM = IBV_WC_RECV + 1;

/** `enum ibv_wc_flags`. */
export const IBV_WC_GRH = 1;
export const IBV_WC_WITH_IMM = 2;

export interface WorkCompletion {
  wrId: number;
  status: number;
  /** Undefined in error completions (rdma F3). */
  opcode: number | undefined;
  vendorErr: number;
  byteLen: number;
  qpNum: number;
  /** UD receives: the sender's QP number. */
  srcQp: number;
  wcFlags: number;
  /** UD receives: the sender's port. */
  slid: number;
  /** Extension: the virtual time (ns) at which the CQE was written. */
  time: number;
}
