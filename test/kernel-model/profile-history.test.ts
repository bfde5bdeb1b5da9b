/**
 * Kernel history, round 2 (issue 12): the profiles behave as the kernel of their day did.
 * Each test cites the kernel source it follows (file, function, commit or release) and
 * fails on the behaviour the profiles had before: copying a GUP-held page mapped once
 * before 5.9, pinning the zero page on 5.8, naming the wrong release in a refusal.
 */
import test from 'ava';
import {
  EINVAL, MAP_SHARED, PTE_DIRTY, pteHas, vpn, MmuNotifier, MmuNotifyEvent, PG_ANON, PG_DIRTY, PROFILES, PROT_READ, ZERO_PFN,
  hmmRangeFault, hmmRangeInit, mmuNotifierRangeBlockable, mmuNotifierRegister, MmuIntervalNotifier, oomKill,
  type ProfileName, type TraceRecord,
} from '../../kernel-model/index.ts';
import { FOLL_LONGTERM, FOLL_WRITE, getUserPagesFast, pinUserPagesFast, putUserPages, unpinUserPages } from '../../kernel-model/gup.ts';
import { P, bytes, fill, frameAt, ok, rig, runMain } from './_helpers.ts';
import { ANON, RW, rigOn, traceOf } from './_pin-helpers.ts';

function refusals(records: readonly TraceRecord[]): string[] {
  return records.flatMap((r) => (r.type === 'interface-refused' ? [r.message] : r.type === 'note' && /does not exist in/.test(r.text) ? [r.text] : []));
}

/** GUP the way a driver of that kernel would: FOLL_PIN from 5.6, get_user_pages before. */
function gupKind(profile: ProfileName): 'pin' | 'get' {
  return PROFILES[profile].follPin ? 'pin' : 'get';
}

// ---- item 1: COW reuse by mapcount until 5.8, by refcount from 5.9 ------------------------

const reuseCases: { profile: ProfileName; reused: boolean }[] = [
  { profile: 'linux-4.18', reused: true },
  { profile: 'linux-5.8', reused: true },
  { profile: 'linux-5.15', reused: false },
  { profile: 'linux-6.x', reused: true },
];

for (const { profile, reused } of reuseCases) {
  test(`COW reuse (${profile}): a GUP-held page mapped once, mprotect(READ) then mprotect(RW), then a store: ${reused ? 'reused in place, the device sees the store' : 'copied, the device keeps the old page'} (mm/memory.c do_wp_page: ${profile === 'linux-5.15' ? 'refcount test, 09854ba94c6a (5.9)' : profile === 'linux-6.x' ? 'PageAnonExclusive (5.19)' : 'reuse_swap_page() mapcount test (until 5.8)'})`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(1, 8)), 'store');
      const pages: number[] = [];
      const how = gupKind(profile);
      t.is(how === 'pin'
        ? yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages)
        : yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
      const f = pages[0]!;
      ok(yield* p.mprotect(a, P, PROT_READ), 'mprotect(READ)');
      ok(yield* p.mprotect(a, P, RW), 'mprotect(RW)');
      ok(yield* p.store(a, fill(2, 8)), 'store after mprotect');
      t.is(frameAt(p.mm, a) === f, reused);
      t.deepEqual(k.dmaBus.read(f, 0, 8), fill(reused ? 2 : 1, 8));
      if (how === 'pin') unpinUserPages(k, pages);
      else putUserPages(k, pages);
    });
  });
}

const forkExitCases: { profile: ProfileName; how: 'pin' | 'get'; coherent: boolean; why: string }[] = [
  { profile: 'linux-4.18', how: 'get', coherent: true, why: 'the child is gone, mapcount is 1: reuse_swap_page() says reuse' },
  { profile: 'linux-5.8', how: 'pin', coherent: true, why: 'the child is gone, mapcount is 1: reuse_swap_page() says reuse, the pin is not counted' },
  { profile: 'linux-5.15', how: 'get', coherent: false, why: 'FOLL_GET sets no MMF_HAS_PINNED, so fork shared the page; the extra reference makes do_wp_page copy (09854ba94c6a)' },
  { profile: 'linux-5.15', how: 'pin', coherent: true, why: 'fork copied the maybe-pinned page for the child (page_needs_cow_for_dma, MMF_HAS_PINNED)' },
];

for (const c of forkExitCases) {
  test(`COW reuse (${c.profile}, ${c.how === 'pin' ? 'FOLL_PIN' : 'FOLL_GET'}): GUP, fork, the child exits first, the parent stores: ${c.coherent ? 'the device sees it' : 'the device keeps the old page'} (${c.why})`, (t) => {
    const r = rigOn(c.profile);
    const { k, p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(1, 8)), 'store');
      const pages: number[] = [];
      t.is(c.how === 'pin'
        ? yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages)
        : yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE, pages), 1);
      const f = pages[0]!;
      const child = yield* p.fork();
      if (typeof child === 'number') throw new Error(`fork: ${child}`);
      ok(yield* child.exit(), 'exit(child)');
      ok(yield* p.store(a, fill(2, 8)), 'parent store');
      t.is(frameAt(p.mm, a) === f, c.coherent);
      t.deepEqual(k.dmaBus.read(f, 0, 8), fill(c.coherent ? 2 : 1, 8));
      if (c.how === 'pin') unpinUserPages(k, pages);
      else putUserPages(k, pages);
    });
  });
}

test('COW reuse (linux-5.8): while the child still maps the page, mapcount is 2 and the parent\'s store copies (reuse_swap_page() counts mappings)', (t) => {
  const r = rigOn('linux-5.8');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    const child = yield* p.fork();
    if (typeof child === 'number') throw new Error(`fork: ${child}`);
    ok(yield* p.store(a, fill(2, 8)), 'parent store');
    t.not(frameAt(p.mm, a), pages[0]);
    t.is(frameAt(child.mm, a), pages[0]!);
    unpinUserPages(k, pages);
  });
});

// ---- item 2: 5.8's forced COW break in GUP ----------------------------------------------

for (const profile of ['linux-5.8', 'linux-5.15'] as const) {
  const forced = profile === 'linux-5.8';
  test(`gupForceCowBreak (${profile}): a read-only long-term pin of untouched private anonymous memory ${forced ? 'write-faults a private page first' : 'pins the zero page'} (mm/gup.c should_force_cow_break, 17839856fd58 in 5.8, removed by a308c71bf1e6 in 5.9)`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      const pages: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_LONGTERM, pages), 1);
      const f = pages[0]!;
      t.is(f === ZERO_PFN, !forced);
      t.is(frameAt(p.mm, a), f);
      if (forced) {
        t.true(k.phys.has(f, PG_ANON));
        t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_DIRTY), 'a write fault: the PTE is dirty (do_anonymous_page, maybe_mkwrite(pte_mkdirty()))');
      }
      ok(yield* p.store(a, fill(7, 8)), 'store');
      t.is(frameAt(p.mm, a) === f, forced, 'the process keeps writing the pinned page only after the forced break');
      unpinUserPages(k, pages);
    });
  });
}

for (const profile of ['linux-5.8', 'linux-5.15'] as const) {
  const forced = profile === 'linux-5.8';
  test(`gupForceCowBreak (${profile}): get_user_pages (FOLL_GET, read) of a page COW-shared with a child ${forced ? 'breaks COW: the parent gets a private copy and that is what GUP returns' : 'returns the shared page'} (should_force_cow_break: is_cow_mapping && FOLL_GET|FOLL_PIN)`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(3, 8)), 'store');
      const shared = frameAt(p.mm, a);
      const child = yield* p.fork();
      if (typeof child === 'number') throw new Error(`fork: ${child}`);
      const pages: number[] = [];
      t.is(yield* getUserPagesFast(p.mm, a, 1, 0, pages), 1);
      t.is(pages[0] === shared, !forced);
      t.is(frameAt(child.mm, a), shared, 'the child keeps the old page');
      t.is(frameAt(p.mm, a), pages[0]!, 'GUP returned what the parent maps');
      putUserPages(k, pages);
    });
  });
}

test('gupForceCowBreak (linux-5.8): a shared mapping is not a COW mapping: a read pin of MAP_SHARED memory is not turned into a write', (t) => {
  const r = rigOn('linux-5.8');
  const { k, p } = r;
  const file = k.createFile('f', P, fill(9, P));
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, 0, pages), 1);
    t.is(pages[0], file.pageCache.get(0));
    t.false(k.phys.has(pages[0]!, PG_DIRTY));
    unpinUserPages(k, pages);
  });
});

test('gupForceCowBreak (linux-5.8): a read-only private mapping still gets its private copy (can_follow_write_pte without FOLL_FORCE in 5.8: FOLL_COW and pte_dirty)', (t) => {
  const r = rigOn('linux-5.8');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, PROT_READ, ANON), 'mmap');
    t.deepEqual(bytes(yield* p.load(a, 4), 'load'), fill(0, 4));
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, 0, pages), 1);
    t.not(pages[0], ZERO_PFN);
    t.is(frameAt(p.mm, a), pages[0]!);
    unpinUserPages(k, pages);
  });
});

// ---- item 3: interface history ------------------------------------------------------------

test('interface history (linux-4.18): a callback calling mmu_notifier_range_blockable is refused naming 5.2, with 4.19\'s bool argument and 5.0\'s range field (include/linux/mmu_notifier.h)', (t) => {
  const r = rigOn('linux-4.18');
  const { k, p } = r;
  const records = traceOf(k);
  p.spawnThread('main', function* () {
    const a = yield* p.mmap(0, P, RW, ANON);
    yield* p.store(a, fill(1, 4));
    yield* mmuNotifierRegister(new MmuNotifier('asks', { invalidateRangeStart: (_s, range) => { mmuNotifierRangeBlockable(range); return 0; } }), p.mm);
    yield* p.munmap(a, P);
  });
  const out = k.sim.run({ untilNs: 1e9 });
  t.is(out.reason, 'failed');
  t.regex(out.failure ?? '', /mmu_notifier_range_blockable .*introduced in Linux 5\.2 \(4\.19 passed a bool blockable argument, 5\.0 a bool blockable in struct mmu_notifier_range\)/);
  t.true(refusals(records.records).length >= 1);
});

test('interface history (linux-4.18): reading range.event in a callback is refused naming 5.2 (enum mmu_notifier_event, 6f4f13e8d9e2), not 5.0', (t) => {
  const r = rigOn('linux-4.18');
  const { k, p } = r;
  p.spawnThread('main', function* () {
    const a = yield* p.mmap(0, P, RW, ANON);
    yield* p.store(a, fill(1, 4));
    yield* mmuNotifierRegister(new MmuNotifier('reads', { invalidateRangeStart: (_s, range) => { void range.event; return 0; } }), p.mm);
    yield* p.munmap(a, P);
  });
  const out = k.sim.run({ untilNs: 1e9 });
  t.is(out.reason, 'failed');
  t.regex(out.failure ?? '', /mmu_notifier_range\.event .*introduced in Linux 5\.2/);
});

test('interface history (linux-4.18): hmm_range_fault with HMM_PFN_REQ_FAULT is refused naming 5.8 (2733ea144dcc), not 5.7', (t) => {
  const r = rigOn('linux-4.18');
  const { k, p } = r;
  const records = traceOf(k);
  runMain(t, r, function* () {
    const sub = new MmuIntervalNotifier('mirror');
    sub.mm = p.mm;
    yield* p.mm.mmapLock.downRead();
    const ret = yield* hmmRangeFault(hmmRangeInit(sub, 0x10000, 0x10000 + P, 0));
    p.mm.mmapLock.upRead();
    t.is(ret, -EINVAL);
  });
  const refused = refusals(records.records);
  t.is(refused.length, 1);
  t.regex(refused[0]!, /hmm_range_fault does not exist in linux-4\.18: it was introduced in Linux 5\.8/);
});

test('interface history: each profile\'s switches follow the releases (4.19 blockable, 5.0 range struct, 5.2 events and flags, 5.5 interval notifiers, 5.8 hmm_range_fault, 5.10 ODP over HMM)', (t) => {
  const row = (n: ProfileName) => {
    const p = PROFILES[n];
    return [p.blockableFlag, p.notifierRangeStruct, p.eventTypes, p.rangeFlags, p.intervalNotifiers, p.hmmRangeFault, p.odpNotifier, p.odpFault];
  };
  t.deepEqual(row('linux-4.18'), [false, false, false, false, false, false, 'ucontext', 'gup']);
  t.deepEqual(row('linux-5.8'), [true, true, true, true, true, true, 'interval', 'gup']);
  t.deepEqual(row('linux-5.15'), [true, true, true, true, true, true, 'interval', 'hmm']);
  t.deepEqual(row('linux-6.x'), [true, true, true, true, true, true, 'interval', 'hmm']);
  void MmuNotifyEvent;
});

// ---- item 5: the linux-5.15 profile -------------------------------------------------------

test('linux-5.15: refcount COW reuse, early copy at fork with MMF_HAS_PINNED, write_protect_seq, ODP over hmm_range_fault; no PageAnonExclusive (5.19), no MM_CP_TRY_CHANGE_WRITABLE (6.0)', (t) => {
  const p = PROFILES['linux-5.15'];
  t.is(p.release, '5.15');
  t.is(p.cowReuse, 'refcount');
  t.true(p.forkCopiesPinned);
  t.true(p.writeProtectSeq);
  t.is(p.odpFault, 'hmm');
  t.false(p.anonExclusive);
  t.false(p.mprotectTryChangeWritable);
  t.false(p.gupForceCowBreak);
  t.false(p.unshareAnyCow);
  t.true(p.notes.some((n) => /a458b76a4171/.test(n)));
});

for (const profile of ['linux-5.8', 'linux-5.15'] as const) {
  const seq = profile === 'linux-5.15';
  test(`writeProtectSeq (${profile}): fork's COW copy ${seq ? 'holds mm->write_protect_seq (odd while copying, even after)' : 'has no write_protect_seq (5.11, 57efa1fe5957)'}`, (t) => {
    const r = rigOn(profile);
    const { p } = r;
    const seen: number[] = [];
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(1, 8)), 'store');
      ok(yield* mmuNotifierRegister(new MmuNotifier('watch', {
        invalidateRangeEnd: (_s, range) => { if (range.event === MmuNotifyEvent.PROTECTION_PAGE) seen.push(p.mm.writeProtectSeq); },
      }), p.mm), 'register');
      const child = yield* p.fork();
      if (typeof child === 'number') throw new Error(`fork: ${child}`);
    });
    t.deepEqual(seen, [seq ? 2 : 0]);
  });
}

test('anonExclusive (linux-5.15): no PageAnonExclusive yet, a read-only pin of a COW-shared anonymous page pins the shared page (unshare is 5.19)', (t) => {
  const r = rigOn('linux-5.15');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const shared = frameAt(p.mm, a);
    const child = yield* p.fork();
    if (typeof child === 'number') throw new Error(`fork: ${child}`);
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, 0, pages), 1);
    t.is(pages[0], shared);
    unpinUserPages(k, pages);
  });
});

// ---- item 6: the OOM reaper's event, release by release ------------------------------------

for (const [profile, event] of [['linux-5.8', 'UNMAP'], ['linux-5.15', 'UNMAP'], ['linux-6.x', 'CLEAR']] as const) {
  test(`OOM reaper event (${profile}): the non-blockable range is ${event} (mm/oom_kill.c __oom_reap_task_mm: MMU_NOTIFY_UNMAP in the 5.x and >= 6.3 trees read; CLEAR in today's zap_vma_for_reaping; assumed for linux-6.x: the switching release was not identified)`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const seen: string[] = [];
    p.spawnThread('main', function* () {
      const a = yield* p.mmap(0, P, RW, ANON);
      yield* p.store(a, fill(1, 8));
      yield* mmuNotifierRegister(new MmuNotifier('watch', {
        invalidateRangeStart: (_s, range) => { seen.push(`${MmuNotifyEvent[range.event]} ${mmuNotifierRangeBlockable(range) ? 'blockable' : 'non-blockable'}`); return 0; },
      }), p.mm);
      oomKill(k, p);
    });
    const out = k.sim.run({ untilNs: 5e9 });
    t.not(out.reason, 'failed', out.failure);
    t.deepEqual(seen, [`${event} non-blockable`]);
    t.is(PROFILES[profile].oomReapEvent, event);
  });
}

// ---- item 5: write_protect_seq, the fork/gup_fast race (5.11, 57efa1fe5957) ---------------

/**
 * A thread pins (pin_user_pages_fast, FOLL_WRITE|FOLL_LONGTERM) exactly while fork's copy is
 * stopped between page_needs_cow_for_dma ("not pinned") and ptep_set_wrprotect: the
 * scheduler steps fork aside at every preemption point (jitter, probability 1) and the
 * pinning thread is woken when fork stops at copy_present_pte. Then the parent stores.
 */
function forkPinRace(t: import('ava').ExecutionContext, profile: typeof PROFILES[ProfileName]) {
  const r = rig({ profile, schedule: { mode: 'jitter', probability: 1, maxDelayNs: 1_000 } });
  const { k, p } = r;
  let pinned = -1;
  const res: { coherent: boolean | null } = { coherent: null };
  const notes: string[] = [];
  let wake: (() => void) | null = null;
  k.sim.trace$.subscribe((rec) => {
    if (rec.type === 'preempt' && rec.site === 'copy_present_pte' && wake) {
      const w = wake;
      wake = null;
      w();
    }
    if (rec.type === 'note' && /write_protect_seq/.test(rec.text)) notes.push(rec.text);
  });
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    // MMF_HAS_PINNED already set (an earlier pin elsewhere), so fork checks every page.
    const other = ok(yield* p.mmap(0, P, RW, ANON), 'mmap other');
    ok(yield* p.store(other, fill(9, 8)), 'store other');
    const early: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, other, 1, FOLL_WRITE, early), 1);
    p.spawnThread('pinner', function* () {
      yield* k.sim.park<void>((w) => { wake = () => w(); });
      const pages: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
      pinned = pages[0]!;
    });
    const child = yield* p.fork();
    if (typeof child === 'number') throw new Error(`fork: ${child}`);
    while (pinned < 0) yield* k.sim.sleep(1_000);
    ok(yield* p.store(a, fill(2, 8)), 'parent store');
    res.coherent = frameAt(p.mm, a) === pinned && k.dmaBus.read(pinned, 0, 8).every((b) => b === 2);
  });
  const out = k.sim.run({ untilNs: 1e9 });
  t.not(out.reason, 'failed', out.failure);
  return { coherent: res.coherent, notes };
}

test('write_protect_seq (linux-5.15, mm/gup.c lockless_pages_from_mm, 57efa1fe5957): a FOLL_PIN gup_fast during fork\'s copy sees the odd sequence, takes the slow path behind mmap_lock, and the pin stays the parent\'s page', (t) => {
  const { coherent, notes } = forkPinRace(t, PROFILES['linux-5.15']);
  t.true(notes.some((n) => /odd/.test(n)), 'gup_fast backed off');
  t.is(coherent, true);
});

test('write_protect_seq: the same race on a 5.9/5.10-like kernel (linux-5.15 without the seqcount: an assumed profile, the switch alone) pins the page fork is about to share, and the parent\'s store moves away from the pin', (t) => {
  const { coherent, notes } = forkPinRace(t, { ...PROFILES['linux-5.15'], writeProtectSeq: false });
  t.deepEqual(notes, []);
  t.is(coherent, false);
});
