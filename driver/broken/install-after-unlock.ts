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
 * The change: the reference `UmemOdp.map` with `mutex.unlock()` moved before `program`.
 */
import {
  EBUSY, EINVAL, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_RANGE_DEFAULT_TIMEOUT_NS, PAGE_SIZE, hmmRangeFault, hmmRangeInit,
  mmput, mmuIntervalReadBegin, mmuIntervalReadRetry, type Co,
} from '../../kernel-model/index.ts';
import { UmemOdp, odpStrategy, type OdpMapMode, type OdpStrategy } from '../umem-odp.ts';

export class InstallAfterUnlockUmemOdp extends UmemOdp {
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
      // BUG: the lock goes before the device is programmed (rule 28).
      this.mutex.unlock();
      ret = yield* this.program(range, mode);
      break;
    }
    yield* mmput(mm);
    return ret;
  }
}

export function installAfterUnlockStrategy(): OdpStrategy {
  return odpStrategy({}, (owner, start, end, first, name) => new InstallAfterUnlockUmemOdp(owner, start, end, first, name));
}
