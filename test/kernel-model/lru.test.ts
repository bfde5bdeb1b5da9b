/**
 * The page LRU (kernel-model/lru.ts, after mm/swap.c folio_add_lru and mm/vmscan.c's scan
 * from the oldest end): order and membership against an insertion-ordered Set, and the
 * scan's cost not growing with the list.
 */
import test from 'ava';
import { fc, testProp } from '@fast-check/ava';
import { Lru } from '../../kernel-model/index.ts';

const op = fc.tuple(fc.constantFrom('add', 'remove', 'rotate'), fc.integer({ min: 0, max: 3000 }));

testProp('the LRU keeps the order and membership an insertion-ordered set would (add keeps a listed page in place, rotate moves to the tail)', [fc.array(op, { maxLength: 400 })], (t, ops) => {
  const lru = new Lru();
  const ref = new Set<number>();
  for (const [kind, frame] of ops) {
    if (kind === 'add') { lru.add(frame); ref.add(frame); }
    else if (kind === 'remove') { lru.remove(frame); ref.delete(frame); }
    else { lru.rotate(frame); if (ref.delete(frame)) ref.add(frame); }
    t.is(lru.size, ref.size);
    t.is(lru.oldest(), ref.size ? ref.values().next().value! : -1);
  }
  t.deepEqual([...lru], [...ref]);
  for (let f = 0; f <= 3000; f += 97) t.is(lru.has(f), ref.has(f), `has(${f})`);
});

test('a frame past the arrays, or negative, is not on the LRU and removing or rotating it changes nothing', (t) => {
  const lru = new Lru();
  lru.add(5);
  lru.remove(1 << 20);
  lru.rotate(-1);
  t.false(lru.has(1 << 20));
  t.false(lru.has(-1));
  t.deepEqual([...lru], [5]);
});

test('scanning from the oldest end and rotating each page visits every page in the same order each round (100k pages, 10 rounds)', (t) => {
  // With a JS Set as the list this loop was quadratic (V8 walks the holes deleted entries
  // leave before the first live one): 30 µs a step at 100k pages.
  const n = 100_000;
  const lru = new Lru();
  for (let f = 1; f <= n; f++) lru.add(f);
  let steps = 0;
  for (let round = 0; round < 10; round++) {
    for (let i = 1; i <= n; i++) {
      const f = lru.oldest();
      if (f !== i) return t.fail(`round ${round}: expected ${i} oldest, got ${f}`);
      lru.rotate(f);
      steps++;
    }
  }
  t.is(steps, 10 * n);
  t.is(lru.size, n);
});
