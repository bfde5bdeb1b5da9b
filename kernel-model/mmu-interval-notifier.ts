import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import { EINVAL, EOVERFLOW } from './errno.ts';
import { requireInterface } from './profile.ts';
import { IntervalTreeNode } from './interval-tree.ts';
import type { MmuNotifierRange } from './mmu-notifier-range.ts';
import { inNotifierCallback, refuseInterface } from './notifier-callback.ts';
import {
  INVALIDATE_RANGE_START_MAP,
  __mmuNotifierRegister,
  mmuNotifierRegister,
  notifierContract,
  warn,
  type MmuNotifierSubscriptions,
  type NotifierResult,
} from './mmu-notifier.ts';

/** `struct mmu_interval_notifier_ops`. */
export interface MmuIntervalNotifierOps {
  /**
   * Take the driver lock (try-lock in a non-blockable range, returning false when it
   * fails), `mmuIntervalSetSeq(sub, curSeq)` unconditionally, tear down the device
   * mappings in the range clamped to the subscription, fence, return true (rule 26).
   */
  invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): NotifierResult<boolean>;
}

/** The driver lock guarding set_seq and read_retry; `Mutex` and `RwSemaphore` qualify. */
export interface SubscriberLock {
  heldByCurrent(): boolean;
  readonly name?: string;
}

export interface MmuIntervalNotifierInsertOptions {
  /** The lock the driver holds around `mmuIntervalSetSeq` and `mmuIntervalReadRetry`. */
  lock?: SubscriberLock;
}

/**
 * `struct mmu_interval_notifier`: one subscriber for [start, last] of an mm.
 *
 * @example
 *   const sub = new MmuIntervalNotifier('umem 3');
 *   yield* mmuIntervalNotifierInsert(sub, mm, addr, len, ops, { lock: umemMutex });
 */
export class MmuIntervalNotifier extends IntervalTreeNode {
  /** Set by insert and kept afterwards, as in the kernel; undefined before the first insert. */
  mm!: MmStruct;
  /** Between a successful insert and the end of remove. */
  inserted = false;
  ops: MmuIntervalNotifierOps | null = null;
  /** The subscriber's copy of the sequence (`invalidate_seq`); odd once a driver stored it. */
  invalidateSeq = 0;
  lock: SubscriberLock | null = null;
  /** How many times `mmuIntervalSetSeq` ran, so the core can tell whether an invalidate did. */
  setSeqCalls = 0;

  /**
   * `start`, `last` (inclusive: start + length - 1) and `inTree` (false while only on the
   * deferred list, `RB_EMPTY_NODE`) are the embedded tree node's, as in the kernel.
   */
  constructor(private readonly label = '') {
    super();
  }

  /** The name in traces and warnings; a subclass may build it only when asked. */
  get name(): string {
    return this.label;
  }
}

/**
 * `mmu_interval_notifier_insert` (rule 23). Turns on the mm's interval tree first if
 * needed (a registration: mmap lock for write). The subscriber may not be in the tree
 * yet when this returns, and its seq is set so that the first `read_begin` waits out
 * any invalidation in flight: always go through read_begin/read_retry before mapping.
 * Refused with -EINVAL on kernels before 5.5.
 *
 * @example
 *   const ret = yield* mmuIntervalNotifierInsert(sub, mm, 0x10000, 0x4000, ops, { lock });
 *   // 0, -EOVERFLOW (empty or wrapping range), -EINVAL (mm exiting)
 */
export function* mmuIntervalNotifierInsert(
  sub: MmuIntervalNotifier,
  mm: MmStruct,
  start: number,
  length: number,
  ops: MmuIntervalNotifierOps,
  opts: MmuIntervalNotifierInsertOptions = {},
): Co<number> {
  const refused = refuseOnOldKernel(mm, 'mmu_interval_notifier_insert');
  if (refused) return refused;
  const { sim } = mm.kernel;
  // might_lock(&mm->mmap_lock): the lock order counts even when no registration is needed.
  if (sim.current) sim.lockdep.touch(sim.current, mm.mmapLock.cls);
  if (!mm.notifierSubscriptions?.hasItree) {
    const ret = yield* mmuNotifierRegister(null, mm);
    if (ret) return ret;
  }
  return insert(sub, mm, mm.notifierSubscriptions as MmuNotifierSubscriptions, start, length, ops, opts);
}

/** `mmu_interval_notifier_insert_locked`: the caller holds the mmap lock for write. */
export function* mmuIntervalNotifierInsertLocked(
  sub: MmuIntervalNotifier,
  mm: MmStruct,
  start: number,
  length: number,
  ops: MmuIntervalNotifierOps,
  opts: MmuIntervalNotifierInsertOptions = {},
): Co<number> {
  const refused = refuseOnOldKernel(mm, 'mmu_interval_notifier_insert_locked');
  if (refused) return refused;
  if (!mm.mmapLock.heldByCurrent('write')) {
    warn(mm.kernel.sim, sub.name, 'mmu_interval_notifier_insert_locked without the mmap lock held for write');
  }
  if (!mm.notifierSubscriptions?.hasItree) {
    const ret = yield* __mmuNotifierRegister(null, mm);
    if (ret) return ret;
  }
  return insert(sub, mm, mm.notifierSubscriptions as MmuNotifierSubscriptions, start, length, ops, opts);
}

/** `__mmu_interval_notifier_insert`: the sequence arithmetic of rule 23. */
function insert(
  sub: MmuIntervalNotifier,
  mm: MmStruct,
  subs: MmuNotifierSubscriptions,
  start: number,
  length: number,
  ops: MmuIntervalNotifierOps,
  opts: MmuIntervalNotifierInsertOptions,
): number {
  const { sim } = mm.kernel;
  if (sub.inserted) {
    warn(sim, sub.name, 'mmu_interval_notifier_insert of a subscriber that is already inserted');
    return -EINVAL;
  }
  if (!Number.isInteger(start) || !Number.isInteger(length)) return -EINVAL;
  // Unsigned long arithmetic, exactly: a negative value is a huge one that wraps.
  if (length <= 0 || start < 0 || BigInt(start) + BigInt(length) - 1n > ULONG_MAX_EXACT) return -EOVERFLOW;
  if (mm.users <= 0) {
    warn(sim, sub.name, 'mmu_interval_notifier_insert on an mm without users');
    return -EINVAL;
  }
  mm.mmgrab();
  sub.mm = mm;
  sub.inserted = true;
  sub.ops = ops;
  sub.start = start;
  sub.last = start + length - 1;
  sub.lock = opts.lock ?? null;
  if (subs.activeInvalidateRanges > 0) {
    // An invalidation is in flight and the new range is assumed dirty: seq == S makes the
    // first read_begin wait for it. A frozen tree (S odd) takes the insert later.
    if (isInvalidating(subs)) {
      subs.deferredList.add(sub);
    } else {
      subs.invalidateSeq += 1;
      subs.itree.insert(sub);
    }
    sub.invalidateSeq = subs.invalidateSeq;
  } else {
    if (isInvalidating(subs)) warn(sim, sub.name, 'S is odd with no invalidation active');
    // Odd and different from S: an idle subscriber never makes read_begin wait (rule 32).
    sub.invalidateSeq = subs.invalidateSeq - 1;
    subs.itree.insert(sub);
  }
  sim.emit({ type: 'interval-insert', node: mm.kernel.node, sub: sub.name, mm: mm.id, start: sub.start, last: sub.last, lock: sub.lock?.name ?? null });
  return 0;
}

/**
 * `mmu_interval_notifier_remove` (rule 30): may sleep, never from a callback. While the
 * tree is frozen the removal is deferred and this waits until S changes; a subscriber
 * whose insert is still pending is just dropped. Afterwards no callback runs for it.
 *
 * @example
 *   yield* mmuIntervalNotifierRemove(sub);
 */
export function* mmuIntervalNotifierRemove(sub: MmuIntervalNotifier): Co {
  const mm = sub.mm as MmStruct | undefined;
  if (!mm) return;
  if (!sub.inserted) {
    warn(mm.kernel.sim, sub.name, 'mmu_interval_notifier_remove of a subscriber that is not inserted');
    return;
  }
  const { sim } = mm.kernel;
  const subs = mm.notifierSubscriptions as MmuNotifierSubscriptions;
  sim.mightSleep('mmu_interval_notifier_remove');
  if (inNotifierCallback(sim)) warn(sim, sub.name, 'mmu_interval_notifier_remove called from a notifier callback (rule 30)');
  let seq = 0;
  if (isInvalidating(subs)) {
    if (!sub.inTree) {
      subs.deferredList.delete(sub);
    } else {
      subs.deferredList.add(sub);
      seq = subs.invalidateSeq;
    }
  } else if (sub.inTree) {
    subs.itree.remove(sub);
  } else {
    warn(sim, sub.name, 'mmu_interval_notifier_remove of a subscriber not in the tree');
  }
  if (sim.current) sim.lockdep.touch(sim.current, INVALIDATE_RANGE_START_MAP);
  if (seq) yield* subs.wq.waitEvent(() => subs.invalidateSeq !== seq);
  sub.inserted = false;
  mm.mmdrop();
  sim.emit({ type: 'interval-remove', node: mm.kernel.node, sub: sub.name, mm: mm.id, start: sub.start, last: sub.last });
}

/**
 * `mmu_interval_read_begin` (rule 27): the seq to hand to `mmuIntervalReadRetry`. Sleeps
 * while an invalidation covering `sub` is in progress; never loops, so the returned seq
 * may already be stale. Must not be called with the driver lock held.
 *
 * @example
 *   const seq = yield* mmuIntervalReadBegin(sub);
 *   // ... snapshot the CPU page table ...
 *   yield* lock.lock();
 *   if (mmuIntervalReadRetry(sub, seq)) { lock.unlock(); continue; }
 *   // ... program the device ...
 *   lock.unlock();
 */
export function* mmuIntervalReadBegin(sub: MmuIntervalNotifier): Co<number> {
  const mm = sub.mm as MmStruct | undefined;
  if (!mm) return 0;
  const { sim } = mm.kernel;
  const subs = mm.notifierSubscriptions as MmuNotifierSubscriptions;
  const seq = sub.invalidateSeq;
  const isInvalidatingSub = seq === subs.invalidateSeq;
  // The driver must be able to sleep here while an invalidate takes its lock: lockdep
  // orders any lock held now before the invalidation's pseudo-lock.
  if (sim.current) sim.lockdep.touch(sim.current, INVALIDATE_RANGE_START_MAP);
  yield* sim.preemptPoint('mmu_interval_read_begin');
  if (isInvalidatingSub) yield* subs.wq.waitEvent(() => subs.invalidateSeq !== seq);
  return seq;
}

/**
 * `mmu_interval_read_retry` (rule 28): true if an invalidation ran since `seq` was read.
 * Authoritative only under the lock the invalidate callback holds around set_seq.
 */
export function mmuIntervalReadRetry(sub: MmuIntervalNotifier, seq: number): boolean {
  checkLock(sub, 'mmu_interval_read_retry');
  const retry = sub.invalidateSeq !== seq;
  if (sub.inserted) {
    const { kernel } = sub.mm;
    kernel.sim.emit({
      type: 'read-retry', node: kernel.node, sub: sub.name, mm: sub.mm.id, notifierSeq: seq, retry,
      lock: sub.lock?.name ?? null, locked: sub.lock?.heldByCurrent() ?? false,
    });
  }
  return retry;
}

/**
 * `mmu_interval_check_retry` (rule 29): the same test without the lock; a true is final,
 * a false proves nothing.
 */
export function mmuIntervalCheckRetry(sub: MmuIntervalNotifier, seq: number): boolean {
  const retry = sub.invalidateSeq !== seq;
  // Recorded for the sanitizer: a "no retry" here is a hint, never leave to install (rule 29).
  if (sub.inserted) {
    const { kernel } = sub.mm;
    kernel.sim.emit({
      type: 'check-retry', node: kernel.node, sub: sub.name, mm: sub.mm.id, notifierSeq: seq, retry,
      lock: sub.lock?.name ?? null, locked: sub.lock?.heldByCurrent() ?? false,
    });
  }
  return retry;
}

/**
 * `mmu_interval_set_seq` (rule 26): from `invalidate`, unconditionally, under the driver
 * lock, so a concurrent read side sees its retry.
 *
 * @example
 *   invalidate: function* (sub, range, curSeq) {
 *     yield* lock.lock(); mmuIntervalSetSeq(sub, curSeq); zap(range); lock.unlock(); return true;
 *   }
 */
export function mmuIntervalSetSeq(sub: MmuIntervalNotifier, curSeq: number): void {
  checkLock(sub, 'mmu_interval_set_seq');
  sub.invalidateSeq = curSeq;
  sub.setSeqCalls++;
}

const ULONG_MAX_EXACT = (1n << 64n) - 1n;

const isInvalidating = (subs: MmuNotifierSubscriptions): boolean => subs.invalidateSeq % 2 === 1;

function checkLock(sub: MmuIntervalNotifier, api: string): void {
  const lock = sub.lock;
  if (!lock || !sub.inserted || lock.heldByCurrent()) return;
  notifierContract(sub.mm.kernel.sim, sub.name, `${api} called without ${lock.name ?? 'the lock declared at insert'} held`);
}

function refuseOnOldKernel(mm: MmStruct, api: string): number {
  const { kernel } = mm;
  return requireInterface(kernel.profile, 'intervalNotifiers', api, (m) => refuseInterface(kernel.sim, api, m));
}
