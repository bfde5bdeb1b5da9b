import { isObservable, type Observable } from 'rxjs';
import { WaitQueue, type Co, type Simulation, type Task } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import { enterNotifierCallback, exitNotifierCallback, inNotifierCallback, refuseInterface } from './notifier-callback.ts';
import type { MmStruct } from './mm.ts';
import { EAGAIN, EINVAL, EOVERFLOW, errnoName } from './errno.ts';
import { ULONG_MAX } from './constants.ts';
import { requireInterface } from './profile.ts';
import { IntervalTree } from './interval-tree.ts';
import {
  MMU_NOTIFIER_RANGE_BLOCKABLE,
  MmuNotifyEvent,
  eventName,
  mmuNotifierRangeBlockable,
  mmuNotifierRangeInit,
  type MmuNotifierRange,
} from './mmu-notifier-range.ts';
import type { MmuIntervalNotifier } from './mmu-interval-notifier.ts';

/**
 * What a notifier callback may return: the answer itself, a coroutine the invalidating
 * task runs (it sleeps where the coroutine sleeps), or an Observable whose first value
 * the invalidating task waits for (a batching policy, a device command).
 */
export type NotifierResult<T> = T | Co<T> | Observable<T>;

/** `struct mmu_notifier_ops`, minus the callbacks removed from the kernel (rule 39). */
export interface MmuNotifierOps {
  /** 0, or -EAGAIN only in a non-blockable range when it would have to sleep (rule 14). */
  invalidateRangeStart?(sub: MmuNotifier, range: MmuNotifierRange): NotifierResult<number | void>;
  invalidateRangeEnd?(sub: MmuNotifier, range: MmuNotifierRange): NotifierResult<void>;
  /** Called exactly once if the mm is torn down, or unregistered, while subscribed (rule 6). */
  release?(sub: MmuNotifier, mm: MmStruct): NotifierResult<void>;
  clearFlushYoung?(sub: MmuNotifier, mm: MmStruct, start: number, end: number): NotifierResult<boolean>;
  clearYoung?(sub: MmuNotifier, mm: MmStruct, start: number, end: number): NotifierResult<boolean>;
  testYoung?(sub: MmuNotifier, mm: MmStruct, start: number, end: number): NotifierResult<boolean>;
  /**
   * linux-3.0 only: called after a single page's PTE was cleared or replaced, under the
   * page-table lock (no start/end pair around it), so it may not sleep (rule 39).
   */
  invalidatePage?(sub: MmuNotifier, mm: MmStruct, addr: number): NotifierResult<void>;
  /** For devices sharing the CPU page tables; runs under the page-table lock (rule 38). */
  archInvalidateSecondaryTlbs?(sub: MmuNotifier, mm: MmStruct, start: number, end: number): NotifierResult<void>;
  /** For mmu_notifier_get: a new subscriber, or a negative errno (ERR_PTR). */
  allocNotifier?(mm: MmStruct): MmuNotifier | number;
  /** For mmu_notifier_put: runs after an SRCU grace period, outside any callback. */
  freeNotifier?(sub: MmuNotifier): void;
}

/**
 * `struct mmu_notifier`: a classic subscriber. `name` is what the trace shows.
 *
 * @example
 *   const kvm = new MmuNotifier('kvm', { invalidateRangeStart: () => 0 });
 *   yield* mmuNotifierRegister(kvm, mm);
 */
export class MmuNotifier {
  ops: MmuNotifierOps;
  mm: MmStruct | null = null;
  users = 0;
  /** On the per-mm list (`!hlist_unhashed`). */
  hooked = false;

  constructor(readonly name: string, ops: MmuNotifierOps = {}) {
    this.ops = ops;
  }
}

/**
 * `struct mmu_notifier_subscriptions` (rule 1): created by the first registration on an
 * mm and kept until the mm struct itself goes (last mmdrop), so a driver can still
 * unregister after exit_mmap. `invalidateSeq` is the spec's `S`, starting at 2 and even
 * while idle; `activeInvalidateRanges` is `A`.
 */
export class MmuNotifierSubscriptions {
  /** Classic subscribers, newest first (`hlist_add_head`). */
  readonly list: MmuNotifier[] = [];
  hasItree = false;
  invalidateSeq = 2;
  activeInvalidateRanges = 0;
  readonly itree = new IntervalTree<MmuIntervalNotifier>();
  /** Inserts and removals held back while the tree is frozen (S odd), applied newest first. */
  readonly deferredList = new Set<MmuIntervalNotifier>();
  readonly wq: WaitQueue;

  constructor(readonly mm: MmStruct) {
    this.wq = new WaitQueue(mm.kernel.sim, `mmu_notifier_subscriptions(mm${mm.id}).wq`);
  }
}

/** lockdep's `__mmu_notifier_invalidate_range_start_map` (rule 8). */
export const INVALIDATE_RANGE_START_MAP = 'mmu_notifier_invalidate_range_start';

const CORE = 'mmu_notifier core';
const UINT_MAX = 0xffffffff;

// ---- dispatch entry points used by the mm code -------------------------------------------

/**
 * `mmu_notifier_invalidate_range_start`: the blockable start. Its result is ignored, as
 * in the kernel's void wrapper, so a classic start that fails here gets its ends twice:
 * once from the core (rule 14) and once from the caller's end.
 *
 * @example
 *   const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.UNMAP, start, end);
 *   yield* mmuNotifierInvalidateRangeStart(range);
 *   // ... clear the PTEs, flush the TLB ...
 *   yield* mmuNotifierInvalidateRangeEnd(range);
 */
export function* mmuNotifierInvalidateRangeStart(range: MmuNotifierRange): Co {
  range.mm.kernel.sim.mightSleep('mmu_notifier_invalidate_range_start');
  setRangeFlags(range, range.flags | MMU_NOTIFIER_RANGE_BLOCKABLE);
  yield* invalidateRangeStart(range);
}

/**
 * `mmu_notifier_invalidate_range_start_nonblock` (rules 15-17): 0, or -EAGAIN when a
 * subscriber would have had to sleep; then the caller must neither touch the PTEs nor
 * call end. Refused (-EINVAL) on kernels before 4.19, which had no blockable flag.
 *
 * @example
 *   if (yield* mmuNotifierInvalidateRangeStartNonblock(range)) return false; // skip the VMA
 */
export function* mmuNotifierInvalidateRangeStartNonblock(range: MmuNotifierRange): Co<number> {
  const { kernel } = range.mm;
  const api = 'mmu_notifier_invalidate_range_start_nonblock';
  const refused = requireInterface(kernel.profile, 'blockableFlag', api, (m) => refuseInterface(kernel.sim, api, m));
  if (refused) return refused;
  setRangeFlags(range, range.flags & ~MMU_NOTIFIER_RANGE_BLOCKABLE);
  return yield* invalidateRangeStart(range);
}

/**
 * `mmu_notifier_invalidate_range_end` (rules 12, 25): interval bookkeeping first (S
 * advances when the last invalidation ends), then every classic end, in list order.
 *
 * @example
 *   yield* mmuNotifierInvalidateRangeEnd(range);
 */
export function* mmuNotifierInvalidateRangeEnd(range: MmuNotifierRange): Co {
  const { kernel } = range.mm;
  const { sim } = kernel;
  const blockable = mmuNotifierRangeBlockable(range);
  if (blockable) sim.mightSleep('mmu_notifier_invalidate_range_end');
  const state = rangeStates.get(range);
  if (!state || !state.open) {
    warn(sim, CORE, state
      ? 'invalidate_range_end on a range already ended, or whose start failed with -EAGAIN (rule 10)'
      : 'invalidate_range_end without invalidate_range_start (rule 10)');
    return;
  }
  state.open = false;
  // The primary MMU's change is complete: the window closes here, before the end
  // callbacks, which may already re-establish translations.
  emitPhase(kernel, range, 'end', state.curSeq);
  const task = sim.current;
  if (task) sim.lockdep.acquire(task, INVALIDATE_RANGE_START_MAP);
  const subs = state.subs;
  if (subs && state.itree) mnItreeInvEnd(subs);
  if (subs && subs.list.length > 0) yield* mnHlistInvalidateEnd(subs, range);
  if (task) sim.lockdep.release(task, INVALIDATE_RANGE_START_MAP);
  rangeDone(range.mm, state);
}

/**
 * `mmu_notifier_release`, the first step of exit_mmap (rules 33-36): one blockable
 * RELEASE invalidation over [0, ULONG_MAX) to the interval subscribers, then `->release`
 * once on every classic subscriber, which are unhooked and get nothing more.
 *
 * @example
 *   yield* mmuNotifierRelease(mm); // then the UNMAP of every VMA
 */
export function* mmuNotifierRelease(mm: MmStruct): Co {
  const subs = mm.notifierSubscriptions;
  if (!subs) return;
  if (subs.hasItree) yield* mnItreeRelease(subs, mm);
  if (subs.list.length > 0) yield* mnHlistRelease(subs, mm);
}

/**
 * `mmu_notifier_invalidate_page`, the linux-3.0 entry point (removed in 4.13): sent after
 * the PTE of one page was already cleared or replaced, to classic subscribers only, in
 * atomic context. A driver cannot stop using the page before the CPU did: the window the
 * 2011 thread (seed 004) had to live with.
 *
 * @example
 *   ptepClearFlush(); yield* mmuNotifierInvalidatePage(mm, addr);
 */
export function* mmuNotifierInvalidatePage(mm: MmStruct, addr: number): Co {
  const subs = mm.notifierSubscriptions;
  if (!subs || subs.list.length === 0) return;
  const { kernel } = mm;
  const srcu = srcuOf(kernel);
  const reader = srcu.readLock();
  for (const sub of [...subs.list]) {
    const fn = sub.ops.invalidatePage;
    if (!sub.hooked || !fn) continue;
    yield* callNotifier(kernel, sub.name, 'invalidate_page', { start: addr, end: addr + 4096, event: '-' },
      'invalidate_page under the page-table lock', () => fn.call(sub.ops, sub, mm, addr), () => 'void');
  }
  srcu.readUnlock(reader);
}

/**
 * `mmu_notifier_clear_flush_young` (rule 37): classic subscribers only, answers OR-ed;
 * the caller ORs in the CPU accessed bit.
 *
 * @example
 *   const young = (yield* mmuNotifierClearFlushYoung(mm, addr, addr + PAGE_SIZE)) || pteYoung;
 */
export function* mmuNotifierClearFlushYoung(mm: MmStruct, start: number, end: number): Co<boolean> {
  return yield* mnHlistYoung(mm, 'clear_flush_young', 'clearFlushYoung', start, end, false);
}

/** `mmu_notifier_clear_young` (rule 37): like clear_flush_young, without the flush. */
export function* mmuNotifierClearYoung(mm: MmStruct, start: number, end: number): Co<boolean> {
  return yield* mnHlistYoung(mm, 'clear_young', 'clearYoung', start, end, false);
}

/** `mmu_notifier_test_young` (rule 37): the first subscriber answering true wins. */
export function* mmuNotifierTestYoung(mm: MmStruct, start: number, end: number): Co<boolean> {
  return yield* mnHlistYoung(mm, 'test_young', 'testYoung', start, end, true);
}

/**
 * `mmu_notifier_arch_invalidate_secondary_tlbs` (rule 38): called by TLB-flush code with
 * the page-table lock held, so every callback runs in atomic context.
 *
 * @example
 *   yield* mmuNotifierArchInvalidateSecondaryTlbs(mm, start, end);
 */
export function* mmuNotifierArchInvalidateSecondaryTlbs(mm: MmStruct, start: number, end: number): Co {
  const subs = mm.notifierSubscriptions;
  if (!subs || subs.list.length === 0) return;
  const { kernel } = mm;
  const srcu = srcuOf(kernel);
  const reader = srcu.readLock();
  for (const sub of [...subs.list]) {
    const fn = sub.ops.archInvalidateSecondaryTlbs;
    if (!sub.hooked || !fn) continue;
    yield* callNotifier(kernel, sub.name, 'arch_invalidate_secondary_tlbs', { start, end, event: '-' },
      'page table lock held', () => fn.call(sub.ops, sub, mm, start, end), () => 'void');
  }
  srcu.readUnlock(reader);
}

// ---- classic subscriber API --------------------------------------------------------------

/**
 * `mmu_notifier_register` (rules 2, 3): takes the mmap lock for write. The subscriber
 * only sees invalidations that start after it returns.
 *
 * @example
 *   const ret = yield* mmuNotifierRegister(new MmuNotifier('gru', ops), mm); // 0 or -errno
 */
export function* mmuNotifierRegister(sub: MmuNotifier | null, mm: MmStruct): Co<number> {
  yield* mm.mmapLock.downWrite();
  const ret = yield* __mmuNotifierRegister(sub, mm);
  mm.mmapLock.upWrite();
  return ret;
}

/**
 * `__mmu_notifier_register`: the caller holds the mmap lock for write. `sub` null turns
 * on the interval tree ("itree mode", rule 23).
 */
export function* __mmuNotifierRegister(sub: MmuNotifier | null, mm: MmStruct): Co<number> {
  const { sim } = mm.kernel;
  const who = sub?.name ?? CORE;
  if (!mm.mmapLock.heldByCurrent('write')) warn(sim, who, '__mmu_notifier_register without the mmap lock held for write');
  if (mm.users <= 0) {
    warn(sim, who, 'registration on an mm without users (BUG_ON(mm_users <= 0) in the kernel)');
    return -EINVAL;
  }
  if (sub?.hooked) {
    warn(sim, who, 'registering a subscriber that is already registered');
    return -EINVAL;
  }
  const ops: MmuNotifierOps = sub?.ops ?? {};
  if (ops.archInvalidateSecondaryTlbs && (ops.invalidateRangeStart || ops.invalidateRangeEnd)) {
    warn(sim, who, 'arch_invalidate_secondary_tlbs together with invalidate_range_start/end (rule 3)');
    return -EINVAL;
  }
  yield* mmTakeAllLocks(mm);
  const subs = (mm.notifierSubscriptions ??= new MmuNotifierSubscriptions(mm));
  if (sub) {
    mm.mmgrab();
    sub.mm = mm;
    sub.users = 1;
    subs.list.unshift(sub);
    sub.hooked = true;
  } else {
    subs.hasItree = true;
  }
  mmDropAllLocks(mm);
  return 0;
}

/**
 * `mmu_notifier_get` (rule 4): the registered subscriber with these very ops, with one
 * more user, or a new one from `ops.allocNotifier`. Returns the subscriber or -errno.
 *
 * @example
 *   const sub = yield* mmuNotifierGet(ops, mm);
 *   if (typeof sub === 'number') return sub;
 */
export function* mmuNotifierGet(ops: MmuNotifierOps, mm: MmStruct): Co<MmuNotifier | number> {
  yield* mm.mmapLock.downWrite();
  const ret = yield* mmuNotifierGetLocked(ops, mm);
  mm.mmapLock.upWrite();
  return ret;
}

/** `mmu_notifier_get_locked`: `mmuNotifierGet` with the mmap lock already held for write. */
export function* mmuNotifierGetLocked(ops: MmuNotifierOps, mm: MmStruct): Co<MmuNotifier | number> {
  const { sim } = mm.kernel;
  if (!mm.mmapLock.heldByCurrent('write')) warn(sim, CORE, 'mmu_notifier_get_locked without the mmap lock held for write');
  const subs = mm.notifierSubscriptions;
  const found = subs?.list.find((s) => s.ops === ops);
  if (found) {
    if (found.users === UINT_MAX) return -EOVERFLOW;
    found.users++;
    return found;
  }
  if (!ops.allocNotifier) {
    warn(sim, CORE, 'mmu_notifier_get with ops that have no alloc_notifier');
    return -EINVAL;
  }
  const sub = ops.allocNotifier(mm);
  if (typeof sub === 'number') return sub;
  sub.ops = ops;
  const ret = yield* __mmuNotifierRegister(sub, mm);
  if (ret) {
    ops.freeNotifier?.(sub);
    return ret;
  }
  return sub;
}

/**
 * `mmu_notifier_put` (rule 5): drops a user; the last one unhooks the subscriber at once
 * and frees it (free_notifier, then mmdrop) after an SRCU grace period. Never calls
 * `->release`; may be called from inside it.
 *
 * @example
 *   mmuNotifierPut(sub);
 *   yield* mmuNotifierSynchronize(kernel); // module unload
 */
export function mmuNotifierPut(sub: MmuNotifier): void {
  const mm = sub.mm;
  if (!mm) return;
  const { kernel } = mm;
  if (sub.users === 0) {
    warn(kernel.sim, sub.name, 'mmu_notifier_put with no users left');
    return;
  }
  if (--sub.users > 0) return;
  unhook(sub);
  srcuOf(kernel).call(`free_notifier(${sub.name})`, () => {
    sub.ops.freeNotifier?.(sub);
    mm.mmdrop();
  });
}

/**
 * `mmu_notifier_unregister` (rule 6): runs `->release` unless exit already did, unhooks,
 * waits for every running callback to finish, drops the mm reference.
 *
 * @example
 *   yield* mmuNotifierUnregister(sub, mm); // no callback of sub runs after this
 */
export function* mmuNotifierUnregister(sub: MmuNotifier, mm: MmStruct): Co {
  const { kernel } = mm;
  const srcu = srcuOf(kernel);
  if (sub.hooked) {
    const reader = srcu.readLock();
    const release = sub.ops.release;
    if (release) {
      yield* callNotifier(kernel, sub.name, 'release', WHOLE_MM, callbackContext(kernel, true),
        () => release.call(sub.ops, sub, mm), () => 'void');
    }
    srcu.readUnlock(reader);
    unhook(sub);
  }
  yield* srcu.synchronize();
  mm.mmdrop();
}

/**
 * `mmu_notifier_synchronize`: waits until every subscriber freed by `mmuNotifierPut` so
 * far has been freed.
 */
export function* mmuNotifierSynchronize(kernel: Kernel): Co {
  yield* srcuOf(kernel).barrier();
}

/** `__mmu_notifier_subscriptions_destroy`, for the last mmdrop. */
export function mmuNotifierSubscriptionsDestroy(mm: MmStruct): void {
  const subs = mm.notifierSubscriptions;
  if (!subs) return;
  if (subs.list.length > 0) warn(mm.kernel.sim, CORE, 'mm freed with classic subscribers still registered');
  mm.notifierSubscriptions = null;
}

// ---- the invalidation, inside ------------------------------------------------------------

interface RangeState {
  /** The subscriptions when start ran: none means the whole pair is a no-op. */
  subs: MmuNotifierSubscriptions | null;
  /** Whether start took part in the interval bookkeeping, so end undoes exactly that. */
  itree: boolean;
  curSeq: number;
  /** Started and neither ended nor failed. */
  open: boolean;
  task: Task | null;
}

const rangeStates = new WeakMap<MmuNotifierRange, RangeState>();

function* invalidateRangeStart(range: MmuNotifierRange): Co<number> {
  const { mm } = range;
  const { kernel } = mm;
  const { sim } = kernel;
  const blockable = mmuNotifierRangeBlockable(range);
  const task = sim.current;
  yield* rangeBegin(mm, task, blockable);
  const subs = mm.notifierSubscriptions;
  const state: RangeState = { subs, itree: subs?.hasItree ?? false, curSeq: 0, open: true, task };
  rangeStates.set(range, state);
  if (task) sim.lockdep.acquire(task, INVALIDATE_RANGE_START_MAP);
  let ret = 0;
  if (!subs) {
    emitPhase(kernel, range, 'start', 0);
  } else {
    let interval: MmuIntervalNotifier[] = [];
    if (state.itree) [interval, state.curSeq] = mnItreeInvStartRange(subs, range);
    emitPhase(kernel, range, 'start', state.curSeq);
    if (state.itree) ret = yield* mnItreeInvalidate(subs, range, interval, state.curSeq);
    if (ret === 0 && subs.list.length > 0) {
      ret = yield* mnHlistInvalidateRangeStart(subs, range);
      if (ret && state.itree && !blockable) {
        sim.emit({ type: 'note', text: `mm${mm.id}: classic start failed after the interval phase; ` +
          `the interval side is not closed (A=${subs.activeInvalidateRanges}, S=${subs.invalidateSeq}), as in the kernel` });
      }
    }
  }
  if (task) sim.lockdep.release(task, INVALIDATE_RANGE_START_MAP);
  if (ret && !blockable) {
    state.open = false;
    emitPhase(kernel, range, 'eagain', state.curSeq);
    rangeDone(mm, state);
  }
  return ret;
}

/** `mn_itree_inv_start_range` (rule 24): A += 1; S made odd if anything overlaps. */
function mnItreeInvStartRange(subs: MmuNotifierSubscriptions, range: MmuNotifierRange): [MmuIntervalNotifier[], number] {
  subs.activeInvalidateRanges++;
  // The tree cannot change while S is odd (changes are deferred), so the overlap list
  // taken now is what the kernel's iter_first/iter_next walk would visit.
  const hits = subs.itree.overlapping(range.start, range.end - 1);
  if (hits.length > 0 && subs.invalidateSeq % 2 === 0) subs.invalidateSeq += 1;
  return [hits, subs.invalidateSeq];
}

/**
 * `mn_itree_inv_end` (rule 25): the last invalidation to end makes S even, applies the
 * deferred inserts and removals, and wakes `read_begin` and `remove` waiters.
 */
function mnItreeInvEnd(subs: MmuNotifierSubscriptions): void {
  if (--subs.activeInvalidateRanges > 0 || subs.invalidateSeq % 2 === 0) return;
  subs.invalidateSeq += 1;
  // hlist_add_head put the newest first: apply in that order.
  for (const sub of [...subs.deferredList].reverse()) {
    if (sub.inTree) subs.itree.remove(sub);
    else subs.itree.insert(sub);
  }
  subs.deferredList.clear();
  subs.wq.wakeUpAll();
}

/** `mn_itree_invalidate` (rule 16). */
function* mnItreeInvalidate(
  subs: MmuNotifierSubscriptions,
  range: MmuNotifierRange,
  interval: MmuIntervalNotifier[],
  curSeq: number,
): Co<number> {
  const { sim } = range.mm.kernel;
  const blockable = mmuNotifierRangeBlockable(range);
  for (const sub of interval) {
    if (yield* callIntervalInvalidate(sub, range, curSeq)) continue;
    if (blockable) {
      warn(sim, sub.name, 'invalidate returned false in a blockable range (rule 16)');
      continue;
    }
    // Closes the write side as if end had run: the caller will not call end.
    mnItreeInvEnd(subs);
    return -EAGAIN;
  }
  return 0;
}

function* callIntervalInvalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): Co<boolean> {
  const { kernel } = range.mm;
  const ops = sub.ops;
  if (!ops) return true;
  const blockable = mmuNotifierRangeBlockable(range);
  const setSeqBefore = sub.setSeqCalls;
  // Finding and calling this subscriber (cpu-costs.ts notifierDispatchNs).
  yield* kernel.sim.cpu(kernel.cpuCosts.notifierDispatchNs);
  const ret = (yield* callNotifier(kernel, sub.name, 'invalidate', site(range), callbackContext(kernel, blockable),
    () => ops.invalidate(sub, range, curSeq), String)) === true;
  // A non-blockable `false` legitimately skips set_seq (it never took the lock).
  if (sub.setSeqCalls === setSeqBefore && (blockable || ret)) {
    notifierContract(kernel.sim, sub.name, `invalidate returned ${ret} without mmu_interval_set_seq`);
  }
  return ret;
}

/** `mn_hlist_invalidate_range_start` (rule 14). */
function* mnHlistInvalidateRangeStart(subs: MmuNotifierSubscriptions, range: MmuNotifierRange): Co<number> {
  const { kernel } = range.mm;
  const { sim } = kernel;
  const blockable = mmuNotifierRangeBlockable(range);
  const context = callbackContext(kernel, blockable);
  const srcu = srcuOf(kernel);
  const reader = srcu.readLock();
  let ret = 0;
  for (const sub of [...subs.list]) {
    const start = sub.ops.invalidateRangeStart;
    if (!sub.hooked || !start) continue;
    yield* sim.cpu(kernel.cpuCosts.notifierDispatchNs); // cpu-costs.ts notifierDispatchNs
    const got = yield* callNotifier(kernel, sub.name, 'invalidate_range_start', site(range), context,
      () => start.call(sub.ops, sub, range), (v) => errnoName(typeof v === 'number' ? v : 0));
    const code = typeof got === 'number' ? got : 0;
    if (code === 0) continue;
    if (blockable) warn(sim, sub.name, `invalidate_range_start returned ${errnoName(code)} in a blockable range (rule 14)`);
    else if (code !== -EAGAIN) warn(sim, sub.name, `invalidate_range_start returned ${errnoName(code)}; only -EAGAIN is allowed (rule 14)`);
    if (sub.ops.invalidateRangeEnd) {
      warn(sim, sub.name, 'a subscriber whose invalidate_range_start can fail must not implement invalidate_range_end (rule 14)');
    }
    ret = code;
  }
  if (ret) {
    // Every classic subscriber gets its end, started or not: the caller will not call end.
    for (const sub of [...subs.list]) {
      const end = sub.ops.invalidateRangeEnd;
      if (!sub.hooked || !end) continue;
      yield* callNotifier(kernel, sub.name, 'invalidate_range_end', site(range), context,
        () => end.call(sub.ops, sub, range), () => 'void');
    }
  }
  srcu.readUnlock(reader);
  return ret;
}

/** `mn_hlist_invalidate_end`. */
function* mnHlistInvalidateEnd(subs: MmuNotifierSubscriptions, range: MmuNotifierRange): Co {
  const { kernel } = range.mm;
  const context = callbackContext(kernel, mmuNotifierRangeBlockable(range));
  const srcu = srcuOf(kernel);
  const reader = srcu.readLock();
  for (const sub of [...subs.list]) {
    const end = sub.ops.invalidateRangeEnd;
    if (!sub.hooked || !end) continue;
    yield* callNotifier(kernel, sub.name, 'invalidate_range_end', site(range), context,
      () => end.call(sub.ops, sub, range), () => 'void');
  }
  srcu.readUnlock(reader);
}

/** `mn_itree_release` (rule 34): a blockable RELEASE to every interval subscriber. */
function* mnItreeRelease(subs: MmuNotifierSubscriptions, mm: MmStruct): Co {
  const { kernel } = mm;
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.RELEASE, 0, ULONG_MAX);
  const [interval, curSeq] = mnItreeInvStartRange(subs, range);
  emitPhase(kernel, range, 'start', curSeq);
  for (const sub of interval) {
    if (!(yield* callIntervalInvalidate(sub, range, curSeq))) {
      warn(kernel.sim, sub.name, 'invalidate returned false for the RELEASE event (rule 34)');
    }
  }
  emitPhase(kernel, range, 'end', curSeq);
  mnItreeInvEnd(subs);
}

/** `mn_hlist_release` (rule 34): `->release` on each, unhook all, wait for stragglers. */
function* mnHlistRelease(subs: MmuNotifierSubscriptions, mm: MmStruct): Co {
  const { kernel } = mm;
  const srcu = srcuOf(kernel);
  const reader = srcu.readLock();
  for (const sub of [...subs.list]) {
    const release = sub.ops.release;
    if (!sub.hooked || !release) continue;
    yield* callNotifier(kernel, sub.name, 'release', WHOLE_MM, callbackContext(kernel, true),
      () => release.call(sub.ops, sub, mm), () => 'void');
  }
  for (const sub of subs.list) sub.hooked = false;
  subs.list.length = 0;
  srcu.readUnlock(reader);
  // exit_mmap must not free pages while a ->release run by a concurrent unregister is active.
  yield* srcu.synchronize();
}

type YoungOp = 'clearFlushYoung' | 'clearYoung' | 'testYoung';

function* mnHlistYoung(mm: MmStruct, op: string, key: YoungOp, start: number, end: number, firstOnly: boolean): Co<boolean> {
  const subs = mm.notifierSubscriptions;
  if (!subs || subs.list.length === 0) return false;
  const { kernel } = mm;
  const srcu = srcuOf(kernel);
  const reader = srcu.readLock();
  let young = false;
  for (const sub of [...subs.list]) {
    const fn = sub.ops[key];
    if (!sub.hooked || !fn) continue;
    const answer = (yield* callNotifier(kernel, sub.name, op, { start, end, event: '-' }, callbackContext(kernel, true),
      () => fn.call(sub.ops, sub, mm, start, end), String)) === true;
    young = answer || young;
    if (firstOnly && young) break;
  }
  srcu.readUnlock(reader);
  return young;
}

function unhook(sub: MmuNotifier): void {
  const list = sub.mm?.notifierSubscriptions?.list;
  const i = list ? list.indexOf(sub) : -1;
  if (list && i >= 0) list.splice(i, 1);
  sub.hooked = false;
}

// ---- mm_take_all_locks -------------------------------------------------------------------

/**
 * Registration takes the mmap lock and every rmap lock, which no invalidation can be
 * holding at that moment; the model has no rmap locks, so it counts the invalidations in
 * flight on each mm instead: registration waits for them to drain and holds off new
 * blockable ones (rule 2). A task already inside an invalidation of the mm is not held
 * off, as it holds the locks registration is waiting for.
 */
interface MmInvalidations {
  inFlight: number;
  byTask: Map<Task, number>;
  registering: number;
  wq: WaitQueue;
}

const mmInvalidations = new WeakMap<MmStruct, MmInvalidations>();

function mmInvalidationsOf(mm: MmStruct): MmInvalidations {
  let s = mmInvalidations.get(mm);
  if (!s) {
    s = { inFlight: 0, byTask: new Map(), registering: 0, wq: new WaitQueue(mm.kernel.sim, `mm_take_all_locks(mm${mm.id})`) };
    mmInvalidations.set(mm, s);
  }
  return s;
}

function* rangeBegin(mm: MmStruct, task: Task | null, blockable: boolean): Co {
  const s = mmInvalidationsOf(mm);
  if (blockable && task && !s.byTask.get(task)) yield* s.wq.waitEvent(() => s.registering === 0);
  s.inFlight++;
  if (task) s.byTask.set(task, (s.byTask.get(task) ?? 0) + 1);
}

function rangeDone(mm: MmStruct, state: RangeState): void {
  const s = mmInvalidationsOf(mm);
  s.inFlight--;
  const t = state.task;
  if (t) {
    const n = (s.byTask.get(t) ?? 1) - 1;
    if (n > 0) s.byTask.set(t, n);
    else s.byTask.delete(t);
  }
  if (s.inFlight === 0) s.wq.wakeUpAll();
}

function* mmTakeAllLocks(mm: MmStruct): Co {
  const s = mmInvalidationsOf(mm);
  mm.kernel.sim.mightSleep('mm_take_all_locks');
  s.registering++;
  yield* s.wq.waitEvent(() => s.inFlight === 0);
}

function mmDropAllLocks(mm: MmStruct): void {
  const s = mmInvalidationsOf(mm);
  s.registering--;
  s.wq.wakeUpAll();
}

// ---- SRCU --------------------------------------------------------------------------------

interface SrcuReader {
  done: boolean;
}

/**
 * The notifier SRCU domain: classic callbacks run inside read sections; unregister,
 * release and put wait for (or defer to) the end of every section open at the time.
 */
class NotifierSrcu {
  private readonly readers = new Set<SrcuReader>();
  private readonly callbacks = new Set<Task>();
  private readonly wq: WaitQueue;

  constructor(private readonly sim: Simulation) {
    this.wq = new WaitQueue(sim, 'srcu(mmu_notifier)');
  }

  readLock(): SrcuReader {
    const reader = { done: false };
    this.readers.add(reader);
    return reader;
  }

  readUnlock(reader: SrcuReader): void {
    reader.done = true;
    this.readers.delete(reader);
    if (this.wq.length > 0) this.wq.wakeUpAll();
  }

  /** `synchronize_srcu`: wait for the read sections open now (not later ones). */
  *synchronize(): Co {
    this.sim.mightSleep('synchronize_srcu');
    const open = [...this.readers];
    yield* this.wq.waitEvent(() => open.every((r) => r.done));
  }

  /** `call_srcu`: run `fn` after a grace period, from a kernel thread. */
  call(what: string, fn: () => void): void {
    const self = this;
    const task = this.sim.spawn(`call_srcu ${what}`, function* () {
      yield* self.synchronize();
      fn();
    }, { kind: 'kthread' });
    this.callbacks.add(task);
    task.joiners.push(() => this.callbacks.delete(task));
  }

  /** Wait for every callback queued so far. */
  *barrier(): Co {
    for (const task of [...this.callbacks]) yield* this.sim.join(task);
  }
}

const srcus = new WeakMap<Kernel, NotifierSrcu>();

function srcuOf(kernel: Kernel): NotifierSrcu {
  let s = srcus.get(kernel);
  if (!s) srcus.set(kernel, (s = new NotifierSrcu(kernel.sim)));
  return s;
}

// ---- calling a callback ------------------------------------------------------------------

interface CallbackSite {
  start: number;
  end: number;
  event: string;
}

const WHOLE_MM: CallbackSite = { start: 0, end: ULONG_MAX, event: eventName(MmuNotifyEvent.RELEASE) };

const site = (range: MmuNotifierRange): CallbackSite => ({ start: range.start, end: range.end, event: eventName(range.event) });

/**
 * The context a callback runs in: under `linux-3.0` every callback is inside an RCU read
 * section; otherwise only a non-blockable range forbids sleeping (`non_block_start`).
 */
function callbackContext(kernel: Kernel, blockable: boolean): string | null {
  if (kernel.profile.atomicCallbacks) return 'RCU notifier callback';
  return blockable ? null : 'non-blockable invalidation';
}


/**
 * Run one callback in the invalidating task: trace it, put the task in `atomic` context
 * if given, and wait (in virtual time) for whatever the callback returned.
 */
function* callNotifier<T>(
  kernel: Kernel,
  sub: string,
  op: string,
  at: CallbackSite,
  atomic: string | null,
  fn: () => NotifierResult<T>,
  show: (value: T | undefined) => string,
): Co<T | undefined> {
  const { sim } = kernel;
  sim.emit({ type: 'callback-start', sub, op, start: at.start, end: at.end, event: at.event });
  const task = sim.current;
  if (task) enterNotifierCallback(task);
  if (atomic) sim.enterAtomic(atomic);
  let value: T | undefined;
  try {
    value = yield* settle(sim, fn());
  } finally {
    if (atomic) sim.exitAtomic();
    if (task) exitNotifierCallback(task);
  }
  sim.emit({ type: 'callback-return', sub, op, ret: show(value) });
  return value;
}

function* settle<T>(sim: Simulation, result: NotifierResult<T>): Co<T | undefined> {
  if (isObservable(result)) return yield* sim.waitFor(result as Observable<T>);
  if (isCoroutine<T>(result)) return yield* result;
  return result as T;
}

function isCoroutine<T>(x: unknown): x is Co<T> {
  return typeof x === 'object' && x !== null && typeof (x as Co<T>).next === 'function'
    && typeof (x as Co<T>)[Symbol.iterator] === 'function';
}

// ---- trace -------------------------------------------------------------------------------

function emitPhase(kernel: Kernel, range: MmuNotifierRange, phase: 'start' | 'end' | 'eagain', curSeq: number): void {
  const { sim } = kernel;
  const mm = range.mm.id;
  const blockable = mmuNotifierRangeBlockable(range);
  const event = eventName(range.event);
  if (phase === 'start') sim.emit({ type: 'invalidate-start', mm, start: range.start, end: range.end, event, blockable, curSeq });
  else sim.emit({ type: phase === 'end' ? 'invalidate-end' : 'invalidate-eagain', mm, start: range.start, end: range.end, event });
  kernel.publishNotifier({ mm, range, phase, blockable, curSeq });
}

/** A contract problem the kernel WARNs about. */
export function warn(sim: Simulation, sub: string, message: string): void {
  sim.emit({ type: 'notifier-warn', sub, message });
}

/** A driver obligation not met (rules 26-28), for the sanitizer to judge. */
export function notifierContract(sim: Simulation, sub: string, message: string): void {
  sim.emit({ type: 'notifier-contract', sub, message });
}

/** Record an interface the profile's kernel lacks (the message names the release). */

/** The range's flags are the caller's, but the start wrappers set or clear BLOCKABLE, as the kernel's do. */
function setRangeFlags(range: MmuNotifierRange, flags: number): void {
  (range as { flags: number }).flags = flags;
}
