/**
 * The NUMA hinting fault's restore (mm/memory.c do_numa_page, numa_rebuild_single_mapping;
 * kernel rule 21h): which PTE comes back, writable or not, when the page stays where it is.
 *
 * Found by `lab fuzz` of the reference odp and holdoff strategies (seeds 14101, 14102):
 * writeback cleaned a shared file page and dropped its buffers, NUMA balancing hinted the
 * clean PTE, the device's write fault (hmm_range_fault -> handle_mm_fault) took the hinting
 * fault on the now-local page, and the model put the PTE back writable without
 * ->page_mkwrite; the next invalidation's ib_umem_odp_unmap_dma_pages then dirtied a page
 * without buffers. The kernel restores a clean PTE of a dirty-tracked shared mapping
 * read-only (can_change_pte_writable: pte_dirty), so the write goes through do_wp_page.
 */
import test from 'ava';
import {
  FOLL_LONGTERM, MAP_SHARED, hex, PG_DIRTY, pinUserPagesFast, startNumaBalancing, PG_PRIVATE, PTE_DIRTY, PTE_PROTNONE, PTE_WRITE, PROT_READ, pteHas, vpn, writebackPage,
  type MmStruct, type ProfileName,
} from '../../kernel-model/index.ts';
import { changeProtection } from '../../kernel-model/mprotect.ts';
import { VM_EXEC, VM_READ, VM_WRITE } from '../../kernel-model/vma.ts';
import { P, bytes, fill, frameAt, ok, runMain } from './_helpers.ts';
import { ANON, RW, SHARED_ANON, rigOn, traceOf } from './_pin-helpers.ts';

/** change_prot_numa over the VMA at `addr` (what task_numa_work does to it); returns the PTEs hinted. */
function* hint(mm: MmStruct, addr: number) {
  const vma = mm.findVma(addr)!;
  return yield* changeProtection(mm, vma, vma.start, vma.end, vma.flags & (VM_READ | VM_WRITE | VM_EXEC), true);
}

for (const profile of ['linux-6.x', 'linux-5.15'] as const satisfies readonly ProfileName[]) {
  test(`rule 21h, history 2018 (${profile}, mm/memory.c do_numa_page, can_change_pte_writable; mm/page-writeback.c folio_mkclean): a write through a NUMA hint of a shared file page that writeback cleaned (buffers dropped) goes through page_mkwrite: buffers back, page dirty, no dirty-without-buffers when it is unmapped`, (t) => {
    const r = rigOn(profile);
    const { k, p } = r;
    const trace = traceOf(k);
    const file = k.createFile('data', P, fill(0x11, P));
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
      ok(yield* p.store(a, fill(0x22, 8)), 'store');
      const f = frameAt(p.mm, a);
      t.true(yield* writebackPage(k, file, 0, true), 'writeback cleans the page and drops its buffers');
      t.false(k.phys.has(f, PG_PRIVATE) || k.phys.has(f, PG_DIRTY));
      t.is(yield* hint(p.mm, a), 1, 'change_prot_numa hints the clean PTE');
      t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_PROTNONE));
      // No balancing kthread: the page counts as local, so the hinting fault only restores.
      ok(yield* p.store(a, fill(0x33, 8)), 'store through the hint');
      t.is(frameAt(p.mm, a), f, 'not migrated');
      const pte = p.mm.pageTable.get(vpn(a));
      t.true(pteHas(pte, PTE_WRITE) && pteHas(pte, PTE_DIRTY), 'writable after the write fault');
      t.true(k.phys.has(f, PG_PRIVATE), '->page_mkwrite gave the page its buffers back');
      t.true(k.phys.has(f, PG_DIRTY), 'and dirtied it');
      ok(yield* p.munmap(a, P), 'munmap');
      t.is(trace.of('dirty-without-buffers').length, 0, 'zap_pte_range dirties a page that has its buffers');
      t.true(yield* writebackPage(k, file, 0, false), 'the write reaches the disk');
      t.deepEqual(file.diskPage(0).subarray(0, 8), fill(0x33, 8));
    });
  });
}

test('rule 21h (linux-6.x, mm/memory.c do_numa_page -> can_change_pte_writable, since savedwrite went): a read through a NUMA hint puts back an exclusive anonymous page writable and a clean PTE of a dirty-tracked shared file page read-only; a shared anonymous (shmem) page comes back writable by its vm_page_prot', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const file = k.createFile('data', P, fill(0x11, P));
  runMain(t, r, function* () {
    const anon = ok(yield* p.mmap(0, P, RW, ANON), 'mmap anon');
    const shm = ok(yield* p.mmap(0, P, RW, SHARED_ANON), 'mmap shared anon');
    const fa = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap file');
    for (const a of [anon, shm, fa]) ok(yield* p.store(a, fill(0x44, 8)), 'store');
    t.true(yield* writebackPage(k, file, 0, false));
    for (const a of [anon, shm, fa]) {
      t.is(yield* hint(p.mm, a), 1, hex(a));
      t.deepEqual(bytes(yield* p.load(a, 8), 'load'), fill(0x44, 8));
    }
    t.true(pteHas(p.mm.pageTable.get(vpn(anon)), PTE_WRITE), 'exclusive anonymous page: writable again on a read');
    t.true(pteHas(p.mm.pageTable.get(vpn(shm)), PTE_WRITE), 'shmem: writable vm_page_prot');
    t.false(pteHas(p.mm.pageTable.get(vpn(fa)), PTE_WRITE), 'clean file PTE: read-only, the next write notifies the filesystem');
    t.false(pteHas(p.mm.pageTable.get(vpn(fa)), PTE_PROTNONE));
    // A read-only VMA never comes back writable.
    ok(yield* p.mprotect(anon, P, PROT_READ), 'mprotect');
    t.is(yield* hint(p.mm, anon), 1);
    ok((yield* p.load(anon, 1)) instanceof Uint8Array ? 0 : -1, 'load');
    t.false(pteHas(p.mm.pageTable.get(vpn(anon)), PTE_WRITE));
  });
});

test('mm/memory.c do_numa_page: a hinting fault whose migration fails and whose PTE changed returns, and the access faults again (a loop, not a recursion): thousands of retries while a fast NUMA scan keeps re-hinting a pinned shared page cost no stack (fuzz pinned 22202)', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P, fill(0x11, P));
  let a = 0;
  let loaded = false;
  const main = p.spawnThread('main', function* () {
    a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    ok(yield* p.store(a, fill(0x22, 8)), 'store');
    // Clean, so change_prot_numa hints it (a dirty page of the file LRU is skipped).
    t.true(yield* writebackPage(k, file, 0, false));
    // A read-only long-term pin in a shared mapping (a writable one of a file page is
    // refused: vma_needs_dirty_tracking): change_prot_numa still hints it (only COW
    // mappings skip pinned folios), and migrate_pages fails on the pin's references.
    const pages: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_LONGTERM, pages), 1);
    // A scan period far below one hinting fault (assumed, as the fuzzer's `numa periodUs=1`):
    // by the time the fault has restored the PTE, the scan has hinted it again.
    startNumaBalancing(k, { periodNs: 100 });
    yield* k.sim.sleep(1000);
    t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_PROTNONE), 'hinted');
    bytes(yield* p.load(a, 8), 'load');
    loaded = true;
  });
  const out = k.sim.run({ untilNs: 20_000_000 });
  t.not(out.reason, 'failed', out.failure ?? '');
  // Each retry is a hinting fault whose migrate_pages failed on the pin.
  const failed = trace.of('migrate').filter((m) => m.ret < 0).length;
  t.true(failed > 2000, `${failed} failed migrations, one per retry`);
  t.false(loaded, 'the scan keeps winning: the load is still being retried when the run ends');
  t.false(main.done);
});
