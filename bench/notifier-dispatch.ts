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

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

/** The sizes run in turn `repeats` times; figures are medians, the ratio the median of per-repeat ratios. */
export function benchNotifierDispatch(repeats = 3): Record<string, unknown> {
  const runs: Record<string, number[]> = {};
  const ratios: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const one: Record<string, number> = {};
    for (const n of SIZES) (runs[String(n)] ??= []).push((one[String(n)] = perInvalidationNs(n)));
    ratios.push((one['100000'] as number) / (one['10'] as number));
  }
  const r2 = (x: number) => Math.round(x * 100) / 100;
  const ratio = r2(median(ratios));
  return {
    what: 'wall ns per invalidation (start+end) overlapping one of N interval subscribers (median of repeats)',
    invalidations: INVALIDATIONS,
    repeats,
    perInvalidationNs: Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, Math.round(median(v))])),
    ratio100kTo10: ratio,
    ratioMin: r2(Math.min(...ratios)),
    ratioMax: r2(Math.max(...ratios)),
    targetRatio: 3,
    withinTarget: ratio <= 3,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(benchNotifierDispatch(), null, 2));
}
