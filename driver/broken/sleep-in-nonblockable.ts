/**
 * BROKEN ON PURPOSE: an ODP driver whose invalidate sleeps in a non-blockable range.
 *
 * mlx5_ib_invalidate_range begins with
 *
 *     if (!mmu_notifier_range_blockable(range))
 *         return false;
 *
 * because everything after it sleeps: mutex_lock on the umem mutex, the UMR that zaps the
 * device entries, and the wait for the sync that fences them (rdma C2, C3, C5). The only
 * caller of a non-blockable invalidation is the OOM reaper (kernel rules 15-17, hazard H5):
 * it runs when memory is exhausted, and a task holding the driver's lock may itself be
 * blocked on memory, so a reaper that waits for that lock may wait for ever. Answering
 * false makes the reaper skip the VMA (-EAGAIN) and try again later: legal and cheap.
 *
 * This strategy is the reference ODP strategy (driver/umem-odp.ts) with that first line
 * lost (its `mayBlock` step answers yes): its invalidate takes the umem mutex with a blocking `mutex_lock` whatever the range
 * says, then zaps and waits for the sync as for any other range. Most of the time nothing
 * visibly goes wrong (the mutex is free, the reaper gets its memory back at the first
 * attempt); the bug is the possibility, which is what the kernel's debug check
 * (`non_block_start`, might_sleep) reports on every such call, contended or not.
 *
 * Checker expected to catch it: `sleep-in-atomic` (error): `mutex_lock` of the umem mutex,
 * and the device waits after it, called inside the OOM reaper's non-blockable invalidation.
 */
import type { MmuNotifierRange } from '../../kernel-model/index.ts';
import type { BatchPolicy } from '../batching/index.ts';
import { UmemOdp } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

/** The reference `UmemOdp` whose `mayBlock` step always says yes. */
export class SleepingUmemOdp extends UmemOdp {
  protected override mayBlock(_range: MmuNotifierRange): boolean {
    // BUG: should be `mmuNotifierRangeBlockable(range)` (rdma C2). In the OOM reaper's range
    // the mutex_lock that follows might sleep (and the zap's sync waits).
    return true;
  }
}

/**
 * The broken ODP strategy (see the file comment): register it as the device's `odp`
 * strategy on a faultable NIC. Explicit MRs get the broken invalidate; implicit ODP
 * children keep the reference one.
 *
 * @example
 *   const node = ctx.node('host', { caps: { odp: MLX5_ODP_CAPS }, device: { nonOdp: pinnedStrategy(), odp: sleepInNonblockableStrategy() } });
 */
export function sleepInNonblockableStrategy(opts: { batching?: BatchPolicy; batchingName?: string } = {}): OdpStrategy {
  return odpStrategy({ name: 'sleep-in-nonblockable', ...opts }, SleepingUmemOdp);
}
