/**
 * Device-coherent memory (issue 17, spec/kernel.md rules 51, 52, 62): MEMORY_DEVICE_COHERENT
 * pgmaps (kernel-model/memremap.ts, after mm/memremap.c and include/linux/memremap.h), whose
 * pages the CPU maps with ordinary present PTEs; migrate_vma with
 * MIGRATE_VMA_SELECT_DEVICE_COHERENT (mm/migrate_device.c migrate_vma_collect_pmd); long-term
 * pins migrating them out (mm/gup.c migrate_longterm_unpinnable_folios ->
 * migrate_device_coherent_folio, include/linux/mm.h folio_is_longterm_pinnable); the Dmirror
 * of a coherent device (lib/test_hmm.c's /dev/hmm_dmirror2 and 3: dmirror_allocate_chunk
 * with MEMORY_DEVICE_COHERENT, dmirror_select_device, dmirror_mkentry's
 * DEV_COHERENT_LOCAL/REMOTE), in the shape of tools/testing/selftests/mm/hmm-tests.c run on
 * its hmm_device_coherent variant.
 */
import test from 'ava';
import {
  EBUSY, EINVAL, ENOMEM, FOLL_LONGTERM, FOLL_WRITE, MAP_ANONYMOUS, MAP_PRIVATE, MemoryType, MmuNotifyEvent, PG_ZONE_DEVICE,
  PROT_READ, PROT_WRITE, HMM_PFN_VALID, HMM_PFN_WRITE,
  MIGRATE_PFN_MIGRATE, MIGRATE_VMA_SELECT_DEVICE_COHERENT, MIGRATE_VMA_SELECT_DEVICE_PRIVATE, MIGRATE_VMA_SELECT_SYSTEM,
  folioIsLongtermPinnable, hmmRangeFault, hmmRangeInit, isDeviceCoherentPage, isDevicePrivateEntry, isMigrationEntry, isZoneDevicePage,
  memremapPages, migrateDeviceCoherentFolio, migratePfnFlags, migrateVmaFinalize, migrateVmaInit, migrateVmaSetup,
  mmuIntervalReadBegin, pinUserPages, pinUserPagesFast, pteFrame, ptePresent, pteWrite, unpinUserPages, vpn,
  type MmStruct, type NotifierStreamEvent,
} from '../../kernel-model/index.ts';
import {
  Dmirror, DmirrorDevice,
  HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL, HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE, HMM_DMIRROR_PROT_WRITE,
} from '../../driver/index.ts';
import { P, bytes, ok, rig, runMain, type Rig } from './_helpers.ts';
import { rigOn, traceOf } from './_pin-helpers.ts';

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;
/** The model's chunk for a coherent device: carved out of the rig's memory, so small. */
const CHUNK = 16;

function pattern(npages: number, base = 1): Uint8Array {
  const b = new Uint8Array(npages * P);
  for (let i = 0; i < npages; i++) b.fill((base + i) & 0xff, i * P, (i + 1) * P);
  return b;
}

/** /dev/hmm_dmirror2-style: a mirror of a device whose memory is MEMORY_DEVICE_COHERENT. */
function* coherentMirror(r: Rig, mm: MmStruct, name = 'dmirror2') {
  const device = new DmirrorDevice(r.k, `${name}.device`, CHUNK, MemoryType.DEVICE_COHERENT);
  const d = yield* Dmirror.open(r.k, mm, name, device);
  if (typeof d === 'number') throw new Error(`Dmirror.open failed with ${d}`);
  return d;
}

function frames(mm: MmStruct, a: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => {
    const pte = mm.pageTable.get(vpn(a + i * P));
    return ptePresent(pte) ? pteFrame(pte) : -1;
  });
}

function starts(events: readonly NotifierStreamEvent[], ev: MmuNotifyEvent): NotifierStreamEvent[] {
  return events.filter((e) => e.phase === 'start' && e.range.event === ev);
}

test('rules 51, 52 (hmm-tests migrate / anon_read on hmm_device_coherent; mm/migrate_device.c migrate_vma_insert_page and __migrate_device_pages, lib/test_hmm.c dmirror_migrate_to_device): anonymous pages migrate into device-coherent memory; the CPU maps the device pages with present writable PTEs, reads and writes them directly (no fault, no migrate_to_ram), and the device sees the CPU\'s write without faulting', (t) => {
  const r = rig();
  const { k, p, events } = r;
  const n = 8;
  runMain(t, r, function* () {
    const d = yield* coherentMirror(r, p.mm);
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    t.deepEqual(bytes(yield* d.migrateToDevice(a, n), 'migrate'), pattern(n), 'read back through the mirror');
    t.is(d.cmd.cpages, n);
    const fs = frames(p.mm, a, n);
    for (let i = 0; i < n; i++) {
      const pte = p.mm.pageTable.get(vpn(a + i * P));
      t.true(ptePresent(pte) && !isDevicePrivateEntry(pte), `page ${i}: a present PTE, not a device-private entry`);
      t.true(pteWrite(pte), 'writable (MIGRATE_PFN_WRITE)');
      t.true(isDeviceCoherentPage(k, fs[i]!), 'mapping a device-coherent page of the pgmap');
      t.is(d.device.chunks[0]!.contains(fs[i]!), true);
    }
    t.true(starts(events, MmuNotifyEvent.MIGRATE).every((e) => e.range.owner === d.device), 'MIGRATE carries the device as owner (rule 22)');
    t.is(k.lru.size, 0, 'zone-device pages are not on the LRU, and the system pages were freed');
    // The CPU reads and writes the device memory in place (a present PTE: no fault).
    const before = events.length;
    t.deepEqual(bytes(yield* p.load(a, n * P), 'CPU read'), pattern(n));
    ok(yield* p.store(a + 2 * P, new Uint8Array([0x77])), 'CPU write');
    t.deepEqual(frames(p.mm, a, n), fs, 'still the device pages: nothing migrated back');
    t.is(d.device.cfree, 0, 'no device page was freed');
    t.is(events.length, before, 'no invalidation at all: the CPU access needed no fault');
    // Coherence: the device reads what the CPU wrote, through its existing mapping.
    t.deepEqual(bytes(yield* d.read(a + 2 * P, 1), 'device read'), new Uint8Array([0x77]));
    t.is(d.cmd.faults, 0, 'the mirror still maps the page: no fault');
  });
});

test('HMM_DMIRROR_SNAPSHOT (hmm-tests migrate / hmm2 shape; lib/test_hmm.c dmirror_mkentry is_device_coherent_page, mm/hmm.c hmm_vma_handle_pte): device-coherent pages read DEV_COHERENT_LOCAL | WRITE to their device and DEV_COHERENT_REMOTE | WRITE to another one (two mirrors = two devices)', (t) => {
  const r = rig();
  const { p } = r;
  const n = 4;
  runMain(t, r, function* () {
    const d = yield* coherentMirror(r, p.mm, 'dmirror2');
    const other = yield* coherentMirror(r, p.mm, 'dmirror3');
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    bytes(yield* d.migrateToDevice(a, n), 'migrate');
    const local = bytes(yield* d.snapshot(a, n), 'snapshot (own device)');
    const remote = bytes(yield* other.snapshot(a, n), 'snapshot (other device)');
    t.deepEqual([...local], Array(n).fill(HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL | HMM_DMIRROR_PROT_WRITE));
    t.deepEqual([...remote], Array(n).fill(HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE | HMM_DMIRROR_PROT_WRITE));
    t.is(HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL, 0x40, 'include/uapi/linux/test_hmm_uapi.h');
    t.is(HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE, 0x50);
  });
});

test('rule 46 (mm/hmm.c hmm_vma_handle_pte: a present PTE is reported with its pfn, vm_normal_page, no dev_private_owner check): another device faulting device-coherent pages gets them in place; nothing migrates back, unlike device-private pages', (t) => {
  const r = rig();
  const { k, p, events } = r;
  const n = 4;
  runMain(t, r, function* () {
    const d = yield* coherentMirror(r, p.mm, 'dmirror2');
    const gpu = yield* Dmirror.open(k, p.mm, 'dmirror0');
    if (typeof gpu === 'number') throw new Error('open');
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    bytes(yield* d.migrateToDevice(a, n), 'migrate');
    const fs = frames(p.mm, a, n);
    const migrates = starts(events, MmuNotifyEvent.MIGRATE).length;
    t.deepEqual(bytes(yield* gpu.read(a, n * P), 'other device reads'), pattern(n));
    t.deepEqual(frames(p.mm, a, n), fs, 'the CPU still maps the device-coherent pages');
    t.is(starts(events, MmuNotifyEvent.MIGRATE).length, migrates, 'no migration back (no migrate_to_ram)');
    for (let i = 0; i < n; i++) t.is(gpu.pt.get(a / P + i)?.frame, fs[i], `the other mirror maps page ${i} directly`);
    // hmm_range_fault with no owner at all reports them VALID | WRITE with their pfn.
    const range = hmmRangeInit(gpu.notifier, a, a + n * P, yield* mmuIntervalReadBegin(gpu.notifier), 0);
    yield* p.mm.mmapLock.downRead();
    t.is(yield* hmmRangeFault(range), 0);
    p.mm.mmapLock.upRead();
    for (let i = 0; i < n; i++) {
      t.is(range.pfns[i], fs[i]);
      t.is(range.flags[i]! & (HMM_PFN_VALID | HMM_PFN_WRITE), HMM_PFN_VALID | HMM_PFN_WRITE);
    }
  });
});

test('rule 52 (hmm-tests migrate_multiple on hmm_device_coherent; lib/test_hmm.c dmirror_migrate_to_system with dmirror_select_device = MIGRATE_VMA_SELECT_DEVICE_COHERENT): migrating back moves every page to system memory, the data is intact, the device pages go to page_free, the new pages are on the LRU', (t) => {
  const r = rig();
  const { k, p } = r;
  const n = 8;
  runMain(t, r, function* () {
    const d = yield* coherentMirror(r, p.mm);
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    bytes(yield* d.migrateToDevice(a, n), 'migrate');
    t.is(d.device.selectFlags, MIGRATE_VMA_SELECT_DEVICE_COHERENT);
    t.is(yield* d.migrateToSystem(a, n), 0);
    t.is(d.cmd.cpages, n, 'dmirror_successful_migrated_pages');
    const fs = frames(p.mm, a, n);
    t.true(fs.every((f) => f > 0 && !isZoneDevicePage(k, f)), 'system pages again');
    t.deepEqual(bytes(yield* p.load(a, n * P), 'CPU read'), pattern(n));
    t.is(d.device.cfree, n, 'free_zone_device_folio -> page_free for every device page');
    t.is(k.lru.size, n, 'the system pages are on the LRU (folio_add_lru: not zone-device)');
  });
});

test('rule 52 (mm/migrate_device.c migrate_vma_collect_pmd: "page && is_device_coherent_page(page)" needs MIGRATE_VMA_SELECT_DEVICE_COHERENT and pgmap->owner == pgmap_owner): SELECT_SYSTEM, SELECT_DEVICE_PRIVATE and another owner collect nothing; the owner with SELECT_DEVICE_COHERENT collects every page', (t) => {
  const r = rig();
  const { p } = r;
  const n = 4;
  runMain(t, r, function* () {
    const d = yield* coherentMirror(r, p.mm);
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    bytes(yield* d.migrateToDevice(a, n), 'migrate');
    const fs = frames(p.mm, a, n);
    const vma = p.mm.findVma(a)!;
    yield* p.mm.mmapLock.downRead();
    const collect = function* (owner: unknown, flags: number) {
      const args = migrateVmaInit(vma, a, a + n * P, owner, flags);
      t.is(yield* migrateVmaSetup(args), 0);
      const cpages = args.cpages;
      const migrating = Array.from(args.src.subarray(0, n)).filter((s) => migratePfnFlags(s) & MIGRATE_PFN_MIGRATE).length;
      const entries = Array.from({ length: n }, (_, i) => isMigrationEntry(p.mm.pageTable.get(vpn(a + i * P)))).filter(Boolean).length;
      yield* migrateVmaFinalize(args); // nothing migrates: finalize restores the entries
      return { cpages, migrating, entries };
    };
    t.deepEqual(yield* collect(d.device, MIGRATE_VMA_SELECT_SYSTEM), { cpages: 0, migrating: 0, entries: 0 }, 'SELECT_SYSTEM leaves device-coherent pages');
    t.deepEqual(yield* collect(d.device, MIGRATE_VMA_SELECT_DEVICE_PRIVATE), { cpages: 0, migrating: 0, entries: 0 }, 'SELECT_DEVICE_PRIVATE too');
    t.deepEqual(yield* collect({}, MIGRATE_VMA_SELECT_DEVICE_COHERENT), { cpages: 0, migrating: 0, entries: 0 }, 'another owner too');
    t.deepEqual(yield* collect(d.device, MIGRATE_VMA_SELECT_DEVICE_COHERENT), { cpages: n, migrating: n, entries: n }, 'the owner collects them all');
    p.mm.mmapLock.upRead();
    t.deepEqual(frames(p.mm, a, n), fs, 'finalize without destinations restored every PTE to its device page');
    t.deepEqual(bytes(yield* p.load(a, n * P), 'CPU read'), pattern(n));
  });
});

test('rule 62 (hmm-tests hmm_gup_test on hmm_device_coherent; mm/gup.c migrate_longterm_unpinnable_folios -> migrate_device_coherent_folio, include/linux/mm.h folio_is_longterm_pinnable): a FOLL_LONGTERM pin of device-coherent pages migrates them to system memory first and pins those; a short pin pins the device page itself', (t) => {
  const r = rig();
  const { k, p, events } = r;
  runMain(t, r, function* () {
    const d = yield* coherentMirror(r, p.mm);
    const a = ok(yield* p.mmap(0, 4 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(4)), 'initialise');
    bytes(yield* d.migrateToDevice(a, 4), 'migrate');
    const fs = frames(p.mm, a, 4);
    t.false(folioIsLongtermPinnable(k, fs[0]!), 'folio_is_longterm_pinnable: false for device-coherent');
    // A short-term pin (no FOLL_LONGTERM) takes the device page as it is.
    const short: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, short), 1);
    t.deepEqual(short, [fs[0]], 'pinned in place');
    unpinUserPages(k, short);
    // FOLL_LONGTERM through the slow path (pin_user_pages) and through gup-fast.
    const clears = starts(events, MmuNotifyEvent.CLEAR).length;
    const slow: number[] = [];
    yield* p.mm.mmapLock.downRead();
    t.is(yield* pinUserPages(p.mm, a, 2, FOLL_WRITE | FOLL_LONGTERM, slow), 2);
    p.mm.mmapLock.upRead();
    const fast: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a + 2 * P, 2, FOLL_WRITE | FOLL_LONGTERM, fast), 2);
    const pinned = [...slow, ...fast];
    t.true(pinned.every((f) => !isZoneDevicePage(k, f) && !k.phys.has(f, PG_ZONE_DEVICE)), 'every pin is on a system page');
    t.deepEqual(frames(p.mm, a, 4), pinned, 'the process maps the pinned pages (remove_migration_ptes)');
    t.deepEqual(bytes(yield* p.load(a, 4 * P), 'CPU read'), pattern(4), 'the data moved with them');
    t.is(d.device.cfree, 4, 'the device pages were freed to the driver');
    t.true(starts(events, MmuNotifyEvent.CLEAR).length >= clears + 4, 'try_to_migrate sent a CLEAR per mapping');
    t.is(d.pt.size, 0, 'the mirror dropped its entries');
    unpinUserPages(k, pinned);
  });
});

test('rule 62 bad input (mm/gup.c migrate_longterm_unpinnable_folios: migrate_device_coherent_folio fails -> -EBUSY; mm/migrate_device.c migrate_vma_check_page): a device-coherent page already pinned (short-term) cannot move, so the long-term pin fails with -EBUSY and leaves nothing pinned; migrate_device_coherent_folio on a system page is -EINVAL', (t) => {
  const r = rig();
  const { k, p } = r;
  runMain(t, r, function* () {
    const d = yield* coherentMirror(r, p.mm);
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(1)), 'initialise');
    bytes(yield* d.migrateToDevice(a, 1), 'migrate');
    const [f] = frames(p.mm, a, 1);
    const held: number[] = [];
    t.is(yield* pinUserPagesFast(p.mm, a, 1, FOLL_WRITE, held), 1);
    const refs = k.phys.refcount[f!]!;
    const lt: number[] = [];
    yield* p.mm.mmapLock.downRead();
    t.is(yield* pinUserPages(p.mm, a, 1, FOLL_WRITE | FOLL_LONGTERM, lt), -EBUSY);
    p.mm.mmapLock.upRead();
    t.deepEqual(lt, [], 'nothing handed back');
    t.is(k.phys.refcount[f!], refs, 'no reference leaked or lost');
    t.deepEqual(frames(p.mm, a, 1), [f], 'the PTE was restored to the device page');
    unpinUserPages(k, held);
    const b = ok(yield* p.mmap(0, P, RW, ANON), 'mmap 2');
    ok(yield* p.store(b, pattern(1)), 'initialise 2');
    const [sys] = frames(p.mm, b, 1);
    t.is(yield* migrateDeviceCoherentFolio(k, sys!), -EINVAL);
  });
});

test('rule 51 (mm/memory.c zap_present_ptes, mm/memremap.c free_zone_device_folio): munmap of device-coherent pages drops the last reference and page_free hands them back to the driver, not to the page allocator', (t) => {
  const r = rig();
  const { k, p } = r;
  runMain(t, r, function* () {
    const d = yield* coherentMirror(r, p.mm);
    const a = ok(yield* p.mmap(0, 4 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(4)), 'initialise');
    bytes(yield* d.migrateToDevice(a, 4), 'migrate');
    const fs = frames(p.mm, a, 4);
    const free = k.phys.freeFrames;
    ok(yield* p.munmap(a, 4 * P), 'munmap');
    t.is(d.device.cfree, 4);
    t.is(k.phys.freeFrames, free, 'the allocator got nothing back');
    t.true(fs.every((f) => !k.phys.isAllocated(f) && k.phys.has(f, PG_ZONE_DEVICE)), 'free device pages, still the pgmap\'s');
  });
});

test('rule 51 (mm/memory.c copy_present_pte / wp_page_copy: a device-coherent page is a normal anonymous page to fork and COW): the child reads the device page the parent maps; its write copies into a system page; the parent keeps the device page', (t) => {
  const r = rig();
  const { k, p } = r;
  runMain(t, r, function* () {
    const d = yield* coherentMirror(r, p.mm);
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(1)), 'initialise');
    bytes(yield* d.migrateToDevice(a, 1), 'migrate');
    const [f] = frames(p.mm, a, 1);
    const child = yield* p.fork();
    if (typeof child === 'number') throw new Error(`fork failed with ${child}`);
    t.deepEqual(frames(child.mm, a, 1), [f], 'the child maps the same device page');
    const done = child.spawnThread('child', function* () {
      t.deepEqual(bytes(yield* child.load(a, P), 'child read'), pattern(1));
      ok(yield* child.store(a, new Uint8Array([0x55])), 'child write');
    });
    while (!done.done) yield* k.sim.sleep(1000);
    const [cf] = frames(child.mm, a, 1);
    t.not(cf, f);
    t.false(isZoneDevicePage(k, cf!), 'the copy is a system page');
    t.deepEqual(frames(p.mm, a, 1), [f], 'the parent keeps the device page');
    t.deepEqual(bytes(yield* p.load(a, P), 'parent read'), pattern(1));
  });
});

test('rule 52 (hmm-tests migrate_release on hmm_device_coherent; mm/migrate_device.c migrate_device_range, lib/test_hmm.c dmirror_device_evict_chunk): RELEASE evicts device-coherent pages to system memory by pfn with a CLEAR per mapping; the data survives', (t) => {
  const r = rig();
  const { k, p, events } = r;
  const n = 4;
  runMain(t, r, function* () {
    const d = yield* coherentMirror(r, p.mm);
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    bytes(yield* d.migrateToDevice(a, n), 'migrate');
    const clears = starts(events, MmuNotifyEvent.CLEAR).length;
    t.is(yield* d.release(), 0);
    t.is(starts(events, MmuNotifyEvent.CLEAR).length - clears, n, 'try_to_migrate: one CLEAR per mapping');
    t.true(frames(p.mm, a, n).every((f) => f > 0 && !isZoneDevicePage(k, f)));
    t.deepEqual(bytes(yield* p.load(a, n * P), 'CPU read'), pattern(n));
    t.is(d.device.cfree, n);
  });
});

test('bad input (mm/memremap.c memremap_pages, MEMORY_DEVICE_COHERENT case): no page_free or no owner is -EINVAL; migrate_to_ram is not required; an empty range -EINVAL; more than memory holds -ENOMEM (the model carves the range out of system memory)', (t) => {
  const r = rig({ frames: 4096 });
  const { k } = r;
  const pageFree = () => {};
  t.is(memremapPages(k, { type: MemoryType.DEVICE_COHERENT, owner: {}, npages: 4, ops: {} as never }), -EINVAL, 'Missing page_free method');
  t.is(memremapPages(k, { type: MemoryType.DEVICE_COHERENT, owner: null, npages: 4, ops: { pageFree } }), -EINVAL, 'Missing owner');
  t.is(memremapPages(k, { type: MemoryType.DEVICE_COHERENT, owner: {}, npages: 0, ops: { pageFree } }), -EINVAL);
  t.is(memremapPages(k, { type: MemoryType.DEVICE_COHERENT, owner: {}, npages: 8192, ops: { pageFree } }), -ENOMEM);
  t.is(memremapPages(k, { type: MemoryType.DEVICE_PRIVATE, owner: {}, npages: 4, ops: { pageFree } }), -EINVAL, 'device-private still needs migrate_to_ram');
  const free = k.phys.freeFrames;
  const map = memremapPages(k, { type: MemoryType.DEVICE_COHERENT, owner: {}, npages: 4, ops: { pageFree } });
  if (typeof map === 'number') throw new Error(`memremap_pages: ${map}`);
  t.is(k.phys.freeFrames, free - 4, 'four frames left the allocator');
  for (let i = 0; i < 4; i++) t.true(isDeviceCoherentPage(k, map.pfn(i)));
});

test('profile gating (linux-5.15): memremap_pages(MEMORY_DEVICE_COHERENT) is refused with -EINVAL, naming Linux 6.0 (f25cbb7a95a2); device-private memory still works there', (t) => {
  const r = rigOn('linux-5.15');
  const trace = traceOf(r.k);
  const pageFree = () => {};
  t.is(memremapPages(r.k, { type: MemoryType.DEVICE_COHERENT, owner: {}, npages: 4, ops: { pageFree } }), -EINVAL);
  const notes = trace.of('note').map((n) => n.text).filter((s) => s.includes('does not exist in'));
  t.is(notes.length, 1);
  t.regex(notes[0]!, /MEMORY_DEVICE_COHERENT.*linux-5\.15.*6\.0/);
  const priv = memremapPages(r.k, { type: MemoryType.DEVICE_PRIVATE, owner: {}, npages: 4, ops: { pageFree, migrateToRam: function* () { return 0; } } });
  t.not(typeof priv, 'number');
});
