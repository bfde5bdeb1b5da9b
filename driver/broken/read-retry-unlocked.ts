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
 * The change: the reference `UmemOdp.map` with the read_retry moved before `mutex.lock()`.
 */
import {
  EBUSY, EINVAL, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_RANGE_DEFAULT_TIMEOUT_NS, PAGE_SIZE, hmmRangeFault, hmmRangeInit,
  mmput, mmuIntervalReadBegin, mmuIntervalReadRetry, type Co,
} from '../../kernel-model/index.ts';
import { UmemOdp, odpStrategy, type OdpMapMode, type OdpStrategy } from '../umem-odp.ts';

export class ReadRetryUnlockedUmemOdp extends UmemOdp {
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
      // BUG: checked before taking the lock invalidate() holds around set_seq (rule 28).
      if (mmuIntervalReadRetry(this.notifier, seq)) continue;
      yield* this.mutex.lock();
      ret = yield* this.program(range, mode);
      this.mutex.unlock();
      break;
    }
    yield* mmput(mm);
    return ret;
  }
}

export function readRetryUnlockedStrategy(): OdpStrategy {
  return odpStrategy({}, (owner, start, end, first, name) => new ReadRetryUnlockedUmemOdp(owner, start, end, first, name));
}
