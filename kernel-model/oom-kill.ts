import type { Co } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import type { Process } from './process.ts';
import { EAGAIN } from './errno.ts';
import { VM_SHARED } from './vma.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStartNonblock } from './mmu-notifier.ts';
import { zapPteRange } from './memory.ts';
import { tlbFinishMmu, zapPteRangeWork } from './tlb.ts';

/** MAX_OOM_REAP_RETRIES and the sleep between attempts (HZ/10). */
export const MAX_OOM_REAP_RETRIES = 10;
export const OOM_REAP_RETRY_NS = 100_000_000;
/** schedule_timeout_idle(HZ): the 4.16-4.18 reaper's sleep before giving up on an mm with blockable notifiers. */
export const OOM_REAP_BLOCKABLE_NOTIFIERS_SLEEP_NS = 1_000_000_000;

export interface OomReapResult {
  attempts: number;
  skippedVmas: number;
  reaped: boolean;
  /** linux-4.18: gave up at once on an mm with blockable notifiers (MMF_OOM_SKIP, nothing reaped). */
  gaveUp?: boolean;
}

/**
 * __oom_reap_task_mm: for each anonymous or private VMA, a non-blockable range over the
 * whole VMA (rules 15, 17; UNMAP or CLEAR by profile, see KernelProfile.oomReapEvent); a VMA whose subscribers answer -EAGAIN is skipped (nothing
 * unmapped, no end) and the reap reports failure so that it is retried later.
 */
export function* oomReapTaskMm(mm: MmStruct, result: OomReapResult): Co<boolean> {
  const { phys, sim, profile } = mm.kernel;
  // Before 4.19 there was no non-blocking invalidation. oom_reap_task_mm of 4.16 to 4.18
  // (mm/oom_kill.c): "If the mm has invalidate_{start,end}() notifiers that could block,
  // sleep to give the oom victim some more time": up_read, schedule_timeout_idle(HZ), and
  // return true, so oom_reap_task stops retrying and sets MMF_OOM_SKIP with nothing
  // reaped. (Assumed: every subscriber may block; MMU_INVALIDATE_DOES_NOT_BLOCK is not
  // modelled.)
  if (!profile.blockableFlag && mm.notifierSubscriptions && mm.notifierSubscriptions.list.length > 0) {
    sim.emit({ type: 'oom-reap', mm: mm.id, start: 0, end: 0, ret: -EAGAIN });
    mm.mmapLock.upRead();
    yield* sim.sleep(OOM_REAP_BLOCKABLE_NOTIFIERS_SLEEP_NS);
    yield* mm.mmapLock.downRead();
    result.gaveUp = true;
    return true;
  }
  let ok = true;
  for (const vma of [...mm.vmas]) {
    if (vma.flags & VM_SHARED) continue;
    if (!profile.blockableFlag) {
      // No subscribers (checked above): nothing to notify, and that kernel had no
      // non-blocking start to call.
      const toFree: number[] = [];
      zapPteRange(mm, vma, vma.start, vma.end, toFree);
      sim.emit({ type: 'oom-reap', mm: mm.id, start: vma.start, end: vma.end, ret: 0 });
      for (const f of toFree) phys.put(f);
      continue;
    }
    const event = profile.oomReapEvent === 'UNMAP' ? MmuNotifyEvent.UNMAP : MmuNotifyEvent.CLEAR;
    const range = mmuNotifierRangeInit(mm, event, vma.start, vma.end, { blockable: false });
    const ret = yield* mmuNotifierInvalidateRangeStartNonblock(range);
    sim.emit({ type: 'oom-reap', mm: mm.id, start: vma.start, end: vma.end, ret });
    if (ret === -EAGAIN) {
      result.skippedVmas++;
      ok = false;
      continue;
    }
    const toFree: number[] = [];
    const span = zapPteRange(mm, vma, vma.start, vma.end, toFree);
    yield* zapPteRangeWork(mm, span);
    yield* mmuNotifierInvalidateRangeEnd(range);
    yield* tlbFinishMmu(mm, span, toFree);
  }
  return ok;
}

/**
 * The OOM killer picks `victim`: it is killed (its threads stop making system calls) and
 * the oom_reaper thread reaps its address space, retrying up to MAX_OOM_REAP_RETRIES
 * times while the mmap lock is taken or a subscriber answers -EAGAIN.
 */
export function oomKill(kernel: Kernel, victim: Process): OomReapResult {
  victim.alive = false;
  const mm = victim.mm;
  const result: OomReapResult = { attempts: 0, skippedVmas: 0, reaped: false };
  if (mm.users === 0 || mm.exited) return result;
  // The reaper holds the mm struct (mmgrab), not the address space: the victim's own exit
  // still runs exit_mmap when it drops the last mm_users reference, and the reaper stops
  // once that has happened (MMF_OOM_SKIP).
  mm.mmgrab();
  kernel.sim.spawn('oom_reaper', function* () {
    let done = false;
    while (result.attempts < MAX_OOM_REAP_RETRIES && !done && !mm.exited) {
      result.attempts++;
      if (mm.mmapLock.downReadTrylock()) {
        done = yield* oomReapTaskMm(mm, result);
        result.reaped = done && !result.gaveUp;
        mm.mmapLock.upRead();
      }
      if (!done) yield* kernel.sim.sleep(OOM_REAP_RETRY_NS);
    }
    mm.mmdrop();
  }, { kind: 'kthread', node: kernel.node });
  return result;
}
