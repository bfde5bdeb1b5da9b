// The public face of the driver: the code a driver author writes or replaces.
export { Dmirror, type MirrorEntry } from './dmirror.ts';
export { IbDevice, SIZE_MAX, type IbDeviceOptions, type MrBindingEvent } from './ib-device.ts';
export { IbUcontext, type MrEvent } from './ib-ucontext.ts';
export { newUmemCounters, type IbUmem, type UmemStrategy, type RegMrRequest, type UmemCounters, type DriverEnv } from './umem.ts';
export {
  IbvContext, openDevice, IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE,
  IBV_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT, IBV_ADVISE_MR_FLAG_FLUSH, IBV_FORK_DISABLED, IBV_FORK_ENABLED, IBV_FORK_UNNEEDED,
  type IbvMr, type IbvEvents, type IbvAsyncEvent,
} from './verbs.ts';
export { createRdmaNode, type RdmaNode } from './rdma-node.ts';
export { pinnedStrategy, umemGupFlags, IB_UMEM_GUP, type PinnedUmem, type UmemGup } from './umem-pinned.ts';
export { regDmabufUmem, IBV_ACCESS_RELAXED_ORDERING, IBV_DMABUF_ACCESS_MASK, type DmabufUmem, type DmabufImporter } from './umem-dmabuf.ts';
export {
  holdoffStrategy, HoldoffUmem, zapRuns, DEFAULT_REMAP_SYSCALL_NS, type HoldoffStrategy, type HoldoffOptions, type HoldoffStats,
  type HoldoffUmemClass,
} from './umem-holdoff.ts';
export {
  odpStrategy, IbUmemOdp, UmemOdp, UsageCount, odpZapRuns, MLX5_UMR_MTT_NUM_ENTRIES_ALIGNMENT,
  type OdpStrategy, type OdpOwner, type OdpMapMode, type UmemOdpFactory,
} from './umem-odp.ts';
export { ImplicitOdpUmem, IMPLICIT_CHILD_SIZE, IMPLICIT_SLOTS } from './implicit-odp.ts';
export * from './batching/index.ts';
export {
  defineStrategy, defineBatchPolicy, isStrategyDefinition, isBatchPolicyDefinition,
  type StrategyDefinition, type BatchPolicyDefinition, type StrategyEnv, type StrategyRole, type ParamsSchema,
} from './define.ts';
