/**
 * Allocation contexts (issue 14 item 7): the page allocator reclaims memory itself for an
 * allocation that may sleep instead of failing at once, and lockdep's `fs_reclaim`
 * pseudo-lock is primed as the kernel primes it.
 * [read] mm/page_alloc.c (__need_reclaim, fs_reclaim_acquire, __perform_reclaim,
 * __alloc_pages_slowpath); include/linux/sched/mm.h (might_alloc, memalloc_noreclaim_save).
 */
import test from 'ava';
import {
  ENOMEM, FS_RECLAIM_MAP, GFP_ATOMIC, GFP_KERNEL, GFP_NOFS, GFP_NOWAIT, INVALIDATE_RANGE_START_MAP, Kernel, MmuNotifier, Mutex,
  allocPages, fsReclaimAcquire, fsReclaimRelease, memallocNoreclaimRestore, memallocNoreclaimSave, minWatermark, mmuNotifierRegister, type Co,
} from '../../kernel-model/index.ts';
import { P, fill, ok } from './_helpers.ts';
import { ANON, RW, traceOf } from './_pin-helpers.ts';

/** A kernel whose memory the process `app` has filled with `pages` written anonymous pages. */
function* fillMemory(k: Kernel, pages: number): Co<number> {
  const p = k.processes.values().next().value!;
  const a = ok(yield* p.mmap(0, pages * P, RW, ANON), 'mmap');
  for (let i = 0; i < pages; i++) ok(yield* p.store(a + i * P, fill(1 + (i % 200), 16)), `store ${i}`);
  return a;
}

test('mm/page_alloc.c __alloc_pages_direct_reclaim: a GFP_KERNEL allocation with memory exhausted reclaims in the allocating task instead of failing (issue 14 item 7)', (t) => {
  const k = new Kernel({ seed: 1, frames: 64 });
  const app = k.createProcess('app');
  const trace = traceOf(k);
  let got = 0;
  let freeBefore = -1;
  let allocator = -1;
  app.spawnThread('main', function* () {
    // Fill memory to the last frame (the plain free list ignores watermarks).
    yield* fillMemory(k, 40);
    const hog: number[] = [];
    for (let f = k.phys.allocPage(); f >= 0; f = k.phys.allocPage()) hog.push(f);
    freeBefore = k.phys.freeFrames;
    t.is(k.phys.allocPage(), -ENOMEM, 'the free list alone has nothing left (the old behaviour)');
    const kt = k.sim.spawn('driver-alloc', function* () {
      got = yield* allocPages(k, GFP_KERNEL);
    }, { kind: 'kthread' });
    allocator = kt.id;
    yield* k.sim.join(kt);
    for (const f of hog) k.phys.put(f);
  });
  k.sim.run();
  t.is(freeBefore, 0);
  t.true(got > 0, `allocation result ${got}`);
  const reclaimed = trace.of('reclaim').filter((r) => r.outcome === 'freed');
  t.true(reclaimed.length > 0, 'reclaim freed pages');
  t.true(reclaimed.every((r) => r.task === allocator), 'in the allocating task (direct reclaim), not kswapd');
});

test('mm/page_alloc.c: below the min watermark GFP_NOWAIT fails at once without reclaiming, GFP_ATOMIC takes a reserve frame, GFP_KERNEL reclaims to above the watermark', (t) => {
  const k = new Kernel({ seed: 1, frames: 128 });
  const app = k.createProcess('app');
  const trace = traceOf(k);
  const results: Record<string, number> = {};
  const reclaimsAfter: Record<string, number> = {};
  const count = () => trace.of('reclaim').length;
  app.spawnThread('main', function* () {
    yield* fillMemory(k, 80);
    const min = minWatermark(k);
    const hog: number[] = [];
    while (k.phys.freeFrames > min) hog.push(k.phys.allocPage());
    results.nowait = yield* allocPages(k, GFP_NOWAIT);
    reclaimsAfter.nowait = count();
    results.atomic = yield* allocPages(k, GFP_ATOMIC);
    reclaimsAfter.atomic = count();
    results.kernel = yield* allocPages(k, GFP_KERNEL);
    reclaimsAfter.kernel = count();
    results.freeAfter = k.phys.freeFrames;
    results.min = min;
    for (const f of hog) k.phys.put(f);
  });
  k.sim.run();
  t.is(results.nowait, -ENOMEM);
  t.is(reclaimsAfter.nowait, 0);
  t.true(results.atomic! > 0);
  t.is(reclaimsAfter.atomic, 0, 'GFP_ATOMIC cannot reclaim');
  t.true(results.kernel! > 0);
  t.true(reclaimsAfter.kernel! > 0, 'GFP_KERNEL reclaimed');
  t.true(results.freeAfter! >= results.min!, `free ${results.freeAfter} vs min ${results.min}`);
});

test('mm/memory.c do_anonymous_page + mm/page_alloc.c: a page fault with memory exhausted reclaims (CLEAR of another page to a subscriber, from the faulting thread) and succeeds', (t) => {
  const k = new Kernel({ seed: 1, frames: 64 });
  const app = k.createProcess('app');
  const victim = k.createProcess('victim');
  const heard: { start: number; task: number | null }[] = [];
  let faulter = -1;
  let ret = 1;
  const sub = new MmuNotifier('watcher', {
    invalidateRangeStart: (_s, range) => { heard.push({ start: range.start, task: k.sim.current?.id ?? null }); return 0; },
  });
  victim.spawnThread('main', function* () {
    const a = ok(yield* victim.mmap(0, 30 * P, RW, ANON), 'mmap');
    for (let i = 0; i < 30; i++) ok(yield* victim.store(a + i * P, fill(7, 8)), 'store');
    ok(yield* mmuNotifierRegister(sub, victim.mm), 'register');
    const hog: number[] = [];
    for (let f = k.phys.allocPage(); f >= 0; f = k.phys.allocPage()) hog.push(f);
    const th = app.spawnThread('faulter', function* () {
      const b = ok(yield* app.mmap(0, P, RW, ANON), 'mmap');
      ret = yield* app.store(b, fill(9, 8));
    });
    faulter = th.id;
    yield* k.sim.join(th);
    for (const f of hog) k.phys.put(f);
  });
  k.sim.run();
  t.is(ret, 0, 'the store faulted a page in (before: -ENOMEM)');
  t.true(heard.length > 0, 'reclaim unmapped a victim page with a CLEAR');
  t.true(heard.every((h) => h.task === faulter), 'the invalidations ran in the faulting thread');
});

test('mm/page_alloc.c fs_reclaim_acquire: a GFP_KERNEL allocation under a lock that reclaim is known to take is a lock-order report; GFP_NOWAIT and a memalloc_noreclaim scope are not', (t) => {
  const k = new Kernel({ seed: 1 });
  const lock = new Mutex(k.sim, 'drv.lock', 'drv.lock');
  const reports: string[] = [];
  k.sim.trace$.subscribe((r) => { if (r.type === 'lock-order') reports.push(`${r.first} -> ${r.second}`); });
  k.sim.spawn('t', function* () {
    // What ib_init_umem_odp does since 3f5f6321: fs_reclaim -> lock.
    fsReclaimAcquire(k.sim, GFP_KERNEL);
    yield* lock.lock();
    lock.unlock();
    fsReclaimRelease(k.sim, GFP_KERNEL);

    yield* lock.lock();
    const a = yield* allocPages(k, GFP_NOWAIT);
    t.true(a > 0);
    k.phys.put(a);
    t.deepEqual(reports, [], 'GFP_NOWAIT cannot reclaim: no report');
    const saved = memallocNoreclaimSave(k.sim);
    const b = yield* allocPages(k, GFP_KERNEL);
    memallocNoreclaimRestore(k.sim, saved);
    k.phys.put(b);
    t.deepEqual(reports, [], 'inside memalloc_noreclaim_save: no report');
    const c = yield* allocPages(k, GFP_KERNEL);
    k.phys.put(c);
    lock.unlock();
  });
  k.sim.run();
  t.deepEqual(reports, [`drv.lock -> ${FS_RECLAIM_MAP}`]);
});

test('mm/page_alloc.c fs_reclaim_acquire touches the notifier map: GFP_NOFS under the lock an invalidate callback takes is still a lock-order report (kernel rule 8)', (t) => {
  const k = new Kernel({ seed: 1 });
  const app = k.createProcess('app');
  const lock = new Mutex(k.sim, 'drv.lock', 'drv.lock');
  const reports: string[] = [];
  k.sim.trace$.subscribe((r) => { if (r.type === 'lock-order') reports.push(`${r.first} -> ${r.second}`); });
  const sub = new MmuNotifier('drv', {
    *invalidateRangeStart() { yield* lock.lock(); lock.unlock(); return 0; },
  });
  app.spawnThread('main', function* () {
    const a = ok(yield* app.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* app.store(a, fill(1, 8)), 'store');
    ok(yield* mmuNotifierRegister(sub, app.mm), 'register');
    ok(yield* app.munmap(a, P), 'munmap'); // the callback: map -> drv.lock
    yield* lock.lock();
    const f = yield* allocPages(k, GFP_NOFS);
    k.phys.put(f);
    lock.unlock();
  });
  k.sim.run();
  t.deepEqual(reports, [`drv.lock -> ${INVALIDATE_RANGE_START_MAP}`]);
});
