import type { Co } from '../kernel-model/sim/index.ts';
import { Mutex } from '../kernel-model/sim/index.ts';
import {
  EBUSY, EFAULT, EINVAL, ENOENT, PAGE_SIZE, TASK_SIZE, MmuNotifyEvent, mmuNotifierRangeBlockable,
  HMM_PFN_ERROR, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_VALID, HMM_PFN_WRITE, HMM_RANGE_DEFAULT_TIMEOUT_NS,
  MIGRATE_PFN_MIGRATE, MIGRATE_PFN_VALID, MIGRATE_PFN_WRITE, MIGRATE_VMA_SELECT_DEVICE_PRIVATE, MIGRATE_VMA_SELECT_SYSTEM,
  EPERM, PG_LOCKED, VM_READ, VM_WRITE, ZERO_PFN, hmmRangeFault, makeDeviceExclusive, hmmRangeInit, isDevicePfn, mmput,
  isDeviceCoherentPage, isZoneDevicePage,
  migratePfn, migratePfnFlags, migratePfnToPage, migrateVmaFinalize, migrateVmaInit, migrateVmaPages, migrateVmaSetup, pagePgmap,
  mmuIntervalNotifierInsert, mmuIntervalNotifierRemove, mmuIntervalReadBegin, mmuIntervalReadRetry, mmuIntervalSetSeq,
  MmuIntervalNotifier, type HmmRange, type Kernel, type MigrateVma, type MmStruct, type MmuNotifierRange, type Vma,
} from '../kernel-model/index.ts';
import { DmirrorDevice } from './dmirror-device.ts';

/**
 * The permission bytes of HMM_DMIRROR_SNAPSHOT (include/uapi/linux/test_hmm_uapi.h,
 * enum HMM_DMIRROR_PROT_*).
 */
export const HMM_DMIRROR_PROT_ERROR = 0xff;
export const HMM_DMIRROR_PROT_NONE = 0x00;
export const HMM_DMIRROR_PROT_READ = 0x01;
export const HMM_DMIRROR_PROT_WRITE = 0x02;
export const HMM_DMIRROR_PROT_PMD = 0x04;
export const HMM_DMIRROR_PROT_PUD = 0x08;
export const HMM_DMIRROR_PROT_ZERO = 0x10;
export const HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL = 0x20;
export const HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE = 0x30;
export const HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL = 0x40;
export const HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE = 0x50;

/** `struct hmm_dmirror_cmd`'s outputs of the last call: pages handled and fault rounds. */
export interface DmirrorCmd {
  cpages: number;
  faults: number;
}

/** One mirrored page: the frame and whether the device may write it. */
export interface MirrorEntry {
  frame: number;
  write: boolean;
  /** DPT_XA_TAG_ATOMIC: mapped by make_device_exclusive (writable too: the tag has the WRITE bits). */
  atomic?: boolean;
}

/**
 * Pages per hmm_range_fault call in lib/test_hmm.c's dmirror_fault and dmirror_snapshot
 * (`unsigned long pfns[64]` since the module appeared in 5.7), halved to 32 by
 * "lib/test_hmm: reduce stack usage" (Arnd Bergmann, merged for 6.17).
 */
export function testHmmChunkPages(release: string): number {
  const [major = 0, minor = 0] = release.split('.').map((x) => Number.parseInt(x, 10));
  return major > 6 || (major === 6 && minor >= 17) ? 32 : 64;
}

/**
 * A reference mirror modelled on lib/test_hmm.c's dmirror: a fake device with its own
 * sparse page table that mirrors one process's address space through an interval
 * subscription covering all of user space, a mutex, and the rule-31 fault loop.
 *
 * Why no page references: the mirror relies on invalidations to drop stale entries
 * (rule 49), which is the whole point of a notifier-based driver; holding references
 * would hide exactly the bugs this model exists to show.
 */
export class Dmirror {
  /** Virtual page number -> mirrored page. Sparse: costs only what was faulted. */
  readonly pt = new Map<number, MirrorEntry>();
  readonly mutex: Mutex;
  readonly notifier: MmuIntervalNotifier;
  /** Rounds of the fault loop that had to fault something (test_hmm's `faults`). */
  faults = 0;
  /** Invalidations received, for demos. */
  readonly invalidations: { start: number; end: number; event: MmuNotifyEvent; time: number }[] = [];
  /** cmd.cpages / cmd.faults of the last read, write, migrate or snapshot call (test_hmm's ioctl outputs). */
  cmd: DmirrorCmd = { cpages: 0, faults: 0 };

  private constructor(readonly kernel: Kernel, readonly mm: MmStruct, readonly name: string, readonly device: DmirrorDevice) {
    this.mutex = new Mutex(kernel.sim, `${name}.mutex`, 'dmirror.mutex');
    this.notifier = new MmuIntervalNotifier(name);
  }

  /**
   * Open the device for a process's mm: insert the interval subscription (rule 23). Each
   * open of /dev/hmm_dmirrorN is a mirror of device N: pass the same `device` to model two
   * opens of one device, a new one (the default) for another device.
   */
  static *open(kernel: Kernel, mm: MmStruct, name = 'dmirror', device?: DmirrorDevice): Co<Dmirror | number> {
    const d = new Dmirror(kernel, mm, name, device ?? new DmirrorDevice(kernel, `${name}.device`));
    const ret = yield* mmuIntervalNotifierInsert(d.notifier, mm, 0, TASK_SIZE, {
      invalidate: (sub, range, curSeq) => d.invalidate(sub, range, curSeq),
    }, { lock: d.mutex });
    return ret < 0 ? ret : d;
  }

  /**
   * dmirror_interval_invalidate: skip only MIGRATE events this device started (rule 22);
   * lock (try-lock when non-blockable, rule 16), set_seq unconditionally (rule 26), drop
   * the entries. Like the original it erases through end >> PAGE_SHIFT inclusive, one
   * page too many, which is harmless.
   */
  private *invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): Co<boolean> {
    if (range.event === MmuNotifyEvent.MIGRATE && range.owner === this.device) return true;
    if (mmuNotifierRangeBlockable(range)) yield* this.mutex.lock();
    else if (!this.mutex.trylock()) return false;
    mmuIntervalSetSeq(sub, curSeq);
    this.invalidations.push({ start: range.start, end: range.end, event: range.event, time: this.kernel.sim.now() });
    this.erase(Math.floor(range.start / PAGE_SIZE), Math.floor(Math.min(range.end, TASK_SIZE) / PAGE_SIZE));
    this.mutex.unlock();
    return true;
  }

  private erase(first: number, last: number): void {
    if (last - first + 1 > this.pt.size) {
      for (const v of [...this.pt.keys()]) if (v >= first && v <= last) this.pt.delete(v);
    } else {
      for (let v = first; v <= last; v++) this.pt.delete(v);
    }
  }

  /**
   * dmirror_fault: the canonical collision-retry loop (rule 31) per chunk, bounded
   * by HMM_RANGE_DEFAULT_TIMEOUT in virtual time. Returns 0 or -errno.
   */
  *fault(start: number, end: number, write: boolean): Co<number> {
    const chunk = testHmmChunkPages(this.kernel.profile.release) * PAGE_SIZE;
    for (let addr = start; addr < end; addr += chunk) {
      const r = yield* this.faultChunk(addr, Math.min(end, addr + chunk), write);
      if (r < 0) return r;
    }
    return 0;
  }

  private *faultChunk(start: number, end: number, write: boolean): Co<number> {
    const { sim } = this.kernel;
    if (!this.mm.mmgetNotZero()) return -EFAULT;
    const timeout = sim.now() + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    let ret = 0;
    for (;;) {
      if (sim.now() > timeout) {
        ret = -EBUSY;
        break;
      }
      const seq = yield* mmuIntervalReadBegin(this.notifier);
      const range = hmmRangeInit(this.notifier, start, end, seq, HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0));
      range.devPrivateOwner = this.device;
      yield* this.mm.mmapLock.downRead();
      ret = yield* hmmRangeFault(range);
      this.mm.mmapLock.upRead();
      if (ret === -EBUSY) continue;
      if (ret < 0) break;
      yield* this.mutex.lock();
      if (mmuIntervalReadRetry(this.notifier, seq)) {
        this.mutex.unlock();
        continue;
      }
      // Program the mirror from the snapshot while still holding the lock (rule 31 step 6).
      // A page of this device's own memory is reached through its backing page; a write
      // asked of one that hmm_range_fault reports read-only (own device-private pages are
      // reported, not faulted) is dmirror_do_fault's WARN path: -EFAULT.
      for (let i = 0; i < range.pfns.length; i++) {
        let frame = range.pfns[i] as number;
        const w = ((range.flags[i] as number) & HMM_PFN_WRITE) !== 0;
        if (isDevicePfn(frame)) {
          if (write && !w) ret = -EFAULT;
          frame = this.device.backingPage(frame);
        }
        if (ret < 0) break;
        this.pt.set(start / PAGE_SIZE + i, { frame, write: w });
      }
      this.mutex.unlock();
      break;
    }
    yield* mmput(this.mm);
    return ret;
  }

  /** Device read through the mirror (dmirror_read): fault what is missing, then copy. */
  *read(addr: number, length: number): Co<Uint8Array | number> {
    this.cmd = { cpages: 0, faults: 0 };
    const out = new Uint8Array(length);
    const r = yield* this.access(addr, length, false, (frame, off, pos, n) => out.set(this.kernel.dmaBus.read(frame, off, n), pos));
    return r < 0 ? r : out;
  }

  /** Device write through the mirror (dmirror_write): needs writable entries. */
  *write(addr: number, bytes: Uint8Array): Co<number> {
    this.cmd = { cpages: 0, faults: 0 };
    return yield* this.access(addr, bytes.length, true, (frame, off, pos, n) => this.kernel.dmaBus.write(frame, off, bytes.subarray(pos, pos + n)));
  }

  /**
   * dmirror_read / dmirror_write: copy under the mutex as far as the mirror allows; on a
   * missing (or, for a write, read-only) page fault from there to the end and go on from
   * `cmd->addr + (cpages << PAGE_SHIFT)`: pages already copied are not copied again, even
   * if an invalidation dropped them meanwhile.
   */
  private *access(addr: number, length: number, write: boolean, copy: (frame: number, off: number, pos: number, n: number) => void): Co<number> {
    const end = addr + length;
    let start = addr;
    for (;;) {
      yield* this.mutex.lock();
      const missing = this.copyUnderLock(addr, start, end, write, copy);
      this.mutex.unlock();
      if (missing < 0) return 0;
      start = missing;
      const r = yield* this.fault(Math.floor(start / PAGE_SIZE) * PAGE_SIZE, Math.ceil(end / PAGE_SIZE) * PAGE_SIZE, write);
      if (r < 0) return r === -ENOENT ? -EFAULT : r;
      this.faults++;
      this.cmd.faults++;
    }
  }

  /** Copy [start, end) as far as the mirror allows; return the first address missing, or -1 when done. */
  private copyUnderLock(addr: number, start: number, end: number, write: boolean, copy: (frame: number, off: number, pos: number, n: number) => void): number {
    for (let a = start; a < end;) {
      const page = Math.floor(a / PAGE_SIZE) * PAGE_SIZE;
      const e = this.pt.get(page / PAGE_SIZE);
      if (!e || (write && !e.write)) return a;
      const n = Math.min(end - a, page + PAGE_SIZE - a);
      copy(e.frame, a - page, a - addr, n);
      a += n;
      if (a === page + PAGE_SIZE || a === end) this.cmd.cpages++;
    }
    return -1;
  }

  /**
   * The ioctl's own checks (dmirror_fops_unlocked_ioctl): an unaligned address, or a range
   * that is empty or wraps, is -EINVAL.
   */
  private cmdCheck(addr: number, npages: number): number {
    if (addr % PAGE_SIZE !== 0) return -EINVAL;
    if (!Number.isInteger(npages) || npages <= 0 || addr + npages * PAGE_SIZE > TASK_SIZE) return -EINVAL;
    return 0;
  }

  /** Pages per migrate_vma call: `unsigned long src_pfns[64]` (halved with the snapshot chunk in 6.17). */
  private get migrateChunkPages(): number {
    return testHmmChunkPages(this.kernel.profile.release);
  }

  /**
   * HMM_DMIRROR_MIGRATE_TO_DEV (dmirror_migrate_to_device): under the mmap read lock, for
   * each chunk of at most 64 pages within one readable VMA (else -EINVAL), migrate_vma_setup
   * with SELECT_SYSTEM and this device as owner, copy each collected page into a new
   * device page's backing page (dmirror_migrate_alloc_and_copy; empty and zero-page entries
   * are zero-filled, and writable when the VMA is), migrate_vma_pages, store the migrated
   * pages in the mirror under the mutex (dmirror_migrate_finalize_and_map), finalize. Then
   * the data is read back through the mirror (dmirror_do_read), -ENOENT if any page did not
   * migrate; `cmd.cpages` = the pages read back. Returns the data or -errno.
   */
  *migrateToDevice(addr: number, npages: number): Co<Uint8Array | number> {
    this.cmd = { cpages: 0, faults: 0 };
    const bad = this.cmdCheck(addr, npages);
    if (bad < 0) return bad;
    const end = addr + npages * PAGE_SIZE;
    if (!this.mm.mmgetNotZero()) return -EINVAL;
    yield* this.mm.mmapLock.downRead();
    let ret = 0;
    for (let a = addr, next = addr; a < end; a = next) {
      const vma = this.mm.findVma(a);
      if (!vma || !(vma.flags & VM_READ)) {
        ret = -EINVAL;
        break;
      }
      next = Math.min(end, a + this.migrateChunkPages * PAGE_SIZE, vma.end);
      const args = migrateVmaInit(vma, a, next, this.device, MIGRATE_VMA_SELECT_SYSTEM);
      ret = yield* migrateVmaSetup(args);
      if (ret) break;
      yield* this.migrateAllocAndCopy(args, vma);
      yield* migrateVmaPages(args);
      yield* this.migrateFinalizeAndMap(args);
      yield* migrateVmaFinalize(args);
    }
    this.mm.mmapLock.upRead();
    yield* mmput(this.mm);
    if (ret < 0) return ret;
    // "Return the migrated data for verification".
    return yield* this.readMirrored(addr, npages);
  }

  /**
   * dmirror_do_read over the mirror after a migrate or exclusive call: the bytes of every
   * mirrored page (any entry counts, a missing one is -ENOENT), one cpage each.
   */
  private *readMirrored(addr: number, npages: number): Co<Uint8Array | number> {
    const out = new Uint8Array(npages * PAGE_SIZE);
    let ret = 0;
    yield* this.mutex.lock();
    for (let i = 0; i < npages; i++) {
      const e = this.pt.get(addr / PAGE_SIZE + i);
      if (!e) {
        ret = -ENOENT;
        break;
      }
      out.set(this.kernel.dmaBus.read(e.frame, 0, PAGE_SIZE), i * PAGE_SIZE);
      this.cmd.cpages++;
    }
    this.mutex.unlock();
    return ret < 0 ? ret : out;
  }

  /** dmirror_migrate_alloc_and_copy. */
  private *migrateAllocAndCopy(args: MigrateVma, vma: Vma): Co {
    const { phys } = this.kernel;
    for (let i = 0; i < args.npages; i++) {
      const src = args.src[i] as number;
      if (!(migratePfnFlags(src) & MIGRATE_PFN_MIGRATE)) continue;
      const spage = migratePfnToPage(src);
      if (spage >= 0 && isZoneDevicePage(this.kernel, spage)) continue; // WARN: "page already in device"
      const dpage = yield* this.device.allocPage();
      if (dpage < 0) continue;
      const rpage = this.device.backingPage(dpage);
      if (spage >= 0) phys.copyPage(rpage, spage);
      else phys.zeroPage(rpage);
      this.device.users.set(rpage, this);
      const write = (migratePfnFlags(src) & MIGRATE_PFN_WRITE) !== 0 || (spage < 0 && (vma.flags & VM_WRITE) !== 0);
      args.dst[i] = migratePfn(dpage) + (write ? MIGRATE_PFN_WRITE : 0);
    }
  }

  /** dmirror_migrate_finalize_and_map: mirror entries for the pages that migrated, under the mutex. */
  private *migrateFinalizeAndMap(args: MigrateVma): Co {
    yield* this.mutex.lock();
    for (let i = 0; i < args.npages; i++) {
      if (!(migratePfnFlags(args.src[i] as number) & MIGRATE_PFN_MIGRATE)) continue;
      const dpage = migratePfnToPage(args.dst[i] as number);
      if (dpage < 0) continue;
      const write = (migratePfnFlags(args.dst[i] as number) & MIGRATE_PFN_WRITE) !== 0;
      this.pt.set(args.start / PAGE_SIZE + i, { frame: this.device.backingPage(dpage), write });
    }
    this.mutex.unlock();
  }

  /** xa_erase of one mirror entry, for the device's migrate_to_ram (the MIGRATE event it started is skipped). */
  dropEntry(v: number): void {
    this.pt.delete(v);
  }

  /**
   * HMM_DMIRROR_MIGRATE_TO_SYS (dmirror_migrate_to_system): for each chunk within one VMA
   * (a missing VMA, or one not readable, is -EINVAL), migrate_vma_setup with this
   * device's selection (dmirror_select_device: SELECT_DEVICE_PRIVATE, or
   * SELECT_DEVICE_COHERENT for a coherent device) and this device as owner, copy each
   * collected page back into a
   * new system page (the same alloc_and_copy as migrate_to_ram), migrate_vma_pages,
   * finalize. `cmd.cpages` = the pages that migrated (dmirror_successful_migrated_pages).
   */
  *migrateToSystem(addr: number, npages: number): Co<number> {
    this.cmd = { cpages: 0, faults: 0 };
    const bad = this.cmdCheck(addr, npages);
    if (bad < 0) return bad;
    const end = addr + npages * PAGE_SIZE;
    if (!this.mm.mmgetNotZero()) return -EINVAL;
    yield* this.mm.mmapLock.downRead();
    let ret = 0;
    for (let a = addr, next = addr; a < end; a = next) {
      const vma = this.mm.findVma(a);
      if (!vma || !(vma.flags & VM_READ)) {
        ret = -EINVAL;
        break;
      }
      next = Math.min(end, a + this.migrateChunkPages * PAGE_SIZE, vma.end);
      const args = migrateVmaInit(vma, a, next, this.device, this.device.selectFlags); // dmirror_select_device
      ret = yield* migrateVmaSetup(args);
      if (ret) break;
      yield* this.device.allocAndCopyToSystem(args);
      yield* migrateVmaPages(args);
      for (let i = 0; i < args.npages; i++) {
        const f = migratePfnFlags(args.src[i] as number);
        if (f & MIGRATE_PFN_VALID && f & MIGRATE_PFN_MIGRATE) this.cmd.cpages++;
      }
      yield* migrateVmaFinalize(args);
    }
    this.mm.mmapLock.upRead();
    yield* mmput(this.mm);
    return ret;
  }

  /**
   * HMM_DMIRROR_SNAPSHOT (dmirror_snapshot / dmirror_range_snapshot / dmirror_mkentry): per
   * chunk, a temporary interval subscription on exactly that chunk whose invalidate only
   * sets the sequence (under the mutex), the rule-31 loop around hmm_range_fault with no
   * fault requested and this device as dev_private_owner, and one permission byte per
   * page: ERROR; NONE when not valid; else DEV_PRIVATE_LOCAL/REMOTE, DEV_COHERENT_LOCAL/REMOTE
   * (a device-coherent page is a present page hmm_range_fault reports like any other), ZERO
   * or NONE, plus
   * WRITE or READ, plus PMD/PUD for the CPU mapping's order. `cmd.cpages` = pages reported.
   */
  *snapshot(addr: number, npages: number): Co<Uint8Array | number> {
    this.cmd = { cpages: 0, faults: 0 };
    const bad = this.cmdCheck(addr, npages);
    if (bad < 0) return bad;
    const end = addr + npages * PAGE_SIZE;
    if (!this.mm.mmgetNotZero()) return -EINVAL;
    const out = new Uint8Array(npages);
    const chunk = testHmmChunkPages(this.kernel.profile.release) * PAGE_SIZE;
    let ret = 0;
    for (let a = addr; a < end; a += chunk) {
      const next = Math.min(a + chunk, end);
      ret = yield* this.rangeSnapshot(a, next, out.subarray((a - addr) / PAGE_SIZE));
      if (ret < 0) break;
      this.cmd.cpages += (next - a) / PAGE_SIZE;
    }
    yield* mmput(this.mm);
    return ret < 0 ? ret : out;
  }

  private *rangeSnapshot(start: number, end: number, perm: Uint8Array): Co<number> {
    const { sim } = this.kernel;
    const sub = new MmuIntervalNotifier(`${this.name}.snapshot`);
    let ret = yield* mmuIntervalNotifierInsert(sub, this.mm, start, end - start, {
      invalidate: (s, range, curSeq) => this.snapshotInvalidate(s, range, curSeq),
    }, { lock: this.mutex });
    if (ret < 0) return ret;
    const timeout = sim.now() + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    let range: HmmRange | null = null;
    for (;;) {
      if (sim.now() > timeout) {
        ret = -EBUSY;
        break;
      }
      const seq = yield* mmuIntervalReadBegin(sub);
      range = hmmRangeInit(sub, start, end, seq, 0);
      range.devPrivateOwner = this.device;
      yield* this.mm.mmapLock.downRead();
      ret = yield* hmmRangeFault(range);
      this.mm.mmapLock.upRead();
      if (ret === -EBUSY) continue;
      if (ret < 0) break;
      yield* this.mutex.lock();
      if (mmuIntervalReadRetry(sub, seq)) {
        this.mutex.unlock();
        continue;
      }
      for (let i = 0; i < range.pfns.length; i++) perm[i] = this.mkentry(range, i);
      this.mutex.unlock();
      break;
    }
    yield* mmuIntervalNotifierRemove(sub);
    return ret;
  }

  private *snapshotInvalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): Co<boolean> {
    if (mmuNotifierRangeBlockable(range)) yield* this.mutex.lock();
    else if (!this.mutex.trylock()) return false;
    mmuIntervalSetSeq(sub, curSeq);
    this.mutex.unlock();
    return true;
  }

  /** dmirror_mkentry. */
  private mkentry(range: HmmRange, i: number): number {
    const flags = range.flags[i] as number;
    if (flags & HMM_PFN_ERROR) return HMM_DMIRROR_PROT_ERROR;
    if (!(flags & HMM_PFN_VALID)) return HMM_DMIRROR_PROT_NONE;
    const pfn = range.pfns[i] as number;
    let perm = HMM_DMIRROR_PROT_NONE;
    if (isDevicePfn(pfn)) {
      perm = pagePgmap(this.kernel, pfn)?.owner === this.device ? HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL : HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE;
    } else if (isDeviceCoherentPage(this.kernel, pfn)) {
      // "Is the page migrated to this device or some other?" (dmirror_page_to_device).
      perm = pagePgmap(this.kernel, pfn)?.owner === this.device ? HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL : HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE;
    } else if (pfn === ZERO_PFN) perm = HMM_DMIRROR_PROT_ZERO;
    perm |= flags & HMM_PFN_WRITE ? HMM_DMIRROR_PROT_WRITE : HMM_DMIRROR_PROT_READ;
    const order = range.order[i] as number;
    if (order === 9) perm |= HMM_DMIRROR_PROT_PMD;
    else if (order === 18) perm |= HMM_DMIRROR_PROT_PUD;
    return perm;
  }

  /**
   * HMM_DMIRROR_EXCLUSIVE (dmirror_exclusive, 6.15+): under the mmap read lock, per page,
   * make_device_exclusive with owner NULL (so this mirror's own EXCLUSIVE invalidation drops
   * any old entry first), then store an atomic entry for the page (dmirror_atomic_map) and
   * unlock and put the folio. Then read the range back through the mirror; `cmd.cpages` =
   * pages read. Returns the data or -errno (the first page that failed stops the loop).
   */
  *exclusive(addr: number, npages: number): Co<Uint8Array | number> {
    this.cmd = { cpages: 0, faults: 0 };
    const bad = this.cmdCheck(addr, npages);
    if (bad < 0) return bad;
    const end = addr + npages * PAGE_SIZE;
    if (!this.mm.mmgetNotZero()) return -EINVAL;
    const { phys } = this.kernel;
    yield* this.mm.mmapLock.downRead();
    let ret = 0;
    for (let a = addr; ret === 0 && a < end; a += PAGE_SIZE) {
      const r = yield* makeDeviceExclusive(this.mm, a, null);
      if (typeof r === 'number') {
        ret = r;
        break;
      }
      yield* this.mutex.lock();
      this.pt.set(a / PAGE_SIZE, { frame: r.folio, write: true, atomic: true });
      this.mutex.unlock();
      phys.clear(r.folio, PG_LOCKED);
      phys.put(r.folio);
    }
    this.mm.mmapLock.upRead();
    yield* mmput(this.mm);
    if (ret < 0) return ret;
    return yield* this.readMirrored(addr, npages);
  }

  /** HMM_DMIRROR_CHECK_EXCLUSIVE (dmirror_check_atomic): -EPERM while any atomic entry of the range remains. */
  *checkExclusive(addr: number, npages: number): Co<number> {
    this.cmd = { cpages: 0, faults: 0 };
    const bad = this.cmdCheck(addr, npages);
    if (bad < 0) return bad;
    yield* this.mutex.lock();
    let ret = 0;
    for (let i = 0; i < npages; i++) if (this.pt.get(addr / PAGE_SIZE + i)?.atomic) ret = -EPERM;
    this.mutex.unlock();
    return ret;
  }

  /**
   * HMM_DMIRROR_RELEASE (dmirror_device_remove_chunks): evict all of this device's memory
   * back to system memory with migrate_device_range (DmirrorDevice.evictAll). The CLEAR
   * invalidations of its try_to_migrate drop the mirror's entries. Returns 0 or -errno.
   */
  *release(): Co<number> {
    this.cmd = { cpages: 0, faults: 0 };
    return yield* this.device.evictAll();
  }

  /** Close the device: remove the subscription (rule 30; may sleep). */
  *close(): Co {
    yield* mmuIntervalNotifierRemove(this.notifier);
  }
}
