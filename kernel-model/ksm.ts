/**
 * KSM, kernel samepage merging (kernel rules 21g, 75): `ksmd` scans the anonymous pages of
 * VMAs marked MADV_MERGEABLE and merges identical ones into one write-protected KSM page,
 * an invalidation source for every secondary MMU mapping those pages.
 *
 * Per scanned page (`cmp_and_merge_page`): a page identical to one in the stable tree is
 * merged into that KSM page; otherwise a page whose checksum has not changed since the
 * previous full scan is looked up in this scan's unstable tree, and two identical pages
 * become a new KSM page (`try_to_merge_two_pages`: the first is write-protected and turned
 * into the KSM page, the second replaced by it; if the second fails the first is broken
 * out again). A merge of one page (`try_to_merge_one_page`) is:
 * - `write_protect_page`: a one-page CLEAR as soon as the address is known; inside it, a
 *   PTE that is writable, dirty or anon-exclusive is cleared and flushed, then the merge is
 *   abandoned (PTE restored) if the page has references beyond its mappings, the scanner's
 *   and the swap cache's, or if it is exclusive and maybe pinned (the share step fails,
 *   rule 71); otherwise it comes back read-only and clean. A PTE that is already read-only,
 *   clean and shared (COW after fork) skips those checks;
 * - the contents compared with the KSM page (`pages_identical`);
 * - `replace_page`: another one-page CLEAR, and the PTE now maps the KSM page read-only.
 * A write to a KSM page always copies it (`do_wp_page` never reuses a KSM folio).
 *
 * [read] `torvalds/linux: mm/ksm.c (write_protect_page, replace_page,
 * try_to_merge_one_page, try_to_merge_with_ksm_page, try_to_merge_two_pages,
 * cmp_and_merge_page, ksm_do_scan, ksm_scan_thread, break_ksm, unmerge_ksm_pages,
 * ksm_madvise)`: both notifications are MMU_NOTIFY_CLEAR. Defaults: `pages_to_scan` 100,
 * `sleep_millisecs` 20 (`ksm_thread_pages_to_scan`, `ksm_thread_sleep_millisecs`). Not
 * modelled: stable-node chains and `max_page_sharing`, `use_zero_pages`, NUMA-aware trees,
 * KSM-page migration back into the stable tree (a migrated KSM page is an ordinary shared
 * anonymous page afterwards).
 */
import type { Co } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import type { Vma } from './vma.ts';
import { VM_IO, VM_PFNMAP, VM_SHARED, VM_MAYSHARE } from './vma.ts';
import { EFAULT } from './errno.ts';
import { PAGE_SIZE, vpn } from './constants.ts';
import { PTE_ACCESSED, PTE_DIRTY, PTE_PRESENT, PTE_PROTNONE, PTE_WRITE, makePte, pteFlags, pteFrame, pteHas, ptePresent } from './page-table.ts';
import { PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_KSM, PG_LOCKED, PG_SWAPCACHE, PG_ZONE_DEVICE, ZERO_PFN } from './page-frames.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart } from './mmu-notifier.ts';
import { FAULT_FLAG_REMOTE, FAULT_FLAG_UNSHARE, handleMmFault } from './memory.ts';
import { flushTlbPage } from './tlb.ts';

/** `VM_MERGEABLE` (own value; Linux uses bit 31). */
export const VM_MERGEABLE = 0x1000_0000;

/** `ksm_thread_pages_to_scan` default. */
export const KSM_PAGES_TO_SCAN = 100;
/** `ksm_thread_sleep_millisecs` default, in virtual ns. */
export const KSM_SLEEP_NS = 20_000_000;

export interface KsmStats {
  /** Pages looked at (`ksm_pages_scanned`). */
  pagesScanned: number;
  /** Completed passes over every mergeable page (`ksm_scan.seqnr`). */
  fullScans: number;
  /** Mappings replaced by a KSM page (what `pages_sharing` + `pages_shared` count). */
  merged: number;
  /** Pages turned into KSM pages. */
  ksmPages: number;
  /** Merges abandoned in write_protect_page (extra references, or a pinned exclusive page). */
  wpFailed: number;
  /** Merges abandoned in replace_page (the PTE changed meanwhile) or on different contents. */
  replaceFailed: number;
}

interface TreeEntry {
  frame: number;
  generation: number;
}

interface UnstableEntry extends TreeEntry {
  mm: MmStruct;
  addr: number;
}

/** ksmd's state on one kernel: the mm list, the cursor, the trees, the checksums. */
class KsmState {
  readonly mms: MmStruct[] = [];
  /** Scan cursor: index into `mms` and the next address. */
  mmIndex = 0;
  addr = 0;
  readonly stable = new Map<number, TreeEntry[]>();
  unstable = new Map<number, UnstableEntry[]>();
  /** rmap_item.oldchecksum, per mm and page. */
  readonly oldChecksum = new WeakMap<MmStruct, Map<number, number>>();
  readonly stats: KsmStats = { pagesScanned: 0, fullScans: 0, merged: 0, ksmPages: 0, wpFailed: 0, replaceFailed: 0 };
  running = false;
}

const states = new WeakMap<Kernel, KsmState>();

function stateOf(kernel: Kernel): KsmState {
  let s = states.get(kernel);
  if (!s) states.set(kernel, (s = new KsmState()));
  return s;
}

/** KSM's counters on this kernel (zeros before anything was scanned). */
export function ksmStats(kernel: Kernel): Readonly<KsmStats> {
  return stateOf(kernel).stats;
}

/** `ksm_madvise(MADV_MERGEABLE)`: VMAs KSM cannot work on are silently left alone. */
export function ksmMergeable(vma: Vma): boolean {
  if (vma.flags & (VM_SHARED | VM_MAYSHARE | VM_PFNMAP | VM_IO)) return false;
  vma.flags |= VM_MERGEABLE;
  // __ksm_enter: the mm joins ksmd's list once.
  const s = stateOf(vma.mm.kernel);
  if (!s.mms.includes(vma.mm)) s.mms.push(vma.mm);
  return true;
}

/**
 * `ksm_madvise(MADV_UNMERGEABLE)`: break every KSM page in [start, end) of the VMA out
 * again (`unmerge_ksm_pages` -> `break_ksm`: an unshare fault, which copies the KSM page
 * with a one-page CLEAR), then clear VM_MERGEABLE. Called with the mmap lock held.
 */
export function* ksmUnmergeable(vma: Vma, start: number, end: number): Co<number> {
  if (!(vma.flags & VM_MERGEABLE)) return 0;
  const { mm } = vma;
  const { phys } = mm.kernel;
  for (const [v, pte] of [...mm.pageTable.entriesIn(vpn(start), vpn(end))]) {
    if (!ptePresent(pte) || !phys.has(pteFrame(pte), PG_KSM)) continue;
    const r = yield* handleMmFault(mm, vma, v * PAGE_SIZE, FAULT_FLAG_UNSHARE | FAULT_FLAG_REMOTE);
    if (r < 0) return r;
  }
  vma.flags &= ~VM_MERGEABLE;
  return 0;
}

/** calc_checksum (xxhash in the kernel; FNV-1a here: only equality matters). */
function checksum(kernel: Kernel, frame: number): number {
  const bytes = kernel.phys.pageBytes(frame);
  if (!bytes) return 0x811c9dc5;
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ (bytes[i] as number), 0x01000193);
  return h >>> 0;
}

/** memcmp_pages / pages_identical. */
function identical(kernel: Kernel, a: number, b: number): boolean {
  const x = kernel.phys.pageBytes(a);
  const y = kernel.phys.pageBytes(b);
  if (!x || !y) {
    const other = x ?? y;
    return !other || other.every((byte) => byte === 0);
  }
  return Buffer.compare(x, y) === 0;
}

function live(kernel: Kernel, e: TreeEntry): boolean {
  return kernel.phys.isAllocated(e.frame) && kernel.phys.generation[e.frame] === e.generation;
}

/** find_mergeable_vma. */
function mergeableVma(mm: MmStruct, addr: number): Vma | undefined {
  const vma = mm.findVma(addr);
  if (!vma || !(vma.flags & VM_MERGEABLE) || !vma.anonVma) return undefined;
  return vma;
}

/** write_protect_page: 0 with the PTE now read-only and clean, or -EFAULT (rule 75). */
function* writeProtectPage(mm: MmStruct, addr: number, frame: number): Co<{ ret: number; pte: number }> {
  const { phys } = mm.kernel;
  const v = vpn(addr);
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, addr, addr + PAGE_SIZE);
  yield* mmuNotifierInvalidateRangeStart(range);
  let ret = -EFAULT;
  yield* mm.kernel.sim.preemptPoint('pte read');
  const pte = mm.pageTable.get(v);
  let out = pte;
  if (ptePresent(pte) && pteFrame(pte) === frame && !pteHas(pte, PTE_PROTNONE)) {
    const exclusive = phys.has(frame, PG_ANON_EXCLUSIVE);
    if (pteHas(pte, PTE_WRITE) || pteHas(pte, PTE_DIRTY) || exclusive) {
      // ptep_clear_flush first, so no GUP-fast can take a reference after the check. The
      // flush's CPU time is spent once the PTE is settled (below): the model has no PTL, and
      // a task running during the flush must not find the PTE half-changed.
      mm.pageTable.clear(v);
      const swapped = phys.has(frame, PG_SWAPCACHE) ? 1 : 0;
      if (phys.mapcount[frame]! + 1 + swapped !== phys.refcount[frame]) {
        mm.pageTable.set(v, pte);
      } else if (exclusive && phys.maybeDmaPinned(frame)) {
        mm.pageTable.set(v, pte); // folio_try_share_anon_rmap_pte fails (rule 71)
      } else {
        phys.clear(frame, PG_ANON_EXCLUSIVE);
        if (pteHas(pte, PTE_DIRTY)) phys.set(frame, PG_DIRTY);
        out = makePte(frame, pteFlags(pte) & ~(PTE_WRITE | PTE_DIRTY));
        mm.pageTable.set(v, out);
        ret = 0;
      }
      yield* flushTlbPage(mm, addr);
    } else {
      ret = 0;
    }
  }
  yield* mmuNotifierInvalidateRangeEnd(range);
  return { ret, pte: out };
}

/** replace_page: map `kframe` read-only where `frame` was, if the PTE is still `orig`. */
function* replacePage(mm: MmStruct, addr: number, frame: number, kframe: number, orig: number): Co<number> {
  const { phys } = mm.kernel;
  const v = vpn(addr);
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.CLEAR, addr, addr + PAGE_SIZE);
  yield* mmuNotifierInvalidateRangeStart(range);
  yield* mm.kernel.sim.preemptPoint('pte read');
  let ret = -EFAULT;
  if (mm.pageTable.get(v) === orig && phys.isAllocated(kframe)) {
    phys.get(kframe);
    phys.rmapAdd(kframe, mm, addr);
    // ptep_clear_flush, then set_pte_at under the PTL: the flush's CPU time after (see
    // writeProtectPage).
    mm.pageTable.set(v, makePte(kframe, PTE_PRESENT | PTE_ACCESSED));
    phys.rmapRemove(frame, mm, addr);
    yield* flushTlbPage(mm, addr);
    phys.put(frame);
    ret = 0;
  }
  yield* mmuNotifierInvalidateRangeEnd(range);
  return ret;
}

/**
 * try_to_merge_with_ksm_page -> try_to_merge_one_page: under the mmap lock, with the page
 * locked (trylock: a busy page is left for the next scan). `kframe` -1 turns the page into
 * a KSM page itself. The caller holds a reference on `frame` (the scanner's).
 */
function* tryToMergeOnePage(kernel: Kernel, mm: MmStruct, addr: number, frame: number, kframe: number): Co<number> {
  const { phys } = kernel;
  const s = stateOf(kernel);
  if (frame === kframe) return 0;
  yield* mm.mmapLock.downRead();
  try {
    if (!mergeableVma(mm, addr) || !phys.isAllocated(frame) || !phys.has(frame, PG_ANON)) return -EFAULT;
    if (phys.has(frame, PG_LOCKED)) return -EFAULT;
    const generation = phys.generation[frame];
    phys.set(frame, PG_LOCKED);
    try {
      const wp = yield* writeProtectPage(mm, addr, frame);
      if (wp.ret) {
        s.stats.wpFailed++;
        return wp.ret;
      }
      if (kframe < 0) {
        phys.set(frame, PG_KSM | PG_DIRTY);
        s.stats.ksmPages++;
        return 0;
      }
      if (!identical(kernel, frame, kframe)) {
        s.stats.replaceFailed++;
        return -EFAULT;
      }
      const r = yield* replacePage(mm, addr, frame, kframe, wp.pte);
      if (r) s.stats.replaceFailed++;
      else s.stats.merged++;
      return r;
    } finally {
      if (phys.isAllocated(frame) && phys.generation[frame] === generation) phys.clear(frame, PG_LOCKED);
    }
  } finally {
    mm.mmapLock.upRead();
  }
}

/** break_cow: an unshare fault on the KSM page at addr (a failed two-page merge). */
function* breakCow(mm: MmStruct, addr: number): Co {
  yield* mm.mmapLock.downRead();
  const vma = mergeableVma(mm, addr);
  const pte = mm.pageTable.get(vpn(addr));
  if (vma && ptePresent(pte) && mm.kernel.phys.has(pteFrame(pte), PG_KSM)) {
    yield* handleMmFault(mm, vma, addr, FAULT_FLAG_UNSHARE | FAULT_FLAG_REMOTE);
  }
  mm.mmapLock.upRead();
}

/** stable_tree_search: a live KSM page with the same contents, or -1. */
function stableTreeSearch(kernel: Kernel, sum: number, frame: number): number {
  const s = stateOf(kernel);
  const list = s.stable.get(sum);
  if (!list) return -1;
  for (let i = list.length - 1; i >= 0; i--) {
    const e = list[i] as TreeEntry;
    // get_ksm_page: a stale node (its page freed, or no longer a KSM page) is dropped.
    if (!live(kernel, e) || !kernel.phys.has(e.frame, PG_KSM) || kernel.phys.mapcount[e.frame] === 0) {
      list.splice(i, 1);
      continue;
    }
    if (identical(kernel, frame, e.frame)) return e.frame;
  }
  if (list.length === 0) s.stable.delete(sum);
  return -1;
}

function stableTreeInsert(kernel: Kernel, sum: number, kframe: number): void {
  const s = stateOf(kernel);
  let list = s.stable.get(sum);
  if (!list) s.stable.set(sum, (list = []));
  list.push({ frame: kframe, generation: kernel.phys.generation[kframe]! });
}

/**
 * unstable_tree_search_insert: an identical page met earlier in this scan, still mapped
 * where it was met and still an ordinary anonymous page; otherwise this page goes in.
 */
function unstableTreeSearchInsert(kernel: Kernel, sum: number, mm: MmStruct, addr: number, frame: number): UnstableEntry | null {
  const s = stateOf(kernel);
  let list = s.unstable.get(sum);
  if (!list) s.unstable.set(sum, (list = []));
  for (const e of list) {
    if (!live(kernel, e) || kernel.phys.has(e.frame, PG_KSM)) continue;
    const pte = e.mm.pageTable.get(vpn(e.addr));
    if (!ptePresent(pte) || pteFrame(pte) !== e.frame) continue;
    if (e.frame === frame) return null; // the same page (shared after fork): nothing to merge
    if (identical(kernel, frame, e.frame)) return e;
  }
  list.push({ mm, addr, frame, generation: kernel.phys.generation[frame]! });
  return null;
}

/** cmp_and_merge_page for the page mapped at (mm, addr), on which the scanner holds a reference. */
function* cmpAndMergePage(kernel: Kernel, mm: MmStruct, addr: number, frame: number): Co {
  const { phys } = kernel;
  const s = stateOf(kernel);
  if (phys.has(frame, PG_KSM)) return; // already merged
  const sum = checksum(kernel, frame);
  const kframe = stableTreeSearch(kernel, sum, frame);
  if (kframe >= 0) {
    phys.get(kframe);
    yield* tryToMergeOnePage(kernel, mm, addr, frame, kframe);
    phys.put(kframe);
    return;
  }
  // A page that changed since the last full scan is too volatile for the unstable tree.
  let sums = s.oldChecksum.get(mm);
  if (!sums) s.oldChecksum.set(mm, (sums = new Map()));
  const v = vpn(addr);
  if (sums.get(v) !== sum) {
    sums.set(v, sum);
    return;
  }
  const tree = unstableTreeSearchInsert(kernel, sum, mm, addr, frame);
  if (!tree) return;
  // try_to_merge_two_pages: this page becomes the KSM page, then the tree page joins it.
  phys.get(tree.frame);
  try {
    if ((yield* tryToMergeOnePage(kernel, mm, addr, frame, -1)) !== 0) return;
    if ((yield* tryToMergeOnePage(kernel, tree.mm, tree.addr, tree.frame, frame)) !== 0) {
      yield* breakCow(mm, addr);
      return;
    }
    stableTreeInsert(kernel, sum, frame);
  } finally {
    phys.put(tree.frame);
  }
}

/** The next mergeable (mm, addr) from the cursor, wrapping into a new full scan. */
function nextCandidate(kernel: Kernel): { mm: MmStruct; addr: number } | null {
  const s = stateOf(kernel);
  for (let guard = 0; guard <= s.mms.length + 1; guard++) {
    // ksm_test_exit: an exited mm leaves the list.
    s.mms.splice(0, s.mms.length, ...s.mms.filter((m) => m.users > 0 && !m.exited));
    if (s.mms.length === 0) return null;
    if (s.mmIndex >= s.mms.length) {
      // A full scan ends: the unstable tree starts again (ksm_scan.seqnr++), and this
      // ksm_do_scan stops here (scan_get_next_rmap_item returns NULL).
      s.mmIndex = 0;
      s.addr = 0;
      s.unstable = new Map();
      s.stats.fullScans++;
      return null;
    }
    const mm = s.mms[s.mmIndex] as MmStruct;
    for (const vma of mm.vmasIn(Math.max(s.addr, 0), Number.MAX_SAFE_INTEGER)) {
      if (!(vma.flags & VM_MERGEABLE) || !vma.anonVma) continue;
      for (const [pv, pte] of mm.pageTable.entriesIn(vpn(Math.max(s.addr, vma.start)), vpn(vma.end))) {
        if (!ptePresent(pte)) continue;
        const f = pteFrame(pte);
        if (f === ZERO_PFN || !kernel.phys.has(f, PG_ANON)) continue;
        // scan_get_next_rmap_item skips ZONE_DEVICE pages (is_zone_device_page: device-coherent).
        if (kernel.phys.has(f, PG_ZONE_DEVICE)) continue;
        s.addr = (pv + 1) * PAGE_SIZE;
        return { mm, addr: pv * PAGE_SIZE };
      }
    }
    s.mmIndex++;
    s.addr = 0;
  }
  return null;
}

/**
 * ksm_do_scan: look at up to `pages` mergeable pages from where the last scan stopped,
 * merging what can be merged. Each page is found under the mmap lock for read and held by
 * a reference (follow_page with FOLL_GET) while it is compared and merged.
 */
export function* ksmDoScan(kernel: Kernel, pages: number): Co<Readonly<KsmStats>> {
  const s = stateOf(kernel);
  for (let i = 0; i < pages; i++) {
    const c = nextCandidate(kernel);
    if (!c) break;
    const { mm, addr } = c;
    // ksmd holds no mm_users reference (an mm_slot, mmgrab): ksm_test_exit under the lock.
    yield* mm.mmapLock.downRead();
    const pte = mm.pageTable.get(vpn(addr));
    const vma = mm.users > 0 && !mm.exited ? mergeableVma(mm, addr) : undefined;
    const frame = vma && ptePresent(pte) ? pteFrame(pte) : -1;
    const ok = frame > 0 && kernel.phys.has(frame, PG_ANON);
    if (ok) kernel.phys.get(frame);
    mm.mmapLock.upRead();
    if (!ok) continue;
    s.stats.pagesScanned++;
    try {
      yield* cmpAndMergePage(kernel, mm, addr, frame);
    } finally {
      kernel.phys.put(frame);
    }
  }
  return s.stats;
}

export interface KsmdOptions {
  /** `pages_to_scan` per wake-up (default 100). */
  pagesToScan: number;
  /** `sleep_millisecs`, in virtual ns (default 20 ms). */
  sleepNs: number;
}

/**
 * ksmd (`ksm_scan_thread`): a kernel thread that scans `pagesToScan` pages, then sleeps
 * `sleepNs`, forever (runs are bounded by their limits). Starting it twice on one kernel
 * starts it once. Returns KSM's counters.
 *
 * @example
 *   const stats = startKsmd(k, { sleepNs: 1_000_000 });
 *   // ... MADV_MERGEABLE, identical pages, time passes: stats.merged grows
 */
export function startKsmd(kernel: Kernel, opts: Partial<KsmdOptions> = {}): Readonly<KsmStats> {
  const s = stateOf(kernel);
  if (s.running) return s.stats;
  s.running = true;
  const pages = opts.pagesToScan ?? KSM_PAGES_TO_SCAN;
  const sleepNs = opts.sleepNs ?? KSM_SLEEP_NS;
  kernel.sim.spawn('ksmd', function* () {
    for (;;) {
      yield* ksmDoScan(kernel, pages);
      yield* kernel.sim.sleep(sleepNs);
    }
  }, { kind: 'kthread' });
  return s.stats;
}

/** Whether ksmd runs on this kernel. */
export function ksmdRunning(kernel: Kernel): boolean {
  return stateOf(kernel).running;
}
