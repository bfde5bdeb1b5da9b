/**
 * Kernel profiles (DESIGN.md "Profiles"): every behaviour switch and every interface a
 * profile may lack, shown under a profile that has it and one that does not. Interfaces
 * a kernel lacked fail with -EINVAL and a record naming the release that introduced them.
 */
import test from 'ava';
import {
  EFAULT, EINVAL, GUP_PIN_COUNTING_BIAS, MAP_PRIVATE, MAP_SHARED, MmuIntervalNotifier, MmuNotifier, MmuNotifyEvent,
  PG_ANON, PG_DIRTY, PROFILES, PROFILE_NAMES, PTE_WRITE, hmmRangeFault, hmmRangeInit, mmuIntervalNotifierInsert,
  mmuIntervalReadBegin, mmuIntervalSetSeq, mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStartNonblock,
  mmuNotifierRangeInit, mmuNotifierRegister, profileByName, pteHas, vpn,
  type ProfileName, type TraceRecord,
} from '../../kernel-model/index.ts';
import {
  FOLL_LONGTERM, FOLL_WRITE, getUserPagesFast, pinUserPagesFast, putUserPages, unpinUserPages,
} from '../../kernel-model/gup.ts';
import { writebackFile } from '../../kernel-model/filemap.ts';
import { P, bytes, fill, frameAt, lines, ok, pair, runMain } from './_helpers.ts';
import { ANON, RW, rigOn, traceOf } from './_pin-helpers.ts';

/** The trace record that refused an interface, whatever its kind (note or interface-refused). */
function refusals(records: readonly TraceRecord[]): string[] {
  return records.flatMap((r) => (r.type === 'interface-refused' ? [r.message] : r.type === 'note' && /does not exist in/.test(r.text) ? [r.text] : []));
}

// ---- lookup -----------------------------------------------------------------------------

test('profileByName: a known name gives that profile; an unknown one gives an error listing the valid names', (t) => {
  for (const name of PROFILE_NAMES) t.is(profileByName(name), PROFILES[name]);
  t.deepEqual([...PROFILE_NAMES].sort(), ['linux-3.0', 'linux-4.18', 'linux-5.15', 'linux-5.8', 'linux-6.x']);
  const bad = profileByName('linux-9');
  t.true('error' in bad);
  const message = (bad as { error: string }).error;
  t.regex(message, /linux-9/);
  for (const name of PROFILE_NAMES) t.true(message.includes(name), `lists ${name}`);
  t.true('error' in profileByName(''));
  t.true('error' in profileByName('toString'), 'not fooled by Object.prototype');
});

test('profiles are data: each names its release and linux-6.x is the default', (t) => {
  t.is(PROFILES['linux-3.0'].release, '3.0');
  t.is(PROFILES['linux-4.18'].release, '4.18');
  t.is(PROFILES['linux-5.8'].release, '5.8');
  t.is(PROFILES['linux-5.15'].release, '5.15');
  const r = rigOn('linux-6.x');
  t.is(r.k.profile, PROFILES['linux-6.x']);
});

// ---- atomicCallbacks (linux-3.0: RCU, before 3.7's SRCU) ---------------------------------

for (const profile of ['linux-3.0', 'linux-4.18'] as const) {
  const atomic = profile === 'linux-3.0';
  test(`atomicCallbacks (${profile}): a classic callback that sleeps ${atomic ? 'is recorded as might-sleep (callbacks ran under RCU)' : 'is fine (SRCU since 3.7)'}`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const trace = traceOf(k);
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(1, 8)), 'store');
      ok(yield* mmuNotifierRegister(new MmuNotifier('ib-odp', {
        *invalidateRangeStart() { yield* k.sim.sleep(10_000); return 0; },
      }), p.mm), 'register');
      ok(yield* p.munmap(a, P), 'munmap');
    });
    const sleeps = trace.of('might-sleep');
    if (atomic) {
      t.is(sleeps.length, 1);
      t.is(sleeps[0]!.context, 'RCU notifier callback');
    } else {
      t.deepEqual(sleeps, []);
    }
  });
}

// ---- invalidatePageAfterClear (linux-3.0: invalidate_page, removed in 4.13) ----------------

for (const profile of ['linux-3.0', 'linux-4.18'] as const) {
  const after = profile === 'linux-3.0';
  test(`invalidatePageAfterClear (${profile}): on a COW fault a classic subscriber hears ${after ? 'invalidate_page only after the PTE already maps the new page' : 'invalidate_range_start while the PTE still maps the old page'}`, (t) => {
    const r = rigOn(profile);
    const { p } = r;
    const seen: string[] = [];
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(1, 8)), 'store');
      const child = yield* p.fork();
      if (typeof child === 'number') throw new Error(`fork: ${child}`);
      const old = frameAt(p.mm, a);
      const where = () => (frameAt(p.mm, a) === old ? 'old' : 'new');
      ok(yield* mmuNotifierRegister(new MmuNotifier('gru', {
        invalidatePage: () => { seen.push(`invalidate_page sees ${where()}`); },
        invalidateRangeStart: () => { seen.push(`start sees ${where()}`); return 0; },
        invalidateRangeEnd: () => { seen.push(`end sees ${where()}`); },
      }), p.mm), 'register');
      ok(yield* p.store(a, fill(2, 8)), 'COW');
    });
    t.deepEqual(seen, after ? ['invalidate_page sees new'] : ['start sees old', 'end sees new']);
  });
}

// ---- blockableFlag (4.19) ------------------------------------------------------------------

for (const profile of ['linux-4.18', 'linux-5.8'] as const) {
  const has = profile === 'linux-5.8';
  test(`blockableFlag (${profile}): mmu_notifier_invalidate_range_start_nonblock ${has ? 'works' : 'is refused (-EINVAL), naming 4.19'}`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const trace = traceOf(k);
    runMain(t, r, function* () {
      const range = mmuNotifierRangeInit(p.mm, MmuNotifyEvent.CLEAR, 0, P, { blockable: false });
      const ret = yield* mmuNotifierInvalidateRangeStartNonblock(range);
      t.is(ret, has ? 0 : -EINVAL);
      if (has) yield* mmuNotifierInvalidateRangeEnd(range);
    });
    const refused = refusals(trace.records);
    if (has) t.deepEqual(refused, []);
    else {
      t.is(refused.length, 1);
      t.regex(refused[0]!, /4\.19/);
    }
  });
}

// ---- intervalNotifiers (5.5) ------------------------------------------------------------

for (const profile of ['linux-4.18', 'linux-5.8'] as const) {
  const has = profile === 'linux-5.8';
  test(`intervalNotifiers (${profile}): mmu_interval_notifier_insert ${has ? 'works' : 'is refused (-EINVAL), naming 5.5'}`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const trace = traceOf(k);
    const sub = new MmuIntervalNotifier('odp');
    runMain(t, r, function* () {
      const ret = yield* mmuIntervalNotifierInsert(sub, p.mm, 0x10000, 4 * P, {
        invalidate: (s, _range, seq) => { mmuIntervalSetSeq(s, seq); return true; },
      });
      t.is(ret, has ? 0 : -EINVAL);
    });
    t.is(sub.inserted, has);
    const refused = trace.of('interface-refused');
    if (has) t.deepEqual(refused, []);
    else {
      t.is(refused.length, 1);
      t.is(refused[0]!.api, 'mmu_interval_notifier_insert');
      t.regex(refused[0]!.message, /linux-4\.18.*5\.5/);
    }
  });
}

// ---- hmmRangeFault (5.8: HMM_PFN_REQ_FAULT, 2733ea144dcc) ----------------------------------------------------------------

for (const profile of ['linux-4.18', 'linux-5.8'] as const) {
  const has = profile === 'linux-5.8';
  test(`hmmRangeFault (${profile}): hmm_range_fault ${has ? 'works' : 'is refused (-EINVAL), naming 5.8'}`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const trace = traceOf(k);
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(1, 8)), 'store');
      const sub = new MmuIntervalNotifier('mirror');
      let seq = 0;
      if (has) {
        ok(yield* mmuIntervalNotifierInsert(sub, p.mm, a, P, { invalidate: (s, _r, cur) => { mmuIntervalSetSeq(s, cur); return true; } }), 'insert');
        seq = yield* mmuIntervalReadBegin(sub);
      } else {
        sub.mm = p.mm; // a driver that cannot subscribe still tries the walk
      }
      yield* p.mm.mmapLock.downRead();
      const range = hmmRangeInit(sub, a, a + P, seq);
      const ret = yield* hmmRangeFault(range);
      p.mm.mmapLock.upRead();
      t.is(ret, has ? 0 : -EINVAL);
      if (has) t.is(range.pfns[0], frameAt(p.mm, a));
    });
    const refused = refusals(trace.records);
    if (has) t.deepEqual(refused, []);
    else {
      t.is(refused.length, 1);
      t.regex(refused[0]!, /5\.8/);
    }
  });
}

// ---- follPin (5.6/5.7) ------------------------------------------------------------------

for (const profile of ['linux-4.18', 'linux-5.8'] as const) {
  const has = profile === 'linux-5.8';
  test(`follPin (${profile}): pin_user_pages ${has ? 'pins with the 1024 bias and sets MMF_HAS_PINNED' : 'is refused (-EINVAL), naming 5.6; get_user_pages takes one plain reference'}`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const trace = traceOf(k);
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(1, 8)), 'store');
      const f = frameAt(p.mm, a);
      const pins: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, pins), has ? 1 : -EINVAL);
      t.is(p.mm.hasPinned, has);
      t.is(k.phys.refcount[f], has ? 1 + GUP_PIN_COUNTING_BIAS : 1);
      unpinUserPages(k, pins);
      const gets: number[] = [];
      t.is(yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE, gets), 1);
      t.is(k.phys.refcount[f], 2);
      putUserPages(k, gets);
    });
    const refused = trace.of('interface-refused');
    if (has) t.deepEqual(refused, []);
    else {
      t.is(refused.length, 1);
      t.regex(refused[0]!.message, /pin_user_pages.*linux-4\.18.*5\.6/);
    }
  });
}

// ---- forkCopiesPinned (5.9) -------------------------------------------------------------

for (const profile of ['linux-5.8', 'linux-6.x'] as const) {
  const copies = profile === 'linux-6.x';
  test(`forkCopiesPinned (${profile}): fork ${copies ? 'copies a pinned anonymous page for the child at once' : 'COW-shares a pinned anonymous page'} (rule 67)`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(1, 8)), 'store');
      const pins: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pins), 1);
      const child = yield* p.fork();
      if (typeof child === 'number') throw new Error(`fork: ${child}`);
      t.is(frameAt(p.mm, a), pins[0]!);
      t.is(frameAt(child.mm, a) === pins[0], !copies);
      t.is(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), copies);
      ok(yield* p.store(a, fill(2, 8)), 'parent store');
      t.deepEqual(k.dmaBus.read(pins[0]!, 0, 8), fill(copies ? 2 : 1, 8));
      unpinUserPages(k, pins);
    });
  });
}

// ---- anonExclusive (5.19) ---------------------------------------------------------------

// linux-5.15 (5.9 to 5.18): 5.8 broke COW for read pins of COW mappings (should_force_cow_break).
for (const profile of ['linux-5.15', 'linux-6.x'] as const) {
  const has = profile === 'linux-6.x';
  test(`anonExclusive (${profile}): a read-only pin of a COW-shared anonymous page ${has ? 'unshares it first (rule 61)' : 'pins the shared page'}`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(1, 8)), 'store');
      const shared = frameAt(p.mm, a);
      const child = yield* p.fork();
      if (typeof child === 'number') throw new Error(`fork: ${child}`);
      const pins: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, 0, pins), 1);
      t.is(pins[0] === shared, !has);
      t.is(frameAt(child.mm, a), shared);
      unpinUserPages(k, pins);
    });
  });
}

// ---- unshareAnyCow (6.2) ----------------------------------------------------------------

// linux-5.15 (5.9 to 5.18): 5.8 broke COW for read pins of COW mappings (should_force_cow_break).
for (const profile of ['linux-5.15', 'linux-6.x'] as const) {
  const has = profile === 'linux-6.x';
  test(`unshareAnyCow (${profile}): a read-only long-term pin of a private file page ${has ? 'pins a private anonymous copy that sees later writes' : 'pins the page-cache page, which later writes COW away from'} (rule 61)`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const file = k.createFile('lib.so', P, fill(0x11, P));
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, MAP_PRIVATE, file), 'mmap');
      t.deepEqual(bytes(yield* p.load(a, 4), 'load'), fill(0x11, 4));
      const cached = file.pageCache.get(0)!;
      const pins: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_LONGTERM, pins), 1);
      const f = pins[0]!;
      t.is(f === cached, !has);
      t.is(k.phys.has(f, PG_ANON), has);
      ok(yield* p.store(a, fill(0x22, 4)), 'store');
      t.deepEqual(k.dmaBus.read(f, 0, 4), fill(has ? 0x22 : 0x11, 4));
      t.deepEqual(k.phys.read(cached, 0, 4), fill(0x11, 4), 'never written into the file');
      unpinUserPages(k, pins);
    });
  });
}

// ---- refuseLongtermFileWrite (6.5) --------------------------------------------------------

for (const profile of ['linux-5.8', 'linux-6.x'] as const) {
  const refuses = profile === 'linux-6.x';
  test(`refuseLongtermFileWrite (${profile}): a writable long-term pin of a shared file mapping is ${refuses ? 'refused with -EFAULT' : 'allowed'} (rule 58)`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const file = k.createFile('data', P);
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
      const pins: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pins), refuses ? -EFAULT : 1);
      if (!refuses) t.is(pins[0], file.pageCache.get(0));
      unpinUserPages(k, pins);
    });
  });
}

// ---- rule 76: writeback cleans pinned pages on every kernel ---------------------------------

for (const profile of ['linux-5.8', 'linux-6.x'] as const satisfies readonly ProfileName[]) {
  test(`rule 76 (${profile}): writeback still cleans a pinned file page (PROTECTION_PAGE), whatever the pin`, (t) => {
    const r = rigOn(profile);
    const { k, p, events } = r;
    const file = k.createFile('data', P);
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
      const pins: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, pins), 1);
      const f = pins[0]!;
      t.true(k.phys.maybeDmaPinned(f));
      t.true(k.phys.has(f, PG_DIRTY));
      events.length = 0;
      t.is(yield* writebackFile(k, file), 1);
      t.deepEqual(lines(events, p.mm), pair('PROTECTION_PAGE', a, a + P));
      t.false(k.phys.has(f, PG_DIRTY));
      t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE));
      unpinUserPages(k, pins);
    });
  });
}

for (const [profile, has] of [['linux-4.18', false], ['linux-6.x', true]] as const) {
  test(`eventTypes (${profile}): a classic callback reading range.event ${has ? 'sees the event' : 'fails the run, naming 5.2 (6f4f13e8d9e2)'}`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const seen: number[] = [];
    const records = traceOf(k);
    const sub = new MmuNotifier('reads-event', {
      invalidateRangeStart: (_s, range) => {
        seen.push(range.event);
        return 0;
      },
    });
    p.spawnThread('main', function* () {
      const a = yield* p.mmap(0, P, RW, ANON);
      yield* p.store(a, fill(1, 4));
      yield* mmuNotifierRegister(sub, p.mm);
      yield* p.munmap(a, P);
    });
    const out = k.sim.run({ untilNs: 1e9 });
    if (has) {
      t.is(out.reason, 'idle', out.failure);
      t.deepEqual(seen, [MmuNotifyEvent.UNMAP]);
    } else {
      t.is(out.reason, 'failed');
      t.regex(out.failure ?? '', /introduced in Linux 5\.2/);
      t.true(refusals(records.records).some((m) => /mmu_notifier_range\.event/.test(m)));
    }
  });
}

test('MADV_PAGEOUT reclaims the range at once, accessed bits ignored: anon pages go to swap and come back intact', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, 4 * P, RW, ANON), 'mmap');
    for (let i = 0; i < 4; i++) ok(yield* p.store(a + i * P, fill(10 + i, 16)), 'store');
    const before = k.phys.used;
    t.is(yield* p.madvise(a, 4 * P, 21 /* MADV_PAGEOUT */), 0);
    t.is(k.phys.used, before - 4, 'four frames freed');
    t.is(k.swap.used, 4);
    for (let i = 0; i < 4; i++) t.deepEqual(bytes(yield* p.load(a + i * P, 16), 'load'), fill(10 + i, 16));
  });
});
