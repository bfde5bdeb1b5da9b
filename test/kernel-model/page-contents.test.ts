/**
 * Page contents as the device reads them (kernel-model/page-frames.ts readShared): a DMA
 * read gets a snapshot without a copy, a view of the page that later writes replace
 * (copy on write) instead of changing, so a payload gathered before a write keeps the
 * bytes it was gathered with, as a NIC's own buffer would.
 */
import test from 'ava';
import { PAGE_SIZE } from '../../kernel-model/index.ts';
import { rig } from './_helpers.ts';

test('a shared read is a snapshot: writes after it, by the CPU side or the device, do not change it', (t) => {
  const { k } = rig();
  const f = k.phys.allocPage();
  t.true(f >= 0);
  t.deepEqual([...k.phys.readShared(f, 0, 4)], [0, 0, 0, 0], 'never written: zeros');
  k.phys.write(f, 0, new Uint8Array([1, 2, 3, 4]));
  const snap = k.phys.readShared(f, 0, 4);
  const again = k.dmaBus.readShared(f, 2, 2);
  k.phys.write(f, 1, new Uint8Array([9]));
  k.dmaBus.write(f, 3, new Uint8Array([8]));
  t.deepEqual([...snap], [1, 2, 3, 4], 'the snapshot keeps what it was read with');
  t.deepEqual([...again], [3, 4]);
  t.deepEqual([...k.phys.read(f, 0, 4)], [1, 9, 3, 8], 'the page has both writes');
  t.deepEqual([...k.phys.readShared(f, 0, 4)], [1, 9, 3, 8]);
  // A page copied over one that was lent (a COW copy, migration) is new; the old view stands.
  const g = k.phys.allocPage();
  k.phys.write(g, 0, new Uint8Array([7]));
  k.phys.copyPage(f, g);
  t.deepEqual([...snap], [1, 2, 3, 4]);
  t.is(k.phys.read(f, 0, 1)[0], 7);
  t.is(k.phys.readShared(f, 0, PAGE_SIZE).length, PAGE_SIZE);
});

test('a freed page\'s bytes never show in the next pages written, a view lent before the free keeps its bytes, and copyPage onto a page or itself copies', (t) => {
  const { k } = rig();
  const a = k.phys.allocPage();
  const b = k.phys.allocPage();
  k.phys.write(a, 0, new Uint8Array(PAGE_SIZE).fill(0xaa));
  k.phys.write(b, 0, new Uint8Array(PAGE_SIZE).fill(0xbb));
  const lent = k.phys.readShared(b, 0, 8);
  k.phys.put(a);
  k.phys.put(b);
  // Two new pages, each written one byte: the rest must read as zeros, whichever buffer
  // each got, and the view lent before b was freed must still read 0xbb.
  const c = k.phys.allocPage();
  const d = k.phys.allocPage();
  k.phys.write(c, 0, new Uint8Array([1]));
  k.phys.write(d, 0, new Uint8Array([2]));
  for (const [f, first] of [[c, 1], [d, 2]] as const) {
    const page = k.phys.read(f, 0, PAGE_SIZE);
    t.is(page[0], first);
    t.true(page.subarray(1).every((x) => x === 0), `frame ${f}: no bytes of a freed page`);
  }
  t.deepEqual([...lent], new Array(8).fill(0xbb), 'the lent view kept its bytes');
  // copyPage onto a page with contents, zeroPage, and a copy onto itself.
  k.phys.copyPage(c, d);
  t.is(k.phys.read(c, 0, 1)[0], 2);
  k.phys.zeroPage(d);
  t.true(k.phys.read(d, 0, PAGE_SIZE).every((x) => x === 0));
  k.phys.copyPage(c, c);
  t.is(k.phys.read(c, 0, 1)[0], 2, 'a page copied onto itself keeps its bytes');
});
