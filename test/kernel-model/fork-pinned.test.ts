/**
 * fork with pinned anonymous pages (kernel rules 61, 66-70, hazards H8-H10): what a
 * device holding the pinned frame sees after the parent writes again.
 */
import test from 'ava';
import {
  GUP_PIN_COUNTING_BIAS, MADV_DONTFORK, PG_ANON_EXCLUSIVE, PTE_WRITE, ZERO_PFN, pteHas, vpn,
  type Co, type Process, type ProfileName,
} from '../../kernel-model/index.ts';
import {
  FOLL_LONGTERM, FOLL_WRITE, getUserPagesFast, pinUserPagesFast, putUserPages, unpinUserPages,
} from '../../kernel-model/gup.ts';
import { P, bytes, fill, frameAt, ok, runMain } from './_helpers.ts';
import { ANON, RW, rigOn } from './_pin-helpers.ts';

function* forkOk(p: Process): Co<Process> {
  const child = yield* p.fork();
  if (typeof child === 'number') throw new Error(`fork failed with ${child}`);
  return child;
}

interface Case {
  profile: ProfileName;
  how: 'pin' | 'get';
  /** The device sees the parent's store after fork. */
  coherent: boolean;
}

const cases: Case[] = [
  { profile: 'linux-6.x', how: 'pin', coherent: true },
  { profile: 'linux-5.8', how: 'pin', coherent: false },
  { profile: 'linux-6.x', how: 'get', coherent: false },
];

for (const c of cases) {
  const what = c.how === 'pin' ? 'pin_user_pages(FOLL_WRITE|FOLL_LONGTERM)' : 'get_user_pages(FOLL_WRITE)';
  test(`rules 67, 70 (H8, ${c.profile}, ${c.how === 'pin' ? 'FOLL_PIN' : 'FOLL_GET'}): ${what}, fork, parent store: the pinned frame holds ${c.coherent ? 'the parent\'s new bytes' : 'stale bytes'}`, (t) => {
    const r = rigOn(c.profile);
    const { k, p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(0xaa, 16)), 'store');
      const pages: number[] = [];
      const n = c.how === 'pin'
        ? yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages)
        : yield* getUserPagesFast(p.mm, a, 1, FOLL_WRITE, pages);
      t.is(n, 1);
      const f = pages[0]!;
      t.is(p.mm.hasPinned, c.how === 'pin');
      const child = yield* forkOk(p);
      if (c.coherent) {
        t.is(frameAt(p.mm, a), f, 'the parent keeps the pinned page');
        t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'still writable');
        t.true(k.phys.has(f, PG_ANON_EXCLUSIVE), 'still exclusive');
        t.not(frameAt(child.mm, a), f, 'the child got its own copy at fork');
      } else {
        t.is(frameAt(child.mm, a), f, 'COW-shared with the child');
        t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'write-protected in the parent');
      }
      ok(yield* p.store(a, fill(0xbb, 16)), 'parent store');
      const seen = k.dmaBus.read(f, 0, 16);
      if (c.coherent) {
        t.deepEqual(seen, fill(0xbb, 16), 'the device reads what the parent wrote');
        t.is(frameAt(p.mm, a), f);
      } else {
        t.deepEqual(seen, fill(0xaa, 16), 'the device reads stale bytes: the parent moved to a new page');
        t.not(frameAt(p.mm, a), f);
        t.is(frameAt(child.mm, a), f, 'the pinned page now belongs to the child');
      }
      k.dmaBus.write(f, 0, fill(0xcc, 4));
      const parentView = bytes(yield* p.load(a, 4), 'parent load');
      t.deepEqual(parentView, c.coherent ? fill(0xcc, 4) : fill(0xbb, 4), 'a device write reaches the parent only when coherent');
      t.deepEqual(bytes(yield* child.load(a, 4), 'child load'), c.coherent ? fill(0xaa, 4) : fill(0xcc, 4),
        'the child sees its snapshot, or the device\'s write when it inherited the page');
      if (c.how === 'pin') unpinUserPages(k, pages);
      else putUserPages(k, pages);
    });
  });
}

test('rule 69 (H8 workaround, linux-5.8): MADV_DONTFORK on the pinned buffer keeps the parent on the pinned page; the child has no mapping there', (t) => {
  const r = rigOn('linux-5.8');
  const { k, p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, fill(0xaa, 16)), 'store');
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, pages), 1);
    ok(yield* p.madvise(a, P, MADV_DONTFORK), 'madvise');
    const child = yield* forkOk(p);
    t.is(child.mm.findVma(a), undefined);
    ok(yield* p.store(a, fill(0xbb, 16)), 'store');
    t.is(frameAt(p.mm, a), pages[0]!);
    t.deepEqual(k.dmaBus.read(pages[0]!, 0, 16), fill(0xbb, 16));
    unpinUserPages(k, pages);
  });
});

// linux-5.15, not 5.8: 5.8's GUP broke COW for read pins (should_force_cow_break), so it never
// pinned the zero page; 5.9 to 6.1 did (see profile-history.test.ts).
for (const profile of ['linux-5.15', 'linux-6.x'] as const) {
  const copies = profile === 'linux-6.x';
  test(`rule 61 (seed 001 ring example, ${profile}): a read-only long-term pin of a never-written anonymous buffer pins ${copies ? 'a private zeroed copy, which later stores reach' : 'the zero page, which later stores never reach'}`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      const zeroRefs = k.phys.refcount[ZERO_PFN];
      const pages: number[] = [];
      t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_LONGTERM, pages), 1);
      const f = pages[0]!;
      if (copies) {
        t.not(f, ZERO_PFN);
        t.true(k.phys.has(f, PG_ANON_EXCLUSIVE));
        t.is(k.phys.refcount[f], 1 + GUP_PIN_COUNTING_BIAS);
        t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'unshared, still read-only');
      } else {
        t.is(f, ZERO_PFN);
        t.is(k.phys.refcount[ZERO_PFN], zeroRefs, 'the zero page is not counted');
      }
      t.is(frameAt(p.mm, a), f);
      ok(yield* p.store(a, fill(0x42, 16)), 'store');
      if (copies) {
        t.is(frameAt(p.mm, a), f, 'the exclusive copy is written in place');
        t.deepEqual(k.dmaBus.read(f, 0, 16), fill(0x42, 16));
      } else {
        t.not(frameAt(p.mm, a), f, 'the store COWed away from the zero page');
        t.deepEqual(k.dmaBus.read(f, 0, 16), fill(0, 16), 'the device still reads zeros');
      }
      unpinUserPages(k, pages);
    });
  });
}

for (const withFlag of [true, false]) {
  test(`rules 56, 67 (H10, linux-6.x): a page that 1023 plain references make look pinned is ${withFlag ? 'copied for the child at fork when MMF_HAS_PINNED is set (another page was pinned)' : 'COW-shared at fork when MMF_HAS_PINNED is clear'}`, (t) => {
    const r = rigOn('linux-6.x');
    const { k, p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(0xaa, 2 * P)), 'store');
      const f = frameAt(p.mm, a);
      const gets: number[] = [];
      for (let i = 0; i < GUP_PIN_COUNTING_BIAS - 1; i++) yield* getUserPagesFast(p.mm, a, 1, 0, gets);
      t.true(k.phys.maybeDmaPinned(f), 'refcount 1024: a false positive');
      const pins: number[] = [];
      if (withFlag) t.is(yield* pinUserPagesFast(p.mm, a + P, 1, FOLL_WRITE, pins), 1);
      t.is(p.mm.hasPinned, withFlag);
      const child = yield* forkOk(p);
      t.is(frameAt(p.mm, a), f, 'the parent keeps its page either way');
      if (withFlag) {
        t.not(frameAt(child.mm, a), f, 'the child got a copy');
        t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'the parent mapping is unchanged');
        t.deepEqual(bytes(yield* child.load(a, 4), 'child load'), fill(0xaa, 4));
      } else {
        t.is(frameAt(child.mm, a), f, 'shared with the child');
        t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'write-protected for COW');
      }
      putUserPages(k, gets);
      unpinUserPages(k, pins);
    });
  });
}
