/**
 * notifier-contract: driver obligations of the notifier protocol (kernel rules 10, 14, 16,
 * 26-28, 30; H2, H17).
 */
import test from 'ava';
import {
  MmuIntervalNotifier, MmuNotifyEvent, mmuIntervalNotifierInsert, mmuIntervalNotifierRemove, mmuIntervalSetSeq,
  mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart, mmuNotifierRangeInit, oomKill,
} from '../../kernel-model/index.ts';
import { MiniOdp, P, anon, devWrite, expectIds, fill, ok, rig, run } from './_rig.ts';

test('an invalidate that forgets mmu_interval_set_seq: caught', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P, { bugs: { noSetSeq: true } });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    ok(yield* r.p.munmap(buf, P), 'munmap');
  });
  const v = r.san!.violations.find((x) => x.id === 'notifier-contract');
  t.truthy(v);
  t.regex(v!.message, /without mmu_interval_set_seq/);
  t.true(v!.trail.some((e) => e.kind === 'syscall' && e.text.startsWith('munmap')));
});

test('device entries installed after the lock declared at insert was dropped: caught', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P, { bugs: { installAfterUnlock: true } });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
  });
  const v = r.san!.violations.find((x) => x.id === 'notifier-contract');
  t.truthy(v);
  t.regex(v!.message, /after dropping mini-odp\.umem_mutex/);
  t.deepEqual(v!.trail.map((e) => e.kind).slice(0, 3), ['read-retry', 'unlock', 'install']);
});

test('read_retry without the lock: caught', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P, { bugs: { readRetryUnlocked: true } });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
  });
  const v = r.san!.violations.find((x) => x.id === 'notifier-contract');
  t.truthy(v);
  t.regex(v!.message, /mmu_interval_read_retry called without mini-odp\.umem_mutex held/);
});

test('false from an invalidate in a blockable range (what the kernel WARNs about): caught', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    const sub = new MmuIntervalNotifier('lazy');
    ok(yield* mmuIntervalNotifierInsert(sub, r.p.mm, buf, P, {
      invalidate: (s, _range, seq) => {
        mmuIntervalSetSeq(s, seq);
        return false;
      },
    }), 'insert');
    ok(yield* r.p.munmap(buf, P), 'munmap');
  });
  const v = r.san!.violations.find((x) => x.id === 'notifier-contract');
  t.truthy(v);
  t.regex(v!.message, /^invalidate returned false where it may not/);
});

test('start/end unbalanced: an end without its start, and a second end: caught', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const range = mmuNotifierRangeInit(r.p.mm, MmuNotifyEvent.CLEAR, buf, buf + P);
    yield* mmuNotifierInvalidateRangeEnd(range);
    const ok2 = mmuNotifierRangeInit(r.p.mm, MmuNotifyEvent.CLEAR, buf, buf + P);
    yield* mmuNotifierInvalidateRangeStart(ok2);
    yield* mmuNotifierInvalidateRangeEnd(ok2);
    yield* mmuNotifierInvalidateRangeEnd(ok2);
  });
  const vs = r.san!.violations.filter((x) => x.id === 'notifier-contract');
  t.is(vs.length, 2);
  t.true(vs.every((v) => v.message.startsWith('start/end unbalanced')));
});

test('mmu_interval_notifier_remove from inside a callback (rule 30): caught (and the invalidation never finishes)', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    const sub = new MmuIntervalNotifier('self-removing');
    ok(yield* mmuIntervalNotifierInsert(sub, r.p.mm, buf, P, {
      *invalidate(s, _range, seq) {
        mmuIntervalSetSeq(s, seq);
        yield* mmuIntervalNotifierRemove(s); // waits for S to move: it never will
        return true;
      },
    }), 'insert');
    r.p.spawnThread('unmapper', function* () { yield* r.p.munmap(buf, P); });
    yield* r.k.sim.sleep(1_000_000);
  });
  const v = r.san!.violations.find((x) => x.id === 'notifier-contract');
  t.truthy(v);
  t.regex(v!.message, /^remove called from a notifier callback/);
  t.true(v!.trail.some((e) => e.kind === 'callback' && e.text.includes('self-removing')));
});

test('legitimate: a correct driver, including a non-blockable false that skips set_seq', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    const odp = new MiniOdp(r, r.p.mm, buf, 2 * P);
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 2 * P)), 'dma');
    ok(yield* r.p.munmap(buf + P, P), 'munmap');
    oomKill(r.k, r.p);
    yield* r.k.sim.sleep(1_000_000);
  }, { untilNs: 100_000_000 });
  expectIds(t, r, []);
});
