/**
 * Interval notifiers and their sequence protocol (kernel rules 1, 8, 16, 23-32), and the
 * interval tree they live in. Invalidations are driven by calling the dispatch entry
 * points directly from tasks, as the mm code does.
 */
import test from 'ava';
import { fc, testProp } from '@fast-check/ava';
import { Kernel } from '../../kernel-model/kernel.ts';
import { PROFILES } from '../../kernel-model/profile.ts';
import { EINVAL, EOVERFLOW } from '../../kernel-model/errno.ts';
import { ULONG_MAX } from '../../kernel-model/constants.ts';
import { DEFAULT_CPU_COSTS } from '../../kernel-model/cpu-costs.ts';
import { Mutex, type Co, type TraceRecord } from '../../kernel-model/sim/index.ts';
import type { MmStruct } from '../../kernel-model/mm.ts';
import { IntervalTree, IntervalTreeNode } from '../../kernel-model/interval-tree.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit, type MmuNotifierRange } from '../../kernel-model/mmu-notifier-range.ts';
import {
  MmuNotifier, mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart,
  mmuNotifierInvalidateRangeStartNonblock, mmuNotifierRegister, type MmuNotifierSubscriptions,
} from '../../kernel-model/mmu-notifier.ts';
import {
  MmuIntervalNotifier, mmuIntervalCheckRetry, mmuIntervalNotifierInsert, mmuIntervalNotifierRemove,
  mmuIntervalReadBegin, mmuIntervalReadRetry, mmuIntervalSetSeq, type MmuIntervalNotifierOps,
} from '../../kernel-model/mmu-interval-notifier.ts';

const PAGE = 4096;
/** cpu-costs.ts: the CPU time the dispatcher spends finding and calling each subscriber of an invalidation. */
const DISPATCH = DEFAULT_CPU_COSTS.notifierDispatchNs;

function setup(opts: ConstructorParameters<typeof Kernel>[0] = {}) {
  const kernel = new Kernel({ seed: 1, ...opts });
  const mm = kernel.newMm();
  const trace: TraceRecord[] = [];
  kernel.sim.trace$.subscribe((r) => trace.push(r));
  const subs = () => mm.notifierSubscriptions as MmuNotifierSubscriptions;
  const ofType = <K extends TraceRecord['type']>(type: K) =>
    trace.filter((r): r is Extract<TraceRecord, { type: K }> => r.type === type);
  return { kernel, sim: kernel.sim, mm, trace, subs, ofType };
}

/** A well-behaved driver: set_seq, record the call, say true. */
function okOps(log: string[] = []): MmuIntervalNotifierOps {
  return {
    invalidate(sub, range, curSeq) {
      mmuIntervalSetSeq(sub, curSeq);
      log.push(`${sub.name}:${MmuNotifyEvent[range.event]}:${curSeq}`);
      return true;
    },
  };
}

/** One blockable invalidation of [start, end) held open for `holdNs`. */
function* invalidate(mm: MmStruct, start: number, end: number, holdNs = 0): Co<MmuNotifierRange> {
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, start, end);
  yield* mmuNotifierInvalidateRangeStart(range);
  if (holdNs) yield* mm.kernel.sim.sleep(holdNs);
  yield* mmuNotifierInvalidateRangeEnd(range);
  return range;
}

function insert(mm: MmStruct, sub: MmuIntervalNotifier, start: number, length: number, ops = okOps(), lock?: Mutex): Co<number> {
  return mmuIntervalNotifierInsert(sub, mm, start, length, ops, lock ? { lock } : {});
}

// ---- sequence arithmetic ---------------------------------------------------------------

test('rules 1, 32: S starts at 2 and is even whenever no invalidation is running', (t) => {
  const { sim, mm, subs } = setup();
  const seen: number[] = [];
  sim.spawn('script', function* () {
    const sub = new MmuIntervalNotifier('a');
    t.is(yield* insert(mm, sub, PAGE, PAGE), 0);
    seen.push(subs().invalidateSeq);
    yield* invalidate(mm, 0, 16 * PAGE);
    seen.push(subs().invalidateSeq);
    yield* invalidate(mm, 64 * PAGE, 80 * PAGE); // overlaps nothing: S is not touched
    seen.push(subs().invalidateSeq);
    yield* invalidate(mm, PAGE, 2 * PAGE);
    seen.push(subs().invalidateSeq);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(seen, [2, 4, 4, 6]);
  t.is(subs().activeInvalidateRanges, 0);
});

test('rules 23, 32: insert with A == 0 gives seq = S - 1 (odd, not S), in the tree at once; read_begin does not wait', (t) => {
  const { sim, mm, subs } = setup();
  const sub = new MmuIntervalNotifier('a');
  let seq = -1;
  sim.spawn('script', function* () {
    yield* insert(mm, sub, 0x10000, 0x4000);
    seq = yield* mmuIntervalReadBegin(sub);
  });
  t.is(sim.run().reason, 'idle');
  t.is(subs().invalidateSeq, 2);
  t.is(sub.invalidateSeq, 1);
  t.is(seq, 1);
  t.is(sim.now(), 0);
  t.is(sub.last, 0x13fff, 'the tree stores the inclusive last address');
  t.deepEqual(subs().itree.values(), [sub]);
  t.true(subs().hasItree);
});

test('rule 23: -EOVERFLOW for an empty or wrapping range, -EINVAL on an mm without users', (t) => {
  const { sim, mm } = setup();
  const rets: number[] = [];
  sim.spawn('script', function* () {
    rets.push(yield* insert(mm, new MmuIntervalNotifier('empty'), PAGE, 0));
    rets.push(yield* insert(mm, new MmuIntervalNotifier('wraps'), ULONG_MAX - PAGE + 1, 2 * PAGE));
    rets.push(yield* insert(mm, new MmuIntervalNotifier('to the top'), 2 ** 64 - 2 * PAGE, 2 * PAGE));
    mm.users = 0;
    rets.push(yield* insert(mm, new MmuIntervalNotifier('exiting'), PAGE, PAGE));
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(rets, [-EOVERFLOW, -EOVERFLOW, 0, -EINVAL]);
});

test('rule 23: insert during an invalidation is deferred (not in the tree, seq == S); read_begin blocks until the invalidation ends', (t) => {
  const { sim, mm, subs } = setup();
  const a = new MmuIntervalNotifier('a');
  const b = new MmuIntervalNotifier('b');
  const log: string[] = [];
  const timeline: string[] = [];
  sim.spawn('script', function* () {
    yield* insert(mm, a, 0, 4 * PAGE);
    sim.spawn('munmap', function* () {
      yield* invalidate(mm, 0, 16 * PAGE, 1000);
      timeline.push(`end@${sim.now()}`);
    });
    yield* sim.sleep(10);
    t.is(subs().invalidateSeq % 2, 1, 'the tree is frozen');
    t.is(yield* insert(mm, b, 0, 4 * PAGE, okOps(log)), 0);
    t.is(b.invalidateSeq, subs().invalidateSeq);
    t.false(b.inTree);
    t.deepEqual(subs().itree.values(), [a]);
    t.true(subs().deferredList.has(b));
    // A second invalidation while b is deferred does not reach b.
    yield* invalidate(mm, 0, PAGE);
    const seq = yield* mmuIntervalReadBegin(b);
    timeline.push(`read_begin@${sim.now()}=${seq}`);
  });
  t.is(sim.run().reason, 'idle');
  // The invalidation calls 'a' (one dispatch charge) and is held 1000 ns.
  t.deepEqual(timeline, [`end@${DISPATCH + 1000}`, `read_begin@${DISPATCH + 1000}=3`]);
  t.deepEqual(log, []);
  t.deepEqual(subs().itree.values(), [a, b]);
  t.is(subs().deferredList.size, 0);
  t.is(subs().invalidateSeq, 4);
});

test('rule 23: insert while A > 0 and S even sets S |= 1, goes into the tree now, and read_begin waits', (t) => {
  const { sim, mm, subs } = setup();
  const a = new MmuIntervalNotifier('a');
  const b = new MmuIntervalNotifier('b');
  let readAt = -1;
  sim.spawn('script', function* () {
    yield* insert(mm, a, 0, PAGE);
    sim.spawn('far away', () => invalidate(mm, 1 << 30, (1 << 30) + PAGE, 500));
    yield* sim.sleep(1);
    t.is(subs().activeInvalidateRanges, 1);
    t.is(subs().invalidateSeq, 2, 'nothing overlapped: S stays even');
    yield* insert(mm, b, 8 * PAGE, PAGE);
    t.is(subs().invalidateSeq, 3);
    t.is(b.invalidateSeq, 3);
    t.true(b.inTree);
    yield* mmuIntervalReadBegin(b);
    readAt = sim.now();
  });
  t.is(sim.run().reason, 'idle');
  t.is(readAt, 500);
  t.is(subs().invalidateSeq, 4);
});

test('rules 24, 25: nested invalidations reuse the same odd cur_seq and S advances only when the last one ends', (t) => {
  const { sim, mm, subs } = setup();
  const log: string[] = [];
  const s: number[] = [];
  sim.spawn('script', function* () {
    yield* insert(mm, new MmuIntervalNotifier('a'), 0, PAGE, okOps(log));
    yield* insert(mm, new MmuIntervalNotifier('b'), 4 * PAGE, PAGE, okOps(log));
    const outer = mmuNotifierRangeInit(mm, MmuNotifyEvent.UNMAP, 0, 8 * PAGE);
    const inner = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, 4 * PAGE, 5 * PAGE);
    yield* mmuNotifierInvalidateRangeStart(outer);
    yield* mmuNotifierInvalidateRangeStart(inner);
    s.push(subs().invalidateSeq, subs().activeInvalidateRanges);
    yield* mmuNotifierInvalidateRangeEnd(inner);
    s.push(subs().invalidateSeq, subs().activeInvalidateRanges);
    yield* mmuNotifierInvalidateRangeEnd(outer);
    s.push(subs().invalidateSeq, subs().activeInvalidateRanges);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(log, ['a:UNMAP:3', 'b:UNMAP:3', 'b:CLEAR:3']);
  t.deepEqual(s, [3, 2, 3, 1, 4, 0]);
});

test('rules 24, 25: concurrent invalidations from two tasks share cur_seq; S advances at the last end', (t) => {
  const { sim, mm, subs } = setup();
  const log: string[] = [];
  const ends: string[] = [];
  sim.spawn('script', function* () {
    yield* insert(mm, new MmuIntervalNotifier('a'), 0, 16 * PAGE, okOps(log));
    sim.spawn('reclaim', function* () {
      yield* invalidate(mm, 0, PAGE, 100);
      ends.push(`reclaim@${sim.now()} S=${subs().invalidateSeq}`);
    });
    sim.spawn('munmap', function* () {
      yield* sim.sleep(50);
      yield* invalidate(mm, 8 * PAGE, 9 * PAGE, 200);
      ends.push(`munmap@${sim.now()} S=${subs().invalidateSeq}`);
    });
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(log, ['a:CLEAR:3', 'a:CLEAR:3']);
  // Each calls 'a' (one dispatch charge) before its hold: reclaim 0..DISPATCH+100 lies
  // inside munmap's 50..50+DISPATCH+200.
  t.deepEqual(ends, [`reclaim@${DISPATCH + 100} S=3`, `munmap@${50 + DISPATCH + 200} S=4`]);
});

// ---- remove -----------------------------------------------------------------------------

test('rule 30: remove during an invalidation is deferred and sleeps until S changes; no callback after it returns', (t) => {
  const { sim, mm, subs } = setup();
  const a = new MmuIntervalNotifier('a');
  const log: string[] = [];
  let removedAt = -1;
  sim.spawn('script', function* () {
    yield* insert(mm, a, 0, PAGE, okOps(log));
    sim.spawn('munmap', () => invalidate(mm, 0, PAGE, 300));
    yield* sim.sleep(10);
    const countBefore = mm.count;
    yield* mmuIntervalNotifierRemove(a);
    removedAt = sim.now();
    t.is(mm.count, countBefore - 1, 'the mm reference taken at insert is dropped');
    yield* invalidate(mm, 0, PAGE);
  });
  t.is(sim.run().reason, 'idle');
  t.is(removedAt, DISPATCH + 300, 'when the invalidation (one dispatch charge, held 300 ns) ends');
  t.deepEqual(log, ['a:CLEAR:3'], 'only the invalidation that was running when remove was called');
  t.is(subs().itree.size, 0);
  t.false(a.inserted);
});

test('rule 30: removing a subscriber whose insert is still deferred just drops it, without sleeping', (t) => {
  const { sim, mm, subs } = setup();
  const a = new MmuIntervalNotifier('a');
  const b = new MmuIntervalNotifier('b');
  let removedAt = -1;
  sim.spawn('script', function* () {
    yield* insert(mm, a, 0, PAGE);
    sim.spawn('munmap', () => invalidate(mm, 0, PAGE, 300));
    yield* sim.sleep(10);
    yield* insert(mm, b, 0, PAGE);
    t.true(subs().deferredList.has(b));
    yield* mmuIntervalNotifierRemove(b);
    removedAt = sim.now();
  });
  t.is(sim.run().reason, 'idle');
  t.is(removedAt, 10);
  t.deepEqual(subs().itree.values(), [a]);
  t.is(subs().deferredList.size, 0);
});

test('rule 30: remove with S even takes the subscriber out of the tree at once', (t) => {
  const { sim, mm, subs } = setup();
  const a = new MmuIntervalNotifier('a');
  sim.spawn('script', function* () {
    yield* insert(mm, a, 0, PAGE);
    yield* mmuIntervalNotifierRemove(a);
    t.is(sim.now(), 0);
    t.is(subs().itree.size, 0);
    // Inserted again later, it takes part again.
    t.is(yield* insert(mm, a, PAGE, PAGE), 0);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(subs().itree.values(), [a]);
});

test('rule 30: remove called from a notifier callback is flagged', (t) => {
  const { sim, mm, ofType } = setup();
  const victim = new MmuIntervalNotifier('victim');
  sim.spawn('script', function* () {
    yield* insert(mm, victim, 64 * PAGE, PAGE);
    // A classic start (S stays even: the range misses the victim) that removes it.
    yield* mmuNotifierRegister(new MmuNotifier('bad', {
      *invalidateRangeStart() {
        yield* mmuIntervalNotifierRemove(victim);
        return 0;
      },
    }), mm);
    yield* invalidate(mm, 0, PAGE);
  });
  t.is(sim.run().reason, 'idle');
  t.true(ofType('notifier-warn').some((w) => w.sub === 'victim' && /from a notifier callback/.test(w.message)));
});

// ---- invalidate return values -------------------------------------------------------------

test('rule 16: a non-blockable invalidate whose trylock fails returns false: -EAGAIN, the write side is closed, nothing after it runs', (t) => {
  const { sim, mm, subs, ofType } = setup();
  const lock = new Mutex(sim, 'umem_mutex');
  const log: string[] = [];
  const trylockOps: MmuIntervalNotifierOps = {
    invalidate(sub, range, curSeq) {
      if (!lock.trylock()) return false;
      mmuIntervalSetSeq(sub, curSeq);
      lock.unlock();
      log.push(sub.name);
      return true;
    },
  };
  let ret = 1;
  sim.spawn('script', function* () {
    yield* insert(mm, new MmuIntervalNotifier('a'), 0, PAGE, trylockOps, lock);
    yield* insert(mm, new MmuIntervalNotifier('b'), PAGE, PAGE, okOps(log));
    yield* lock.lock();
    ret = yield* mmuNotifierInvalidateRangeStartNonblock(mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, 0, 4 * PAGE));
    lock.unlock();
  });
  t.is(sim.run().reason, 'idle');
  t.is(ret, -11);
  t.deepEqual(log, [], 'b, after a in tree order, is not called');
  t.is(subs().activeInvalidateRanges, 0);
  t.is(subs().invalidateSeq, 4, 'closed as if end had run');
  t.is(ofType('invalidate-eagain').length, 1);
  t.is(ofType('invalidate-end').length, 0);
  t.is(ofType('notifier-contract').length, 0, 'a non-blockable false needs no set_seq');
});

test('rule 16: false from a blockable invalidate is warned about and iteration continues', (t) => {
  const { sim, mm, subs, ofType } = setup();
  const log: string[] = [];
  sim.spawn('script', function* () {
    yield* insert(mm, new MmuIntervalNotifier('liar'), 0, PAGE, { invalidate: () => false });
    yield* insert(mm, new MmuIntervalNotifier('b'), 0, PAGE, okOps(log));
    yield* invalidate(mm, 0, PAGE);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(log, ['b:CLEAR:3']);
  t.is(subs().invalidateSeq, 4);
  t.true(ofType('notifier-warn').some((w) => w.sub === 'liar' && /blockable/.test(w.message)));
  t.true(ofType('notifier-contract').some((w) => w.sub === 'liar' && /without mmu_interval_set_seq/.test(w.message)));
});

// ---- read side -----------------------------------------------------------------------------

test('rules 27-29: read_retry and check_retry are true exactly when an invalidation set a new seq since read_begin', (t) => {
  const { sim, mm } = setup();
  const a = new MmuIntervalNotifier('a');
  const out: boolean[] = [];
  sim.spawn('script', function* () {
    yield* insert(mm, a, 0, PAGE);
    const seq = yield* mmuIntervalReadBegin(a);
    out.push(mmuIntervalReadRetry(a, seq), mmuIntervalCheckRetry(a, seq));
    yield* invalidate(mm, 8 * PAGE, 9 * PAGE); // elsewhere: no effect on a
    out.push(mmuIntervalReadRetry(a, seq));
    yield* invalidate(mm, 0, PAGE);
    out.push(mmuIntervalReadRetry(a, seq), mmuIntervalCheckRetry(a, seq));
    const again = yield* mmuIntervalReadBegin(a);
    out.push(mmuIntervalReadRetry(a, again));
    t.is(again % 2, 1);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(out, [false, false, false, true, true, false]);
});

test('rule 27: read_begin returns the seq it read; a seq that an invalidation made current (== S) blocks until S moves', (t) => {
  const { sim, mm } = setup();
  const a = new MmuIntervalNotifier('a');
  const got: string[] = [];
  sim.spawn('script', function* () {
    yield* insert(mm, a, 0, PAGE);
    sim.spawn('munmap', () => invalidate(mm, 0, PAGE, 700));
    // After 'a' was called (its dispatch charge) and set_seq made its seq current. (Before
    // the call, read_begin returns the old seq without waiting, as mmu_interval_read_begin
    // does; the retry catches that one: rules 27-29.)
    yield* sim.sleep(DISPATCH + 1);
    const seq = yield* mmuIntervalReadBegin(a);
    got.push(`${seq}@${sim.now()}`);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(got, [`3@${DISPATCH + 700}`]);
});

test('rules 26, 28: set_seq or read_retry without the lock declared at insert records notifier-contract', (t) => {
  const { sim, mm, ofType } = setup();
  const lock = new Mutex(sim, 'umem_mutex');
  const a = new MmuIntervalNotifier('a');
  const sloppy: MmuIntervalNotifierOps = {
    invalidate(sub, _range, curSeq) {
      mmuIntervalSetSeq(sub, curSeq); // lock not taken
      return true;
    },
  };
  sim.spawn('script', function* () {
    yield* insert(mm, a, 0, PAGE, sloppy, lock);
    yield* invalidate(mm, 0, PAGE);
    const seq = yield* mmuIntervalReadBegin(a);
    mmuIntervalReadRetry(a, seq); // lock not held
    yield* lock.lock();
    mmuIntervalReadRetry(a, seq); // fine
    lock.unlock();
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(ofType('notifier-contract').map((r) => r.message), [
    'mmu_interval_set_seq called without umem_mutex held',
    'mmu_interval_read_retry called without umem_mutex held',
  ]);
});

test('rule 26: an invalidate that returns true without calling set_seq records notifier-contract', (t) => {
  const { sim, mm, ofType } = setup();
  sim.spawn('script', function* () {
    yield* insert(mm, new MmuIntervalNotifier('forgetful'), 0, PAGE, { invalidate: () => true });
    yield* invalidate(mm, 0, PAGE);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(ofType('notifier-contract').map((r) => `${r.sub}: ${r.message}`),
    ['forgetful: invalidate returned true without mmu_interval_set_seq']);
});

test('rule 8: holding the driver mutex across read_begin while invalidate takes it is a lock-order report', (t) => {
  const { sim, mm, ofType } = setup();
  const lock = new Mutex(sim, 'umem_mutex', 'umem_mutex');
  const a = new MmuIntervalNotifier('a');
  const ops: MmuIntervalNotifierOps = {
    *invalidate(sub, _range, curSeq) {
      yield* lock.lock();
      mmuIntervalSetSeq(sub, curSeq);
      lock.unlock();
      return true;
    },
  };
  sim.spawn('script', function* () {
    yield* insert(mm, a, 0, PAGE, ops, lock);
    yield* lock.lock();
    yield* mmuIntervalReadBegin(a); // wrong: the lock is held
    lock.unlock();
    yield* invalidate(mm, 0, PAGE);
  });
  t.is(sim.run().reason, 'idle');
  const reports = ofType('lock-order');
  t.is(reports.length, 1);
  t.is(reports[0]?.first, 'mmu_notifier_invalidate_range_start');
  t.is(reports[0]?.second, 'umem_mutex');
  t.is(sim.lockdep.orderViolations.length, 1);
});

test('rule 8: the correct order (read_begin, then the lock) gives no lock-order report', (t) => {
  const { sim, mm, ofType } = setup();
  const lock = new Mutex(sim, 'umem_mutex');
  const a = new MmuIntervalNotifier('a');
  const ops: MmuIntervalNotifierOps = {
    *invalidate(sub, _range, curSeq) {
      yield* lock.lock();
      mmuIntervalSetSeq(sub, curSeq);
      lock.unlock();
      return true;
    },
  };
  sim.spawn('script', function* () {
    yield* insert(mm, a, 0, PAGE, ops, lock);
    const seq = yield* mmuIntervalReadBegin(a);
    yield* lock.lock();
    t.false(mmuIntervalReadRetry(a, seq));
    lock.unlock();
    yield* invalidate(mm, 0, PAGE);
  });
  t.is(sim.run().reason, 'idle');
  t.is(ofType('lock-order').length, 0);
  t.is(ofType('notifier-contract').length, 0);
});

test('rule 23: on linux-4.18 the interval notifier does not exist: insert is refused with -EINVAL naming 5.5', (t) => {
  const { sim, mm, ofType } = setup({ profile: PROFILES['linux-4.18'] });
  let ret = 0;
  sim.spawn('script', function* () {
    ret = yield* insert(mm, new MmuIntervalNotifier('a'), 0, PAGE);
  });
  t.is(sim.run().reason, 'idle');
  t.is(ret, -EINVAL);
  t.is(mm.notifierSubscriptions, null);
  const refused = ofType('interface-refused');
  t.is(refused.length, 1);
  t.regex(refused[0]?.message ?? '', /introduced in Linux 5\.5/);
});

// ---- the interval tree ---------------------------------------------------------------------

/** A test interval: the tree holds nodes that extend IntervalTreeNode (the kernel embeds it). */
class Item extends IntervalTreeNode {
  constructor(start: number, last: number, readonly id: string | number) {
    super(start, last);
  }
}

const ids = (items: Item[]) => items.map((x) => x.id);

test('interval tree: equal starts come out in insertion order, and one of several identical intervals can be removed', (t) => {
  const tree = new IntervalTree<Item>();
  const [a, b, c, d, e] = [new Item(10, 20, 'a'), new Item(10, 15, 'b'), new Item(5, 30, 'c'), new Item(10, 20, 'd'), new Item(10, 20, 'e')];
  for (const x of [a, b, c, d, e]) t.true(tree.insert(x));
  t.false(tree.insert(a), 'a node already in the tree is refused');
  t.is(tree.size, 5);
  t.deepEqual(ids(tree.overlapping(12, 12)), ['c', 'a', 'b', 'd', 'e']);
  t.true(tree.remove(d));
  t.false(tree.remove(d), 'twice is refused');
  t.deepEqual(ids(tree.overlapping(0, 100)), ['c', 'a', 'b', 'e']);
  tree.remove(a);
  tree.remove(e);
  t.deepEqual(ids(tree.overlapping(16, 40)), ['c']);
  t.true(tree.anyOverlapping(30, 30));
  t.false(tree.anyOverlapping(31, 1000));
});

type Op = { kind: 'insert'; start: number; len: number } | { kind: 'remove'; pick: number } | { kind: 'query'; a: number; len: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('insert' as const), start: fc.integer({ min: 0, max: 200 }), len: fc.integer({ min: 1, max: 60 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('query' as const), a: fc.integer({ min: 0, max: 260 }), len: fc.integer({ min: 1, max: 80 }) }) },
);

testProp('interval tree: the overlap query returns exactly the overlapping intervals, in (start, insertion) order, like a brute-force list',
  [fc.array(opArb, { maxLength: 300 })],
  (t, ops) => {
    const tree = new IntervalTree<Item>();
    const live: { start: number; last: number; id: number; node: Item }[] = [];
    let id = 0;
    for (const op of ops) {
      if (op.kind === 'insert') {
        const last = op.start + op.len - 1;
        const node = new Item(op.start, last, id);
        tree.insert(node);
        live.push({ start: op.start, last, id, node });
        id++;
      } else if (op.kind === 'remove') {
        if (live.length === 0) continue;
        const [gone] = live.splice(op.pick % live.length, 1);
        t.true(tree.remove(gone!.node));
      } else {
        const b = op.a + op.len - 1;
        const expected = live
          .filter((x) => x.start <= b && x.last >= op.a)
          .sort((x, y) => x.start - y.start || x.id - y.id)
          .map((x) => x.id);
        t.deepEqual(ids(tree.overlapping(op.a, b)), expected);
        t.is(tree.anyOverlapping(op.a, b), expected.length > 0);
      }
    }
    t.is(tree.size, live.length);
  },
  { numRuns: 200, seed: 20_200_101 },
);

test('interval tree: 100k subscribers insert, query and remove in well under a second each', (t) => {
  const tree = new IntervalTree<Item>();
  const nodes: Item[] = [];
  const n = 100_000;
  for (let i = 0; i < n; i++) {
    const x = new Item(((i * 7919) % n) * PAGE, ((i * 7919) % n) * PAGE + 2 * PAGE - 1, i);
    tree.insert(x);
    nodes.push(x);
  }
  t.is(tree.size, n);
  t.is(tree.overlapping(5000 * PAGE, 5000 * PAGE).length, 2);
  t.is(tree.overlapping(0, ULONG_MAX).length, n);
  for (let i = 0; i < n; i += 2) tree.remove(nodes[i]!);
  t.is(tree.size, n / 2);
  t.is(tree.overlapping(0, ULONG_MAX).length, n / 2);
});
