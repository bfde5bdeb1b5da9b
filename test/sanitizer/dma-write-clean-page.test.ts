/**
 * dma-write-clean-page: the device writes a file page after writeback cleaned it (H7,
 * kernel rule 76).
 */
import test from 'ava';
import { FOLL_WRITE } from '../../kernel-model/index.ts';
import { MiniOdp, MiniPinned, P, devWrite, expectIds, fill, ok, rig, run, sharedFile } from './_rig.ts';

test('a short pin cleaned by fsync, then a device write: caught', (t) => {
  const r = rig();
  const file = r.k.createFile('data', 2 * P);
  run(t, r, function* () {
    const buf = yield* sharedFile(r.p, file, 2);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    const mr = new MiniPinned(r, r.p.mm, buf, 2 * P);
    yield* mr.register(FOLL_WRITE); // short-term: allowed on a dirty-tracked file mapping
    ok(yield* r.p.fsync(file), 'fsync cleans the pinned pages');
    ok(yield* devWrite(mr, buf, fill(2, 64)), 'the NIC writes the clean page');
    yield* mr.dereg();
  });
  const v = r.san!.violations.find((x) => x.id === 'dma-write-clean-page');
  t.truthy(v);
  t.true(v!.trail.some((e) => e.kind === 'writeback'));
  t.true(v!.trail.some((e) => e.kind === 'syscall' && e.text.startsWith('fsync')));
});

test('legitimate: the same short pin written by the device before the clean', (t) => {
  const r = rig();
  const file = r.k.createFile('data', 2 * P);
  run(t, r, function* () {
    const buf = yield* sharedFile(r.p, file, 2);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    const mr = new MiniPinned(r, r.p.mm, buf, 2 * P);
    yield* mr.register(FOLL_WRITE);
    ok(yield* devWrite(mr, buf, fill(2, 64)), 'the NIC writes the dirty page');
    ok(yield* r.p.fsync(file), 'fsync writes it');
    yield* mr.dereg();
    ok(yield* r.p.fsync(file), 'the redirtied pages are written again');
  });
  expectIds(t, r, []);
  t.deepEqual(file.diskPage(0).subarray(0, 64), fill(2, 64));
});

test('legitimate: an ODP mirror of a shared file mapping refaults (a write fault dirties the page) after writeback', (t) => {
  const r = rig();
  const file = r.k.createFile('data', 2 * P);
  run(t, r, function* () {
    const buf = yield* sharedFile(r.p, file, 2);
    const odp = new MiniOdp(r, r.p.mm, buf, 2 * P);
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    ok(yield* r.p.fsync(file), 'fsync: PROTECTION_PAGE takes the device write access away');
    ok(yield* devWrite(odp, buf, fill(2, 64)), 'dma refaults');
    ok(yield* r.p.fsync(file), 'final sync');
  });
  expectIds(t, r, []);
  t.deepEqual(file.diskPage(0).subarray(0, 64), fill(2, 64));
});
