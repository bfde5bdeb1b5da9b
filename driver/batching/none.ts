import { map } from 'rxjs';
import type { BatchPolicy } from './sync-batcher.ts';

/** No batching: every invalidation gets its own sync (what mlx5 does). */
export const noBatching = (): BatchPolicy => (source) => source.pipe(map((r) => [r]));
