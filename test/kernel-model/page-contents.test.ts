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
