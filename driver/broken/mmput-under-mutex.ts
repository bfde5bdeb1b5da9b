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
 * The change: the reference `UmemOdp.map` with `mmput` moved inside the mutex on success.
 */
import {
  EBUSY, EINVAL, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_RANGE_DEFAULT_TIMEOUT_NS, PAGE_SIZE, hmmRangeFault, hmmRangeInit,
  mmput, mmuIntervalReadBegin, mmuIntervalReadRetry, type Co,
} from '../../kernel-model/index.ts';
import { UmemOdp, odpStrategy, type OdpMapMode, type OdpStrategy } from '../umem-odp.ts';

export class MmputUnderMutexUmemOdp extends UmemOdp {
  override *map(va: number, end: number, mode: OdpMapMode): Co<number> {
    const { kernel } = this.owner.ctx.device;
    const { sim } = kernel;
    const mm = this.owner.ctx.mm;
    const start = Math.max(this.start, Math.floor(va / PAGE_SIZE) * PAGE_SIZE);
    const stop = Math.min(this.end, Math.ceil(end / PAGE_SIZE) * PAGE_SIZE);
    if (stop <= start) return 0;
    if (!mm.mmgetNotZero()) return -EINVAL;
    const timeout = sim.now() + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    const flags = mode.fault ? HMM_PFN_REQ_FAULT | (mode.write ? HMM_PFN_REQ_WRITE : 0) : 0;
    let ret: number;
    for (;;) {
      const seq = yield* mmuIntervalReadBegin(this.notifier);
      const range = hmmRangeInit(this.notifier, start, stop, seq, flags);
      yield* mm.mmapLock.downRead();
      ret = yield* hmmRangeFault(range);
      mm.mmapLock.upRead();
      if (ret === -EBUSY && sim.now() <= timeout) continue;
      if (ret < 0) break;
      yield* this.mutex.lock();
      if (mmuIntervalReadRetry(this.notifier, seq)) {
        this.mutex.unlock();
        continue;
      }
      ret = yield* this.program(range, mode);
      // BUG: the last mm reference may go here, under the umem mutex (rdma C10).
      yield* mmput(mm);
      this.mutex.unlock();
      return ret;
    }
    yield* mmput(mm);
    return ret;
  }
}

export function mmputUnderMutexStrategy(): OdpStrategy {
  return odpStrategy({}, (owner, start, end, first, name) => new MmputUnderMutexUmemOdp(owner, start, end, first, name));
}
