/**
 * Broken ODP driver: the fault path drops its mm reference while it still holds the umem
 * mutex.
 *
 * Real-world bug: CVE-2022-48675, "IB/core: Fix a nested dead lock as part of ODP flow"
 * (rdma C10). If the process exits while a NIC fault is being served, the fault worker
 * holds the last mm reference; its `mmput` runs `exit_mmap`, whose UNMAP invalidation
 * calls this MR's `invalidate`, which takes the umem mutex the worker already holds: the
 * fault worker deadlocks on itself. The fix made that mmput asynchronous; the reference
 * simply drops the reference after the mutex.
 *
 * Caught by: deadlock (a cycle of one task waiting for a mutex it owns).
 *
 * The change: the reference's `commit` step (of `UmemOdp.map`) drops the mm reference
 * (`putMm`) before it unlocks, on success.
 */
import { mmuIntervalReadRetry, type Co } from '../../kernel-model/index.ts';
import { UmemOdp, type OdpMapAttempt } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class MmputUnderMutexUmemOdp extends UmemOdp {
  protected override *commit(a: OdpMapAttempt): Co<number | null> {
    yield* this.mutex.lock();
    try {
      if (mmuIntervalReadRetry(this.notifier, a.seq)) return null;
      const ret = yield* this.program(a.range, a.mode);
      // BUG: the last mm reference may go here, under the umem mutex (rdma C10).
      yield* this.putMm(a);
      return ret;
    } finally {
      this.mutex.unlock();
    }
  }
}

export function mmputUnderMutexStrategy(): OdpStrategy {
  return odpStrategy({ name: 'mmput-under-mutex' }, MmputUnderMutexUmemOdp);
}
