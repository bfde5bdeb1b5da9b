/**
 * stale-translation: outside invalidation windows a mirrored MR's device entry is absent,
 * or no stronger than the CPU's PTE to the same frame (kernel rule 18, H2, H6).
 */
import test from 'ava';
import {
  MADV_DONTNEED, MmuNotifyEvent, PROT_READ, mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart,
  mmuNotifierInvalidateRangeStartNonblock, mmuNotifierRangeInit, pteFrame,
} from '../../kernel-model/index.ts';
import { MiniOdp, P, anon, devRead, devWrite, expectIds, fill, ok, rig, run } from './_rig.ts';

test('a driver ignoring PROTECTION_VMA keeps write access under a read-only PTE: caught when the window closes', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    const odp = new MiniOdp(r, r.p.mm, buf, 2 * P, { bugs: { ignoreEvents: ['PROTECTION_VMA'] } });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma maps the page read-write');
    ok(yield* r.p.mprotect(buf, 2 * P, PROT_READ), 'mprotect');
  });
  const v = r.san!.violations.find((x) => x.id === 'stale-translation');
  t.truthy(v);
  t.regex(v!.message, /read-only/);
  t.true(v!.trail.some((e) => e.text.startsWith('mprotect')));
});

test('a fault path that skips read_retry installs the frame an invalidation just took away: caught at the install', (t) => {
  const r = rig();
  const sim = r.k.sim;
  let raced = false;
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    const odp: MiniOdp = new MiniOdp(r, r.p.mm, buf, P, {
      bugs: { skipReadRetry: true },
      *afterSnapshot() {
        if (raced) return;
        raced = true;
        const t2 = r.p.spawnThread('racer', function* () { ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise'); });
        yield* sim.join(t2);
      },
    });
    yield* odp.register();
    ok(yield* odp.fault(buf, buf + P, true), 'fault');
  });
  const v = r.san!.violations.find((x) => x.id === 'stale-translation');
  t.truthy(v);
  t.regex(v!.message, /was given frame/);
});

test('the same race with read_retry: the fault retries and installs the new frame; nothing reported', (t) => {
  const r = rig();
  const sim = r.k.sim;
  let raced = false;
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    const odp: MiniOdp = new MiniOdp(r, r.p.mm, buf, P, {
      *afterSnapshot() {
        if (raced) return;
        raced = true;
        const t2 = r.p.spawnThread('racer', function* () { ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise'); });
        yield* sim.join(t2);
      },
    });
    yield* odp.register();
    ok(yield* odp.fault(buf, buf + P, true), 'fault');
    ok(yield* devWrite(odp, buf, fill(2, 64)), 'dma');
  });
  expectIds(t, r, []);
});

test('legitimate: a read-only device entry under a read-write PTE', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    ok(yield* r.p.store(buf, fill(1, P)), 'store: the PTE is read-write');
    const odp = new MiniOdp(r, r.p.mm, buf, P);
    yield* odp.register();
    ok(yield* odp.fault(buf, buf + P, false, { readOnly: true }), 'downgrade fault (PREFETCH)');
    t.is(odp.mr.pageTable.perm(0), 1);
    t.deepEqual(yield* devRead(odp, buf, 16), fill(1, 16));
    ok(yield* r.p.store(buf + 8, fill(2, 8)), 'CPU writes on; the device stays read-only');
    t.deepEqual(yield* devRead(odp, buf, 16), new Uint8Array([...fill(1, 8), ...fill(2, 8)]));
  });
  expectIds(t, r, []);
});

test('nested windows are counted: a translation that differs from the CPU is legal until the outer window ends', (t) => {
  const r = rig();
  let flaggedInside = -1;
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const elsewhere = yield* anon(r.p, 1);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    ok(yield* r.p.store(elsewhere, fill(9, 8)), 'store');
    const odp = new MiniOdp(r, r.p.mm, buf, P);
    yield* odp.register();
    const mm = r.p.mm;
    const outer = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, buf, buf + P);
    const inner = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, buf, buf + P);
    yield* mmuNotifierInvalidateRangeStart(outer);
    yield* mmuNotifierInvalidateRangeStart(inner);
    yield* mmuNotifierInvalidateRangeEnd(inner);
    // A "driver" installing a frame the CPU does not map here, while the outer window is open.
    const other = pteFrame(mm.pageTable.get(elsewhere / P));
    ok(yield* r.nic.updateEntries(odp.mr, 0, [other], false), 'install');
    flaggedInside = r.san!.count('stale-translation');
    yield* mmuNotifierInvalidateRangeEnd(outer);
  });
  t.is(flaggedInside, 0, 'not flagged inside the outer window');
  t.is(r.san!.count('stale-translation'), 1, 'flagged when the last window closed');
});

test('a window closed by -EAGAIN gets no end: what follows it is checked again', (t) => {
  const r = rig();
  run(t, r, function* () {
    const buf = yield* anon(r.p, 1);
    const elsewhere = yield* anon(r.p, 1);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    ok(yield* r.p.store(elsewhere, fill(9, 8)), 'store');
    const odp = new MiniOdp(r, r.p.mm, buf, P);
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(2, 8)), 'dma');
    const mm = r.p.mm;
    const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, buf, buf + P, { blockable: false });
    t.is(yield* mmuNotifierInvalidateRangeStartNonblock(range), -11, 'the driver refused: -EAGAIN');
    ok(yield* devWrite(odp, buf, fill(3, 8)), 'legitimate: nothing changed, the device goes on');
    const other = pteFrame(mm.pageTable.get(elsewhere / P));
    ok(yield* r.nic.updateEntries(odp.mr, 0, [other], false), 'install another frame');
  });
  t.is(r.san!.count('stale-translation'), 1);
  t.is(r.san!.count('use-after-invalidate'), 0);
});
