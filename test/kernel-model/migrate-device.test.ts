/**
 * Device-private memory and device migration (spec/kernel.md rules 22, 46, 51, 52):
 * kernel-model/memremap.ts, kernel-model/migrate-device.ts (mm/migrate_device.c), the
 * device-private branches of do_swap_page and hmm_vma_handle_pte, and the Dmirror's
 * migrate / snapshot ioctls (driver/dmirror.ts, driver/dmirror-device.ts, after
 * lib/test_hmm.c), in the shape of tools/testing/selftests/mm/hmm-tests.c.
 */
import test from 'ava';
import {
  EFAULT, EINVAL, ENOENT, EOPNOTSUPP, EPERM, MAP_FIXED, PG_LOCKED, PMD_SIZE, isDeviceExclusiveEntry, makeDeviceExclusive, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, MemoryType, MmuNotifyEvent, PROT_NONE, PROT_READ, PROT_WRITE,
  MIGRATE_PFN_MIGRATE, MIGRATE_VMA_SELECT_SYSTEM, FOLL_LONGTERM, FOLL_WRITE, ZERO_PFN,
  isDevicePfn, isDevicePrivateEntry, isMigrationEntry, memremapPages, migratePfn, migratePfnFlags, migrateVmaFinalize,
  migrateDeviceRange, migrateVmaInit, migrateVmaPages, migrateVmaSetup, pinUserPages, ptePresent, pteFrame, pteWrite, unpinUserPages, vpn,
  type MmStruct, type NotifierStreamEvent,
} from '../../kernel-model/index.ts';
import {
  Dmirror, DmirrorDevice,
  HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL, HMM_DMIRROR_PROT_ERROR, HMM_DMIRROR_PROT_NONE, HMM_DMIRROR_PROT_PMD, HMM_DMIRROR_PROT_READ,
  HMM_DMIRROR_PROT_WRITE, HMM_DMIRROR_PROT_ZERO,
} from '../../driver/index.ts';
import { P, bytes, ok, rig, runMain, type Rig } from './_helpers.ts';
import { rigOn, traceOf } from './_pin-helpers.ts';

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;

/** Page i of a buffer holds the byte i + 1 (hmm-tests fills ptr[i] = i; one byte per page is enough here). */
function pattern(npages: number, base = 1): Uint8Array {
  const b = new Uint8Array(npages * P);
  for (let i = 0; i < npages; i++) b.fill((base + i) & 0xff, i * P, (i + 1) * P);
  return b;
}

function* mirror(r: Rig, mm: MmStruct, name = 'dmirror', device?: DmirrorDevice) {
  const d = yield* Dmirror.open(r.k, mm, name, device);
  if (typeof d === 'number') throw new Error(`Dmirror.open failed with ${d}`);
  return d;
}

function migrateEvents(events: readonly NotifierStreamEvent[]): NotifierStreamEvent[] {
  return events.filter((e) => e.phase === 'start' && e.range.event === MmuNotifyEvent.MIGRATE);
}

test('rules 51, 52, 22 (hmm-tests migrate; lib/test_hmm.c dmirror_migrate_to_device, mm/migrate_device.c migrate_vma_setup): anonymous pages migrate to device-private pages; the MIGRATE invalidation carries the device as owner and the mirror skips it; the CPU then sees device-private entries', (t) => {
  const r = rig();
  const { k, p, events } = r;
  const n = 16;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    const got = yield* d.migrateToDevice(a, n);
    t.deepEqual(bytes(got, 'migrate'), pattern(n), 'the data read back through the mirror is what the CPU wrote');
    t.is(d.cmd.cpages, n, 'cmd.cpages: every page migrated');
    for (let i = 0; i < n; i++) {
      const pte = p.mm.pageTable.get(vpn(a + i * P));
      t.true(isDevicePrivateEntry(pte), `page ${i} is a device-private entry`);
      t.true(pteWrite(pte), 'writable, as the PTE was (MIGRATE_PFN_WRITE)');
      t.true(isDevicePfn(pteFrame(pte)));
    }
    const migrates = migrateEvents(events);
    t.true(migrates.length >= 1, 'migrate_vma_collect sent a MIGRATE invalidation');
    t.true(migrates.every((e) => e.range.owner === d.device), 'mmu_notifier_range_init_owner: owner = pgmap_owner (rule 22)');
    t.is(d.invalidations.filter((e) => e.event === MmuNotifyEvent.MIGRATE).length, 0, 'dmirror_interval_invalidate skipped its own MIGRATE events');
    t.is(d.device.calloc, n);
    t.is(k.lru.size, 0, 'the system pages were freed: nothing left on the LRU');
  });
});

test('rule 51 (hmm-tests migrate_fault; mm/memory.c do_swap_page is_device_private_entry -> migrate_to_ram, lib/test_hmm.c dmirror_devmem_fault): a CPU read of a device-private page migrates it back with its data, one page per fault, and frees the device page', (t) => {
  const r = rig();
  const { p } = r;
  const n = 8;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    bytes(yield* d.migrateToDevice(a, n), 'migrate');
    const first = bytes(yield* p.load(a, P), 'CPU read of page 0');
    t.deepEqual(first, pattern(1), 'page 0 came back with its data');
    t.true(ptePresent(p.mm.pageTable.get(vpn(a))), 'page 0 is a present system page again');
    t.false(isDevicePfn(pteFrame(p.mm.pageTable.get(vpn(a)))));
    t.true(isDevicePrivateEntry(p.mm.pageTable.get(vpn(a + P))), 'page 1 is still on the device: migrate_to_ram moves one page');
    t.is(d.device.cfree, 1, 'the device page was freed (page_free) once its entry went');
    t.false(d.pt.has(vpn(a)), 'dmirror_devmem_fault_alloc_and_copy erased its own mirror entry (its MIGRATE event was skipped)');
    t.deepEqual(bytes(yield* p.load(a, n * P), 'CPU read of all'), pattern(n));
    t.is(d.device.cfree, n);
    // And again: the same pages migrate to the device a second time.
    t.deepEqual(bytes(yield* d.migrateToDevice(a, n), 'migrate again'), pattern(n));
    t.is(d.cmd.cpages, n);
  });
});

test('rule 51 (mm/memory.c do_swap_page, lib/test_hmm.c dmirror_devmem_fault): a CPU write to a device-private page migrates it back writable; the device then reads the new data by faulting again', (t) => {
  const r = rig();
  const { p } = r;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(2)), 'initialise');
    bytes(yield* d.migrateToDevice(a, 2), 'migrate');
    ok(yield* p.store(a + 5, new Uint8Array([0xee])), 'CPU write');
    const pte = p.mm.pageTable.get(vpn(a));
    t.true(ptePresent(pte) && pteWrite(pte), 'a present writable PTE after the write fault');
    const seen = bytes(yield* d.read(a, 2 * P), 'device read');
    t.is(seen[5], 0xee, 'the device sees the CPU write');
    t.is(seen[P], 2, 'page 1 read from device memory');
    t.is(d.cmd.faults, 1, 'one fault round for the page the CPU took back');
    t.true(isDevicePrivateEntry(p.mm.pageTable.get(vpn(a + P))), 'hmm_range_fault did not fault the device\'s own page back (dev_private_owner)');
  });
});

test('rule 52 (hmm-tests migrate_multiple; lib/test_hmm.c dmirror_migrate_to_system, migrate_vma_setup with MIGRATE_VMA_SELECT_DEVICE_PRIVATE): migrating back to system memory moves every page, cmd.cpages counts them, the data is intact and the device pages are freed', (t) => {
  const r = rig();
  const { p } = r;
  const n = 70; // more than one 64-page migrate chunk
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    bytes(yield* d.migrateToDevice(a, n), 'to device');
    t.is(yield* d.migrateToSystem(a, n), 0);
    t.is(d.cmd.cpages, n);
    for (let i = 0; i < n; i++) t.true(ptePresent(p.mm.pageTable.get(vpn(a + i * P))), `page ${i} present`);
    t.deepEqual(bytes(yield* p.load(a, n * P), 'read'), pattern(n));
    t.is(d.device.cfree, n, 'every device page freed');
    t.is(yield* d.migrateToSystem(a, n), 0, 'nothing left on the device: still 0');
    t.is(d.cmd.cpages, 0);
  });
});

test('rule 52 (hmm-tests migrate_shared; mm/migrate_device.c __migrate_device_pages: only anonymous memory moves to device memory): a shared mapping does not migrate and the read-back is -ENOENT', (t) => {
  const r = rig();
  const { p } = r;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS), 'mmap shared');
    ok(yield* p.store(a, pattern(4)), 'initialise');
    t.is(yield* d.migrateToDevice(a, 4), -ENOENT);
    for (let i = 0; i < 4; i++) t.true(ptePresent(p.mm.pageTable.get(vpn(a + i * P))), `page ${i} still mapped`);
    t.deepEqual(bytes(yield* p.load(a, 4 * P), 'read'), pattern(4));
  });
});

test('rule 52 (mm/migrate_device.c migrate_vma_collect_hole / migrate_vma_insert_page): empty and zero-page entries are offered without a source page and get a zero-filled device page, writable in a writable VMA', (t) => {
  const r = rig();
  const { p } = r;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, 3 * P, RW, ANON), 'mmap');
    bytes(yield* p.load(a + P, 1), 'page 1 maps the zero page');
    t.is(pteFrame(p.mm.pageTable.get(vpn(a + P))), ZERO_PFN);
    const got = bytes(yield* d.migrateToDevice(a, 3), 'migrate');
    t.deepEqual(got, new Uint8Array(3 * P));
    t.is(d.cmd.cpages, 3);
    for (let i = 0; i < 3; i++) {
      const pte = p.mm.pageTable.get(vpn(a + i * P));
      t.true(isDevicePrivateEntry(pte) && pteWrite(pte), `page ${i}: a writable device-private entry`);
    }
  });
});

test('rule 46 (mm/hmm.c hmm_vma_handle_pte), rule 22, two devices (hmm-tests hmm2 migrate_mixed shape): device 1 faulting pages that live on device 0 migrates them back through device 0\'s migrate_to_ram; device 1 hears that MIGRATE (another owner) and device 0 does not', (t) => {
  const r = rig();
  const { p } = r;
  const n = 4;
  runMain(t, r, function* () {
    const d0 = yield* mirror(r, p.mm, 'dmirror0');
    const d1 = yield* mirror(r, p.mm, 'dmirror1');
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    bytes(yield* d0.migrateToDevice(a, n), 'to device 0');
    const before = d1.invalidations.length;
    t.is(d1.invalidations.filter((e) => e.event === MmuNotifyEvent.MIGRATE).length, 1, 'device 1 honoured device 0\'s MIGRATE (owner differs)');
    const snap = bytes(yield* d1.snapshot(a, n), 'snapshot by device 1');
    t.deepEqual([...snap], new Array(n).fill(HMM_DMIRROR_PROT_NONE), 'another device\'s pages are not valid without a fault (output 0)');
    t.deepEqual(bytes(yield* d1.read(a, n * P), 'device 1 read'), pattern(n));
    for (let i = 0; i < n; i++) t.true(ptePresent(p.mm.pageTable.get(vpn(a + i * P))), `page ${i} back in system memory`);
    t.is(d0.device.cfree, n);
    t.true(d1.invalidations.slice(before).some((e) => e.event === MmuNotifyEvent.MIGRATE), 'each migrate_to_ram\'s MIGRATE reached device 1');
    t.false(d0.invalidations.some((e) => e.event === MmuNotifyEvent.MIGRATE), 'device 0 skipped every MIGRATE it started');
  });
});

test('HMM_DMIRROR_SNAPSHOT (hmm-tests anon_snapshot shape; lib/test_hmm.c dmirror_mkentry): ERROR for no VMA and PROT_NONE, NONE for an empty PTE, ZERO|READ, READ, WRITE, DEV_PRIVATE_LOCAL|WRITE', (t) => {
  const r = rig();
  const { p } = r;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, 7 * P, RW, ANON), 'mmap');
    ok(yield* p.munmap(a, P), 'page 0: no VMA');
    ok(yield* p.mprotect(a + P, P, PROT_NONE), 'page 1: PROT_NONE');
    bytes(yield* p.load(a + 2 * P, 1), 'page 2: the zero page');
    ok(yield* p.store(a + 3 * P, new Uint8Array([3])), 'page 3: written');
    ok(yield* p.mprotect(a + 3 * P, P, PROT_READ), 'page 3: then read-only');
    ok(yield* p.store(a + 4 * P, new Uint8Array([4])), 'page 4: written');
    ok(yield* p.store(a + 5 * P, new Uint8Array([5])), 'page 5: written');
    t.deepEqual(bytes(yield* d.migrateToDevice(a + 5 * P, 1), 'page 5 to the device')[0], 5);
    const m = bytes(yield* d.snapshot(a, 7), 'snapshot');
    t.deepEqual([...m], [
      HMM_DMIRROR_PROT_ERROR,
      HMM_DMIRROR_PROT_ERROR,
      HMM_DMIRROR_PROT_ZERO | HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_READ,
      HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL | HMM_DMIRROR_PROT_WRITE,
      HMM_DMIRROR_PROT_NONE,
    ]);
    t.is(d.cmd.cpages, 7);
    t.true(isDevicePrivateEntry(p.mm.pageTable.get(vpn(a + 5 * P))), 'the snapshot faulted nothing back');
  });
});

test('bad input (mm/migrate_device.c migrate_vma_setup, mm/memremap.c memremap_pages, lib/test_hmm.c dmirror_fops_unlocked_ioctl): -EINVAL for no VMA, an empty range, a range outside the VMA, a fault page that is not device-private, a pgmap without an owner or ops; an unaligned range is rounded down, not refused', (t) => {
  const r = rig();
  const { k, p } = r;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, 4 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(4)), 'initialise');
    yield* p.mm.mmapLock.downRead();
    const vma = p.mm.findVma(a)!;
    t.is(yield* migrateVmaSetup(migrateVmaInit(null, a, a + P, d.device, MIGRATE_VMA_SELECT_SYSTEM)), -EINVAL, 'no vma');
    t.is(yield* migrateVmaSetup(migrateVmaInit(vma, a, a, d.device, MIGRATE_VMA_SELECT_SYSTEM)), -EINVAL, 'empty range');
    t.is(yield* migrateVmaSetup(migrateVmaInit(vma, a + P, a, d.device, MIGRATE_VMA_SELECT_SYSTEM)), -EINVAL, 'end before start');
    t.is(yield* migrateVmaSetup(migrateVmaInit(vma, a - P, a + P, d.device, MIGRATE_VMA_SELECT_SYSTEM)), -EINVAL, 'start below the VMA');
    t.is(yield* migrateVmaSetup(migrateVmaInit(vma, a, a + 5 * P, d.device, MIGRATE_VMA_SELECT_SYSTEM)), -EINVAL, 'end past the VMA');
    const f = pteFrame(p.mm.pageTable.get(vpn(a)));
    t.is(yield* migrateVmaSetup(migrateVmaInit(vma, a, a + P, d.device, MIGRATE_VMA_SELECT_SYSTEM, f)), -EINVAL, 'a fault page that is a system page');
    const args = migrateVmaInit(vma, a + 10, a + P + 20, d.device, MIGRATE_VMA_SELECT_SYSTEM);
    t.is(yield* migrateVmaSetup(args), 0, 'nr_pages = 1 before masking: the range is rounded down to one page');
    t.is(args.start, a);
    t.is(args.end, a + P);
    t.is(args.npages, 1);
    t.is(args.cpages, 1);
    t.true(isMigrationEntry(p.mm.pageTable.get(vpn(a))), 'collected: a migration entry until finalize');
    yield* migrateVmaPages(args); // no destination: nothing moves
    t.is(migratePfnFlags(args.src[0]!) & MIGRATE_PFN_MIGRATE, 0, 'no dst page: MIGRATE cleared');
    yield* migrateVmaFinalize(args);
    t.is(pteFrame(p.mm.pageTable.get(vpn(a))), f, 'finalize restored the original page');
    p.mm.mmapLock.upRead();
    t.deepEqual(bytes(yield* p.load(a, P), 'read'), pattern(1));
    t.is(yield* d.migrateToDevice(a + 1, 1), -EINVAL, 'ioctl: unaligned address');
    t.is(yield* d.migrateToDevice(a, 0), -EINVAL, 'ioctl: no pages');
    t.is(yield* d.migrateToDevice(a + 8 * P, 1), -EINVAL, 'no VMA there');
    t.is(yield* d.snapshot(a, 0), -EINVAL);
    t.is(yield* d.migrateToSystem(a + 3, 1), -EINVAL);
  });
  const ops = { migrateToRam: function* () { return 0; }, pageFree: () => {} };
  t.is(memremapPages(k, { type: MemoryType.DEVICE_PRIVATE, owner: null, npages: 1, ops }), -EINVAL, 'Missing owner');
  t.is(memremapPages(k, { type: MemoryType.DEVICE_PRIVATE, owner: {}, npages: 0, ops }), -EINVAL, 'empty range');
  t.is(memremapPages(k, { type: MemoryType.DEVICE_PRIVATE, owner: {}, npages: 1, ops: { pageFree: () => {} } as never }), -EINVAL, 'Missing migrate_to_ram method');
});

test('rule 52 (mm/migrate_device.c migrate_vma_insert_page): migrate_vma_pages loses the race with a CPU fault that filled an empty entry after setup; MIGRATE is cleared and the device page is freed at finalize', (t) => {
  const r = rig();
  const { k, p } = r;
  runMain(t, r, function* () {
    const device = new DmirrorDevice(k);
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    yield* p.mm.mmapLock.downRead();
    const args = migrateVmaInit(p.mm.findVma(a)!, a, a + 2 * P, device, MIGRATE_VMA_SELECT_SYSTEM);
    t.is(yield* migrateVmaSetup(args), 0);
    t.is(args.cpages, 2, 'both empty entries offered');
    for (let i = 0; i < 2; i++) {
      const dpage = yield* device.allocPage();
      args.dst[i] = migratePfn(dpage);
    }
    p.mm.mmapLock.upRead();
    ok(yield* p.store(a + P, new Uint8Array([9])), 'the CPU faults page 1 in first');
    yield* p.mm.mmapLock.downRead();
    yield* migrateVmaPages(args);
    t.is(migratePfnFlags(args.src[0]!) & MIGRATE_PFN_MIGRATE, MIGRATE_PFN_MIGRATE, 'page 0 inserted');
    t.is(migratePfnFlags(args.src[1]!) & MIGRATE_PFN_MIGRATE, 0, 'page 1 lost the race');
    yield* migrateVmaFinalize(args);
    p.mm.mmapLock.upRead();
    t.true(isDevicePrivateEntry(p.mm.pageTable.get(vpn(a))));
    t.true(ptePresent(p.mm.pageTable.get(vpn(a + P))));
    t.is(device.cfree, 1, 'the unused device page went back to the free list');
    t.deepEqual(bytes(yield* p.load(a + P, 1), 'read'), new Uint8Array([9]));
  });
});

test('rule 51 (hmm-tests hmm_gup_test; mm/gup.c faults device-private entries through handle_mm_fault): pinning a device-private page migrates it back first, so the pin is on a system page', (t) => {
  const r = rig();
  const { p } = r;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(2)), 'initialise');
    bytes(yield* d.migrateToDevice(a, 2), 'migrate');
    const pages: number[] = [];
    yield* p.mm.mmapLock.downRead();
    t.is(yield* pinUserPages(p.mm, a, 2, FOLL_WRITE | FOLL_LONGTERM, pages), 2);
    p.mm.mmapLock.upRead();
    t.true(pages.every((f) => !isDevicePfn(f)), 'pinned system pages');
    t.is(d.device.cfree, 2, 'both device pages came back and were freed');
    unpinUserPages(r.k, pages);
  });
});

test('rule 51 (mm/memory.c zap_nonpresent_ptes): munmap of device-private entries drops their references; the device gets its pages back (page_free)', (t) => {
  const r = rig();
  const { p } = r;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, 4 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(4)), 'initialise');
    bytes(yield* d.migrateToDevice(a, 4), 'migrate');
    t.is(d.device.cfree, 0);
    ok(yield* p.munmap(a, 4 * P), 'munmap');
    t.is(d.device.cfree, 4);
  });
});

test('rule 51 (mm/memory.c copy_nonpresent_pte): fork shares device-private pages read-only; a child\'s read brings the page back for both (try_to_migrate on the parent\'s entry), and the child\'s write copies', (t) => {
  const r = rig();
  const { p } = r;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(1)), 'initialise');
    bytes(yield* d.migrateToDevice(a, 1), 'migrate');
    const child = yield* p.fork();
    if (typeof child === 'number') throw new Error(`fork failed with ${child}`);
    const pe = p.mm.pageTable.get(vpn(a));
    const ce = child.mm.pageTable.get(vpn(a));
    t.true(isDevicePrivateEntry(pe) && !pteWrite(pe), 'parent: a readable device-private entry');
    t.is(ce, pe, 'child: the same entry');
    const done = child.spawnThread('child', function* () {
      t.deepEqual(bytes(yield* child.load(a, P), 'child read'), pattern(1));
      ok(yield* child.store(a, new Uint8Array([0x77])), 'child write');
    });
    while (!done.done) yield* r.k.sim.sleep(1000);
    t.true(ptePresent(p.mm.pageTable.get(vpn(a))), 'the parent\'s entry was restored to the same system page');
    t.deepEqual(bytes(yield* p.load(a, P), 'parent read'), pattern(1), 'the parent keeps its data');
    t.is(d.device.cfree, 1);
  });
});

for (const [profile, api, release] of [
  ['linux-5.8', 'migrate_vma_setup', '5.9'],
  ['linux-3.0', 'memremap_pages', '4.14'],
] as const) {
  test(`profile gating (${profile}): ${api} is refused with -EINVAL, naming Linux ${release}`, (t) => {
    const r = rigOn(profile);
    const trace = traceOf(r.k);
    const { p } = r;
    runMain(t, r, function* () {
      const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
      ok(yield* p.store(a, pattern(1)), 'initialise');
      if (api === 'memremap_pages') {
        const ops = { migrateToRam: function* () { return 0; }, pageFree: () => {} };
        t.is(memremapPages(r.k, { type: MemoryType.DEVICE_PRIVATE, owner: {}, npages: 1, ops }), -EINVAL);
        return;
      }
      yield* p.mm.mmapLock.downRead();
      t.is(yield* migrateVmaSetup(migrateVmaInit(p.mm.findVma(a)!, a, a + P, {}, MIGRATE_VMA_SELECT_SYSTEM)), -EINVAL);
      p.mm.mmapLock.upRead();
      t.true(ptePresent(p.mm.pageTable.get(vpn(a))), 'nothing was touched');
    });
    const notes = trace.of('note').map((n) => n.text).filter((s) => s.includes('does not exist in'));
    t.is(notes.length, 1);
    t.regex(notes[0]!, new RegExp(`${api}.*${profile}.*${release.replace('.', '\\.')}`));
  });
}

// ---- make_device_exclusive (rule 53) ----------------------------------------------------

test('rule 53 (hmm-tests hmm_exclusive; mm/rmap.c make_device_exclusive, lib/test_hmm.c dmirror_exclusive/dmirror_check_atomic): pages become device-exclusive entries under an EXCLUSIVE invalidation; the device reads them; a CPU access restores each PTE with an EXCLUSIVE invalidation (no owner) that revokes the device\'s atomic access', (t) => {
  const r = rig();
  const { p, events } = r;
  const n = 4;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    const got = yield* d.exclusive(a, n);
    t.deepEqual(bytes(got, 'exclusive'), pattern(n), 'the device read what the CPU wrote');
    t.is(d.cmd.cpages, n);
    for (let i = 0; i < n; i++) t.true(isDeviceExclusiveEntry(p.mm.pageTable.get(vpn(a + i * P))), `page ${i}: a device-exclusive entry`);
    const excl = events.filter((e) => e.phase === 'start' && e.range.event === MmuNotifyEvent.EXCLUSIVE);
    t.is(excl.length, n, 'one EXCLUSIVE invalidation per page');
    t.true(excl.every((e) => e.range.owner === null), 'test_hmm passes a NULL owner');
    t.is(yield* d.checkExclusive(a, n), -EPERM, 'atomic entries present');
    // "Fault pages back to system memory and check them."
    t.deepEqual(bytes(yield* p.load(a, n * P), 'CPU read'), pattern(n));
    for (let i = 0; i < n; i++) t.true(ptePresent(p.mm.pageTable.get(vpn(a + i * P))), `page ${i} restored`);
    t.is(events.filter((e) => e.phase === 'start' && e.range.event === MmuNotifyEvent.EXCLUSIVE).length, 2 * n, 'remove_device_exclusive_entry sent one EXCLUSIVE per page');
    t.is(yield* d.checkExclusive(a, n), 0, 'atomic access revoked');
    ok(yield* p.store(a, new Uint8Array([0x55])), 'CPU write');
    t.is(bytes(yield* p.load(a, 1), 'read')[0], 0x55);
  });
});

test('rule 53 (hmm-tests hmm_exclusive_mprotect; mm/mprotect.c change_pte_range, mm/hmm.c -EPERM): after mprotect(PROT_READ) the device loses its exclusive entries and a device write is -EPERM', (t) => {
  const r = rig();
  const { p } = r;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, 2 * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(2)), 'initialise');
    bytes(yield* d.exclusive(a, 2), 'exclusive');
    ok(yield* p.mprotect(a, 2 * P, PROT_READ), 'mprotect');
    t.is(yield* d.write(a, new Uint8Array(2 * P)), -EPERM);
    t.deepEqual(bytes(yield* p.load(a, 2 * P), 'read'), pattern(2), 'the restore took the read-only protection, data intact');
    t.false(pteWrite(p.mm.pageTable.get(vpn(a))));
  });
});

test('rule 53 (hmm-tests hmm_exclusive_cow; mm/memory.c copy_nonpresent_pte restores device-exclusive entries before copying): fork after make_device_exclusive gives both processes the page, and the parent\'s write does not reach the child', (t) => {
  const r = rig();
  const { p } = r;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(1)), 'initialise');
    bytes(yield* d.exclusive(a, 1), 'exclusive');
    const child = yield* p.fork();
    if (typeof child === 'number') throw new Error(`fork failed with ${child}`);
    t.false(isDeviceExclusiveEntry(p.mm.pageTable.get(vpn(a))), 'the parent\'s entry was restored by fork');
    ok(yield* p.store(a, new Uint8Array([0x99])), 'parent write (COW)');
    let childSaw = -1;
    const task = child.spawnThread('child', function* () {
      childSaw = bytes(yield* child.load(a, 1), 'child read')[0]!;
    });
    while (!task.done) yield* r.k.sim.sleep(1000);
    t.is(childSaw, 1, 'the child keeps the original data');
    t.is(bytes(yield* p.load(a, 1), 'parent read')[0], 0x99);
  });
});

test('rule 53 bad input (mm/rmap.c make_device_exclusive): a shared (non-anonymous) page is -EOPNOTSUPP, an unmapped address -EFAULT; the owner given is the EXCLUSIVE invalidation\'s owner', (t) => {
  const r = rig();
  const { k, p, events } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, MAP_SHARED | MAP_ANONYMOUS), 'mmap shared');
    const b = ok(yield* p.mmap(0, P, RW, ANON), 'mmap private');
    ok(yield* p.store(b, pattern(1)), 'initialise');
    yield* p.mm.mmapLock.downRead();
    t.is(yield* makeDeviceExclusive(p.mm, a, null), -EOPNOTSUPP);
    t.is(yield* makeDeviceExclusive(p.mm, b + 64 * P, null), -EFAULT);
    const owner = { name: 'gpu' };
    const res = yield* makeDeviceExclusive(p.mm, b, owner);
    p.mm.mmapLock.upRead();
    if (typeof res === 'number') throw new Error(`make_device_exclusive failed with ${res}`);
    t.true(k.phys.has(res.folio, PG_LOCKED), 'returned locked');
    k.phys.clear(res.folio, PG_LOCKED);
    k.phys.put(res.folio);
    const e = events.find((x) => x.phase === 'start' && x.range.event === MmuNotifyEvent.EXCLUSIVE);
    t.is(e?.range.owner, owner);
  });
});

test('profile gating (linux-5.8): make_device_exclusive is refused with -EINVAL, naming Linux 5.14', (t) => {
  const r = rigOn('linux-5.8');
  const trace = traceOf(r.k);
  const { p } = r;
  runMain(t, r, function* () {
    const a = ok(yield* p.mmap(0, P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(1)), 'initialise');
    yield* p.mm.mmapLock.downRead();
    t.is(yield* makeDeviceExclusive(p.mm, a, null), -EINVAL);
    p.mm.mmapLock.upRead();
    t.true(ptePresent(p.mm.pageTable.get(vpn(a))));
  });
  const notes = trace.of('note').map((n) => n.text).filter((s) => s.includes('does not exist in'));
  t.is(notes.length, 1);
  t.regex(notes[0]!, /make_device_exclusive.*linux-5\.8.*5\.14/);
});

test('rule 52 (hmm-tests migrate_release; mm/migrate_device.c migrate_device_range, lib/test_hmm.c dmirror_device_evict_chunk): RELEASE evicts every device page back to system memory by pfn, with a CLEAR per mapping (try_to_migrate), and the data survives', (t) => {
  const r = rig();
  const { p, events } = r;
  const n = 6;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0, n * P, RW, ANON), 'mmap');
    ok(yield* p.store(a, pattern(n)), 'initialise');
    bytes(yield* d.migrateToDevice(a, n), 'migrate');
    const before = events.length;
    t.is(yield* d.release(), 0);
    for (let i = 0; i < n; i++) t.true(ptePresent(p.mm.pageTable.get(vpn(a + i * P))), `page ${i} back in system memory`);
    const clears = events.slice(before).filter((e) => e.phase === 'start' && e.range.event === MmuNotifyEvent.CLEAR);
    t.is(clears.length, n, 'one CLEAR per mapping (try_to_migrate_one)');
    t.is(d.pt.size, 0, 'the CLEARs dropped the mirror entries');
    t.is(d.device.cfree, n);
    t.deepEqual(bytes(yield* p.load(a, n * P), 'read'), pattern(n));
    t.is(yield* d.release(), 0, 'nothing left: still 0');
  });
});

test('bad input (mm/migrate_device.c migrate_device_range): no pages, a pfn range outside every pgmap, or too small a src array is -EINVAL (the model\'s guard: the kernel trusts its caller)', (t) => {
  const r = rig();
  runMain(t, r, function* () {
    const d = yield* mirror(r, r.p.mm);
    const dpage = yield* d.device.allocPage();
    t.true(isDevicePfn(dpage));
    t.is(yield* migrateDeviceRange(r.k, new Float64Array(1), dpage, 0), -EINVAL);
    t.is(yield* migrateDeviceRange(r.k, new Float64Array(1), 5, 1), -EINVAL, 'a system frame');
    t.is(yield* migrateDeviceRange(r.k, new Float64Array(1), dpage, 2), -EINVAL, 'src too small');
    t.is(yield* migrateDeviceRange(r.k, new Float64Array(1), dpage + d.device.chunkPages, 1), -EINVAL, 'past the chunk');
  });
});

test('HMM_DMIRROR_SNAPSHOT of a PMD-mapped THP (hmm-tests compound shape; lib/test_hmm.c dmirror_mkentry, mm/hmm.c hmm_vma_handle_pmd): every page reads WRITE | PMD', (t) => {
  const r = rig();
  const { k, p } = r;
  k.transparentHugepage.enabled = 'always';
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0x40000000, PMD_SIZE, RW, ANON | MAP_FIXED), 'mmap 2 MiB aligned');
    ok(yield* p.store(a, new Uint8Array([1])), 'a THP fault');
    t.true(p.mm.pageTable.pmdHuge(vpn(a)), 'mapped by a huge PMD');
    const m = bytes(yield* d.snapshot(a, 3), 'snapshot');
    t.deepEqual([...m], new Array(3).fill(HMM_DMIRROR_PROT_WRITE | HMM_DMIRROR_PROT_PMD));
  });
});

test('rule 52 (mm/migrate_device.c migrate_vma_collect_pmd: split_folio before collecting, "FIXME support THP"): a PMD-mapped THP is split and every page of it migrates to the device', (t) => {
  const r = rig();
  const { k, p } = r;
  k.transparentHugepage.enabled = 'always';
  const n = PMD_SIZE / P;
  runMain(t, r, function* () {
    const d = yield* mirror(r, p.mm);
    const a = ok(yield* p.mmap(0x40000000, PMD_SIZE, RW, ANON | MAP_FIXED), 'mmap 2 MiB aligned');
    ok(yield* p.store(a, pattern(n)), 'a THP, written');
    t.true(p.mm.pageTable.pmdHuge(vpn(a)));
    t.deepEqual(bytes(yield* d.migrateToDevice(a, n), 'migrate'), pattern(n));
    t.is(d.cmd.cpages, n);
    t.false(p.mm.pageTable.pmdHuge(vpn(a)), 'split');
    t.true(isDevicePrivateEntry(p.mm.pageTable.get(vpn(a + 100 * P))));
    t.deepEqual(bytes(yield* p.load(a + 7 * P, P), 'CPU read back'), pattern(n).subarray(7 * P, 8 * P));
  });
});
