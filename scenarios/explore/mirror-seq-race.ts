import {
  HMM_PFN_REQ_FAULT, Kernel, MAP_ANONYMOUS, MAP_PRIVATE, Mutex, MmuIntervalNotifier, PAGE_SIZE, PROT_READ, PROT_WRITE,
  EBUSY, errnoName, hmmRangeFault, hmmRangeInit, mmuIntervalNotifierInsert, mmuIntervalReadBegin, mmuIntervalReadRetry,
  mmuIntervalSetSeq, type Co, type MmuNotifierRange,
  ZERO_CPU_COSTS,
} from '../../kernel-model/index.ts';
import type { ScenarioDefinition } from '../scenario.ts';

/**
 * A small notifier race that needs exactly two preemptions: `lab explore`'s test fixture
 * (issue 19 item 6), runnable as `lab explore mirror-seq-race`.
 *
 * A lib/test_hmm-style mirror (driver/dmirror.ts: dmirror_fault's collision-retry loop,
 * kernel rule 31) with one bug in its invalidate callback: it zaps its entries under the
 * mirror lock, drops the lock, and only then, under a statistics lock, calls
 * mmu_interval_set_seq. Rule 26 wants
 * set_seq "under the same lock that is used to call mmu_interval_read_retry()" (the
 * kerneldoc of mmu_interval_set_seq, which lives in include/linux/mmu_notifier.h); the
 * mirror declares no lock at insert, so the sanitizer's lock check stays silent and only
 * the interleaving shows the bug. A device fault and a munmap of the page start at the
 * same instant. The entry survives the munmap (pointing at a freed frame) only if:
 *
 *   1. the fault samples the sequence (mmu_interval_read_begin), faults the page and is
 *      preempted before it takes the mirror lock (preemption 1);
 *   2. the munmap's invalidate callback zaps (nothing yet) and is preempted before set_seq
 *      (preemption 2);
 *   3. the fault takes the mirror lock, mmu_interval_read_retry sees no change, installs.
 *
 * With one preemption the callback runs on to set_seq before the fault checks, and the
 * fault retries. The story checks the mirror after the munmap and fails the run with
 * "stale mirror entry" when the race happened.
 */
export const mirrorSeqRace: ScenarioDefinition = {
  name: 'mirror-seq-race',
  summary: 'a mirror that calls set_seq after dropping its lock: a two-preemption race with munmap (lab explore fixture)',
  seeds: [],
  defaultProfile: 'linux-6.x',
  drivers: ['broken-mirror'],
  defaultDriver: 'broken-mirror',
  untilNs: 1_000_000_000,
  expect: () => [],
  setup(ctx) {
    // The race is one of order, not of time: with the CPU cost model's charges the two
    // tasks reach their preemption points at different instants and the window closes, so
    // the fixture zeroes them (the explorer reorders what is ready at one instant).
    const k = new Kernel({ sim: ctx.sim, profile: ctx.profile, frames: 256, node: 'n0', cpuCosts: ZERO_CPU_COSTS });
    const p = k.createProcess('app');
    const mirrorLock = new Mutex(ctx.sim, 'mirror.lock');
    const statsLock = new Mutex(ctx.sim, 'mirror.stats');
    const pt = new Map<number, number>();
    const sub = new MmuIntervalNotifier('mirror');
    let invalidations = 0;

    function* invalidate(s: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): Co<boolean> {
      yield* mirrorLock.lock();
      for (const v of [...pt.keys()]) if (v * PAGE_SIZE >= range.start && v * PAGE_SIZE < range.end) pt.delete(v);
      mirrorLock.unlock();
      // The bug: set_seq after the zap and outside the lock the fault path checks under.
      yield* statsLock.lock();
      invalidations++;
      mmuIntervalSetSeq(s, curSeq);
      statsLock.unlock();
      return true;
    }

    /** dmirror_fault for one page: the rule-31 loop (read_begin, fault, lock, read_retry, install). */
    function* fault(addr: number): Co<number> {
      for (let tries = 0; tries < 16; tries++) {
        const seq = yield* mmuIntervalReadBegin(sub);
        const range = hmmRangeInit(sub, addr, addr + PAGE_SIZE, seq, HMM_PFN_REQ_FAULT);
        yield* p.mm.mmapLock.downRead();
        const ret = yield* hmmRangeFault(range);
        p.mm.mmapLock.upRead();
        if (ret === -EBUSY) continue;
        if (ret < 0) return ret;
        yield* mirrorLock.lock();
        if (mmuIntervalReadRetry(sub, seq)) {
          mirrorLock.unlock();
          continue;
        }
        pt.set(addr / PAGE_SIZE, range.pfns[0] as number);
        mirrorLock.unlock();
        return 0;
      }
      return -EBUSY;
    }

    return function* () {
      const addr = yield* p.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
      yield* p.store(addr, new Uint8Array([1, 2, 3]));
      const ins = yield* mmuIntervalNotifierInsert(sub, p.mm, addr, PAGE_SIZE, { invalidate: (s, r, c) => invalidate(s, r, c) });
      if (ins < 0) throw new Error(`mmu_interval_notifier_insert: ${errnoName(ins)}`);
      ctx.say('the mirror subscribed to the page; a device fault and a munmap start together');
      let faultRet = 0;
      const a = p.spawnThread('device-fault', function* () {
        faultRet = yield* fault(addr);
      });
      const b = p.spawnThread('munmap', function* () {
        yield* p.munmap(addr, PAGE_SIZE);
      });
      yield* ctx.sim.join(a);
      yield* ctx.sim.join(b);
      ctx.say(`fault returned ${faultRet < 0 ? `-${errnoName(faultRet)}` : faultRet}; ${invalidations} invalidation(s)`);
      const frame = pt.get(addr / PAGE_SIZE);
      if (frame !== undefined) {
        throw new Error(`stale mirror entry: page ${addr.toString(16)} still maps frame ${frame} after munmap ` +
          `(refcount ${k.phys.refcount[frame]}): the zap ran before the fault installed it, and set_seq came after its retry check`);
      }
      ctx.say('the mirror holds no entry for the unmapped page');
    };
  },
};
