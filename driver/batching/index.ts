export { SyncBatcher, type SyncRequest, type BatchPolicy, type BatcherStats } from './sync-batcher.ts';
export { noBatching } from './none.ts';
export { batchBuffer, type BatchBufferOptions, type FlushReason } from './batch-buffer.ts';
export { windowBatching } from './window.ts';
export { countBatching } from './count.ts';
export { windowOrCount } from './window-or-count.ts';
export { byEventType } from './by-event-type.ts';
export { adaptiveBatching, type AdaptiveBatchingOptions } from './adaptive.ts';
export { batchPolicyByName, BATCH_POLICY_NAMES, type BatchPolicyParams } from './by-name.ts';
