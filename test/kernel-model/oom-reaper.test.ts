/**
 * The OOM reaper (kernel rules 14-17, hazard H5): non-blockable CLEARs; a subscriber that
 * would have to sleep answers -EAGAIN (interval: false), the VMA is skipped without an
 * end, and the reap is retried every 100 ms up to MAX_OOM_REAP_RETRIES times.
 */
import test from 'ava';
import {
  EAGAIN, MmuIntervalNotifier, MmuNotifier, Mutex, mmuIntervalNotifierInsert, mmuIntervalSetSeq,
  mmuNotifierRangeBlockable, mmuNotifierRegister,
} from '../../kernel-model/index.ts';
import { MAX_OOM_REAP_RETRIES, OOM_REAP_RETRY_NS, oomKill, type OomReapResult } from '../../kernel-model/oom-kill.ts';
import { DEFAULT_CPU_COSTS } from '../../kernel-model/cpu-costs.ts';
import { P, fill, frameAt, ok } from './_helpers.ts';
import { ANON, RW, SHARED_ANON, rigOn, traceOf } from './_pin-helpers.ts';

test('rules 15-17 (H5): an interval subscriber whose try-lock fails answers false: -EAGAIN, the VMA is skipped (no end), and the reap is retried until the lock is free', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  const mutex = new Mutex(k.sim, 'drv.mutex');
  const sub = new MmuIntervalNotifier('drv');
  const calls: number[] = [];
  let result: OomReapResult | undefined;
  let frames: number[] = [];
  let a = 0;
  const mid: { mapped?: number; seen?: number } = {};
  // The set-up's page faults take CPU time (cpu-costs.ts): the worker and the OOM kill
  // start once the subscriber is inserted, at t0, 1 and 2 ns later as before.
  let t0 = -1;
  p.spawnThread('main', function* () {
    a = ok(yield* p.mmap(0, 4 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 4 * P)), 'store');
    frames = [0, 1, 2, 3].map((i) => frameAt(p.mm, a + i * P));
    ok(yield* mmuIntervalNotifierInsert(sub, p.mm, a, 4 * P, {
      invalidate(s, range, curSeq) {
        const blockable = mmuNotifierRangeBlockable(range);
        if (blockable) throw new Error('the reaper only sends non-blockable ranges');
        calls.push(k.sim.now());
        if (!mutex.trylock()) return false;
        mmuIntervalSetSeq(s, curSeq);
        mutex.unlock();
        return true;
      },
    }, { lock: mutex }), 'insert');
    t0 = k.sim.now();
    // The driver's worker holds its mutex for 250 ms (a slow device command).
    k.sim.spawn('drv-worker', function* () {
      yield* k.sim.sleep(1);
      yield* mutex.lock();
      yield* k.sim.sleep(250_000_000);
      mutex.unlock();
    }, { kind: 'worker' });
    k.sim.spawn('oom', function* () {
      yield* k.sim.sleep(2);
      result = oomKill(k, p);
      yield* k.sim.sleep(150_000_000);
      mid.mapped = [0, 1, 2, 3].filter((i) => frameAt(p.mm, a + i * P) >= 0).length;
      mid.seen = result.attempts;
    });
  });
  const out = k.sim.run();
  t.true(t0 > 0, 'the set-up took CPU time');
  t.not(out.reason, 'failed', out.failure);
  t.deepEqual(result, { attempts: 4, skippedVmas: 3, reaped: true });
  t.deepEqual(mid, { mapped: 4, seen: 2 }, 'after two failed attempts the VMA is untouched');
  // Attempt n (from 0) starts at t0 + 2 + n * HZ/10 plus the n dispatch charges of the
  // earlier attempts (the retry sleep follows the failed call), and calls the subscriber
  // after its own dispatch charge.
  const D = DEFAULT_CPU_COSTS.notifierDispatchNs;
  const attemptsAt = [0, 1, 2, 3].map((n) => t0 + 2 + n * OOM_REAP_RETRY_NS + (n + 1) * D);
  t.deepEqual(calls, attemptsAt, 'one try per attempt, HZ/10 apart');
  const reaps = trace.of('oom-reap');
  t.deepEqual(reaps.map((x) => x.ret), [-EAGAIN, -EAGAIN, -EAGAIN, 0]);
  t.deepEqual(reaps.map((x) => x.t), attemptsAt);
  t.is(trace.of('invalidate-eagain').length, 3);
  const ends = trace.of('invalidate-end');
  t.is(ends.length, 1, 'end only for the attempt whose start succeeded');
  // __oom_reap_task_mm zaps (unmap_page_range) between start and end: the four pages'
  // zap work (cpu-costs.ts zapPerPageNs) keeps the window open that long.
  t.is(ends[0]!.t, attemptsAt[3]! + 4 * DEFAULT_CPU_COSTS.zapPerPageNs);
  t.is(trace.of('might-sleep').length, 0, 'nothing slept in the non-blockable range');
  t.is(k.sim.sleepInAtomic, 0);
  t.is(p.mm.pageTable.entries, 0, 'reaped: no PTE left');
  for (const f of frames) t.false(k.phys.isAllocated(f), 'the victim\'s memory is freed');
  t.is(p.mm.notifierSubscriptions!.invalidateSeq % 2, 0, 'S is even again: no invalidation left open');
  t.is(p.mm.notifierSubscriptions!.activeInvalidateRanges, 0);
});

test('rules 14, 15 (H5): a classic subscriber that always answers -EAGAIN makes the reaper give up after MAX_OOM_REAP_RETRIES attempts, leaving the memory mapped', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  let result: OomReapResult | undefined;
  let a = 0;
  const starts: boolean[] = [];
  let killedAt = -1;
  p.spawnThread('main', function* () {
    a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 2 * P)), 'store');
    ok(yield* mmuNotifierRegister(new MmuNotifier('busy', {
      invalidateRangeStart: (_s, range) => {
        starts.push(mmuNotifierRangeBlockable(range));
        return mmuNotifierRangeBlockable(range) ? 0 : -EAGAIN;
      },
    }), p.mm), 'register');
    killedAt = k.sim.now();
    result = oomKill(k, p);
  });
  const out = k.sim.run();
  t.not(out.reason, 'failed', out.failure);
  t.deepEqual(result, { attempts: MAX_OOM_REAP_RETRIES, skippedVmas: MAX_OOM_REAP_RETRIES, reaped: false });
  t.deepEqual(starts, new Array(MAX_OOM_REAP_RETRIES).fill(false));
  t.is(trace.of('invalidate-end').length, 0);
  t.is(trace.of('notifier-warn').length, 0, 'a non-blockable -EAGAIN from a start without an end callback is legal');
  t.true(frameAt(p.mm, a) >= 0 && frameAt(p.mm, a + P) >= 0, 'still mapped: the victim\'s own exit must free it');
  // Each attempt: the subscriber's dispatch charge (cpu-costs.ts), its -EAGAIN, HZ/10 of sleep.
  t.true(killedAt > 0, 'the set-up\'s page faults took CPU time');
  t.is(k.sim.now(), killedAt + MAX_OOM_REAP_RETRIES * (DEFAULT_CPU_COSTS.notifierDispatchNs + OOM_REAP_RETRY_NS));
});

test('OOM reaper: shared VMAs are left alone; private anonymous ones are reaped with one non-blockable CLEAR each', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p, events } = r;
  let result: OomReapResult | undefined;
  let anon = 0;
  let shm = 0;
  p.spawnThread('main', function* () {
    anon = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    shm = ok(yield* p.mmap(0, P, RW, SHARED_ANON), 'mmap shared');
    ok(yield* p.store(anon, fill(1, 2 * P)), 'store');
    ok(yield* p.store(shm, fill(2, P)), 'store');
    events.length = 0;
    result = oomKill(k, p);
  });
  const out = k.sim.run();
  t.not(out.reason, 'failed', out.failure);
  t.deepEqual(result, { attempts: 1, skippedVmas: 0, reaped: true });
  t.deepEqual(events.map((e) => `${e.phase} ${e.blockable ? 'blockable' : 'nonblock'} ${e.range.start === anon ? 'anon' : '?'}`),
    ['start nonblock anon', 'end nonblock anon']);
  t.is(frameAt(p.mm, anon), -1);
  t.true(frameAt(p.mm, shm) >= 0, 'the shared mapping stays');
});

test('rule 15 (profiles, mm/oom_kill.c oom_reap_task_mm of 4.16-4.18): under linux-4.18 the reaper finds blockable notifiers (mm_has_blockable_invalidate_notifiers; assumed: every subscriber may block), sleeps HZ and gives up after one attempt, nothing reaped, never sending a range', (t) => {
  const r = rigOn('linux-4.18');
  const { k, p, events } = r;
  const trace = traceOf(k);
  let result: OomReapResult | undefined;
  let a = 0;
  p.spawnThread('main', function* () {
    a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, P)), 'store');
    ok(yield* mmuNotifierRegister(new MmuNotifier('gru', { invalidateRangeStart: () => 0 }), p.mm), 'register');
    events.length = 0;
    result = oomKill(k, p);
  });
  const out = k.sim.run();
  t.not(out.reason, 'failed', out.failure);
  t.is(result!.reaped, false);
  t.is(result!.gaveUp, true);
  t.is(result!.attempts, 1, 'oom_reap_task_mm returned true: no retry (the old model retried MAX_OOM_REAP_RETRIES times)');
  t.is(trace.of('oom-reap').length, 1);
  t.deepEqual(events, [], 'no invalidation at all');
  t.is(trace.of('interface-refused').length, 0, 'the reaper did not even try the non-blocking start');
  t.true(frameAt(p.mm, a) >= 0);
});

test('rule 15 (profiles): under linux-4.18 an mm without subscribers is reaped, without calling the non-blocking start that kernel lacks', (t) => {
  const r = rigOn('linux-4.18');
  const { k, p } = r;
  const trace = traceOf(k);
  let result: OomReapResult | undefined;
  let a = 0;
  p.spawnThread('main', function* () {
    a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, P)), 'store');
    result = oomKill(k, p);
  });
  const out = k.sim.run();
  t.not(out.reason, 'failed', out.failure);
  t.is(result!.reaped, true);
  t.is(frameAt(p.mm, a), -1);
  t.deepEqual(trace.of('interface-refused'), []);
  t.deepEqual(trace.of('notifier-warn'), []);
});
