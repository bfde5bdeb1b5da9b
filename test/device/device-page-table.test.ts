/**
 * The device page table (rdma B1: absent / read-only / read-write per page; E: an implicit
 * MR over the whole address space must stay cheap).
 */
import test from 'ava';
import { Simulation } from '../../kernel-model/sim/index.ts';
import {
  DevicePageTable, MemoryRegion, PTE_ABSENT, PTE_READ, PTE_READ_WRITE, newTranslation,
} from '../../device/index.ts';
import { makeNode, runScript } from './helpers.ts';

const TiB = 2 ** 40;

test('rdma E: a 1 TiB MR costs memory only for the pages it touched', (t) => {
  const sim = new Simulation();
  const n = makeNode(sim, undefined, 'nic', { caps: { maxMrSize: 2 ** 47 } });
  const mr = n.nic.createMr({ pd: n.pd, iova: 0x7f00_0000_0000, length: TiB, access: 1, onDemand: true }) as MemoryRegion;
  t.true(mr instanceof MemoryRegion);
  t.is(mr.pages, 2 ** 28);
  t.is(mr.pageTable.bytes, 0);
  const touched = [0, 1, 7, 8, 123_456_789, 2 ** 28 - 1];
  runScript(t, sim, function* () {
    for (const p of touched) t.is(yield* n.nic.updateEntries(mr, p, [1000 + p % 1000], p % 2 === 0), 0);
  });
  t.is(mr.pageTable.presentPages, touched.length);
  // Pages 0, 1, 7 share an 8-entry chunk; 8 starts the next; two more far away.
  t.is(mr.pageTable.chunkCount, 4);
  t.true(mr.pageTable.bytes < 1024, `${mr.pageTable.bytes} bytes for ${touched.length} pages of a 1 TiB MR`);
  t.is(mr.pageTable.perm(123_456_789), PTE_READ);
  t.is(mr.pageTable.perm(2 ** 28 - 2), PTE_ABSENT);
});

test('rdma E: an implicit MR spans the whole addressable range and is equally sparse', (t) => {
  const sim = new Simulation();
  const n = makeNode(sim, undefined, 'nic');
  const mr = n.nic.createMr({ pd: n.pd, iova: 0, length: 0, access: 1, onDemand: true, implicit: true }) as MemoryRegion;
  t.true(mr instanceof MemoryRegion);
  t.true(mr.implicit);
  t.is(mr.length, 2 ** 47);
  t.is(mr.pages, 2 ** 35);
  runScript(t, sim, function* () {
    t.is(yield* n.nic.updateEntries(mr, mr.pageIndexOf(0x7fff_ffff_f000), [9], true), 0);
  });
  t.is(mr.pageTable.presentPages, 1);
  t.is(mr.pageTable.chunkCount, 1);
});

test('rdma B1: each page is absent, read-only or read-write with a frame, and records its generation and install time', (t) => {
  const pt = new DevicePageTable(2048);
  const out = newTranslation();
  t.false(pt.lookup(5, out));
  pt.set(5, 77, PTE_READ, 1, 100);
  pt.set(6, 78, PTE_READ_WRITE, 2, 200);
  t.true(pt.lookup(5, out));
  t.deepEqual({ ...out }, { frame: 77, perm: PTE_READ, generation: 1, installedAt: 100, fromCache: false });
  // An upgrade in place (rdma B1: read-only to read-write without an invalidation).
  pt.set(5, 77, PTE_READ_WRITE, 3, 300);
  t.is(pt.perm(5), PTE_READ_WRITE);
  t.is(pt.generationOf(5), 3);
  t.is(pt.presentPages, 2);
  t.true(pt.clear(5));
  t.false(pt.clear(5));
  t.is(pt.generationOf(5), -1);
  t.is(pt.clearRange(0, 2048), 1);
  t.is(pt.presentPages, 0);
  t.is(pt.chunkCount, 0, 'an emptied chunk is freed');
  t.throws(() => pt.set(2048, 1, PTE_READ, 4, 0), { instanceOf: RangeError });
});

test('forEachPresent visits entries in page order', (t) => {
  const pt = new DevicePageTable(1e9);
  for (const i of [900_000_000, 3, 1024, 2]) pt.set(i, i % 1000, PTE_READ, 1, 0);
  const seen: number[] = [];
  pt.forEachPresent((i) => seen.push(i));
  t.deepEqual(seen, [2, 3, 1024, 900_000_000]);
});

test('updateEntries refuses a range outside the MR and writable entries in a read-only MR', (t) => {
  const sim = new Simulation();
  const n = makeNode(sim, undefined, 'nic');
  const ro = n.nic.createMr({ pd: n.pd, iova: 0x1000, length: 0x2000, access: 0 }) as MemoryRegion;
  runScript(t, sim, function* () {
    t.is(yield* n.nic.updateEntries(ro, 1, [1, 2], false), -22);
    t.is(yield* n.nic.updateEntries(ro, 0, [1], true), -22);
    t.is(yield* n.nic.updateEntries(ro, 0, [1, 2], false), 0);
    t.is(yield* n.nic.zapEntries(ro, 0, 3), -22);
    t.is(yield* n.nic.zapEntries(ro, 0, 2), 2);
  });
  t.is(ro.counters.updatedPages, 2);
  t.is(ro.counters.zappedPages, 2);
});

test('thousands of scattered chunks (many storage blocks, freed slots reused) read back what was written', (t) => {
  const pages = 2 ** 35;
  const pt = new DevicePageTable(pages);
  const ref = new Map<number, [number, number, number, number]>();
  let x = 12345;
  const rnd = (n: number) => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0), Math.floor((x / 2 ** 32) * n));
  for (let round = 0; round < 3; round++) {
    for (let k = 0; k < 12_000; k++) {
      const i = rnd(pages);
      const e: [number, number, number, number] = [rnd(1e6), rnd(2) ? PTE_READ : PTE_READ_WRITE, round * 1e5 + k, k * 7];
      pt.set(i, e[0], e[1] as typeof PTE_READ, e[2], e[3]);
      ref.set(i, e);
    }
    // Clear about a quarter, which frees their chunks for reuse by the next round.
    for (const i of [...ref.keys()]) if (rnd(4) === 0) { t.true(pt.clear(i)); ref.delete(i); }
  }
  t.is(pt.presentPages, ref.size);
  const out = newTranslation();
  for (const [i, [frame, perm, generation, installedAt]] of ref) {
    t.true(pt.lookup(i, out));
    if (out.frame !== frame || out.perm !== perm || out.generation !== generation || out.installedAt !== installedAt) {
      t.fail(`page ${i}: ${JSON.stringify(out)} instead of ${JSON.stringify([frame, perm, generation, installedAt])}`);
      return;
    }
  }
  const seen: number[] = [];
  pt.forEachPresent((i, frame) => { seen.push(i); if (ref.get(i)?.[0] !== frame) t.fail(`forEachPresent: page ${i} frame ${frame}`); });
  t.deepEqual(seen, [...ref.keys()].sort((a, b) => a - b));
  for (let k = 0; k < 100; k++) {
    const i = rnd(pages);
    t.is(pt.frameOf(i), ref.get(i)?.[0] ?? -1);
  }
});
