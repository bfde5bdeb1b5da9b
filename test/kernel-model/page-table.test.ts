/**
 * The process page table's storage: leaves of 8 entries cut from shared blocks, found
 * through a map keyed by vpn / 8. Scattered pages across a 128 TiB span (many blocks)
 * read back what was written, range walks visit exactly the non-zero entries in address
 * order, and the entry count follows sets and clears.
 */
import test from 'ava';
import { PageTable } from '../../kernel-model/index.ts';

test('thousands of scattered leaves read back what was written; forEach walks them in order', (t) => {
  const pt = new PageTable();
  const span = 2 ** 35; // vpns of 128 TiB
  const ref = new Map<number, number>();
  let x = 777;
  const rnd = (n: number) => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0), Math.floor((x / 2 ** 32) * n));
  for (let k = 0; k < 30_000; k++) {
    const vpn = rnd(span);
    const pte = (1 + rnd(1e6)) * 64 + 1;
    pt.set(vpn, pte);
    ref.set(vpn, pte);
    if (k % 5 === 0) {
      pt.set(vpn + 1, pte + 64);
      ref.set(vpn + 1, pte + 64);
    }
  }
  for (const vpn of [...ref.keys()]) {
    if (rnd(4) === 0) {
      t.is(pt.clear(vpn), ref.get(vpn) as number);
      ref.delete(vpn);
    }
  }
  t.is(pt.entries, ref.size);
  for (const [vpn, pte] of ref) {
    if (pt.get(vpn) !== pte) {
      t.fail(`vpn ${vpn}: ${pt.get(vpn)} instead of ${pte}`);
      return;
    }
  }
  const sorted = [...ref.entries()].sort((a, b) => a[0] - b[0]);
  const all: [number, number][] = [];
  pt.forEach(0, span, (v, p) => all.push([v, p]));
  t.deepEqual(all, sorted, 'a walk over the whole span (through the sorted leaf index)');
  const lo = sorted[100]?.[0] as number;
  const hi = lo + 50_000;
  t.deepEqual(pt.entriesIn(lo, hi), sorted.filter(([v]) => v >= lo && v < hi), 'a short walk (leaf by leaf)');
  t.is(pt.get(span + 5), 0);
});
