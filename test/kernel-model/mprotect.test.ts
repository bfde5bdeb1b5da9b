/**
 * mprotect back to read-write (issue 14 item 3): which PTEs become writable at once
 * (mm/mprotect.c change_pte_range with MM_CP_TRY_CHANGE_WRITABLE and
 * can_change_pte_writable, 64fe24a3e05e in 6.0) and which wait for a write fault.
 */
import test from 'ava';
import {
  MAP_SHARED, PROFILES, PROT_READ, PTE_WRITE, pteHas, vpn, type ProfileName,
} from '../../kernel-model/index.ts';
import { P, bytes, fill, frameAt, ok, runMain } from './_helpers.ts';
import { ANON, RW, SHARED_ANON, rigOn, traceOf } from './_pin-helpers.ts';

const release = (r: string): number => {
  const [major = 0, minor = 0] = r.split('.').map((x) => Number.parseInt(x, 10));
  return major * 1000 + minor;
};

test('profiles: MM_CP_TRY_CHANGE_WRITABLE exactly from 6.0 (64fe24a3e05e)', (t) => {
  for (const p of Object.values(PROFILES)) t.is(p.mprotectTryChangeWritable, release(p.release) >= 6000, p.name);
});

for (const [profile, upgraded] of [['linux-6.x', true], ['linux-5.8', false]] as [ProfileName, boolean][]) {
  test(`mprotect (mm/mprotect.c change_pte_range, can_change_pte_writable; ${profile}): RW again ${upgraded ? 'makes an exclusive anonymous page writable at once, no write fault' : 'leaves the PTE read-only until a write fault reuses the page'}`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const trace = traceOf(k);
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(0x21, 8)), 'store: exclusive anonymous page');
      bytes(yield* p.load(a + P, 1), 'page 1: the zero page');
      ok(yield* p.mprotect(a, 2 * P, PROT_READ), 'read-only');
      t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE));
      ok(yield* p.mprotect(a, 2 * P, RW), 'read-write again');
      t.is(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), upgraded);
      t.false(pteHas(p.mm.pageTable.get(vpn(a + P)), PTE_WRITE), 'the zero page is never made writable');
      const f = frameAt(p.mm, a);
      const faults = trace.of('fault').length;
      ok(yield* p.store(a, fill(0x22, 8)), 'store');
      t.is(frameAt(p.mm, a), f, 'same page either way');
      t.is(trace.of('fault').length - faults, upgraded ? 0 : 1, upgraded ? 'no fault' : 'one write fault (reuse)');
    });
  });
}

test('mprotect (mm/mprotect.c vma_wants_manual_pte_write_upgrade): a COW-shared page stays read-only; a shmem page (no writenotify) is writable again on every kernel', (t) => {
  for (const profile of ['linux-6.x', 'linux-4.18'] as ProfileName[]) {
    const r = rigOn(profile);
    const { p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, fill(0x31, 8)), 'store');
      const child = yield* p.fork();
      if (typeof child === 'number') throw new Error(`fork ${child}`);
      const s = ok(yield* p.mmap(0, P, RW, SHARED_ANON), 'mmap shmem');
      ok(yield* p.store(s, fill(0x32, 8)), 'store shmem');
      ok(yield* p.mprotect(a, P, PROT_READ), 'ro');
      ok(yield* p.mprotect(s, P, PROT_READ), 'ro');
      ok(yield* p.mprotect(a, P, RW), 'rw');
      ok(yield* p.mprotect(s, P, RW), 'rw');
      t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), `${profile}: shared with the child: COW`);
      t.true(pteHas(p.mm.pageTable.get(vpn(s)), PTE_WRITE), `${profile}: shmem`);
    });
  }
});

test('mprotect (can_change_pte_writable, MAP_SHARED file): on 6.x a dirty PTE of a dirty-tracked file mapping is writable again at once, a clean one waits for page_mkwrite', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const file = k.createFile('data', 2 * P);
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, 2 * P, RW, MAP_SHARED, file), 'mmap');
    ok(yield* p.store(a, fill(0x41, 8)), 'page 0 dirty');
    bytes(yield* p.load(a + P, 1), 'page 1 clean');
    ok(yield* p.mprotect(a, 2 * P, PROT_READ), 'ro');
    ok(yield* p.mprotect(a, 2 * P, RW), 'rw');
    t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE));
    t.false(pteHas(p.mm.pageTable.get(vpn(a + P)), PTE_WRITE));
  });
});
