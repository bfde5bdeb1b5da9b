/**
 * exit_mmap's locking (kernel rule 33; issue 14 item 6): on 6.x (mm/mmap.c exit_mmap)
 * unmap_vmas, and with it the UNMAP callbacks, runs under mmap_read_lock; the page-table
 * and VMA teardown takes mmap_write_lock. So another reader of the mm gets in while the
 * subscribers handle the UNMAP; on older profiles it waits for the whole teardown.
 */
import test from 'ava';
import {
  MmuIntervalNotifier, MmuNotifyEvent, TASK_SIZE, mmuIntervalNotifierInsert, mmuIntervalSetSeq, type ProfileName,
} from '../../kernel-model/index.ts';
import { P, fill, ok, runMain } from './_helpers.ts';
import { ANON, RW, rigOn } from './_pin-helpers.ts';

for (const [profile, concurrent] of [['linux-6.x', true], ['linux-5.8', false]] as [ProfileName, boolean][]) {
  test(`rule 33 (mm/mmap.c exit_mmap, ${profile}): a reader takes the mmap lock ${concurrent ? 'while the UNMAP callbacks run (read lock around unmap_vmas)' : 'only after the teardown (write lock throughout)'}`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const mm = p.mm;
    let unmapStart = -1;
    let unmapEnd = -1;
    let readerGot = -1;
    let exitDone = -1;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(1, 8)), 'store');
      // An interval subscriber: classic ones are gone after ->release (rule 34).
      ok(yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier('slow'), mm, 0, TASK_SIZE, {
        *invalidate(s, range, seq) {
          mmuIntervalSetSeq(s, seq);
          if (range.event !== MmuNotifyEvent.UNMAP) return true;
          unmapStart = k.sim.now();
          yield* k.sim.sleep(1_000_000);
          unmapEnd = k.sim.now();
          return true;
        },
      }), 'insert');
      mm.mmgrab();
      k.sim.spawn('reader', function* () {
        yield* k.sim.sleep(500_000);
        yield* mm.mmapLock.downRead();
        readerGot = k.sim.now();
        mm.mmapLock.upRead();
      }, { kind: 'kthread' });
      yield* p.exit();
      exitDone = k.sim.now();
    });
    t.true(unmapStart >= 0 && unmapEnd > unmapStart);
    if (concurrent) t.true(readerGot < unmapEnd, `reader at ${readerGot}, UNMAP callback ${unmapStart}-${unmapEnd}`);
    else t.true(readerGot >= exitDone, `reader at ${readerGot}, exit done at ${exitDone}`);
  });
}
