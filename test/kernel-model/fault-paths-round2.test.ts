/**
 * Two fault paths the round-2 fuzzer (issue 19) found wrong in the model, each checked
 * directly against the kernel function it follows.
 */
import test from 'ava';
import { MAP_SHARED, PG_DIRTY, PG_PRIVATE, PTE_PROTNONE, PTE_WRITE, pteHas, vpn, writebackFile } from '../../kernel-model/index.ts';
import { changeProtection } from '../../kernel-model/mprotect.ts';
import { P, fill, frameAt, ok, runMain } from './_helpers.ts';
import { RW, rigOn, traceOf } from './_pin-helpers.ts';

test('do_numa_page (mm/memory.c, can_change_pte_writable): a write to a NUMA hint over a clean PTE of a shared file mapping goes through page_mkwrite (buffers back, page dirty), never dirty-without-buffers (kernel rules 21h, 76)', (t) => {
  const r = rigOn('linux-6.x');
  const { k, p } = r;
  const trace = traceOf(k);
  const file = k.createFile('data', P, new Uint8Array(P));
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED, file, 0), 'mmap');
    ok(yield* p.store(a, fill(1, 8)), 'store');
    const f = frameAt(p.mm, a);
    // Writeback cleans the page and write-protects the PTE; the buffers go (try_to_release_folio).
    yield* writebackFile(k, file, true);
    t.false(k.phys.has(f, PG_DIRTY) || k.phys.has(f, PG_PRIVATE), 'clean, without buffers');
    t.false(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE));
    // change_prot_numa makes the clean PTE a hint (balancing is off: no migration follows).
    const vma = p.mm.findVma(a)!;
    yield* changeProtection(p.mm, vma, a, a + P, vma.flags, true);
    t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_PROTNONE), 'a NUMA hint');
    ok(yield* p.store(a, fill(2, 8)), 'store through the hint');
    t.true(pteHas(p.mm.pageTable.get(vpn(a)), PTE_WRITE), 'writable after the write');
    t.true(k.phys.has(f, PG_PRIVATE), 'page_mkwrite gave the page its buffers back');
    t.true(k.phys.has(f, PG_DIRTY), 'and dirtied it');
    yield* p.exit();
  });
  t.deepEqual(trace.of('dirty-without-buffers'), []);
  t.true(trace.of('fault').some((e) => e.kind === 'numa-hint'), 'the hinting fault ran');
});
