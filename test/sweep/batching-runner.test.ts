/**
 * The `batching` point runner on the full model (issue "Batching latency trade-offs", 4.
 * The default preset): each strategy and workload runs, the record has the standard
 * figures, the same point gives the same record, and a window makes invalidations wait.
 */
import test from 'ava';
import { runBatchingPoint } from '../../scenarios/sweep/batching-runner.ts';
import type { PointParams } from '../../scenarios/sweep/grid.ts';
import { STANDARD_FIGURES } from '../../scenarios/sweep/point-runners.ts';

const base: PointParams = {
  strategy: 'odp', workload: 'dma-heavy', profile: 'linux-6.x', syncNs: null, tasks: 4, policy: 'none', windowNs: null, count: null,
};
const SHORT = 400_000;

for (const strategy of ['odp', 'holdoff'] as const) {
  for (const workload of ['dma-heavy', 'dma-heavy-reclaim', 'dma-heavy-dontneed', 'dma-heavy-punch'] as const) {
    test(`${strategy} / ${workload}: traffic moves, invalidations are measured, no work request fails`, (t) => {
      const r = runBatchingPoint({ ...base, strategy, workload }, 1, SHORT);
      for (const f of Object.keys(STANDARD_FIGURES)) t.is(typeof r[f], 'number', f);
      t.true((r.bytesMoved ?? 0) > 0);
      t.true((r.invalidations ?? 0) > 0);
      t.is(r.wrErrors, 0);
      t.is(r.virtualNs, SHORT);
    });
  }
}

test('the same point gives the same record; the seed changes it', (t) => {
  const p = { ...base, workload: 'dma-heavy-punch' as const, policy: 'window' as const, windowNs: 20_000 };
  const a = runBatchingPoint(p, 3, SHORT);
  t.deepEqual(runBatchingPoint(p, 3, SHORT), a);
  t.notDeepEqual(runBatchingPoint(p, 4, SHORT), a);
});

test('a 100 µs window: invalidations wait about the window, and batches hold more than one request', (t) => {
  // MADV_DONTNEED from 16 tasks overlaps (mmap_lock read); hole punches would not: they
  // serialize on the inode lock (ext4_punch_hole, shmem_fallocate), one invalidation at a time.
  const p = { ...base, workload: 'dma-heavy-dontneed' as const, tasks: 16 };
  const none = runBatchingPoint(p, 1, 1_000_000);
  const win = runBatchingPoint({ ...p, policy: 'window', windowNs: 100_000 }, 1, 1_000_000);
  t.true((win.invP99Ns ?? 0) >= 100_000, `p99 ${win.invP99Ns}`);
  t.true((none.invP99Ns ?? 0) < 100_000, `p99 ${none.invP99Ns}`);
  t.true((win.meanBatch ?? 0) > 1.5, `mean batch ${win.meanBatch}`);
  t.true((win.syncs ?? 0) < (none.syncs ?? 0));
});
