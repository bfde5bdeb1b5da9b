/**
 * Broken ODP driver: the fault path decides whether its snapshot is still good with
 * mmu_interval_check_retry, outside the umem mutex, then installs under the mutex without
 * asking mmu_interval_read_retry.
 *
 * Real-world bug: rule 29 (include/linux/mmu_notifier.h: "mmu_interval_check_retry() can
 * be used as part of a lockless ... it is only a hint"): a false from check_retry says
 * nothing, since an invalidation may begin right after it; only read_retry under the lock
 * the invalidate callback takes around set_seq closes the race (rules 26-28, hazard H2).
 * Several out-of-tree drivers' first drafts took the lockless helper for the real test.
 *
 * Caught by: notifier-contract (entries installed on check_retry's word), with
 * stale-translation or use-after-invalidate when an invalidation really slipped in.
 *
 * The change: the reference's `commit` step (of `UmemOdp.map`) with check_retry before
 * the lock instead of read_retry under it.
 */
import { mmuIntervalCheckRetry, type Co } from '../../kernel-model/index.ts';
import { UmemOdp, type OdpMapAttempt } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class CheckRetryInstallUmemOdp extends UmemOdp {
  protected override *commit(a: OdpMapAttempt): Co<number | null> {
    // BUG: a lockless hint taken as the answer (rule 29).
    if (mmuIntervalCheckRetry(this.notifier, a.seq)) return null;
    yield* this.mutex.lock();
    try {
      return yield* this.program(a.range, a.mode);
    } finally {
      this.mutex.unlock();
    }
  }
}

export function checkRetryInstallStrategy(): OdpStrategy {
  return odpStrategy({ name: 'check-retry-install' }, CheckRetryInstallUmemOdp);
}
