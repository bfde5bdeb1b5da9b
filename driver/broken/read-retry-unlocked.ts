/**
 * Broken ODP driver: the fault path checks `mmu_interval_read_retry` before taking the
 * umem mutex (the lock `invalidate` holds around `set_seq`).
 *
 * Real-world bug: hazard H2, "read_retry without the lock" (kernel rule 28). The check
 * and the device update must be one critical section against `invalidate`; checked
 * outside it, an invalidation can run between the check and the install, and the device
 * gets a pfn the kernel has just unmapped. `ib_umem_odp_map_dma_and_lock` exists to make
 * that section explicit: it returns with the umem mutex held after the check.
 *
 * Caught by: notifier-contract (the model records read_retry called without the declared
 * lock, at the first fault).
 *
 * The change: the reference's `commit` step (of `UmemOdp.map`) with the read_retry moved
 * before `mutex.lock()`.
 */
import { mmuIntervalReadRetry, type Co } from '../../kernel-model/index.ts';
import { UmemOdp, type OdpMapAttempt } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class ReadRetryUnlockedUmemOdp extends UmemOdp {
  protected override *commit(a: OdpMapAttempt): Co<number | null> {
    // BUG: checked before taking the lock invalidate() holds around set_seq (rule 28).
    if (mmuIntervalReadRetry(this.notifier, a.seq)) return null;
    yield* this.mutex.lock();
    const ret = yield* this.program(a.range, a.mode);
    this.mutex.unlock();
    return ret;
  }
}

export function readRetryUnlockedStrategy(): OdpStrategy {
  return odpStrategy({ name: 'read-retry-unlocked' }, ReadRetryUnlockedUmemOdp);
}
