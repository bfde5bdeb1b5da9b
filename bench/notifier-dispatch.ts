/**
 * Notifier dispatch benchmark: wall ns per invalidation (start + end) when an mm has N
 * interval subscribers, each invalidation overlapping exactly one of them. The interval
 * tree makes this O(log N): the target is the 100k figure at most 3x the 10 figure.
 *
 * @example
 *   npx tsx bench/notifier-dispatch.ts
 */
import { pathToFileURL } from 'node:url';
import {
  Kernel, MmuIntervalNotifier, MmuNotifyEvent, PAGE_SIZE, mmuIntervalNotifierInsert, mmuIntervalSetSeq,
  mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart, mmuNotifierRangeInit,
} from '../kernel-model/index.ts';

const SIZES = [10, 1_000, 100_000] as const;
const INVALIDATIONS = 20_000;

function perInvalidationNs(subscribers: number): number {
  const k = new Kernel({ seed: 1 });
  const mm = k.newMm();
  let elapsed = 0n;
  k.sim.spawn('bench', function* () {
    const ops = { invalidate: (sub: MmuIntervalNotifier, _r: unknown, seq: number) => (mmuIntervalSetSeq(sub, seq), true) };
    for (let i = 0; i < subscribers; i++) {
      yield* mmuIntervalNotifierInsert(new MmuIntervalNotifier(`s${i}`), mm, (2 * i + 1) * PAGE_SIZE, PAGE_SIZE, ops);
    }
    const run = function* (n: number) {
      for (let j = 0; j < n; j++) {
        const i = (j * 7919) % subscribers;
        const start = (2 * i + 1) * PAGE_SIZE;
        const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, start, start + PAGE_SIZE);
        yield* mmuNotifierInvalidateRangeStart(range);
        yield* mmuNotifierInvalidateRangeEnd(range);
      }
    };
    yield* run(2_000); // warm-up
    const t0 = process.hrtime.bigint();
    yield* run(INVALIDATIONS);
    elapsed = process.hrtime.bigint() - t0;
  });
  k.sim.run({ untilNs: Infinity });
  return Number(elapsed) / INVALIDATIONS;
}

export function benchNotifierDispatch(): Record<string, unknown> {
  const perInvalidation: Record<string, number> = {};
  for (const n of SIZES) perInvalidation[String(n)] = Math.round(perInvalidationNs(n));
  const ratio = Math.round(((perInvalidation['100000'] as number) / (perInvalidation['10'] as number)) * 100) / 100;
  return {
    what: 'wall ns per invalidation (start+end) overlapping one of N interval subscribers',
    invalidations: INVALIDATIONS,
    perInvalidationNs: perInvalidation,
    ratio100kTo10: ratio,
    targetRatio: 3,
    withinTarget: ratio <= 3,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(benchNotifierDispatch(), null, 2));
}
