// The public face of the driver: the code a driver author writes or replaces.
export {
  Dmirror, type MirrorEntry, type DmirrorCmd,
  HMM_DMIRROR_PROT_ERROR, HMM_DMIRROR_PROT_NONE, HMM_DMIRROR_PROT_READ, HMM_DMIRROR_PROT_WRITE, HMM_DMIRROR_PROT_PMD,
  HMM_DMIRROR_PROT_PUD, HMM_DMIRROR_PROT_ZERO, HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL, HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE,
  HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL, HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE,
} from './dmirror.ts';
export { DmirrorDevice, DEVMEM_CHUNK_PAGES, type DmirrorDeviceUser } from './dmirror-device.ts';
export { IbDevice, SIZE_MAX, type IbDeviceOptions, type MrBindingEvent } from './ib-device.ts';
export { IbUcontext, type MrEvent } from './ib-ucontext.ts';
export { newUmemCounters, type IbUmem, type UmemStrategy, type RegMrRequest, type UmemCounters, type DriverEnv } from './umem.ts';
export {
  IbvContext, openDevice, IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE,
  IBV_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT, IBV_ADVISE_MR_FLAG_FLUSH, IBV_FORK_DISABLED, IBV_FORK_ENABLED, IBV_FORK_UNNEEDED,
  type IbvMr, type IbvEvents, type IbvAsyncEvent,
  IBV_REG_MR_MASK_IOVA, IBV_REG_MR_MASK_ADDR, IBV_REG_MR_MASK_FD, IBV_REG_MR_MASK_FD_OFFSET, IBV_REG_MR_MASK_DMAH,
  IBV_XRCD_INIT_ATTR_FD, IBV_XRCD_INIT_ATTR_OFLAGS, O_CREAT, O_EXCL, IBV_QP_INIT_ATTR_PD, IBV_QP_INIT_ATTR_XRCD,
  IBV_QP_INIT_ATTR_SEND_OPS_FLAGS, type IbvDeviceAttrEx, type IbvMrInitAttr, type IbvXrcd, type IbvQpInitAttrEx,
} from './verbs.ts';
export {
  IbvQpEx, supportedSendOps, IBV_QP_EX_WITH_RDMA_WRITE, IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM, IBV_QP_EX_WITH_SEND,
  IBV_QP_EX_WITH_SEND_WITH_IMM, IBV_QP_EX_WITH_RDMA_READ, IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP,
  IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD, IBV_QP_EX_WITH_LOCAL_INV, IBV_QP_EX_WITH_BIND_MW, IBV_QP_EX_WITH_SEND_WITH_INV,
  IBV_QP_EX_WITH_TSO, IBV_QP_EX_WITH_FLUSH, IBV_QP_EX_WITH_ATOMIC_WRITE,
} from './verbs-qp-ex.ts';
export { createRdmaNode, type RdmaNode } from './rdma-node.ts';
export { pinnedStrategy, umemGupFlags, IB_UMEM_GUP, type PinnedUmem, type UmemGup } from './umem-pinned.ts';
export { regDmabufUmem, IBV_ACCESS_RELAXED_ORDERING, IBV_DMABUF_ACCESS_MASK, type DmabufUmem, type DmabufImporter } from './umem-dmabuf.ts';
export {
  holdoffStrategy, HoldoffUmem, newHoldoffStats, zapRuns, DEFAULT_REMAP_SYSCALL_NS, type HoldoffStrategy, type HoldoffOptions, type HoldoffStats,
  type HoldoffUmemClass, type HoldoffUmemOptions,
} from './umem-holdoff.ts';
export { odpStrategy, type OdpStrategy } from './odp-strategy.ts';
export {
  IbUmemOdp, UmemOdp, UsageCount, odpZapRuns, MLX5_UMR_MTT_NUM_ENTRIES_ALIGNMENT,
  odpRangeFlags, type OdpOwner, type OdpMapMode, type OdpMapAttempt, type OdpSpan, type UmemOdpFactory,
  type UmemOdpClass,
} from './umem-odp.ts';
export { ImplicitOdpUmem, IMPLICIT_CHILD_SIZE, IMPLICIT_SLOTS } from './implicit-odp.ts';
export * from './batching/index.ts';
export {
  defineStrategy, defineBatchPolicy, isStrategyDefinition, isBatchPolicyDefinition,
  type StrategyDefinition, type BatchPolicyDefinition, type StrategyEnv, type StrategyRole, type ParamsSchema,
} from './define.ts';
export {
  RegistrationCache, RcacheRegion, rcachePolicy, RCACHE_SOURCES,
  type RcachePolicy, type RcacheRegionInfo, type RcacheStats, type RcacheOptions, type RcacheSource,
} from './rcache.ts';
export { type RcacheStreamEvent } from './rcache-event.ts';
export { defineCachePolicy, isCachePolicyDefinition, type CachePolicyDefinition } from './rcache-define.ts';
