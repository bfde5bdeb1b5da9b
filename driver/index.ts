// The public face of the driver: the code a driver author writes or replaces.
export { Dmirror, type MirrorEntry } from './dmirror.ts';
export { IbDevice, SIZE_MAX, type IbDeviceOptions } from './ib-device.ts';
export { IbUcontext, type MrEvent } from './ib-ucontext.ts';
export { newUmemCounters, type IbUmem, type UmemStrategy, type RegMrRequest, type UmemCounters, type DriverEnv } from './umem.ts';
export {
  IbvContext, openDevice, IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE,
  IBV_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT, IBV_ADVISE_MR_FLAG_FLUSH, IBV_FORK_DISABLED, IBV_FORK_ENABLED, IBV_FORK_UNNEEDED,
  type IbvMr, type IbvEvents, type IbvAsyncEvent,
} from './verbs.ts';
export { createRdmaNode, type RdmaNode } from './rdma-node.ts';
export * from './batching/index.ts';
