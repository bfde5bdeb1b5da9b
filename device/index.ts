/**
 * The NIC model: what the hardware does, and nothing about Linux (DESIGN "Device"). It
 * imports only the engine (`kernel-model/sim`) and the DmaBus type.
 */
export { Nic, type DeviceCommand, type NicOptions, type NicStats, type NicAsyncEvent, type NicAsyncEventType } from './nic.ts';
export { Fabric, DEFAULT_FABRIC, type FabricOptions, type FabricEndpoint } from './fabric.ts';
export type { Packet, PacketKind, NakCode } from './packet.ts';
export {
  IBV_ODP_SUPPORT, IBV_ODP_SUPPORT_IMPLICIT, IBV_ODP_SUPPORT_SEND, IBV_ODP_SUPPORT_RECV, IBV_ODP_SUPPORT_WRITE,
  IBV_ODP_SUPPORT_READ, IBV_ODP_SUPPORT_ATOMIC, IBV_ODP_SUPPORT_SRQ_RECV, IBV_ODP_SUPPORT_FLUSH,
  IBV_ODP_SUPPORT_ATOMIC_WRITE, MLX5_ODP_CAPS, RXE_ODP_CAPS, NO_ODP_CAPS, DEFAULT_CAPABILITIES,
  nicCapabilities, isFaultable, supportsImplicitOdp, transportOdpCaps, type OdpCaps, type NicCapabilities,
  IBV_DEVICE_SRQ_RESIZE, IBV_DEVICE_XRC, IB_UVERBS_DEVICE_FLUSH_GLOBAL, IB_UVERBS_DEVICE_FLUSH_PERSISTENT,
  IB_UVERBS_DEVICE_ATOMIC_WRITE, DEVICE_CAP_BITS, MLX5_DEVICE_CAPS, RXE_DEVICE_CAPS, CAPABILITY_PRESETS,
  hasDeviceCap, type Transport,
} from './capabilities.ts';
export {
  SharedReceiveQueue, IBV_SRQT_BASIC, IBV_SRQT_XRC, IBV_SRQ_MAX_WR, IBV_SRQ_LIMIT, type SrqType, type SrqInitAttr,
} from './shared-receive-queue.ts';
export { XrcDomain } from './xrc-domain.ts';
export { DEFAULT_COSTS, COST_MODEL_SOURCES, costModel, type CostModel } from './cost-model.ts';
export {
  DevicePageTable, DEVICE_PAGE_SHIFT, DEVICE_PAGE_SIZE, DEVICE_HUGE_PAGES, PTE_ABSENT, PTE_READ, PTE_READ_WRITE,
  newTranslation, type PtePerm, type Translation,
} from './device-page-table.ts';
export { TranslationCache, type CachedRegion } from './translation-cache.ts';
export { MemoryRegion, type MrState, type MrCounters, type MemoryRegionInit } from './memory-region.ts';
export { CompletionQueue } from './completion-queue.ts';
export {
  QueuePair, IBV_QPT_RC, IBV_QPT_UD, IBV_QPT_XRC_SEND, IBV_QPT_XRC_RECV, IBV_QPS_RESET, IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPS_SQD,
  IBV_QPS_SQE, IBV_QPS_ERR, qpStateName, qpTransitionAllowed, IBV_MTU_256, IBV_MTU_512, IBV_MTU_1024, IBV_MTU_2048,
  IBV_MTU_4096, mtuBytes,
  type QpType, type QpState, type QpCap, type QpInitAttr, type QpAttr, type SendWqe, type QpStats,
} from './queue-pair.ts';
export {
  IBV_WR_RDMA_WRITE, IBV_WR_RDMA_WRITE_WITH_IMM, IBV_WR_SEND, IBV_WR_SEND_WITH_IMM, IBV_WR_RDMA_READ,
  IBV_WR_ATOMIC_CMP_AND_SWP, IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_WR_FLUSH, IBV_WR_ATOMIC_WRITE, IBV_FLUSH_GLOBAL,
  IBV_FLUSH_PERSISTENT, IBV_FLUSH_RANGE, IBV_FLUSH_MR, IBV_SEND_FENCE, IBV_SEND_SIGNALED,
  IBV_SEND_SOLICITED, IBV_SEND_INLINE, wrOpcodeName, isAtomic, isReadOrAtomic,
  type WrOpcode, type Sge, type SendWr, type RecvWr, type AddressHandle,
} from './work-request.ts';
export * from './work-completion.ts';
export * from './access-flags.ts';
export * from './errno.ts';
export { RNR_TIMER_NS, RNR_RETRY_INFINITE, rnrTimerNs, localAckTimeoutNs } from './transport-timers.ts';
export { type DeviceFault, type FaultResolution, type FaultResume } from './page-fault.ts';
export { type DeviceAccess, type DeviceDmaBus, type DmaStats } from './dma-engine.ts';
export { DmaActivity, type ActiveDma, type DmaRange, type DmaActivityEvent } from './dma-activity.ts';
export { UD_GRH_BYTES } from './responder.ts';
