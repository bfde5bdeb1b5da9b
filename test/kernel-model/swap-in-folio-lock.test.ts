/**
 * do_swap_page (mm/memory.c) against shrink_folio_list (mm/vmscan.c): a swap-in that finds
 * its page in the swap cache takes a reference and the folio lock (folio_lock_or_retry)
 * before mapping it. Reclaim holds that lock from try_to_unmap to __remove_mapping, so a
 * fault during reclaim's CLEAR (kernel rule 21e) waits, and its reference makes the
 * refcount check of __remove_mapping fail: the page stays in the swap cache and is mapped
 * again, never freed under the process.
 */
import test from 'ava';
import { MmuNotifier, MmuNotifyEvent, PTE_SWAP, mmuNotifierRegister, pteHas, vpn } from '../../kernel-model/index.ts';
import { newReclaimStats, shrinkPage, type ReclaimOutcome } from '../../kernel-model/vmscan.ts';
import { P, bytes, fill, frameAt, ok } from './_helpers.ts';
import { ANON, RW, rigOn } from './_pin-helpers.ts';

test('rule 21e, do_swap_page: a store during reclaim\'s CLEAR swaps the page in from the swap cache after reclaim unlocks it; reclaim keeps the page (busy) and the store survives', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  let a = 0;
  let frame = -1;
  let outcome: ReclaimOutcome | undefined;
  let swapPteSeen = false;
  let storedAt = -1;
  let reclaimDoneAt = -1;
  p.spawnThread('main', function* () {
    a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0x11, P)), 'store');
    frame = frameAt(p.mm, a);
    // A secondary MMU whose end callback of a CLEAR takes 10 us: reclaim is still inside
    // try_to_unmap, the folio locked and in the swap cache, the PTE already a swap entry.
    ok(yield* mmuNotifierRegister(new MmuNotifier('slow-end', {
      *invalidateRangeEnd(_s, range) {
        if (range.event === MmuNotifyEvent.CLEAR) yield* k.sim.sleep(10_000);
      },
    }), p.mm), 'register');
    k.sim.spawn('reclaim', function* () {
      outcome = yield* shrinkPage(k, frame, newReclaimStats(), true);
      reclaimDoneAt = k.sim.now();
    }, { kind: 'kthread' });
    yield* k.sim.sleep(5_000);
    swapPteSeen = pteHas(p.mm.pageTable.get(vpn(a)), PTE_SWAP);
    ok(yield* p.store(a + 16, fill(0x22, 16)), 'store during the CLEAR');
    storedAt = k.sim.now();
  });
  const out = k.sim.run();
  t.not(out.reason, 'failed', out.failure);
  t.true(swapPteSeen, 'the store found a swap PTE: reclaim was between unmap and free');
  t.is(outcome, 'busy', 'the swap-in\'s reference kept the page: __remove_mapping does not free it');
  t.true(storedAt >= reclaimDoneAt, 'the swap-in waited for reclaim\'s folio lock');
  t.is(frameAt(p.mm, a), frame, 'mapped again from the swap cache, not read back');
  t.true(k.phys.isAllocated(frame), 'the mapped page was not freed');
  t.is(k.phys.mapcount[frame], 1);
  const want = fill(0x11, P);
  want.set(fill(0x22, 16), 16);
  let got: Uint8Array | undefined;
  p.spawnThread('check', function* () { got = bytes(yield* p.load(a, P), 'load'); });
  k.sim.run();
  t.deepEqual(got, want, 'both stores are in the page the process maps');
});
