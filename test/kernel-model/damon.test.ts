/**
 * The young callbacks outside reclaim (kernel rule 37; issue 14 item 8): DAMON's
 * virtual-address aging (mm/damon/vaddr.c) makes sampled pages old with
 * mmu_notifier_clear_young and checks them with mmu_notifier_test_young, so a page only a
 * secondary MMU touches is still seen as accessed, and the CPU accessed bit alone is not
 * the whole story.
 */
import test from 'ava';
import { MmuNotifier, mmuNotifierRegister, startDamon } from '../../kernel-model/index.ts';
import { P, fill, ok } from './_helpers.ts';
import { ANON, RW, rigOn } from './_pin-helpers.ts';

for (const deviceTouches of [true, false]) {
  test(`rule 37 (mm/damon/vaddr.c damon_ptep_mkold, damon_young_pmd_entry): kdamond calls clear_young on each sample and test_young when the CPU bit is clear; a page only the device touches counts as accessed ${deviceTouches ? '(device touching)' : '(negative control: device idle)'}`, (t) => {
    const r = rigOn('linux-6.x');
    const { k, p } = r;
    const calls = { clear: 0, test: 0, flush: 0 };
    let stats: ReturnType<typeof startDamon> | null = null;
    let buf = 0;
    p.spawnThread('main', function* () {
      buf = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(buf, fill(1, 8)), 'store once');
      ok(yield* mmuNotifierRegister(new MmuNotifier('kvm-like', {
        clearYoung: (_s, _mm, start, end) => { calls.clear++; t.is(end - start, P); return deviceTouches; },
        testYoung: (_s, _mm, start) => { calls.test++; t.is(start, buf); return deviceTouches; },
        clearFlushYoung: () => { calls.flush++; return false; },
      }), p.mm), 'register');
      stats = startDamon(k, p.mm, { samplingNs: 1_000_000, aggregationNs: 10_000_000 });
    });
    const out = k.sim.run({ untilNs: 35_000_000 });
    t.not(out.reason, 'failed', out.failure);
    const s = stats as unknown as ReturnType<typeof startDamon>;
    t.true(s.aggregated.length >= 3);
    t.true(calls.clear > 20, `clear_young calls: ${calls.clear}`);
    t.true(calls.test > 20, `test_young calls: ${calls.test}`);
    t.is(calls.flush, 0, 'DAMON does not use clear_flush_young');
    // The first interval also counts the CPU store; later ones only what the device did.
    const later = s.aggregated.slice(1).map((agg) => agg[0]![2]);
    if (deviceTouches) t.true(later.every((n) => n >= 9), `nr_accesses ${later.join(',')}`);
    else t.deepEqual(later, later.map(() => 0));
  });
}
