/**
 * fork and copy-on-write (spec/kernel.md rules 18, 21d, 66, 67, 69): after fork parent
 * and child share anonymous pages read-only until one writes; each then sees only its
 * own writes. The zero page backs never-written anonymous memory. MADV_DONTFORK keeps a
 * VMA out of the child altogether.
 */
import test from 'ava';
import {
  EFAULT, MADV_DOFORK, MADV_DONTFORK, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED,
  PG_ANON_EXCLUSIVE, PROT_READ, PROT_WRITE, ZERO_PFN, pteWrite, vpn,
  type Co, type Process,
} from '../../kernel-model/index.ts';
import { P, bytes, fill, frameAt, ok, rig, runMain, type Rig } from './_helpers.ts';

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;

function* forked(r: Rig): Co<Process> {
  const child = yield* r.p.fork();
  if (typeof child === 'number') throw new Error(`fork failed with ${child}`);
  return child;
}

/** Run `body` as a thread of `child` and wait for it. */
function* inChild<T>(r: Rig, child: Process, body: () => Co<T>): Co<T> {
  const task = child.spawnThread('main', body);
  return yield* r.k.sim.join(task);
}

test('rule 67: after fork an anonymous page is shared read-only by parent and child (no pins)', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* r.p.store(a, fill(0x41, 2 * P)), 'populate');
    const frame = frameAt(r.p.mm, a);
    t.true(r.k.phys.has(frame, PG_ANON_EXCLUSIVE), 'exclusive before fork');
    t.true(pteWrite(r.p.mm.pageTable.get(vpn(a))));
    const child = yield* forked(r);
    t.is(frameAt(child.mm, a), frame, 'the child maps the very same page');
    t.false(pteWrite(r.p.mm.pageTable.get(vpn(a))), 'parent PTE write-protected');
    t.false(pteWrite(child.mm.pageTable.get(vpn(a))), 'child PTE read-only');
    t.false(r.k.phys.has(frame, PG_ANON_EXCLUSIVE), 'no longer exclusive');
    t.is(r.k.phys.mapcount[frame], 2);
    t.is(r.k.phys.refcount[frame], 2);
    const seen = yield* inChild(r, child, function* () {
      return bytes(yield* child.load(a, 2 * P), 'child load');
    });
    t.deepEqual(seen, fill(0x41, 2 * P), 'the child reads the parent\'s bytes');
  });
});

test('rule 21d: COW after fork isolates parent and child: each sees only its own writes', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, 3 * P, RW, ANON), 'mmap');
    ok(yield* r.p.store(a, fill(0x11, 3 * P)), 'before fork');
    const child = yield* forked(r);
    const shared = frameAt(r.p.mm, a + P);
    ok(yield* r.p.store(a + P + 10, fill(0x22, 20)), 'parent writes page 1');
    yield* inChild(r, child, function* () {
      ok(yield* child.store(a + 2 * P, fill(0x33, 5)), 'child writes page 2');
      ok(yield* child.store(a + P, fill(0x44, 3)), 'child writes page 1 too');
    });
    const parentView = bytes(yield* r.p.load(a, 3 * P), 'parent load');
    const childView = yield* inChild(r, child, function* () {
      return bytes(yield* child.load(a, 3 * P), 'child load');
    });
    const expectParent = fill(0x11, 3 * P);
    expectParent.fill(0x22, P + 10, P + 30);
    const expectChild = fill(0x11, 3 * P);
    expectChild.fill(0x44, P, P + 3);
    expectChild.fill(0x33, 2 * P, 2 * P + 5);
    t.deepEqual(parentView, expectParent);
    t.deepEqual(childView, expectChild);
    // Page 1: the parent wrote first and got a copy; the child, then the last user of the
    // original, reused it in place. Page 0: still shared, still read-only in both.
    t.not(frameAt(r.p.mm, a + P), shared);
    t.is(frameAt(child.mm, a + P), shared);
    t.not(frameAt(r.p.mm, a + 2 * P), frameAt(child.mm, a + 2 * P));
    t.is(frameAt(r.p.mm, a), frameAt(child.mm, a));
    t.is(r.k.phys.mapcount[frameAt(r.p.mm, a)], 2);
  });
});

test('rule 21d: a child that exits leaves the parent the last user: its next write reuses the page in place', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* r.p.store(a, fill(1, 4)), 'populate');
    const frame = frameAt(r.p.mm, a);
    const child = yield* forked(r);
    yield* inChild(r, child, function* () {
      ok(yield* child.exit(), 'child exit');
    });
    t.is(r.k.phys.mapcount[frame], 1);
    ok(yield* r.p.store(a, fill(2, 4)), 'parent writes');
    t.is(frameAt(r.p.mm, a), frame, 'no copy');
    t.deepEqual(bytes(yield* r.p.load(a, 4), 'load'), fill(2, 4));
  });
});

test('the zero page is mapped on the first read and replaced by a private page on the first write', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, 2 * P, RW, ANON), 'mmap');
    const b = ok(yield* r.p.mmap(0, 2 * P, RW, ANON), 'mmap');
    const usedBefore = r.k.phys.used;
    t.deepEqual(bytes(yield* r.p.load(a, 2 * P), 'read'), fill(0, 2 * P));
    bytes(yield* r.p.load(b, P), 'read');
    t.is(frameAt(r.p.mm, a), ZERO_PFN);
    t.is(frameAt(r.p.mm, a + P), ZERO_PFN);
    t.is(frameAt(r.p.mm, b), ZERO_PFN, 'one zero page for every mapping');
    t.false(pteWrite(r.p.mm.pageTable.get(vpn(a))), 'mapped read-only');
    t.is(r.k.phys.used, usedBefore, 'reads allocated nothing');
    ok(yield* r.p.store(a + P + 7, fill(9, 2)), 'write');
    const f = frameAt(r.p.mm, a + P);
    t.not(f, ZERO_PFN);
    t.true(pteWrite(r.p.mm.pageTable.get(vpn(a + P))));
    t.true(r.k.phys.has(f, PG_ANON_EXCLUSIVE));
    t.is(frameAt(r.p.mm, a), ZERO_PFN, 'the other page still maps the zero page');
    const expect = fill(0, P);
    expect.fill(9, 7, 9);
    t.deepEqual(bytes(yield* r.p.load(a + P, P), 'load'), expect);
    t.deepEqual(r.k.phys.read(ZERO_PFN, 0, P), fill(0, P), 'the zero page is still all zeros');
    t.deepEqual(bytes(yield* r.p.load(b, P), 'load'), fill(0, P));
  });
});

test('the zero page survives fork: the child reads zeros and each side gets its own page on write', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* r.p.store(a, fill(1, 1)), 'page 0 written: the VMA has an anon_vma');
    bytes(yield* r.p.load(a + P, 1), 'page 1 zero page');
    const child = yield* forked(r);
    t.is(frameAt(child.mm, a + P), ZERO_PFN);
    yield* inChild(r, child, function* () {
      ok(yield* child.store(a + P, fill(5, 1)), 'child writes');
    });
    t.is(frameAt(r.p.mm, a + P), ZERO_PFN, 'the parent still maps the zero page');
    t.deepEqual(bytes(yield* r.p.load(a + P, 1), 'load'), fill(0, 1));
    t.deepEqual(r.k.phys.read(ZERO_PFN, 0, 1), fill(0, 1));
  });
});

test('rule 69: a MADV_DONTFORK VMA is absent in the child (child load -> -EFAULT)', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, 3 * P, RW, ANON), 'mmap');
    ok(yield* r.p.store(a, fill(7, 3 * P)), 'populate');
    ok(yield* r.p.madvise(a + P, P, MADV_DONTFORK), 'DONTFORK the middle page');
    const frame = frameAt(r.p.mm, a + P);
    const child = yield* forked(r);
    t.falsy(child.mm.findVma(a + P), 'no VMA in the child');
    t.is(frameAt(child.mm, a + P), -1, 'no PTE in the child');
    const res = yield* inChild(r, child, function* () {
      return [yield* child.load(a + P, 1), yield* child.store(a + P, fill(1, 1)), yield* child.load(a, 1), yield* child.load(a + 2 * P, 1)];
    });
    t.is(res[0], -EFAULT);
    t.is(res[1], -EFAULT);
    t.deepEqual(res[2], fill(7, 1), 'the rest was copied');
    t.deepEqual(res[3], fill(7, 1));
    t.is(frameAt(r.p.mm, a + P), frame, 'the parent keeps its page');
    t.true(pteWrite(r.p.mm.pageTable.get(vpn(a + P))), 'and keeps it writable: no fork write-protect');
    t.true(r.k.phys.has(frame, PG_ANON_EXCLUSIVE));
  });
});

test('rule 69: MADV_DOFORK restores copying', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* r.p.store(a, fill(7, 2 * P)), 'populate');
    ok(yield* r.p.madvise(a, 2 * P, MADV_DONTFORK), 'DONTFORK');
    ok(yield* r.p.madvise(a, 2 * P, MADV_DOFORK), 'DOFORK');
    const child = yield* forked(r);
    const seen = yield* inChild(r, child, function* () {
      return bytes(yield* child.load(a, 2 * P), 'child load');
    });
    t.deepEqual(seen, fill(7, 2 * P));
    t.is(frameAt(child.mm, a), frameAt(r.p.mm, a));
  });
});

test('fork: a MAP_SHARED mapping stays shared: writes from either side are seen by the other', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const s = ok(yield* r.p.mmap(0, P, RW, MAP_SHARED | MAP_ANONYMOUS), 'shmem');
    ok(yield* r.p.store(s, fill(1, 4)), 'parent writes');
    const child = yield* forked(r);
    const seen = yield* inChild(r, child, function* () {
      const before = bytes(yield* child.load(s, 4), 'child load');
      ok(yield* child.store(s + 1, fill(2, 1)), 'child writes');
      return before;
    });
    t.deepEqual(seen, fill(1, 4));
    t.deepEqual(bytes(yield* r.p.load(s, 4), 'parent load'), new Uint8Array([1, 2, 1, 1]));
  });
});
