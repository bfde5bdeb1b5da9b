/**
 * The two RC transport timers, in the encodings of the InfiniBand specification as
 * documented by `ibv_modify_qp(3)`.
 *
 * @example
 *   rnrTimerNs(12);        // 640_000 (0.64 ms)
 *   localAckTimeoutNs(14); // 67_108_864 (4.096 µs * 2^14)
 */

/**
 * Table 45 of the IB specification, "Encoding for RNR NAK Timer Field", in ns. The
 * responder puts its `min_rnr_timer` code in the RNR NAK; the requester waits at least
 * that long before retrying. Code 0 is the longest delay (655.36 ms), not zero.
 * Source: `ibv_modify_qp(3)` (min_rnr_timer); IBTA Vol. 1 Table 45 (cited by the kernel
 * commit "IB/cma: Introduce rdma_set_min_rnr_timer()").
 */
export const RNR_TIMER_NS: readonly number[] = [
  655_360_000, 10_000, 20_000, 30_000, 40_000, 60_000, 80_000, 120_000,
  160_000, 240_000, 320_000, 480_000, 640_000, 960_000, 1_280_000, 1_920_000,
  2_560_000, 3_840_000, 5_120_000, 7_680_000, 10_240_000, 15_360_000, 20_480_000, 30_720_000,
  40_960_000, 61_440_000, 81_920_000, 122_880_000, 163_840_000, 245_760_000, 327_680_000, 491_520_000,
];

export function rnrTimerNs(code: number): number {
  return RNR_TIMER_NS[code & 31] as number;
}

/**
 * The local ACK timeout: 4.096 µs * 2^timeout; 0 means infinite (the requester never
 * times out). Source: `ibv_modify_qp(3)` (timeout); the kernel's qib driver computes it
 * the same way ("4.096 usec. * (1 << qp->timeout)").
 */
export function localAckTimeoutNs(timeout: number): number {
  if (timeout <= 0) return Infinity;
  return 4096 * 2 ** Math.min(timeout, 31);
}

/** rnr_retry 7 means retry forever (rdma B8); retry_cnt has no such value. */
export const RNR_RETRY_INFINITE = 7;
