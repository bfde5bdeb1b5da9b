/**
 * What a NIC can do, as `ibv_query_device_ex` reports it (rdma A3): whether it can take
 * page faults at all (ODP), which operations may fault per transport, and whether it
 * supports implicit ODP. Configurable per NIC; presets model mlx5-like and rxe-like
 * hardware and a device without ODP.
 */

/** `odp_caps.general_caps` bits. */
export const IBV_ODP_SUPPORT = 1;
export const IBV_ODP_SUPPORT_IMPLICIT = 2;

/** Per-transport `odp_caps` bits (`enum ibv_odp_transport_cap_bits`). */
export const IBV_ODP_SUPPORT_SEND = 1;
export const IBV_ODP_SUPPORT_RECV = 2;
export const IBV_ODP_SUPPORT_WRITE = 4;
export const IBV_ODP_SUPPORT_READ = 8;
export const IBV_ODP_SUPPORT_ATOMIC = 16;
export const IBV_ODP_SUPPORT_SRQ_RECV = 32;
export const IBV_ODP_SUPPORT_FLUSH = 64;
export const IBV_ODP_SUPPORT_ATOMIC_WRITE = 128;

export interface OdpCaps {
  generalCaps: number;
  rcOdpCaps: number;
  ucOdpCaps: number;
  udOdpCaps: number;
  xrcOdpCaps: number;
}

export interface NicCapabilities {
  odp: OdpCaps;
  /**
   * The largest iova range one MR may cover, in bytes. An implicit MR covers [0, maxMrSize);
   * an access past it fails like an out-of-bounds access (rdma B4: beyond the last 1 GiB
   * slot is EFAULT). Default 2^47 (one x86-64 user address space, mlx5's implicit parent).
   */
  maxMrSize: number;
  /** max_qp_rd_atom: the cap on a QP's outstanding RDMA READ and atomic requests. */
  maxQpRdAtom: number;
  maxQpWr: number;
  maxSge: number;
  maxCqe: number;
}

const ALL_RC = IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_RECV | IBV_ODP_SUPPORT_WRITE | IBV_ODP_SUPPORT_READ
  | IBV_ODP_SUPPORT_ATOMIC | IBV_ODP_SUPPORT_SRQ_RECV;

/**
 * An mlx5 with every firmware ODP bit `internal_fill_odp_caps` looks at: RC send, receive,
 * write, read, atomic, SRQ receive; UD send and SRQ receive only (mlx5 has no UD receive
 * bit); implicit ODP. Source: linux `drivers/infiniband/hw/mlx5/odp.c`
 * (`mlx5_ib_internal_fill_odp_caps`).
 */
export const MLX5_ODP_CAPS: Readonly<OdpCaps> = Object.freeze({
  generalCaps: IBV_ODP_SUPPORT | IBV_ODP_SUPPORT_IMPLICIT,
  rcOdpCaps: ALL_RC,
  ucOdpCaps: 0,
  udOdpCaps: IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_SRQ_RECV,
  xrcOdpCaps: ALL_RC,
});

/**
 * rxe as `rxe_init_device_param` reports it (rdma A3): UD send/recv/srq_recv; RC
 * send/recv/write/read/atomic/srq_recv/flush/atomic_write. Implicit ODP is left out: the
 * rxe revision that has it may be an unmerged patch (rdma open question 4).
 */
export const RXE_ODP_CAPS: Readonly<OdpCaps> = Object.freeze({
  generalCaps: IBV_ODP_SUPPORT,
  rcOdpCaps: ALL_RC | IBV_ODP_SUPPORT_FLUSH | IBV_ODP_SUPPORT_ATOMIC_WRITE,
  ucOdpCaps: 0,
  udOdpCaps: IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_RECV | IBV_ODP_SUPPORT_SRQ_RECV,
  xrcOdpCaps: 0,
});

/** Hardware that cannot fault: every ODP mask zero (rdma A2, H3). */
export const NO_ODP_CAPS: Readonly<OdpCaps> = Object.freeze({
  generalCaps: 0, rcOdpCaps: 0, ucOdpCaps: 0, udOdpCaps: 0, xrcOdpCaps: 0,
});

export const DEFAULT_CAPABILITIES: Readonly<NicCapabilities> = Object.freeze({
  odp: MLX5_ODP_CAPS,
  maxMrSize: 2 ** 47,
  maxQpRdAtom: 16,
  maxQpWr: 32_768,
  maxSge: 30,
  maxCqe: 4_194_303,
});

/**
 * Build a capability record from defaults and overrides.
 *
 * @example
 *   nicCapabilities({ odp: NO_ODP_CAPS }); // a non-faultable NIC
 */
export function nicCapabilities(over: Partial<NicCapabilities> = {}): NicCapabilities {
  return { ...DEFAULT_CAPABILITIES, ...over, odp: { ...(over.odp ?? DEFAULT_CAPABILITIES.odp) } };
}

/** Whether the NIC can take page faults at all (general ODP bit). */
export function isFaultable(caps: NicCapabilities): boolean {
  return (caps.odp.generalCaps & IBV_ODP_SUPPORT) !== 0;
}

export function supportsImplicitOdp(caps: NicCapabilities): boolean {
  return isFaultable(caps) && (caps.odp.generalCaps & IBV_ODP_SUPPORT_IMPLICIT) !== 0;
}

/** The per-transport mask for a QP type ('RC' or 'UD'). */
export function transportOdpCaps(caps: NicCapabilities, transport: 'RC' | 'UD'): number {
  return transport === 'RC' ? caps.odp.rcOdpCaps : caps.odp.udOdpCaps;
}
