/**
 * PageMirror, the ODP umem's page -> (frame, writable) mirror, behaves as a Map of numbers
 * (same answers, same insertion order) while it keeps a few entries in a small array and
 * after it turned into a Map.
 */
import test from 'ava';
import { PageMirror } from '../../driver/page-mirror.ts';

test('random sets, deletes and lookups give what a Map gives, in the same order', (t) => {
  let x = 99;
  const rnd = (n: number) => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0), Math.floor((x / 2 ** 32) * n));
  for (let round = 0; round < 50; round++) {
    const m = new PageMirror();
    const ref = new Map<number, number>();
    const keys = 2 + rnd(30);
    for (let op = 0; op < 200; op++) {
      const k = rnd(keys);
      switch (rnd(4)) {
        case 0:
        case 1:
          m.set(k, op);
          ref.set(k, op);
          break;
        case 2:
          t.is(m.delete(k), ref.delete(k));
          break;
        default:
          t.is(m.get(k), ref.get(k));
          t.is(m.has(k), ref.has(k));
      }
      if (m.size !== ref.size) {
        t.fail(`round ${round} op ${op}: size ${m.size} instead of ${ref.size}`);
        return;
      }
    }
    t.deepEqual([...m.keys()], [...ref.keys()]);
    t.deepEqual([...m], [...ref]);
    t.deepEqual([...m.entries()], [...ref.entries()]);
  }
});
