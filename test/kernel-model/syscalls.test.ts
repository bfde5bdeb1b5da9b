/**
 * The system calls of the kernel model return what Linux returns: a value or a negative
 * errno, never an exception for bad input (DESIGN "Kernel model": syscalls with Linux
 * errno results). Also: where mmap places things, and MAP_FIXED replacing a mapping.
 */
import test from 'ava';
import { testProp, fc } from '@fast-check/ava';
import {
  EFAULT, EINVAL, ENOMEM, MADV_DONTFORK, MADV_DONTNEED, MADV_FREE, MADV_DOFORK,
  MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, MMAP_BASE, MREMAP_FIXED, MREMAP_MAYMOVE,
  PROT_NONE, PROT_READ, PROT_WRITE, isPageAligned, vpn, pteFrame, pteHas, PTE_SWAP,
  type Co, type Process,
} from '../../kernel-model/index.ts';
import { P, bytes, fill, frameAt, ok, rig, runMain } from './_helpers.ts';

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;

function* anon(p: Process, len: number, prot = RW): Co<number> {
  return ok(yield* p.mmap(0, len, prot, ANON), 'mmap');
}

test('munmap: an unaligned address is -EINVAL and unmaps nothing', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, 2 * P);
    ok(yield* r.p.store(a, fill(7, 1)), 'store');
    t.is(yield* r.p.munmap(a + 1, P), -EINVAL);
    t.is(yield* r.p.munmap(a + P - 1, P), -EINVAL);
    t.deepEqual(bytes(yield* r.p.load(a, 1), 'load'), fill(7, 1), 'the mapping is intact');
  });
});

test('munmap: a zero (or negative) length is -EINVAL', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, P);
    t.is(yield* r.p.munmap(a, 0), -EINVAL);
    t.is(yield* r.p.munmap(a, -P), -EINVAL);
    t.is(r.p.mm.vmas.length, 1);
  });
});

test('mmap: length 0, neither MAP_SHARED nor MAP_PRIVATE, or an unaligned offset is -EINVAL', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 4 * P);
  runMain(t, r, function* () {
    t.is(yield* r.p.mmap(0, 0, RW, ANON), -EINVAL, 'length 0');
    t.is(yield* r.p.mmap(0, P, RW, MAP_ANONYMOUS), -EINVAL, 'no mapping type');
    t.is(yield* r.p.mmap(0, P, RW, MAP_SHARED, file, 100), -EINVAL, 'unaligned file offset');
    t.is(yield* r.p.mmap(0, P, RW, MAP_PRIVATE, file, P + 1), -EINVAL, 'unaligned file offset (private)');
    t.is(r.p.mm.vmas.length, 0, 'nothing was mapped');
  });
});

test('mmap: MAP_FIXED at an unaligned address is -EINVAL', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    t.is(yield* r.p.mmap(0x10000001, P, RW, ANON | MAP_FIXED), -EINVAL);
    t.is(yield* r.p.mmap(0x10000000 + 2048, P, RW, ANON | MAP_FIXED), -EINVAL);
    t.is(r.p.mm.vmas.length, 0);
  });
});

test('mprotect: an unmapped range, or one with a hole, is -ENOMEM', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, 3 * P);
    ok(yield* r.p.munmap(a + P, P), 'munmap');
    t.is(yield* r.p.mprotect(0x10000000, P, PROT_READ), -ENOMEM, 'nothing mapped');
    t.is(yield* r.p.mprotect(a, 3 * P, PROT_READ), -ENOMEM, 'hole in the middle');
    t.is(yield* r.p.mprotect(a + 2 * P, 2 * P, PROT_READ), -ENOMEM, 'runs past the end');
    // The mapped parts were left alone: Linux checks before changing anything here.
    ok(yield* r.p.store(a, fill(1, 1)), 'the first page is still writable');
  });
});

test('mprotect: an unaligned start is -EINVAL', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, 2 * P);
    t.is(yield* r.p.mprotect(a + 8, P, PROT_READ), -EINVAL);
    ok(yield* r.p.store(a + P, fill(1, 1)), 'protection unchanged');
  });
});

test('madvise: unknown advice is -EINVAL', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, P);
    for (const advice of [-1, 0x7fff, 1234]) t.is(yield* r.p.madvise(a, P, advice), -EINVAL, `advice ${advice}`);
  });
});

test('rule 21c: madvise(MADV_FREE) on a file mapping is -EINVAL', (t) => {
  const r = rig();
  const file = r.k.createFile('f', 2 * P);
  runMain(t, r, function* () {
    const a = ok(yield* r.p.mmap(0, 2 * P, RW, MAP_PRIVATE, file), 'mmap file');
    t.is(yield* r.p.madvise(a, 2 * P, MADV_FREE), -EINVAL);
    const s = ok(yield* r.p.mmap(0, 2 * P, RW, MAP_SHARED, file), 'mmap file shared');
    t.is(yield* r.p.madvise(s, 2 * P, MADV_FREE), -EINVAL);
  });
});

test('madvise: a range with a hole is -ENOMEM, and the mapped parts are still advised', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, 3 * P);
    ok(yield* r.p.store(a, fill(5, P)), 'store');
    ok(yield* r.p.store(a + 2 * P, fill(6, P)), 'store');
    ok(yield* r.p.munmap(a + P, P), 'munmap the middle');
    t.is(yield* r.p.madvise(a, 3 * P, MADV_DONTNEED), -ENOMEM);
    t.is(frameAt(r.p.mm, a), -1, 'first page zapped');
    t.is(frameAt(r.p.mm, a + 2 * P), -1, 'last page zapped');
    t.deepEqual(bytes(yield* r.p.load(a + 2 * P, 4), 'load'), fill(0, 4), 'refaults as zeros');
    t.is(yield* r.p.madvise(0x10000000, P, MADV_DONTNEED), -ENOMEM, 'entirely unmapped');
  });
});

test('madvise: MADV_DONTFORK / MADV_DOFORK set and clear VM_DONTCOPY on exactly the range', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, 3 * P);
    t.is(yield* r.p.madvise(a + P, P, MADV_DONTFORK), 0);
    const dontcopy = r.p.mm.vmas.map((v) => [v.start - a, v.end - a, (v.flags & 0x20000) !== 0]);
    t.deepEqual(dontcopy, [[0, P, false], [P, 2 * P, true], [2 * P, 3 * P, false]]);
    t.is(yield* r.p.madvise(a, 3 * P, MADV_DOFORK), 0);
    t.true(r.p.mm.vmas.every((v) => (v.flags & 0x20000) === 0));
  });
});

test('mremap: MREMAP_FIXED without MREMAP_MAYMOVE is -EINVAL', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, P);
    t.is(yield* r.p.mremap(a, P, P, MREMAP_FIXED, 0x10000000), -EINVAL);
    t.is(frameAt(r.p.mm, 0x10000000), -1);
    t.is(r.p.mm.vmas.length, 1);
  });
});

test('mremap: an unmapped old address is -EFAULT', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, P);
    t.is(yield* r.p.mremap(0x10000000, P, 2 * P, MREMAP_MAYMOVE), -EFAULT, 'no VMA at all');
    t.is(yield* r.p.mremap(a, 2 * P, 3 * P, MREMAP_MAYMOVE), -EFAULT, 'old range runs past the VMA');
  });
});

test('mremap: growing without room and without MREMAP_MAYMOVE is -ENOMEM; with it the mapping moves, bytes intact', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, 2 * P);
    const b = ok(yield* r.p.mmap(a + 2 * P, P, RW, ANON | MAP_FIXED), 'blocker right above');
    t.is(b, a + 2 * P);
    ok(yield* r.p.store(a + P + 10, fill(9, 3)), 'store');
    t.is(yield* r.p.mremap(a, 2 * P, 4 * P, 0), -ENOMEM);
    t.deepEqual(bytes(yield* r.p.load(a + P + 10, 3), 'load'), fill(9, 3), 'unchanged after the failure');
    const moved = ok(yield* r.p.mremap(a, 2 * P, 4 * P, MREMAP_MAYMOVE), 'mremap MAYMOVE');
    t.not(moved, a);
    t.deepEqual(bytes(yield* r.p.load(moved + P + 10, 3), 'load'), fill(9, 3), 'bytes moved with the mapping');
    t.is(yield* r.p.load(a, 1), -EFAULT, 'the old range is gone');
    t.deepEqual(bytes(yield* r.p.load(moved + 3 * P, 1), 'load'), fill(0, 1), 'the grown part reads as zeros');
  });
});

test('load/store: PROT_NONE or unmapped memory is -EFAULT (the SIGSEGV case)', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const none = yield* anon(r.p, P, PROT_NONE);
    t.is(yield* r.p.load(none, 1), -EFAULT);
    t.is(yield* r.p.store(none, fill(1, 1)), -EFAULT);
    t.is(yield* r.p.load(0x10000000, 1), -EFAULT);
    t.is(yield* r.p.store(0x10000000, fill(1, 1)), -EFAULT);
    // An access that starts mapped and runs into a hole fails too.
    const a = yield* anon(r.p, P);
    ok(yield* r.p.munmap(a + P, P), 'nothing above');
    t.is(yield* r.p.load(a + P - 2, 4), -EFAULT);
    t.is(frameAt(r.p.mm, none), -1, 'no page was faulted into the PROT_NONE mapping');
  });
});

test('store: to a read-only mapping is -EFAULT and the bytes stay unchanged', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, P);
    ok(yield* r.p.store(a, fill(3, 8)), 'store');
    ok(yield* r.p.mprotect(a, P, PROT_READ), 'mprotect');
    t.is(yield* r.p.store(a, fill(4, 8)), -EFAULT);
    t.deepEqual(bytes(yield* r.p.load(a, 8), 'load'), fill(3, 8));
    const ro = yield* anon(r.p, P, PROT_READ);
    t.is(yield* r.p.store(ro, fill(4, 1)), -EFAULT, 'never-touched read-only mapping');
    t.deepEqual(bytes(yield* r.p.load(ro, 1), 'load'), fill(0, 1));
  });
});

function placements(seed: number): number[] {
  const r = rig({ seed });
  const out: number[] = [];
  r.p.spawnThread('main', function* () {
    const a = ok(yield* r.p.mmap(0, P, RW, ANON), 'mmap');
    const b = ok(yield* r.p.mmap(0, 2 * P, RW, ANON), 'mmap');
    const c = ok(yield* r.p.mmap(0, 3 * P + 1, RW, ANON), 'mmap');
    ok(yield* r.p.munmap(b, 2 * P), 'munmap');
    const d = ok(yield* r.p.mmap(0, 2 * P, RW, ANON), 'mmap into the hole');
    const e = ok(yield* r.p.mmap(0, 5 * P, RW, ANON), 'mmap');
    out.push(a, b, c, d, e);
  });
  r.k.sim.run();
  return out;
}

test('mmap: placement is deterministic, top-down from the mmap base, and a freed gap is reused', (t) => {
  const one = placements(1);
  t.deepEqual(placements(1), one, 'same seed, same addresses');
  t.deepEqual(placements(99), one, 'placement draws nothing from the seed');
  const [a, b, c, d, e] = one as [number, number, number, number, number];
  t.is(a, MMAP_BASE - P);
  t.is(b, a - 2 * P);
  t.is(c, b - 4 * P, 'length rounded up to whole pages');
  t.is(d, b, 'the highest gap that fits is reused');
  t.is(e, c - 5 * P);
});

test('mmap: placement never overlaps, including a MAP_FIXED mapping straddling the mmap base', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const fixed = ok(yield* r.p.mmap(MMAP_BASE - 2 * P, 4 * P, RW, ANON | MAP_FIXED), 'MAP_FIXED across the base');
    t.is(fixed, MMAP_BASE - 2 * P);
    ok(yield* r.p.store(fixed, fill(0xaa, P)), 'store');
    const got: number[] = [];
    for (let i = 0; i < 4; i++) got.push(ok(yield* r.p.mmap(0, P, RW, ANON), 'mmap'));
    for (const g of got) t.true(g + P <= fixed || g >= fixed + 4 * P, `mapping at ${g.toString(16)} overlaps the fixed one`);
    const vmas = r.p.mm.vmas;
    for (let i = 1; i < vmas.length; i++) t.true(vmas[i - 1]!.end <= vmas[i]!.start, 'VMAs sorted and disjoint');
    t.deepEqual(bytes(yield* r.p.load(fixed, 4), 'load'), fill(0xaa, 4), 'the fixed mapping kept its bytes');
  });
});

test('mmap: MAP_FIXED replaces an existing mapping: old bytes gone, old pages freed', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const a = yield* anon(r.p, 2 * P);
    ok(yield* r.p.store(a, fill(0x11, 2 * P)), 'store');
    const oldFrames = [frameAt(r.p.mm, a), frameAt(r.p.mm, a + P)];
    const used = r.k.phys.used;
    const b = ok(yield* r.p.mmap(a, 2 * P, PROT_READ, ANON | MAP_FIXED), 'MAP_FIXED');
    t.is(b, a);
    t.is(r.p.mm.vmas.length, 1);
    t.is(r.k.phys.used, used - 2, 'both old pages were freed');
    for (const f of oldFrames) t.false(r.k.phys.isAllocated(f));
    t.deepEqual(bytes(yield* r.p.load(a, 2 * P), 'load'), fill(0, 2 * P), 'the new mapping reads zeros');
    t.is(yield* r.p.store(a, fill(1, 1)), -EFAULT, 'and has the new protection');
  });
});

// ---- a property: any sequence of calls, however bad, keeps the address space sane ---------

type Op =
  | { op: 'mmap'; addr: number; len: number; prot: number; flags: number }
  | { op: 'munmap' | 'mprotect' | 'madvise' | 'store' | 'load'; addr: number; len: number; arg: number }
  | { op: 'mremap'; addr: number; len: number; newLen: number; flags: number; newAddr: number };

const BASE = 0x20000000;
// Two neighbourhoods: a low one, and one straddling the base where placement starts.
const page = fc.tuple(fc.constantFrom(BASE, MMAP_BASE - 16 * P), fc.integer({ min: -1, max: 40 })).map(([b, i]) => b + i * P);
const addrArb = fc.oneof(page, page.map((a) => a + 123));
const lenArb = fc.oneof(fc.integer({ min: 0, max: 12 }).map((n) => n * P), fc.integer({ min: -5, max: 5 * P }));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant('mmap' as const), addr: fc.oneof(addrArb, fc.constant(0)), len: lenArb, prot: fc.integer({ min: 0, max: 7 }),
    flags: fc.constantFrom(ANON, ANON | MAP_FIXED, MAP_SHARED | MAP_ANONYMOUS, MAP_ANONYMOUS, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED),
  }),
  fc.record({ op: fc.constantFrom('munmap' as const, 'store' as const, 'load' as const), addr: addrArb, len: lenArb, arg: fc.constant(0) }),
  fc.record({ op: fc.constant('mprotect' as const), addr: addrArb, len: lenArb, arg: fc.integer({ min: 0, max: 9 }) }),
  fc.record({ op: fc.constant('madvise' as const), addr: addrArb, len: lenArb, arg: fc.constantFrom(0, 3, MADV_DONTNEED, MADV_FREE, MADV_DONTFORK, MADV_DOFORK, 99) }),
  fc.record({
    op: fc.constant('mremap' as const), addr: addrArb, len: lenArb, newLen: lenArb,
    flags: fc.constantFrom(0, MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_MAYMOVE | MREMAP_FIXED, 0x100), newAddr: addrArb,
  }),
);

testProp(
  'syscalls never throw for bad input; VMAs stay sorted, aligned and disjoint, and every PTE lies inside a VMA',
  [fc.array(opArb, { minLength: 1, maxLength: 25 })],
  (t, ops) => {
    const r = rig();
    const { p, k } = r;
    const rets: unknown[] = [];
    const task = p.spawnThread('fuzz', function* () {
      for (const o of ops) {
        let ret: number | Uint8Array;
        switch (o.op) {
          case 'mmap': ret = yield* p.mmap(o.addr, o.len, o.prot, o.flags); break;
          case 'munmap': ret = yield* p.munmap(o.addr, o.len); break;
          case 'mprotect': ret = yield* p.mprotect(o.addr, o.len, o.arg); break;
          case 'madvise': ret = yield* p.madvise(o.addr, o.len, o.arg); break;
          case 'store': ret = yield* p.store(o.addr, fill(1, Math.max(0, Math.min(o.len, 3 * P)))); break;
          case 'load': ret = yield* p.load(o.addr, Math.max(0, Math.min(o.len, 3 * P))); break;
          case 'mremap': ret = yield* p.mremap(o.addr, o.len, o.newLen, o.flags, o.newAddr); break;
        }
        rets.push(ret);
      }
    });
    const out = k.sim.run();
    t.not(out.reason, 'failed', out.failure);
    t.true(task.done);
    for (const ret of rets) t.true(ret instanceof Uint8Array || (typeof ret === 'number' && Number.isInteger(ret)));
    const vmas = p.mm.vmas;
    for (const [i, v] of vmas.entries()) {
      t.true(isPageAligned(v.start) && isPageAligned(v.end) && v.start < v.end, `VMA ${v}`);
      if (i > 0) t.true(vmas[i - 1]!.end <= v.start, `VMAs ${vmas[i - 1]} and ${v} overlap or are out of order`);
    }
    for (const [v, pte] of p.mm.pageTable.entriesIn(0, vpn(2 ** 47))) {
      const addr = v * P;
      t.truthy(p.mm.findVma(addr), `PTE at ${addr.toString(16)} outside every VMA`);
      if (!pteHas(pte, PTE_SWAP) && pteFrame(pte) !== 0) t.true(k.phys.isAllocated(pteFrame(pte)), 'PTE maps a freed frame');
    }
  },
  { numRuns: 150, seed: 4242 },
);
