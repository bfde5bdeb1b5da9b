/**
 * Device memory as lib/test_hmm.c exercises it, on two Dmirror devices standing for a GPU
 * and a second device (a NIC with its own mirror): the GPU migrates a buffer into its
 * device-private memory (migrate_vma_setup/pages/finalize, mm/migrate_device.c), and its
 * MIGRATE invalidation carries the GPU as owner, so the GPU skips it and the other device
 * does not (kernel rule 22). Snapshots show the permission bytes test_hmm reports
 * (DEV_PRIVATE_LOCAL for the owner, DEV_PRIVATE_REMOTE for the other device). The other
 * device's read faults the pages back (hmm_range_fault on a foreign device-private entry:
 * do_swap_page -> migrate_to_ram), and make_device_exclusive (mm/rmap.c) gives the GPU
 * atomic access until the CPU touches the page again.
 *
 * Run it: npx tsx driver/examples/gpu-migrate.ts
 */
import {
  Kernel, MAP_ANONYMOUS, MAP_PRIVATE, MmuNotifyEvent, PAGE_SIZE, PROT_READ, PROT_WRITE, hex,
} from '../../kernel-model/index.ts';
import { Dmirror } from '../dmirror.ts';

const PAGES = 4;

/** A snapshot's permission bytes, as hmm-tests.c prints them. */
function bytesText(b: Uint8Array | number): string {
  return typeof b === 'number' ? `error ${b}` : [...b].map((x) => `0x${x.toString(16).padStart(2, '0')}`).join(' ');
}

/** The demo; each line says what happened and what the kernel sent. */
export function demo(log: (line: string) => void = console.log): void {
  const k = new Kernel({ seed: 1 });
  const p = k.createProcess('app');
  p.spawnThread('main', function* () {
    const a = yield* p.mmap(0, PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    for (let i = 0; i < PAGES; i++) yield* p.store(a + i * PAGE_SIZE, new Uint8Array(64).fill(0x10 + i));
    const gpu = yield* Dmirror.open(k, p.mm, 'gpu');
    const nic = yield* Dmirror.open(k, p.mm, 'nic');
    if (typeof gpu === 'number' || typeof nic === 'number') throw new Error('Dmirror.open failed');
    log(`buffer ${hex(a)}, ${PAGES} pages written by the CPU`);

    const moved = yield* gpu.migrateToDevice(a, PAGES);
    const migrates = (m: Dmirror) => m.invalidations.filter((i) => i.event === MmuNotifyEvent.MIGRATE).length;
    log(`gpu migrate to device: ${typeof moved === 'number' ? `error ${moved}` : `cpages ${gpu.cmd.cpages}`}; ` +
      `MIGRATE invalidations handled: gpu ${migrates(gpu)} (its own, skipped), nic ${migrates(nic)}`);
    log(`gpu snapshot: ${bytesText(yield* gpu.snapshot(a, PAGES))}   (DEV_PRIVATE_LOCAL | WRITE)`);
    // hmm_vma_handle_pte reports another device's private entry only when asked to fault
    // it, and a snapshot asks for nothing: NONE, never DEV_PRIVATE_REMOTE.
    log(`nic snapshot: ${bytesText(yield* nic.snapshot(a, PAGES))}   (NONE: another device's private pages are not reported)`);

    const read = yield* nic.read(a, PAGES * PAGE_SIZE);
    const first = typeof read === 'number' ? `error ${read}` : `0x${read[0]!.toString(16)}`;
    log(`nic read: cpages ${nic.cmd.cpages}, faults ${nic.cmd.faults}, first byte ${first}: ` +
      `its fault brought the pages back to system memory (migrate_to_ram)`);
    log(`gpu snapshot: ${bytesText(yield* gpu.snapshot(a, PAGES))}   (system pages again)`);

    // HMM_DMIRROR_CHECK_EXCLUSIVE answers 0 once no atomic entry is left (hmm-tests.c).
    const held = function* () {
      return (yield* gpu.checkExclusive(a, 1)) === 0 ? 'revoked' : 'held';
    };
    const excl = yield* gpu.exclusive(a, 1);
    log(`gpu make_device_exclusive of page 0: ${typeof excl === 'number' ? `error ${excl}` : 'ok'}; atomic access ${yield* held()}`);
    yield* p.load(a, 8);
    log(`CPU reads page 0: the PTE is restored (EXCLUSIVE invalidation); atomic access ${yield* held()}`);
    yield* gpu.close();
    yield* nic.close();
  });
  const out = k.sim.run();
  if (out.reason === 'failed') throw new Error(out.failure);
}

if (import.meta.url === `file://${process.argv[1]}`) demo();
