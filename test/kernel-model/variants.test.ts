/**
 * Kernel variants under study (kernel-model/variant.ts): for each proposal of the seed
 * threads, what it fixes and the objection raised in its thread, at the kernel's level.
 * The stories' rows (lab compare) are in test/compare/compare.test.ts.
 */
import test from 'ava';
import {
  MAP_SHARED, PG_DIRTY, PG_DMA_PINNED, PG_PRIVATE, PROFILES, VARIANTS, ZERO_PFN, applyVariants, newReclaimStats, shrinkPage, startFlusher,
  writebackFile, DEFAULT_CPU_COSTS, DIRTY_EXPIRE_INTERVAL_NS, type KernelProfile, type ProfileName,
} from '../../kernel-model/index.ts';
import {
  FOLL_LONGTERM, FOLL_WRITE, getUserPages, pinUserPagesFast, putUserPagesDirty, unpinUserPages,
} from '../../kernel-model/gup.ts';
import { P, fill, frameAt, ok, rig, runMain } from './_helpers.ts';
import { ANON, RW, traceOf } from './_pin-helpers.ts';

function on(profile: ProfileName, ...names: string[]): KernelProfile {
  const p = applyVariants(PROFILES[profile], names.map((n) => VARIANTS[n]!));
  if ('error' in p) throw new Error(p.error);
  return p;
}

const LONG_W = FOLL_WRITE | FOLL_LONGTERM;

/**
 * The 2018 sequence at kernel level: a shared file page, a long-term writable GUP
 * (get_user_pages_longterm), writeback with the buffers released (filemap.ts
 * writebackPage + try_to_release_folio), then the release's set_page_dirty_lock.
 */
function crashSequence(t: import('ava').ExecutionContext, profile: KernelProfile) {
  const r = rig({ profile });
  const { k, p } = r;
  const tr = traceOf(k);
  const file = k.createFile('f', P);
  let frame = -1;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file, 0), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const pages: number[] = [];
    yield* p.mm.mmapLock.downRead();
    t.is(yield* getUserPages(p.mm, a, 1, LONG_W, pages), 1);
    p.mm.mmapLock.upRead();
    frame = pages[0]!;
    yield* writebackFile(k, file, true);
    putUserPagesDirty(k, pages, true);
  });
  return { k, tr, frame };
}

test('hubbard-flag (seed 000 000_d0573d00011ea04d.txt, John Hubbard; mm/gup.c get_user_pages, fs try_to_release_folio): the flag keeps the buffers of a GUP page, so the release dirties it safely; linux-4.18 without it hits dirty-without-buffers', (t) => {
  const plain = crashSequence(t, PROFILES['linux-4.18']);
  t.is(plain.tr.of('dirty-without-buffers').length, 1, 'the 2018 crash');
  const flagged = crashSequence(t, on('linux-4.18', 'hubbard-flag'));
  t.is(flagged.tr.of('dirty-without-buffers').length, 0);
  t.true(flagged.k.phys.has(flagged.frame, PG_DMA_PINNED));
  t.true(flagged.k.phys.has(flagged.frame, PG_PRIVATE), 'buffers kept');
  t.true(flagged.tr.of('proposal').some((e) => e.what === 'kept-flagged'));
});

test('hubbard-flag, Christopher Lameter\'s objection (seed 000: "Multiple processes may register a page [...] How do you decide when to clear the flag?"): two processes register one page and both let go; the flag stays, and try_to_unmap (mm/vmscan.c shrink_folio_list) keeps the page unreclaimable a minute later', (t) => {
  for (const variant of [false, true]) {
    const r = rig({ profile: variant ? on('linux-4.18', 'hubbard-flag') : PROFILES['linux-4.18'] });
    const { k, p } = r;
    const q = k.createProcess('other');
    const file = k.createFile('f', P);
    let outcome = '';
    let frame = -1;
    runMain(t, r, function* () {
      for (const proc of [p, q]) {
        const a = ok(yield* proc.mmap(0, P, RW, MAP_SHARED, file, 0), 'mmap');
        ok(yield* proc.store(a, fill(2, 8)), 'store');
        const pages: number[] = [];
        yield* proc.mm.mmapLock.downRead();
        t.is(yield* getUserPages(proc.mm, a, 1, LONG_W, pages), 1);
        proc.mm.mmapLock.upRead();
        frame = pages[0]!;
        putUserPagesDirty(k, pages, true); // the registration goes away
      }
      yield* writebackFile(k, file, false);
      yield* k.sim.sleep(60_000_000_000);
      outcome = yield* shrinkPage(k, frame, newReclaimStats(), true);
    });
    if (variant) {
      t.true(k.phys.has(frame, PG_DMA_PINNED), 'still flagged a minute after the last registration went');
      t.is(outcome, 'pinned', 'kept as if pinned: unreclaimable for nothing');
    } else {
      t.false(k.phys.has(frame, PG_DMA_PINNED));
      t.not(outcome, 'pinned');
    }
  }
});

test('wait-for-dma-idle (seed 003 003_41b64ade4f32c8cf.txt, Dan Williams: "wait for the page reference count to drop to one"): with a short-term GUP the buffer release waits the 2 ms until put_page, and the release\'s set_page_dirty finds the buffers; linux-4.18 without it crashes', (t) => {
  for (const variant of [false, true]) {
    const r = rig({ profile: variant ? on('linux-4.18', 'wait-for-dma-idle') : PROFILES['linux-4.18'] });
    const { k, p } = r;
    const tr = traceOf(k);
    const file = k.createFile('f', P);
    let doneAt = -1;
    let startAt = -1;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file, 0), 'mmap');
      ok(yield* p.store(a, fill(3, 8)), 'store');
      const pages: number[] = [];
      yield* p.mm.mmapLock.downRead();
      t.is(yield* getUserPages(p.mm, a, 1, FOLL_WRITE, pages), 1);
      p.mm.mmapLock.upRead();
      // An O_DIRECT-like user: DMA for 2 ms, then set_page_dirty_lock + put_page.
      p.spawnThread('dma', function* () {
        yield* k.sim.sleep(2_000_000);
        putUserPagesDirty(k, pages, true);
      });
      startAt = k.sim.now();
      yield* writebackFile(k, file, true);
      doneAt = k.sim.now();
    });
    if (variant) {
      t.is(tr.of('dirty-without-buffers').length, 0);
      t.true(doneAt >= startAt + 2_000_000, 'the writeback waited for the GUP user');
      t.deepEqual(tr.of('proposal').map((e) => e.what), ['dma-idle-wait', 'dma-idle-done']);
    } else {
      t.is(tr.of('dirty-without-buffers').length, 1);
      // No wait: only folio_mkclean's TLB flush (cpu-costs.ts tlbFlushNs), not the 2 ms.
      t.is(doneAt, startAt + DEFAULT_CPU_COSTS.tlbFlushNs, 'the writeback did not wait');
    }
  }
});

test('wait-for-dma-idle under a long-term pin (seed 003): truncate (truncate_inode_pages) waits for a reference that never goes; the wait is bounded only by the run\'s limit, and the trace names the frame it waits on', (t) => {
  const r = rig({ profile: on('linux-4.18', 'wait-for-dma-idle') });
  const { k, p } = r;
  const tr = traceOf(k);
  const file = k.createFile('f', P);
  let truncated = false;
  let frame = -1;
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file, 0), 'mmap');
    ok(yield* p.store(a, fill(4, 8)), 'store');
    const pages: number[] = [];
    yield* p.mm.mmapLock.downRead();
    t.is(yield* getUserPages(p.mm, a, 1, LONG_W, pages), 1);
    p.mm.mmapLock.upRead();
    frame = pages[0]!;
    ok(yield* p.ftruncate(file, 0), 'ftruncate');
    truncated = true;
  });
  const out = k.sim.run({ untilNs: 10_000_000_000 });
  t.is(out.reason, 'time-limit');
  t.false(truncated, 'truncate is stuck behind the long-term GUP reference');
  const waits = tr.of('proposal');
  t.deepEqual(waits.map((e) => [e.what, e.caller, e.frame]), [['dma-idle-wait', 'truncate_inode_pages', frame]]);
});

test('gup-dirty-forever (seed 002 002_c720179251b970bc.txt, Jérôme Glisse: "never allow page write back to restore the page in a clean state"): writeback skips the GUP page, so no PROTECTION_PAGE and no clean page under DMA; the objection ("This does disable thing like COW and other fs feature"): fsync returns 0 with the bytes not on disk until the release', (t) => {
  const r = rig({ profile: on('linux-4.18', 'gup-dirty-forever') });
  const { k, p } = r;
  const tr = traceOf(k);
  const file = k.createFile('f', P);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file, 0), 'mmap');
    ok(yield* p.store(a, fill(5, 8)), 'store');
    const pages: number[] = [];
    yield* p.mm.mmapLock.downRead();
    t.is(yield* getUserPages(p.mm, a, 1, LONG_W, pages), 1);
    p.mm.mmapLock.upRead();
    t.is(yield* p.fsync(file), 0);
    t.true(k.phys.has(pages[0]!, PG_DIRTY), 'still dirty');
    t.deepEqual([...file.diskPage(0).subarray(0, 8)], new Array(8).fill(0), 'fsync returned 0, nothing on disk');
    t.is(tr.of('writeback').length, 0);
    putUserPagesDirty(k, pages, true);
    t.is(yield* p.fsync(file), 0);
    t.deepEqual([...file.diskPage(0).subarray(0, 8)], [...fill(5, 8)], 'written once the pin went');
  });
  t.is(tr.of('invalidate-start').filter((e) => e.event === 'PROTECTION_PAGE').length, 1, 'only the fsync after the release write-protects');
});

test('dirty-at-gup (seed 002: Andrea Arcangeli\'s idea, relayed by Jérôme Glisse) and Dave Chinner\'s objection ("what prevents background writeback from cleaning the dirty page ~30s into a long term pin?"): the flusher with dirty_expire_interval (mm/page-writeback.c, 30 s) cleans the page at the first pass once it is 30 s dirty (35 s in, the store\'s fault dirtied it just after 0), and the release no longer dirties it: no crash, the page stays clean', (t) => {
  const r = rig({ profile: on('linux-4.18', 'dirty-at-gup') });
  const { k, p } = r;
  const tr = traceOf(k);
  const file = k.createFile('f', P);
  startFlusher(k, { periodNs: 5_000_000_000, dropBuffers: true, dirtyExpireNs: DIRTY_EXPIRE_INTERVAL_NS });
  let frame = -1;
  let dirtiedAt = -1;
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file, 0), 'mmap');
    ok(yield* p.store(a, fill(6, 8)), 'store');
    const pages: number[] = [];
    yield* p.mm.mmapLock.downRead();
    t.is(yield* getUserPages(p.mm, a, 1, LONG_W, pages), 1);
    p.mm.mmapLock.upRead();
    frame = pages[0]!;
    dirtiedAt = file.dirtiedWhenNs;
    yield* k.sim.sleep(40_000_000_000);
    putUserPagesDirty(k, pages, true);
  });
  k.sim.run({ untilNs: 45_000_000_000 });
  const wb = tr.of('writeback');
  // The store's fault takes CPU time (cpu-costs.ts pageFaultNs), so the inode is dirtied
  // just after 0: at the 30 s pass it is not yet 30 s dirty, and the 35 s pass (one
  // flusher period later) cleans it, the write coming after folio_mkclean's TLB flush.
  t.true(dirtiedAt > 0 && dirtiedAt < 5_000_000_000, `dirtied at ${dirtiedAt} ns`);
  const pass = Math.ceil((dirtiedAt + DIRTY_EXPIRE_INTERVAL_NS) / 5_000_000_000) * 5_000_000_000;
  t.is(pass, 35_000_000_000);
  t.deepEqual(wb.map((e) => e.t), [pass + DEFAULT_CPU_COSTS.tlbFlushNs], 'not at 5..30 s: the inode was not yet 30 s dirty');
  t.is(tr.of('dirty-without-buffers').length, 0, 'no crash at release');
  t.deepEqual(tr.of('proposal').map((e) => e.what), ['release-not-dirtied']);
  t.false(k.phys.has(frame, PG_DIRTY), 'clean: what the device wrote after 30 s reaches no disk');
});

test('read-pin-shared and read-pin-exclusive (seed 001 001_0d3a537837c8270b.txt, Linus Torvalds\' two options, Jason Gunthorpe\'s #1 and #2): a read-only long-term pin of a never-written ring pins the zero page under #1 (Gunthorpe: "will never see any user modifications") and a private page the process keeps writing under #2', (t) => {
  for (const [variant, zero] of [['read-pin-shared', true], ['read-pin-exclusive', false]] as const) {
    for (const profile of ['linux-5.8', 'linux-5.15', 'linux-6.x'] as const) {
      const r = rig({ profile: on(profile, variant) });
      const { k, p } = r;
      runMain(t, r, function* () {
        const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
        const pages: number[] = [];
        t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_LONGTERM, pages), 1);
        t.is(pages[0] === ZERO_PFN, zero, `${variant} on ${profile}`);
        ok(yield* p.store(a, fill(7, 8)), 'store');
        t.is(frameAt(p.mm, a) === pages[0], !zero, `${variant} on ${profile}: the process writes the pinned page`);
        unpinUserPages(k, pages);
      });
    }
  }
});

/**
 * The race of seed 001's seqcount: a thread pins (pin_user_pages_fast) exactly while
 * fork's copy stands between page_needs_cow_for_dma and the write-protect.
 */
function forkPinRace(t: import('ava').ExecutionContext, profile: KernelProfile) {
  const r = rig({ profile, schedule: { mode: 'jitter', probability: 1, maxDelayNs: 1_000 } });
  const { k, p } = r;
  let pinned = -1;
  const res: { coherent: boolean | null } = { coherent: null };
  let wake: (() => void) | null = null;
  k.sim.trace$.subscribe((rec) => {
    if (rec.type === 'preempt' && rec.site === 'copy_present_pte' && wake) {
      const w = wake;
      wake = null;
      w();
    }
  });
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const other = ok(yield* p.mmap(0, P, RW, ANON), 'mmap other');
    ok(yield* p.store(other, fill(9, 8)), 'store other');
    const early: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, other, 1, FOLL_WRITE, early), 1);
    p.spawnThread('pinner', function* () {
      yield* k.sim.park<void>((w) => { wake = () => w(); });
      const pages: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, LONG_W, pages), 1);
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
  return res.coherent;
}

test('fork-seqcount (seed 001, Linus Torvalds and Jason Gunthorpe: "wrappered in a seq count so that gup_fast always goes to the slow path if fork is concurrent"; mm/gup.c lockless_pages_from_mm, 57efa1fe5957 in 5.11): on linux-5.8 with fork\'s early copy (read-pin-exclusive) a gup_fast pin slips between the check and the write-protect; with the seqcount it backs off and stays coherent', (t) => {
  t.is(forkPinRace(t, on('linux-5.8', 'read-pin-exclusive')), false, 'the race: the pin is left behind the parent\'s COW');
  t.is(forkPinRace(t, on('linux-5.8', 'read-pin-exclusive', 'fork-seqcount')), true);
  // Jason's objection is a cost he accepts ("an unconditional slow path on race should be OK"): the
  // pinning thread waited for fork's mmap_lock, which the race test above shows by completing.
});

test('variants are labelled proposals and refuse profiles they cannot apply to: fork-seqcount is part of linux-5.15 already, read pins need FOLL_PIN (5.6)', (t) => {
  for (const v of Object.values(VARIANTS)) {
    t.is(v.status, 'proposal');
    t.regex(v.seedFile, /^00[0-4]_[0-9a-f]{16}\.txt$/);
    t.truthy(v.speaker && v.date && v.claim);
  }
  const seq = applyVariants(PROFILES['linux-5.15'], [VARIANTS['fork-seqcount']!]);
  t.regex('error' in seq ? seq.error : '', /part of linux-5.15 already/);
  const rp = applyVariants(PROFILES['linux-4.18'], [VARIANTS['read-pin-exclusive']!]);
  t.regex('error' in rp ? rp.error : '', /FOLL_PIN/);
  const ok2 = applyVariants(PROFILES['linux-4.18'], [VARIANTS['hubbard-flag']!]);
  t.false('error' in ok2);
  if (!('error' in ok2)) {
    t.is(ok2.name, 'linux-4.18', 'the profile keeps its name; the variant is beside it');
    t.is(ok2.variant?.name, 'hubbard-flag');
  }
});
