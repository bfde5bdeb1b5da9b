/**
 * dirty-without-buffers: set_page_dirty on a file page whose buffers were dropped after
 * writeback (the 2018 ext4 crash, H7).
 */
import test from 'ava';
import { FOLL_WRITE, writebackFile } from '../../kernel-model/index.ts';
import { MiniPinned, P, devWrite, fill, ok, rig, run, sharedFile } from './_rig.ts';

test('writeback drops the buffers of a pinned page; the release dirties it: caught with the writeback and the DMA in the trail', (t) => {
  const r = rig();
  const file = r.k.createFile('data', P);
  run(t, r, function* () {
    const buf = yield* sharedFile(r.p, file, 1);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    const mr = new MiniPinned(r, r.p.mm, buf, P);
    yield* mr.register(FOLL_WRITE);
    yield* writebackFile(r.k, file, true); // the flusher, with the filesystem releasing buffers
    ok(yield* devWrite(mr, buf, fill(2, 64)), 'dma');
    yield* mr.dereg({ dirty: true }); // unpin_user_pages_dirty_lock
  });
  const v = r.san!.violations.find((x) => x.id === 'dirty-without-buffers');
  t.truthy(v);
  t.regex(v!.message, /unpin_user_pages_dirty_lock/);
  const kinds = v!.trail.map((e) => e.kind);
  t.true(kinds.includes('writeback') && kinds.includes('dma') && kinds.includes('set-page-dirty'), kinds.join(','));
});

test('legitimate: writeback that keeps the buffers; the release dirties a page that still has them', (t) => {
  const r = rig();
  const file = r.k.createFile('data', P);
  run(t, r, function* () {
    const buf = yield* sharedFile(r.p, file, 1);
    ok(yield* r.p.store(buf, fill(1, 8)), 'store');
    const mr = new MiniPinned(r, r.p.mm, buf, P);
    yield* mr.register(FOLL_WRITE);
    yield* writebackFile(r.k, file, false);
    ok(yield* devWrite(mr, buf, fill(2, 64)), 'dma');
    yield* mr.dereg({ dirty: true });
  });
  t.is(r.san!.count('dirty-without-buffers'), 0);
});
