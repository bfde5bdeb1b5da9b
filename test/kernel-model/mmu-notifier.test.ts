/**
 * The mmu notifier core: per-mm subscriptions, classic subscribers (register, get/put,
 * unregister, release), dispatch of invalidations (kernel rules 1-16, 33-38) and the
 * contexts callbacks run in. Invalidations are driven by calling the dispatch entry
 * points directly from tasks, as the mm code does.
 */
import test from 'ava';
import { map, timer } from 'rxjs';
import { Kernel, type NotifierStreamEvent } from '../../kernel-model/kernel.ts';
import { PROFILES } from '../../kernel-model/profile.ts';
import { EAGAIN, EINVAL, ENOMEM } from '../../kernel-model/errno.ts';
import { ULONG_MAX } from '../../kernel-model/constants.ts';
import { DEFAULT_CPU_COSTS } from '../../kernel-model/cpu-costs.ts';
import { Mutex, type Co, type TraceRecord } from '../../kernel-model/sim/index.ts';
import type { MmStruct } from '../../kernel-model/mm.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit, type MmuNotifierRange } from '../../kernel-model/mmu-notifier-range.ts';
import {
  MmuNotifier, mmuNotifierArchInvalidateSecondaryTlbs, mmuNotifierClearFlushYoung, mmuNotifierClearYoung,
  mmuNotifierGet, mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart,
  mmuNotifierInvalidateRangeStartNonblock, mmuNotifierPut, mmuNotifierRegister, mmuNotifierRelease,
  mmuNotifierSynchronize, mmuNotifierTestYoung, mmuNotifierUnregister,
  type MmuNotifierOps, type MmuNotifierSubscriptions,
} from '../../kernel-model/mmu-notifier.ts';
import {
  MmuIntervalNotifier, mmuIntervalNotifierInsert, mmuIntervalSetSeq, type MmuIntervalNotifierOps,
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
  /** "sub.op" for every callback that started, in order. */
  const calls = () => ofType('callback-start').map((r) => `${r.sub}.${r.op}`);
  return { kernel, sim: kernel.sim, mm, trace, subs, ofType, calls };
}

/** A classic subscriber that logs start and end, optionally sleeping `ns` in each. */
function logger(name: string, log: string[] = [], sleepNs = 0, mm?: MmStruct): MmuNotifier {
  const sim = () => (mm as MmStruct).kernel.sim;
  return new MmuNotifier(name, {
    *invalidateRangeStart(_sub, range) {
      if (sleepNs) yield* sim().sleep(sleepNs);
      log.push(`${name}.start[${range.start.toString(16)},${range.end.toString(16)})`);
      return 0;
    },
    *invalidateRangeEnd(_sub, range) {
      if (sleepNs) yield* sim().sleep(sleepNs);
      log.push(`${name}.end[${range.start.toString(16)},${range.end.toString(16)})`);
    },
  });
}

const intervalOk = (log: string[] = []): MmuIntervalNotifierOps => ({
  invalidate(sub, range, curSeq) {
    mmuIntervalSetSeq(sub, curSeq);
    log.push(`${sub.name}.invalidate[${range.start.toString(16)},${range.end.toString(16)}) ${MmuNotifyEvent[range.event]}`);
    return true;
  },
});

function* invalidate(mm: MmStruct, start: number, end: number, event = MmuNotifyEvent.CLEAR, holdNs = 0): Co<MmuNotifierRange> {
  const range = mmuNotifierRangeInit(mm, event, start, end);
  yield* mmuNotifierInvalidateRangeStart(range);
  if (holdNs) yield* mm.kernel.sim.sleep(holdNs);
  yield* mmuNotifierInvalidateRangeEnd(range);
  return range;
}

// ---- subscriptions and registration ------------------------------------------------------

test('rule 1: the subscriptions record is created by the first registration with S = 2, A = 0 and no interval tree', (t) => {
  const { sim, mm, subs } = setup();
  const sub = new MmuNotifier('kvm');
  sim.spawn('script', function* () {
    t.is(mm.notifierSubscriptions, null);
    yield* invalidate(mm, 0, PAGE); // no subscriptions: nothing to do, nothing breaks
    t.is(mm.notifierSubscriptions, null);
    t.is(yield* mmuNotifierRegister(sub, mm), 0);
  });
  t.is(sim.run().reason, 'idle');
  t.is(subs().invalidateSeq, 2);
  t.is(subs().activeInvalidateRanges, 0);
  t.false(subs().hasItree);
  t.deepEqual(subs().list, [sub]);
  t.is(sub.users, 1);
  t.is(sub.mm, mm);
  t.is(mm.count, 2, 'registration takes an mm_count reference');
});

test('rule 2: registration waits for invalidations in flight and receives only those that start after it returns', (t) => {
  const { sim, mm } = setup();
  const log: string[] = [];
  let registeredAt = -1;
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(new MmuNotifier('first'), mm); // the mm has subscriptions
    sim.spawn('reclaim', () => invalidate(mm, 0, PAGE, MmuNotifyEvent.CLEAR, 400));
    yield* sim.sleep(10);
    yield* mmuNotifierRegister(logger('late', log), mm);
    registeredAt = sim.now();
    yield* invalidate(mm, PAGE, 2 * PAGE);
  });
  t.is(sim.run().reason, 'idle');
  t.is(registeredAt, 400);
  t.deepEqual(log, ['late.start[1000,2000)', 'late.end[1000,2000)']);
});

test('rule 2: registration on an mm without users is refused', (t) => {
  const { sim, mm } = setup();
  let ret = 0;
  sim.spawn('script', function* () {
    mm.users = 0;
    ret = yield* mmuNotifierRegister(new MmuNotifier('late'), mm);
  });
  t.is(sim.run().reason, 'idle');
  t.is(ret, -EINVAL);
});

test('rule 3: arch_invalidate_secondary_tlbs together with invalidate_range_start is refused with -EINVAL and a warning', (t) => {
  const { sim, mm, ofType } = setup();
  let ret = 0;
  sim.spawn('script', function* () {
    ret = yield* mmuNotifierRegister(new MmuNotifier('sva', {
      archInvalidateSecondaryTlbs() {},
      invalidateRangeStart: () => 0,
    }), mm);
  });
  t.is(sim.run().reason, 'idle');
  t.is(ret, -EINVAL);
  t.is(ofType('notifier-warn').length, 1);
  t.is(mm.notifierSubscriptions, null);
});

test('rules 4, 5: get returns the subscriber registered with the same ops; the last put unhooks it and frees it after a grace period, without ->release', (t) => {
  const { sim, mm, subs, calls } = setup();
  const events: string[] = [];
  const ops: MmuNotifierOps = {
    allocNotifier: () => new MmuNotifier('odp'),
    freeNotifier: (sub) => events.push(`free ${sub.name}@${sim.now()}`),
    release: () => { events.push('release'); },
  };
  sim.spawn('script', function* () {
    const a = yield* mmuNotifierGet(ops, mm);
    const b = yield* mmuNotifierGet(ops, mm);
    t.true(a instanceof MmuNotifier);
    t.is(a, b);
    const sub = a as MmuNotifier;
    t.is(sub.users, 2);
    t.is(mm.count, 2);
    mmuNotifierPut(sub);
    t.deepEqual(subs().list, [sub]);
    mmuNotifierPut(sub);
    t.deepEqual(subs().list, [], 'unhooked at once');
    t.deepEqual(events, [], 'freed asynchronously');
    yield* mmuNotifierSynchronize(mm.kernel);
    t.deepEqual(events, ['free odp@0']);
    t.is(mm.count, 1, 'the mm reference is dropped with the free');
    yield* invalidate(mm, 0, PAGE);
    yield* mmuNotifierRelease(mm);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(calls(), []);
});

test('rule 4: get propagates an alloc_notifier error', (t) => {
  const { sim, mm } = setup();
  let ret: unknown;
  sim.spawn('script', function* () {
    ret = yield* mmuNotifierGet({ allocNotifier: () => -ENOMEM }, mm);
  });
  t.is(sim.run().reason, 'idle');
  t.is(ret, -ENOMEM);
});

test('rule 6: unregister runs ->release itself, once, unhooks, and drops the mm reference', (t) => {
  const { sim, mm, subs } = setup();
  let releases = 0;
  const sub = new MmuNotifier('kvm', { release: () => { releases++; } });
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(sub, mm);
    yield* mmuNotifierUnregister(sub, mm);
    yield* invalidate(mm, 0, PAGE);
    yield* mmuNotifierRelease(mm);
  });
  t.is(sim.run().reason, 'idle');
  t.is(releases, 1);
  t.deepEqual(subs().list, []);
  t.is(mm.count, 1);
});

test('rule 6: unregister waits for a callback of the subscriber that is still running', (t) => {
  const { sim, mm } = setup();
  const log: string[] = [];
  let unregisteredAt = -1;
  const sub = logger('slow', log, 300, mm);
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(sub, mm);
    sim.spawn('munmap', () => invalidate(mm, 0, PAGE));
    yield* sim.sleep(10);
    yield* mmuNotifierUnregister(sub, mm);
    unregisteredAt = sim.now();
  });
  t.is(sim.run().reason, 'idle');
  // The start callback is entered after its dispatch charge and sleeps 300 ns.
  t.is(unregisteredAt, DISPATCH + 300, 'after the start callback returned');
  t.deepEqual(log, ['slow.start[0,1000)'], 'unhooked before the end was issued');
});

// ---- dispatch ---------------------------------------------------------------------------

test('rule 12: start calls the interval subscribers in tree order, then the classic ones in list order (newest first); end calls the classic ends', (t) => {
  const { sim, mm, calls } = setup();
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(logger('c1'), mm);
    yield* mmuNotifierRegister(logger('c2'), mm);
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('i-high'), mm, 8 * PAGE, PAGE, intervalOk());
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('i-low-a'), mm, 0, 4 * PAGE, intervalOk());
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('i-low-b'), mm, 0, PAGE, intervalOk());
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('i-far'), mm, 64 * PAGE, PAGE, intervalOk());
    yield* invalidate(mm, 0, 16 * PAGE);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(calls(), [
    'i-low-a.invalidate', 'i-low-b.invalidate', 'i-high.invalidate',
    'c2.invalidate_range_start', 'c1.invalidate_range_start',
    'c2.invalidate_range_end', 'c1.invalidate_range_end',
  ]);
});

test('rule 13: no clipping: interval subscribers get the whole range, classic ones every range of the mm', (t) => {
  const { sim, mm } = setup();
  const log: string[] = [];
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(logger('classic', log), mm);
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('one-page'), mm, 4 * PAGE, PAGE, intervalOk(log));
    yield* invalidate(mm, 0, 16 * PAGE);
    yield* invalidate(mm, 1 << 30, (1 << 30) + PAGE);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(log, [
    'one-page.invalidate[0,10000) CLEAR', 'classic.start[0,10000)', 'classic.end[0,10000)',
    'classic.start[40000000,40001000)', 'classic.end[40000000,40001000)',
  ]);
});

test('rule 12: each callback runs in the invalidating task, one after another, which waits for each in virtual time (coroutine or Observable)', (t) => {
  const { sim, mm } = setup();
  const at: string[] = [];
  sim.spawn('script', function* () {
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('batched'), mm, 0, PAGE, {
      invalidate: (sub, _r, curSeq) => {
        mmuIntervalSetSeq(sub, curSeq);
        return timer(500, sim.scheduler).pipe(map(() => true));
      },
    });
    yield* mmuNotifierRegister(new MmuNotifier('slow', {
      *invalidateRangeStart() { yield* sim.sleep(200); at.push(`start done@${sim.now()}`); return 0; },
      invalidateRangeEnd() { at.push(`end@${sim.now()}`); },
    }), mm);
    yield* invalidate(mm, 0, PAGE, MmuNotifyEvent.CLEAR, 1000);
    at.push(`returned@${sim.now()}`);
  });
  t.is(sim.run().reason, 'idle');
  // Each subscriber's start is entered after its dispatch charge (interval, then classic);
  // the interval's Observable takes 500 ns, the classic start 200 ns, the hold 1000 ns.
  const startDone = 2 * DISPATCH + 500 + 200;
  t.deepEqual(at, [`start done@${startDone}`, `end@${startDone + 1000}`, `returned@${startDone + 1000}`]);
});

// ---- failures and non-blockable ranges --------------------------------------------------------

test('rules 14, 16: a non-blockable invalidation whose interval subscriber fails its trylock returns -EAGAIN: no classic start, no end', (t) => {
  const { sim, mm, subs, calls, ofType } = setup();
  const lock = new Mutex(sim, 'umem_mutex');
  const published: NotifierStreamEvent[] = [];
  mm.kernel.notifier$.subscribe((e) => published.push(e));
  let ret = 0;
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(logger('classic'), mm);
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('odp'), mm, 0, PAGE, {
      invalidate(sub, _range, curSeq) {
        if (!lock.trylock()) return false;
        mmuIntervalSetSeq(sub, curSeq);
        lock.unlock();
        return true;
      },
    }, { lock });
    sim.spawn('fault', function* () {
      yield* lock.lock();
      yield* sim.sleep(1000);
      lock.unlock();
    });
    yield* sim.sleep(1);
    const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, 0, 4 * PAGE);
    ret = yield* mmuNotifierInvalidateRangeStartNonblock(range);
  });
  t.is(sim.run().reason, 'idle');
  t.is(ret, -EAGAIN);
  t.deepEqual(calls(), ['odp.invalidate']);
  t.is(ofType('invalidate-eagain').length, 1);
  t.is(ofType('invalidate-end').length, 0);
  t.is(subs().activeInvalidateRanges, 0);
  t.is(subs().invalidateSeq, 4);
  t.deepEqual(published.map((e) => `${e.phase} blockable=${e.blockable} seq=${e.curSeq}`), ['start blockable=false seq=3', 'eagain blockable=false seq=3']);
});

test('rule 14: a classic start returning -EAGAIN in a non-blockable range: the rest are still started, then every classic end runs, and the error is returned', (t) => {
  const { sim, mm, calls, ofType } = setup();
  let ret = 0;
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(logger('c-last'), mm);
    yield* mmuNotifierRegister(new MmuNotifier('busy', { invalidateRangeStart: () => -EAGAIN }), mm);
    yield* mmuNotifierRegister(logger('c-first'), mm);
    const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, 0, PAGE);
    ret = yield* mmuNotifierInvalidateRangeStartNonblock(range);
    // The caller must not call end now; doing so is flagged and ignored.
    yield* mmuNotifierInvalidateRangeEnd(range);
  });
  t.is(sim.run().reason, 'idle');
  t.is(ret, -EAGAIN);
  t.deepEqual(calls(), [
    'c-first.invalidate_range_start', 'busy.invalidate_range_start', 'c-last.invalidate_range_start',
    'c-first.invalidate_range_end', 'c-last.invalidate_range_end',
  ]);
  t.is(ofType('invalidate-eagain').length, 1);
  t.deepEqual(ofType('notifier-warn').map((w) => w.sub), ['mmu_notifier core']);
});

test('rule 14: a classic -EAGAIN after a successful interval phase leaves the interval side open (A stays raised, S odd), as the kernel does', (t) => {
  const { sim, mm, subs, ofType } = setup();
  let ret = 0;
  sim.spawn('script', function* () {
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('odp'), mm, 0, PAGE, intervalOk());
    yield* mmuNotifierRegister(new MmuNotifier('busy', { invalidateRangeStart: () => -EAGAIN }), mm);
    ret = yield* mmuNotifierInvalidateRangeStartNonblock(mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, 0, PAGE));
  });
  t.is(sim.run().reason, 'idle');
  t.is(ret, -EAGAIN);
  t.is(subs().activeInvalidateRanges, 1);
  t.is(subs().invalidateSeq, 3);
  t.is(ofType('note').filter((n) => /interval side is not closed/.test(n.text)).length, 1);
});

test('rule 14: a non-zero start in a blockable range, a code other than -EAGAIN, and a failing start with an end op are each warned about', (t) => {
  const { sim, mm, ofType, calls } = setup();
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(new MmuNotifier('both', { invalidateRangeStart: () => -EAGAIN, invalidateRangeEnd() {} }), mm);
    yield* mmuNotifierRegister(new MmuNotifier('weird', { invalidateRangeStart: () => -EINVAL }), mm);
    yield* invalidate(mm, 0, PAGE);
  });
  t.is(sim.run().reason, 'idle');
  const warns = ofType('notifier-warn').map((w) => `${w.sub}: ${w.message}`);
  t.true(warns.some((w) => w.startsWith('weird: invalidate_range_start returned EINVAL in a blockable range')));
  t.true(warns.some((w) => w.startsWith('both: invalidate_range_start returned EAGAIN in a blockable range')));
  t.true(warns.some((w) => w.startsWith('both: a subscriber whose invalidate_range_start can fail must not implement invalidate_range_end')));
  // The blockable wrapper ignores the error, so the ends run twice: core, then caller.
  t.deepEqual(calls().filter((c) => c.endsWith('_end')), ['both.invalidate_range_end', 'both.invalidate_range_end']);
});

test('rule 15: a callback that sleeps in a non-blockable range records might-sleep, in start and in end', (t) => {
  const { sim, mm, ofType } = setup();
  const lock = new Mutex(sim, 'drv_mutex');
  let ret = -1;
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(new MmuNotifier('sleepy', {
      *invalidateRangeStart() { yield* lock.lock(); lock.unlock(); return 0; },
      *invalidateRangeEnd() { yield* sim.sleep(10); },
    }), mm);
    const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, 0, PAGE);
    ret = yield* mmuNotifierInvalidateRangeStartNonblock(range);
    yield* mmuNotifierInvalidateRangeEnd(range);
    yield* invalidate(mm, 0, PAGE); // blockable: sleeping is fine
  });
  t.is(sim.run().reason, 'idle');
  t.is(ret, 0);
  t.deepEqual(ofType('might-sleep').map((r) => `${r.what} in ${r.context}`), [
    'mutex_lock(drv_mutex) in non-blockable invalidation',
    'sleep 10 ns in non-blockable invalidation',
  ]);
});

test('rules 15, 16: a sleeping interval invalidate in a non-blockable range records might-sleep', (t) => {
  const { sim, mm, ofType } = setup();
  sim.spawn('script', function* () {
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('odp'), mm, 0, PAGE, {
      *invalidate(sub, _r, curSeq) { mmuIntervalSetSeq(sub, curSeq); yield* sim.sleep(5); return true; },
    });
    const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, 0, PAGE);
    t.is(yield* mmuNotifierInvalidateRangeStartNonblock(range), 0);
    yield* mmuNotifierInvalidateRangeEnd(range);
  });
  t.is(sim.run().reason, 'idle');
  t.is(ofType('might-sleep').length, 1);
});

test('linux-3.0: every callback runs in RCU atomic context; sleeping records might-sleep; interval insert is refused naming 5.5, the non-blocking start naming 4.19', (t) => {
  const { sim, mm, ofType } = setup({ profile: PROFILES['linux-3.0'] });
  const rets: number[] = [];
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(new MmuNotifier('ib_umem', {
      *invalidateRangeStart() { yield* sim.sleep(100); return 0; },
      *release() { yield* sim.sleep(1); },
    }), mm);
    yield* invalidate(mm, 0, PAGE);
    rets.push(yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('odp'), mm, 0, PAGE, intervalOk()));
    rets.push(yield* mmuNotifierInvalidateRangeStartNonblock(mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, 0, PAGE)));
    yield* mmuNotifierRelease(mm);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(rets, [-EINVAL, -EINVAL]);
  t.deepEqual(ofType('might-sleep').map((r) => `${r.what} in ${r.context}`), [
    'sleep 100 ns in RCU notifier callback',
    'sleep 1 ns in RCU notifier callback',
  ]);
  const refused = ofType('interface-refused').map((r) => r.message);
  t.regex(refused[0] ?? '', /mmu_interval_notifier_insert .*linux-3\.0.*5\.5/);
  t.regex(refused[1] ?? '', /nonblock .*4\.19/);
});

test('rule 8: an invalidation holds the lockdep pseudo-lock while its callbacks run', (t) => {
  const { sim, mm } = setup();
  const held: string[][] = [];
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(new MmuNotifier('probe', {
      invalidateRangeStart: () => { held.push([...(sim.current?.held ?? [])]); return 0; },
      invalidateRangeEnd: () => { held.push([...(sim.current?.held ?? [])]); },
    }), mm);
    yield* invalidate(mm, 0, PAGE);
    held.push([...(sim.current?.held ?? [])]);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(held, [['mmu_notifier_invalidate_range_start'], ['mmu_notifier_invalidate_range_start'], []]);
});

test('rule 10: end without start is flagged and does nothing', (t) => {
  const { sim, mm, subs, ofType } = setup();
  sim.spawn('script', function* () {
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('a'), mm, 0, PAGE, intervalOk());
    yield* mmuNotifierInvalidateRangeEnd(mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, 0, PAGE));
  });
  t.is(sim.run().reason, 'idle');
  t.is(subs().activeInvalidateRanges, 0);
  t.is(ofType('notifier-warn').length, 1);
});

// ---- release ------------------------------------------------------------------------------

test('rules 33-35: release sends RELEASE over [0, ULONG_MAX) to interval subscribers, ->release once to classic ones, which are unhooked', (t) => {
  const { sim, mm, subs, ofType } = setup();
  const log: string[] = [];
  let releases = 0;
  const classic = new MmuNotifier('kvm', {
    release: () => { releases++; },
    invalidateRangeStart: () => { log.push('kvm.start'); return 0; },
  });
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(classic, mm);
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('odp'), mm, 0x10000, PAGE, intervalOk(log));
    yield* mmuNotifierRelease(mm);
    t.deepEqual(subs().list, []);
    t.false(classic.hooked);
    // exit_mmap's UNMAP follows: interval subscribers still get it, classic ones do not.
    yield* invalidate(mm, 0, ULONG_MAX, MmuNotifyEvent.UNMAP);
    yield* mmuNotifierUnregister(classic, mm); // after release: no second ->release
  });
  t.is(sim.run().reason, 'idle');
  t.is(releases, 1);
  t.deepEqual(log, ['odp.invalidate[0,10000000000000000) RELEASE', 'odp.invalidate[0,10000000000000000) UNMAP']);
  t.deepEqual(ofType('invalidate-start').map((r) => `${r.event} blockable=${r.blockable}`), ['RELEASE blockable=true', 'UNMAP blockable=true']);
  t.is(subs().invalidateSeq, 6);
  t.is(mm.count, 2, 'the interval subscriber still holds its reference; the classic one was dropped');
});

test('rule 34: an interval subscriber answering false to RELEASE is warned about', (t) => {
  const { sim, mm, ofType } = setup();
  sim.spawn('script', function* () {
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('odp'), mm, 0, PAGE, { invalidate: () => false });
    yield* mmuNotifierRelease(mm);
  });
  t.is(sim.run().reason, 'idle');
  t.true(ofType('notifier-warn').some((w) => /RELEASE/.test(w.message)));
});

test('rule 5: put may be called from inside ->release', (t) => {
  const { sim, mm, subs } = setup();
  const freed: string[] = [];
  const ops: MmuNotifierOps = {
    allocNotifier: () => new MmuNotifier('odp'),
    freeNotifier: (s) => freed.push(s.name),
    release: (s) => mmuNotifierPut(s),
  };
  sim.spawn('script', function* () {
    yield* mmuNotifierGet(ops, mm);
    yield* mmuNotifierRelease(mm);
    yield* mmuNotifierSynchronize(mm.kernel);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(freed, ['odp']);
  t.deepEqual(subs().list, []);
  t.is(mm.count, 1);
});

// ---- aging and secondary TLBs ---------------------------------------------------------------

test('rule 37: clear_flush_young and clear_young OR every classic answer; test_young stops at the first true; interval subscribers get none', (t) => {
  const { sim, mm, calls } = setup();
  const got: boolean[] = [];
  const answering = (name: string, answer: boolean) => new MmuNotifier(name, {
    clearFlushYoung: () => answer,
    clearYoung: () => answer,
    testYoung: () => answer,
  });
  sim.spawn('script', function* () {
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('odp'), mm, 0, PAGE, intervalOk());
    yield* mmuNotifierRegister(answering('old', false), mm);
    yield* mmuNotifierRegister(answering('young', true), mm);
    yield* mmuNotifierRegister(answering('new', false), mm);
    got.push(yield* mmuNotifierClearFlushYoung(mm, 0, PAGE));
    got.push(yield* mmuNotifierClearYoung(mm, 0, PAGE));
    got.push(yield* mmuNotifierTestYoung(mm, 0, PAGE));
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(got, [true, true, true]);
  t.deepEqual(calls(), [
    'new.clear_flush_young', 'young.clear_flush_young', 'old.clear_flush_young',
    'new.clear_young', 'young.clear_young', 'old.clear_young',
    'new.test_young', 'young.test_young',
  ]);
});

test('rule 37: with no classic subscriber the young callbacks answer false', (t) => {
  const { sim, mm } = setup();
  const got: boolean[] = [];
  sim.spawn('script', function* () {
    got.push(yield* mmuNotifierClearFlushYoung(mm, 0, PAGE));
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('odp'), mm, 0, PAGE, intervalOk());
    got.push(yield* mmuNotifierTestYoung(mm, 0, PAGE));
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(got, [false, false]);
});

test('rule 38: arch_invalidate_secondary_tlbs reaches classic subscribers under the page-table lock (atomic)', (t) => {
  const { sim, mm, ofType } = setup();
  const seen: string[] = [];
  sim.spawn('script', function* () {
    yield* mmuNotifierRegister(new MmuNotifier('sva', {
      *archInvalidateSecondaryTlbs(_s, _mm, start, end) {
        seen.push(`${start.toString(16)}-${end.toString(16)}`);
        yield* sim.sleep(1); // wrong: it may not sleep
      },
    }), mm);
    yield* mmuNotifierArchInvalidateSecondaryTlbs(mm, 0x1000, 0x3000);
  });
  t.is(sim.run().reason, 'idle');
  t.deepEqual(seen, ['1000-3000']);
  t.deepEqual(ofType('might-sleep').map((r) => r.context), ['page table lock held']);
});

test('the notifier stream and the trace see every start and end with the interval sequence', (t) => {
  const { sim, mm, ofType } = setup();
  const published: string[] = [];
  mm.kernel.notifier$.subscribe((e) => published.push(`${e.phase}@${e.time} seq=${e.curSeq} [${e.range.start},${e.range.end})`));
  sim.spawn('script', function* () {
    yield* invalidate(mm, 0, PAGE, MmuNotifyEvent.CLEAR, 5);
    yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('odp'), mm, 0, PAGE, intervalOk());
    yield* invalidate(mm, 0, PAGE, MmuNotifyEvent.CLEAR, 5);
  });
  t.is(sim.run().reason, 'idle');
  // No subscriber, no dispatch charge the first time; the second start calls 'odp' (one charge)
  // before the 5 ns hold.
  t.deepEqual(published, ['start@0 seq=0 [0,4096)', 'end@5 seq=0 [0,4096)', 'start@5 seq=3 [0,4096)',
    `end@${10 + DISPATCH} seq=3 [0,4096)`]);
  t.is(ofType('invalidate-start').length, 2);
  t.is(ofType('invalidate-end').length, 2);
});
