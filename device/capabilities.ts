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

/**
 * `device_cap_flags_ex` bits of `ibv_query_device_ex` that this NIC model can honour, with
 * rdma-core's values (`enum ibv_device_cap_flags` and `ib_uverbs_device_cap_flags` in
 * kernel-headers/rdma/ib_user_verbs.h). A bigint: FLUSH and ATOMIC_WRITE live above bit 31.
 */
export const IBV_DEVICE_SRQ_RESIZE = 1n << 13n;
export const IBV_DEVICE_XRC = 1n << 20n;
export const IB_UVERBS_DEVICE_FLUSH_GLOBAL = 1n << 38n;
export const IB_UVERBS_DEVICE_FLUSH_PERSISTENT = 1n << 39n;
export const IB_UVERBS_DEVICE_ATOMIC_WRITE = 1n << 40n;

/** Every device capability bit the model knows (and so can exercise). */
export const DEVICE_CAP_BITS: readonly { name: string; bit: bigint }[] = Object.freeze([
  { name: 'IBV_DEVICE_SRQ_RESIZE', bit: IBV_DEVICE_SRQ_RESIZE },
  { name: 'IBV_DEVICE_XRC', bit: IBV_DEVICE_XRC },
  { name: 'IB_UVERBS_DEVICE_FLUSH_GLOBAL', bit: IB_UVERBS_DEVICE_FLUSH_GLOBAL },
  { name: 'IB_UVERBS_DEVICE_FLUSH_PERSISTENT', bit: IB_UVERBS_DEVICE_FLUSH_PERSISTENT },
  { name: 'IB_UVERBS_DEVICE_ATOMIC_WRITE', bit: IB_UVERBS_DEVICE_ATOMIC_WRITE },
]);

/**
 * mlx5: XRC (`mlx5_ib_dev_xrc_ops`), no SRQ resize (`mlx5_ib_modify_srq`: "We don't support
 * resizing SRQs yet"), no FLUSH or ATOMIC_WRITE (mainline mlx5 sets neither flag).
 */
export const MLX5_DEVICE_CAPS = IBV_DEVICE_XRC;
/**
 * rxe (`RXE_DEVICE_CAP_FLAGS` in drivers/infiniband/sw/rxe/rxe_param.h, 64-bit build): SRQ
 * resize, FLUSH global and persistent, ATOMIC_WRITE; no XRC (rxe has no XRC support).
 */
export const RXE_DEVICE_CAPS = IBV_DEVICE_SRQ_RESIZE | IB_UVERBS_DEVICE_FLUSH_GLOBAL
  | IB_UVERBS_DEVICE_FLUSH_PERSISTENT | IB_UVERBS_DEVICE_ATOMIC_WRITE;

/**
 * How the device makes a zap effective (DESIGN "Costs and calibration"):
 * - `mkey-umr`: each zap is a synchronous UMR on the MR's mkey, as mlx5 does it
 *   (drivers/infiniband/hw/mlx5/odp.c `mlx5_ib_invalidate_range` calls
 *   `mlx5r_umr_update_xlt` with MLX5_IB_UPD_XLT_ZAP for each run, umr.c posts the UMR and
 *   waits for its completion). The UMR itself invalidates the mkey's cached translations;
 *   there is no device-wide fence. While it runs, only traffic through that mkey waits
 *   (assumed: mlx5 documents no wider stall). A `sync` then fences nothing more.
 * - `device-fence`: a zap only clears the page table; a separate device-wide sync empties
 *   the whole translation cache and stalls every DMA (a NIC whose invalidation is
 *   expensive, as seed 2011's; the design sync batching exists for).
 */
export type InvalidationMode = 'mkey-umr' | 'device-fence';

/**
 * How the device resolves an access to an absent or read-only ODP entry:
 * - `event-queue`: hardware reports a page fault on an event queue, the driver maps the
 *   pages and resumes the stalled queue (mlx5, rdma B5 to B8). Responder faults answer an
 *   RC SEND/WRITE with an RNR NAK and drop a READ or atomic.
 * - `inline`: the copy path resolves the miss itself and goes on (rxe: `rxe_odp_mr_copy`,
 *   `rxe_odp_atomic_op` and `rxe_odp_do_atomic_write` call `rxe_odp_map_range_and_lock`,
 *   which faults the range with hmm_range_fault in the requester's or responder's own
 *   context, drivers/infiniband/sw/rxe/rxe_odp.c). No RNR NAK and no dropped packet.
 */
export type OdpMissHandling = 'event-queue' | 'inline';

export interface NicCapabilities {
  odp: OdpCaps;
  /** How zaps are made effective. Default `device-fence` (see InvalidationMode); the mlx5 and rxe presets are `mkey-umr`. */
  invalidation: InvalidationMode;
  /** How ODP misses are resolved. Default `event-queue`; the rxe preset is `inline`. */
  odpMissHandling: OdpMissHandling;
  /**
   * `device_cap_flags_ex`. Default: rxe's flags when `odp` is the rxe preset (by value),
   * mlx5's otherwise, so `{ odp: RXE_ODP_CAPS }` alone describes an rxe-like device.
   */
  deviceCapFlags: bigint;
  /** Path MTU in bytes (256..4096; IB `enum ibv_mtu`). A message longer than it travels as several packets. */
  mtu: number;
  maxSrq: number;
  maxSrqWr: number;
  maxSrqSge: number;
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
 * bit); XRC as RC; implicit ODP. Source: linux `drivers/infiniband/hw/mlx5/odp.c`
 * (`mlx5_ib_internal_fill_odp_caps`). One deliberate difference: the firmware's XRC
 * `receive` bit is left out. An XRC target QP has no receive queue; every XRC receive is an
 * SRQ receive (SRQ_RECV), so a RECV bit on XRC would promise something no operation uses
 * (issue 18: capabilities never promise what the device does not do).
 */
export const MLX5_ODP_CAPS: Readonly<OdpCaps> = Object.freeze({
  generalCaps: IBV_ODP_SUPPORT | IBV_ODP_SUPPORT_IMPLICIT,
  rcOdpCaps: ALL_RC,
  ucOdpCaps: 0,
  udOdpCaps: IBV_ODP_SUPPORT_SEND | IBV_ODP_SUPPORT_SRQ_RECV,
  xrcOdpCaps: ALL_RC & ~IBV_ODP_SUPPORT_RECV,
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
  invalidation: 'device-fence' as InvalidationMode,
  odpMissHandling: 'event-queue' as OdpMissHandling,
  deviceCapFlags: MLX5_DEVICE_CAPS,
  mtu: 4096,
  maxSrq: 8_388_608,
  maxSrqWr: 32_767,
  maxSrqSge: 31,
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
  const odp = { ...(over.odp ?? DEFAULT_CAPABILITIES.odp) };
  const rxe = sameOdpCaps(odp, RXE_ODP_CAPS);
  const deviceCapFlags = over.deviceCapFlags ?? (rxe ? RXE_DEVICE_CAPS : MLX5_DEVICE_CAPS);
  // `{ odp: RXE_ODP_CAPS }` alone describes rxe: its misses are resolved inline, its invalidation is per MR.
  const odpMissHandling = over.odpMissHandling ?? (rxe ? 'inline' : DEFAULT_CAPABILITIES.odpMissHandling);
  const invalidation = over.invalidation ?? (rxe ? 'mkey-umr' : DEFAULT_CAPABILITIES.invalidation);
  return { ...DEFAULT_CAPABILITIES, ...over, odp, deviceCapFlags, odpMissHandling, invalidation };
}

function sameOdpCaps(a: OdpCaps, b: OdpCaps): boolean {
  return a.generalCaps === b.generalCaps && a.rcOdpCaps === b.rcOdpCaps && a.ucOdpCaps === b.ucOdpCaps
    && a.udOdpCaps === b.udOdpCaps && a.xrcOdpCaps === b.xrcOdpCaps;
}

/** Whether the device has a `device_cap_flags_ex` bit. */
export function hasDeviceCap(caps: NicCapabilities, bit: bigint): boolean {
  return (caps.deviceCapFlags & bit) !== 0n;
}

/**
 * Named presets, a whole device each: what `ibv_query_device_ex` reports for an mlx5 with
 * every ODP bit, for rxe, and for hardware that cannot fault (an mlx5 without ODP), with
 * how each makes invalidations effective and resolves ODP misses. mlx5 zaps with a
 * synchronous UMR per mkey (mlx5_ib_invalidate_range -> mlx5r_umr_update_xlt) and reports
 * faults on an event queue; rxe resolves misses inline (rxe_odp.c) and has no translation
 * cache to fence, so its invalidation (`rxe_ib_invalidate_range` under the umem mutex its
 * copy path holds) is per MR too. `fence` is the device-wide-fence device the batching
 * studies model (the default).
 */
export const CAPABILITY_PRESETS: Readonly<Record<'mlx5' | 'rxe' | 'no-odp' | 'fence', Readonly<Partial<NicCapabilities>>>> = Object.freeze({
  mlx5: Object.freeze({ odp: MLX5_ODP_CAPS, deviceCapFlags: MLX5_DEVICE_CAPS, invalidation: 'mkey-umr', odpMissHandling: 'event-queue' }),
  rxe: Object.freeze({ odp: RXE_ODP_CAPS, deviceCapFlags: RXE_DEVICE_CAPS, invalidation: 'mkey-umr', odpMissHandling: 'inline' }),
  'no-odp': Object.freeze({ odp: NO_ODP_CAPS, deviceCapFlags: MLX5_DEVICE_CAPS, invalidation: 'mkey-umr' }),
  fence: Object.freeze({ odp: MLX5_ODP_CAPS, deviceCapFlags: MLX5_DEVICE_CAPS, invalidation: 'device-fence', odpMissHandling: 'event-queue' }),
});

/** Whether the NIC can take page faults at all (general ODP bit). */
export function isFaultable(caps: NicCapabilities): boolean {
  return (caps.odp.generalCaps & IBV_ODP_SUPPORT) !== 0;
}

export function supportsImplicitOdp(caps: NicCapabilities): boolean {
  return isFaultable(caps) && (caps.odp.generalCaps & IBV_ODP_SUPPORT_IMPLICIT) !== 0;
}

/** The transports whose ODP masks `ibv_query_device_ex` reports (XRC in its own field). */
export type Transport = 'RC' | 'UD' | 'XRC';

/** The per-transport mask for a QP's transport. */
export function transportOdpCaps(caps: NicCapabilities, transport: Transport): number {
  switch (transport) {
    case 'RC': return caps.odp.rcOdpCaps;
    case 'UD': return caps.odp.udOdpCaps;
    default: return caps.odp.xrcOdpCaps;
  }
}
