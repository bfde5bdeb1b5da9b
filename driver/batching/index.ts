export { SyncBatcher, type SyncRequest, type BatchPolicy, type BatcherStats } from './sync-batcher.ts';
export { noBatching } from './none.ts';
