/**
 * Secondary TLBs (issue 14 item 8, second half): since 6.6 the architecture's TLB flush
 * calls mmu_notifier_arch_invalidate_secondary_tlbs (arch/x86/mm/tlb.c flush_tlb_mm_range,
 * arm64 __flush_tlb_range_nosync), so a device sharing the CPU page tables (IOMMU SVA,
 * driver/examples/sva-iotlb.ts) drops its cached translations at every flush, before an
 * unmapped page is freed. Before this change nothing but a test called it, and the SVA
 * IOTLB kept translating to freed pages. Kernel rule 38.
 */
import test from 'ava';
import {
  EFAULT, Kernel, MADV_DONTNEED, MADV_PAGEOUT, MREMAP_FIXED, MREMAP_MAYMOVE, MmuNotifier, PROFILES, PROT_READ, ULONG_MAX, mmuNotifierRegister,
  secondaryTlbsFlushedByArch, type Process, type TraceRecord,
} from '../../kernel-model/index.ts';
import { SvaIotlb, demo } from '../../driver/examples/sva-iotlb.ts';
import { P, fill, frameAt, ok } from './_helpers.ts';
import { ANON, RW } from './_pin-helpers.ts';

function world(profile: keyof typeof PROFILES = 'linux-6.x') {
  const k = new Kernel({ seed: 1, profile: PROFILES[profile] });
  const p = k.createProcess('app');
  const trace: TraceRecord[] = [];
  k.sim.trace$.subscribe((r) => trace.push(r));
  return { k, p, trace };
}

test('arch/x86/mm/tlb.c flush_tlb_mm_range (6.6+): munmap invalidates the SVA IOTLB over the unmapped page before the page is freed; the next device read faults', (t) => {
  const { k, p, trace } = world();
  let freed = -1;
  let after: Uint8Array | number = 0;
  let sva!: SvaIotlb;
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, 4 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a + P, fill(42, 8)), 'store');
    sva = new SvaIotlb(k, p.mm);
    ok(yield* sva.bind(), 'bind');
    t.deepEqual(sva.dmaRead(a + P, 1), new Uint8Array([42]));
    freed = frameAt(p.mm, a + P);
    ok(yield* p.munmap(a, 4 * P), 'munmap');
    after = sva.dmaRead(a + P, 1);
  });
  k.sim.run();
  t.is(sva.invalidations.length, 1, 'one flush: the gathered span of the one populated page');
  const [s, e] = sva.invalidations[0]!;
  t.is(e - s, P);
  t.is(after, -EFAULT, 'the IOTLB entry is gone (before: the device read the freed page)');
  const cb = trace.findIndex((r) => r.type === 'callback-start' && r.op === 'arch_invalidate_secondary_tlbs');
  const free = trace.findIndex((r) => r.type === 'page-free' && r.frame === freed);
  t.true(cb >= 0 && free > cb, 'invalidated before the frame went back to the allocator');
});

test('tlb_finish_mmu flushes only what was cleared: MADV_DONTNEED over unpopulated pages sends no secondary invalidation (the CLEAR pair still goes to range subscribers)', (t) => {
  const { k, p } = world();
  let sva!: SvaIotlb;
  const starts: string[] = [];
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, 8 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a + 5 * P, fill(1, 8)), 'store');
    sva = new SvaIotlb(k, p.mm);
    ok(yield* sva.bind(), 'bind');
    ok(yield* mmuNotifierRegister(new MmuNotifier('ranges', { invalidateRangeStart: (_s, r) => { starts.push(`${r.start}-${r.end}`); return 0; } }), p.mm), 'register');
    ok(yield* p.madvise(a, 4 * P, MADV_DONTNEED), 'dontneed unpopulated');
    t.is(sva.invalidations.length, 0);
    ok(yield* p.madvise(a, 8 * P, MADV_DONTNEED), 'dontneed');
    t.deepEqual(sva.invalidations, [[a + 5 * P, a + 6 * P]], 'exactly the cleared page, not the 8-page request');
    t.is(starts.length, 2, 'both madvise calls sent their CLEAR pair');
  });
  k.sim.run();
  t.is(sva.invalidations.length, 1);
});

test('ptep_clear_flush (6.6+): a COW break and MADV_PAGEOUT reclaim each invalidate the one page; fork flushes the whole parent mm (dup_mmap flush_tlb_mm)', (t) => {
  const { k, p } = world();
  let sva!: SvaIotlb;
  const seen: string[] = [];
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    ok(yield* p.store(a + P, fill(2, 8)), 'store');
    sva = new SvaIotlb(k, p.mm);
    ok(yield* sva.bind(), 'bind');
    const child = yield* p.fork('child');
    t.true(typeof child !== 'number');
    seen.push(sva.invalidations.map(([s, e]) => `${s === 0 && e === ULONG_MAX ? 'all' : e - s}`).join(','));
    const before = frameAt(p.mm, a);
    t.is(sva.translate(a, false), before);
    ok(yield* p.store(a, fill(3, 8)), 'COW store');
    t.not(frameAt(p.mm, a), before);
    seen.push(sva.invalidations.slice(1).map(([s, e]) => `${s === a && e === a + P}`).join(','));
    t.is(sva.translate(a, false), frameAt(p.mm, a), 'the device follows the COW copy');
    t.is(sva.translate(a + P, false), frameAt(p.mm, a + P));
    // MADV_PAGEOUT leaves a page another mm maps alone (madvise_cold_or_pageout_pte_range):
    // the child lets go of it first.
    ok(yield* (child as Process).munmap(a + P, P), 'child munmap');
    ok(yield* p.madvise(a + P, P, MADV_PAGEOUT), 'pageout');
    seen.push(sva.invalidations.slice(2).map(([s, e]) => `${s === a + P && e === a + 2 * P}`).join(','));
    t.is(sva.translate(a + P, false), -EFAULT, 'swapped out: nothing to translate');
  });
  k.sim.run();
  t.deepEqual(seen, ['all', 'true', 'true']);
});

test('change_protection flushes what it changed (6.6+): after mprotect(PROT_READ) a device write through the IOTLB faults instead of writing', (t) => {
  const { k, p } = world();
  const results: number[] = [];
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const sva = new SvaIotlb(k, p.mm);
    ok(yield* sva.bind(), 'bind');
    results.push(sva.dmaWrite(a, fill(5, 4)));
    ok(yield* p.mprotect(a, P, PROT_READ), 'mprotect');
    results.push(sva.dmaWrite(a, fill(6, 4)));
  });
  k.sim.run();
  t.deepEqual(results, [0, -EFAULT]);
});

test('mm/mremap.c move_ptes flushes the old addresses (6.6+): after an mremap move the device translates the new address and faults at the old one', (t) => {
  const { k, p } = world();
  const got: (number | string)[] = [];
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(8, 8)), 'store');
    const sva = new SvaIotlb(k, p.mm);
    ok(yield* sva.bind(), 'bind');
    const frame = sva.translate(a, false);
    const b = ok(yield* p.mremap(a, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, a + 64 * P), 'mremap');
    t.not(b, a);
    got.push(sva.translate(a, false), sva.translate(b, false) === frame ? 'same frame' : 'other frame');
    t.deepEqual(sva.invalidations[0], [a, a + P], 'the flush covers the one present page moved');
  });
  k.sim.run();
  t.deepEqual(got, [-EFAULT, 'same frame']);
});

test('rule 38: the callback runs in atomic context (page-table lock): a sleeping secondary-TLB callback is recorded', (t) => {
  const { k, p, trace } = world();
  const sleeper = new MmuNotifier('sleeper', { *archInvalidateSecondaryTlbs() { yield* k.sim.sleep(1_000); } });
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    ok(yield* mmuNotifierRegister(sleeper, p.mm), 'register');
    ok(yield* p.munmap(a, P), 'munmap');
  });
  k.sim.run();
  t.true(trace.some((r) => r.type === 'might-sleep' && r.context === 'page table lock held'));
});

test('profiles: only kernels from 6.6 call arch_invalidate_secondary_tlbs from the TLB flush (linux-5.8: the SVA IOTLB hears nothing)', (t) => {
  t.true(secondaryTlbsFlushedByArch(PROFILES['linux-6.x']));
  t.false(secondaryTlbsFlushedByArch(PROFILES['linux-5.8']));
  const { k, p } = world('linux-5.8');
  let sva!: SvaIotlb;
  p.spawnThread('main', function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    sva = new SvaIotlb(k, p.mm);
    ok(yield* sva.bind(), 'bind');
    sva.dmaRead(a, 1);
    ok(yield* p.munmap(a, P), 'munmap');
  });
  k.sim.run();
  t.deepEqual(sva.invalidations, []);
});

test('driver/examples/sva-iotlb.ts demo: read, munmap, the invalidation, the faulting read', (t) => {
  const out: string[] = [];
  demo((l) => out.push(l));
  t.is(out.length, 3);
  t.regex(out[1]!, /arch_invalidate_secondary_tlbs \[0x[0-9a-f]+, 0x[0-9a-f]+\); IOTLB holds 0/);
  t.regex(out[2]!, /-EFAULT/);
});
