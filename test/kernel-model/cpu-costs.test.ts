/**
 * Where the CPU cost model charges its time (kernel-model/cpu-costs.ts): each test gives
 * the charges distinct values and checks that an operation takes exactly its own, so a
 * charge in the wrong place, or a missing or doubled one, changes the figure.
 */
import test from 'ava';
import { MADV_DONTNEED, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, ZERO_CPU_COSTS, type CpuCosts } from '../../kernel-model/index.ts';
import { P, fill, ok, rig, runMain } from './_helpers.ts';
import { traceOf } from './_pin-helpers.ts';

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
// Distinct powers of ten, so a sum names its parts.
const COSTS: Partial<CpuCosts> = { ...ZERO_CPU_COSTS, pageFaultNs: 1_000, zapPerPageNs: 10, tlbFlushNs: 100_000, mmapLockHandoffNs: 1_000_000 };

test('a first-touch anonymous fault costs pageFaultNs (mm/memory.c handle_mm_fault -> do_anonymous_page)', (t) => {
  const r = rig({ cpuCosts: COSTS });
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, 4 * P, RW, ANON), 'mmap');
    const t0 = r.k.sim.now();
    ok(yield* r.p.store(a, fill(1, 8)), 'store');
    t.is(r.k.sim.now() - t0, 1_000, 'one fault');
    const t1 = r.k.sim.now();
    ok(yield* r.p.store(a + 8, fill(2, 8)), 'store');
    t.is(r.k.sim.now() - t1, 0, 'the PTE is there: no fault, no charge');
  });
});

test('munmap of three populated pages costs three zapped PTEs and one TLB flush (mm/memory.c zap_pte_range, mm/mmu_gather.c tlb_finish_mmu)', (t) => {
  const r = rig({ cpuCosts: COSTS });
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, 4 * P, RW, ANON), 'mmap');
    for (let i = 0; i < 3; i++) ok(yield* r.p.store(a + i * P, fill(i, 1)), 'store');
    const t0 = r.k.sim.now();
    ok(yield* r.p.munmap(a, 4 * P), 'munmap');
    t.is(r.k.sim.now() - t0, 3 * 10 + 100_000);
    const t1 = r.k.sim.now();
    const b = ok(yield* r.p.mmap(0, 4 * P, RW, ANON), 'mmap');
    ok(yield* r.p.munmap(b, 4 * P), 'munmap');
    t.is(r.k.sim.now() - t1, 0, 'an unpopulated range clears no PTE and flushes nothing');
  });
});

test('the zap work falls inside the notifier window, the TLB flush after its end (mm/memory.c zap_page_range_single: unmap_single_vma between invalidate_range_start and _end, then tlb_finish_mmu)', (t) => {
  const r = rig({ cpuCosts: COSTS });
  const trace = traceOf(r.k);
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, 4 * P, RW, ANON), 'mmap');
    for (let i = 0; i < 3; i++) ok(yield* r.p.store(a + i * P, fill(i, 1)), 'store');
    const t0 = r.k.sim.now();
    ok(yield* r.p.madvise(a, 4 * P, MADV_DONTNEED), 'madvise');
    t.is(r.k.sim.now() - t0, 3 * 10 + 100_000, 'three zapped PTEs and one flush');
    const [start] = trace.of('invalidate-start').filter((x) => x.t >= t0);
    const [end] = trace.of('invalidate-end').filter((x) => x.t >= t0);
    t.is(start!.t, t0);
    t.is(end!.t - start!.t, 3 * 10, 'the window stays open for the zap, not for the flush');
  });
});

test('a contended mmap_lock costs the waiter its hand-off (kernel/locking/rwsem.c rwsem_mark_wake, then the wake-up); an uncontended one costs nothing', (t) => {
  const r = rig({ cpuCosts: COSTS });
  const lock = r.p.mm.mmapLock;
  let readerGot = -1;
  let uncontended = -1;
  r.p.spawnThread('writer', function* () {
    yield* lock.downWrite();
    yield* r.k.sim.sleep(5_000);
    lock.upWrite();
  });
  runMain(t, r, function* () {
    yield* r.k.sim.sleep(1);
    yield* lock.downRead();
    readerGot = r.k.sim.now();
    lock.upRead();
    const t0 = r.k.sim.now();
    yield* lock.downRead();
    uncontended = r.k.sim.now() - t0;
    lock.upRead();
  });
  t.is(readerGot, 5_000 + 1_000_000, 'granted at the release, running one hand-off later');
  t.is(uncontended, 0);
});
