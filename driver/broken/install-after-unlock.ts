/**
 * Broken ODP driver: the fault path drops the umem mutex after a clean
 * `mmu_interval_read_retry` and only then programs the device page table.
 *
 * Real-world bug: hazard H2, "device entries installed after the lock is dropped" (kernel
 * rule 28: if read_retry returns false, the SPTEs MUST be installed before the lock is
 * released). Tempting when the device update is slow (a UMR post that sleeps) and the
 * author wants the mutex short; an invalidation that runs in the gap zaps nothing (the
 * entries are not there yet) and returns, and the install that follows maps a page the
 * kernel is freeing. (Hazard table H2 names it next to read_retry without the lock.)
 *
 * Caught by: notifier-contract ("installed device entries after dropping the lock the
 * subscriber declared for read_retry").
 *
 * The change: the reference's `commit` step (of `UmemOdp.map`) with `mutex.unlock()` moved
 * before `program`.
 */
import { mmuIntervalReadRetry, type Co } from '../../kernel-model/index.ts';
import { UmemOdp, type OdpMapAttempt } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class InstallAfterUnlockUmemOdp extends UmemOdp {
  protected override *commit(a: OdpMapAttempt): Co<number | null> {
    yield* this.mutex.lock();
    const collided = mmuIntervalReadRetry(this.notifier, a.seq);
    // BUG: the lock goes before the device is programmed (rule 28).
    this.mutex.unlock();
    return collided ? null : yield* this.program(a.range, a.mode);
  }
}

export function installAfterUnlockStrategy(): OdpStrategy {
  return odpStrategy({ name: 'install-after-unlock' }, InstallAfterUnlockUmemOdp);
}
