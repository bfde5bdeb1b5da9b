/**
 * brk(2) (kernel-model/brk.ts, following SYSCALL_DEFINE1(brk) in mm/mmap.c): growth adds
 * an anonymous heap VMA without any notifier; a shrink goes through do_vmi_align_munmap,
 * the munmap path, so it sends one MMU_NOTIFY_UNMAP over [newbrk, oldbrk) (kernel rule
 * 21a) and frees the pages; refusals return the old break, never an errno; bad input (a
 * value no unsigned long holds) is -EINVAL.
 */
import test from 'ava';
import { EINVAL, ENOMEM, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE, setBrkBase, vpn, ptePresent } from '../../kernel-model/index.ts';
import { P, lines, ok, pair, rig, runMain } from './_helpers.ts';

const HEAP = 0x5555_5000_0000;

test('brk growth extends one heap VMA without notifier events; brk(0) reports the break (mm/mmap.c SYSCALL_DEFINE1(brk), do_brk_flags)', (t) => {
  const r = rig();
  t.is(setBrkBase(r.p.mm, HEAP), 0);
  runMain(t, r, function* () {
    t.is(yield* r.p.brk(0), HEAP, 'brk(0) is below start_brk: refused, the current break returned');
    t.is(yield* r.p.brk(HEAP + 100), HEAP + 100, 'the break is byte-exact');
    t.is(yield* r.p.brk(HEAP + 3 * P + 5), HEAP + 3 * P + 5);
    t.is(r.p.mm.vmas.length, 1, 'the second growth expanded the heap VMA');
    t.is(r.p.mm.vmas[0]!.start, HEAP);
    t.is(r.p.mm.vmas[0]!.end, HEAP + 4 * P);
    ok(yield* r.p.store(HEAP + 3 * P, new Uint8Array([7])), 'store');
    t.is(yield* r.p.brk(HEAP + 3 * P + 9), HEAP + 3 * P + 9, 'within the same page: only mm->brk moves');
    t.is(r.p.mm.vmas[0]!.end, HEAP + 4 * P);
  });
  t.deepEqual(lines(r.events, r.p.mm), [], 'growth and same-page moves send no invalidation');
});

test('brk shrink sends one MMU_NOTIFY_UNMAP over [newbrk, oldbrk) and frees the pages (kernel rule 21a; mm/mmap.c brk -> do_vmi_align_munmap)', (t) => {
  const r = rig();
  setBrkBase(r.p.mm, HEAP);
  runMain(t, r, function* () {
    ok(yield* r.p.brk(HEAP + 8 * P), 'grow');
    for (let i = 0; i < 8; i++) ok(yield* r.p.store(HEAP + i * P, new Uint8Array([i + 1])), 'store');
    t.is(yield* r.p.brk(HEAP + 2 * P + 1), HEAP + 2 * P + 1);
    t.true(ptePresent(r.p.mm.pageTable.get(vpn(HEAP + 2 * P))), 'the page holding the new break stays');
    t.false(ptePresent(r.p.mm.pageTable.get(vpn(HEAP + 3 * P))), 'pages past the aligned break are gone');
    t.is(r.p.mm.vmas[0]!.end, HEAP + 3 * P);
  });
  t.deepEqual(lines(r.events, r.p.mm), pair('UNMAP', HEAP + 3 * P, HEAP + 8 * P));
});

test('brk refusals return the old break: below start_brk, growth into a mapping or its guard page, past TASK_SIZE; sbrk turns them into ENOMEM (glibc misc/sbrk.c)', (t) => {
  const r = rig();
  setBrkBase(r.p.mm, HEAP);
  runMain(t, r, function* () {
    ok(yield* r.p.brk(HEAP + P), 'grow');
    ok(yield* r.p.mmap(HEAP + 4 * P, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), 'mmap');
    t.is(yield* r.p.brk(HEAP - P), HEAP + P, 'below start_brk');
    t.is(yield* r.p.brk(HEAP + 3 * P + 1), HEAP + P, 'the guard page before the next VMA');
    t.is(yield* r.p.brk(HEAP + 3 * P), HEAP + 3 * P, 'up to the guard page is fine');
    t.is(yield* r.p.brk(2 ** 47 + P), HEAP + 3 * P, 'past TASK_SIZE');
    t.is(yield* r.p.sbrk(P), -ENOMEM, 'sbrk: the kernel returned less than asked');
    t.is(yield* r.p.sbrk(-P), HEAP + 3 * P, 'sbrk returns the old break');
    t.is(r.p.mm.brk, HEAP + 2 * P);
    t.is(yield* r.p.sbrk(0), HEAP + 2 * P);
  });
});

test('brk bad input is -EINVAL (model): negative, fractional or unsafe values; setBrkBase checks alignment and overlap', (t) => {
  const r = rig();
  t.is(setBrkBase(r.p.mm, HEAP + 1), -EINVAL);
  t.is(setBrkBase(r.p.mm, 2 ** 47), -EINVAL);
  setBrkBase(r.p.mm, HEAP);
  runMain(t, r, function* () {
    t.is(yield* r.p.brk(-1), -EINVAL);
    t.is(yield* r.p.brk(HEAP + 0.5), -EINVAL);
    t.is(yield* r.p.brk(Number.NaN), -EINVAL);
    t.is(yield* r.p.brk(2 ** 64), -EINVAL);
    t.is(yield* r.p.sbrk(1.5), -EINVAL);
    ok(yield* r.p.mmap(HEAP + 16 * P, P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), 'mmap');
  });
  t.is(setBrkBase(r.p.mm, HEAP + 16 * P), -ENOMEM);
});

test('fork copies the break (dup_mm copies mm_struct): the child shrinks its own heap, the parent keeps its pages', (t) => {
  const r = rig();
  setBrkBase(r.p.mm, HEAP);
  runMain(t, r, function* () {
    ok(yield* r.p.brk(HEAP + 4 * P), 'grow');
    ok(yield* r.p.store(HEAP + 3 * P, new Uint8Array([9])), 'store');
    const child = yield* r.p.fork();
    if (typeof child === 'number') return t.fail('fork failed');
    t.is(child.mm.brk, HEAP + 4 * P);
    t.is(child.mm.startBrk, HEAP);
    t.is(yield* child.brk(HEAP + P), HEAP + P);
    t.deepEqual(yield* r.p.load(HEAP + 3 * P, 1), new Uint8Array([9]));
  });
});
