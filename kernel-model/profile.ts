import { EINVAL } from './errno.ts';
import type { AppliedVariant } from './variant.ts';

/**
 * A kernel profile: the behaviour switches and the interfaces of one kernel release, so
 * each seed discussion can be shown on the kernel it was about, and shown fixed, without
 * a prototype using an interface its kernel lacked. Profiles are data, not code forks.
 *
 * Every switch names the release (and, where one commit did it, the commit) it follows.
 */
export interface KernelProfile {
  name: ProfileName;
  release: string;
  /** What the profile's text says about itself: its story, and what it had to assume. */
  notes: readonly string[];
  /** Notifier callbacks run under RCU and may not sleep (before 3.7's SRCU). */
  atomicCallbacks: boolean;
  /** `invalidate_page` after the PTE is cleared, instead of start/end around the change (until 4.13). */
  invalidatePageAfterClear: boolean;
  /**
   * A non-blocking invalidation exists (4.19, 93065ac753e4): the `blockable` argument of
   * `invalidate_range_start` and `mmu_notifier_invalidate_range_start_nonblock`.
   */
  blockableFlag: boolean;
  /** Callbacks get a `struct mmu_notifier_range` (5.0, 5d6527a784f7), holding a `bool blockable`. */
  notifierRangeStruct: boolean;
  /** `enum mmu_notifier_event` in the range (5.2, 6f4f13e8d9e2). */
  eventTypes: boolean;
  /** Range `flags` with MMU_NOTIFIER_RANGE_BLOCKABLE and `mmu_notifier_range_blockable()` (5.2). */
  rangeFlags: boolean;
  /** `mmu_interval_notifier` (5.5). */
  intervalNotifiers: boolean;
  /** `hmm_range_fault` with the HMM_PFN_REQ_FAULT/REQ_WRITE flags (5.8, 2733ea144dcc). */
  hmmRangeFault: boolean;
  /** FOLL_PIN, `pin_user_pages` (5.6) and GUP_PIN_COUNTING_BIAS (5.7). */
  follPin: boolean;
  /**
   * How do_wp_page decides to reuse a write-protected anonymous page in place:
   * `mapcount` (reuse_swap_page(): mapped once, swap count included; until 5.8),
   * `refcount` ("copy unless we hold the only reference", 5.9, 09854ba94c6a),
   * `anon-exclusive` (PageAnonExclusive, 5.19).
   */
  cowReuse: 'mapcount' | 'refcount' | 'anon-exclusive';
  /**
   * GUP turns FOLL_GET/FOLL_PIN lookups in COW mappings into write faults
   * (should_force_cow_break, 17839856fd58, 5.8; removed by a308c71bf1e6 in 5.9).
   */
  gupForceCowBreak: boolean;
  /** fork copies maybe-pinned anonymous pages early (5.9, has_pinned; MMF_HAS_PINNED since a458b76a4171). */
  forkCopiesPinned: boolean;
  /** mm->write_protect_seq: fork's COW copy makes FOLL_PIN gup-fast take the slow path (5.11, 57efa1fe5957). */
  writeProtectSeq: boolean;
  /** PageAnonExclusive and unsharing for read-only pins of anon pages (5.19). */
  anonExclusive: boolean;
  /** Read-only long-term pins unshare any COW mapping, incl. the zero page (6.2). */
  unshareAnyCow: boolean;
  /** mprotect may map exclusive anonymous pages writable at once (MM_CP_TRY_CHANGE_WRITABLE, 6.0). */
  mprotectTryChangeWritable: boolean;
  /** Writable long-term pins of dirty-tracked file mappings are refused (6.5). */
  refuseLongtermFileWrite: boolean;
  /** ib_umem_get pins with FOLL_WRITE always, FOLL_FORCE for read-only MRs (before 6.2). */
  umemForceWrite: boolean;
  /**
   * The event __oom_reap_task_mm gives its non-blockable range (mm/oom_kill.c): UNMAP from
   * 5.2's event types through the 6.x trees read (the >= 6.3 source reads
   * `mmu_notifier_range_init(&range, MMU_NOTIFY_UNMAP, 0, mm, vma->vm_start, vma->vm_end)`);
   * CLEAR in today's code (zap_vma_for_reaping). Which release switched was not found
   * (spec/kernel.md open question 3): linux-6.x assumes CLEAR.
   */
  oomReapEvent: 'UNMAP' | 'CLEAR';
  /** On-demand paging MRs exist (3.19, "IB/core: Add support for on demand paging regions"). */
  odp: boolean;
  /**
   * How ODP follows the CPU page table (ODP itself is 3.19): `ucontext`, one classic
   * notifier per ucontext with its own interval tree of umems and the
   * notifiers_seq/notifiers_count check (3.19 to 5.4); `interval`, one
   * mmu_interval_notifier per umem (5.5, f25a546e6529).
   */
  odpNotifier: 'ucontext' | 'interval';
  /**
   * How ODP faults pages in: `gup`, get_user_pages_remote then put_page (3.19 to 5.9);
   * `hmm`, hmm_range_fault (5.10, 36f30e486dce).
   */
  odpFault: 'gup' | 'hmm';
  /**
   * A write to a COW-shared anonymous THP copies all 2 MiB into a new THP, with one CLEAR
   * over the block (until 5.7); from 5.8 (3917c80280c9, "thp: change CoW semantics for
   * anon-THP") the PMD is split and one 4 KiB page copied (huge-memory.ts).
   */
  thpCowCopiesHuge: boolean;
  /**
   * hmm_range_fault reports the CPU mapping's order (hmm_pfn_to_map_order, 5.10,
   * 3b50a6e536d2 "mm/hmm: provide the page mapping order in hmm_range_fault()"); before it
   * every page read as order 0.
   */
  hmmMapOrder: boolean;
  /**
   * MADV_DONTNEED on hugetlb VMAs: refused with -EINVAL before 5.18 (90e7e7f5ef3f, "mm:
   * enable MADV_DONTNEED for hugetlb mappings"); today (madvise_dontneed_free_valid_vma)
   * the start must be huge-page aligned and the end is rounded down, so a request shorter
   * than a huge page frees nothing (rule 21c). 5.18 rounded the end up; the release that
   * switched was not re-read, and no profile sits between them.
   */
  hugetlbDontneed: boolean;
  /**
   * IB_ACCESS_HUGETLB for ODP: `hugetlb-vma` (ib_umem_odp_get until 5.9: the start must lie
   * in a hugetlb VMA, whose huge page size becomes the umem's page_shift); `hpage-shift`
   * (5.10, 36f30e486dce, with hmm_range_fault: page_shift = HPAGE_SHIFT, any memory whose
   * CPU mapping is at least that large when faulted, else -EINVAL from
   * ib_umem_odp_map_dma_and_lock's hmm_order check).
   */
  odpHugetlb: 'hugetlb-vma' | 'hpage-shift';
  /**
   * Device-private ZONE_DEVICE memory (MEMORY_DEVICE_PRIVATE, a pgmap with migrate_to_ram
   * and page_free): 4.14, "mm/ZONE_DEVICE: new type of ZONE_DEVICE for unaddressable memory"
   * (HMM series; recalled, the 4.19 tree's mm/migrate.c already has migrate_vma with
   * device-private entries). The owner field came in 5.7.
   */
  devicePrivate: boolean;
  /**
   * migrate_vma_setup/pages/finalize with MIGRATE_VMA_SELECT_SYSTEM/DEVICE_PRIVATE flags and
   * the MIGRATE invalidation carrying pgmap_owner (mmu_notifier_range_init_owner): 5.9
   * ("mm/migrate: add a flags parameter to migrate_vma", "mm/notifier: add migration
   * invalidation type"; recalled). 5.4 to 5.8 had migrate_vma_setup with a `src_owner` and
   * a CLEAR invalidation; 4.14 to 5.3 a single migrate_vma() with callbacks.
   */
  migrateVma: boolean;
  /** make_device_exclusive_range and the EXCLUSIVE event: 5.14 ("mm: device exclusive memory access"; recalled). */
  makeDeviceExclusive: boolean;
  /**
   * Device-coherent ZONE_DEVICE memory (MEMORY_DEVICE_COHERENT, CPU-mapped by present
   * PTEs), MIGRATE_VMA_SELECT_DEVICE_COHERENT and long-term pins migrating such pages out:
   * 6.0 (f25cbb7a95a2 "mm: add zone device coherent type memory support", dd19e6d8ffaa
   * "mm: add device coherent vma selection for memory migration", b05a79d4377f "mm/gup:
   * migrate device coherent pages when pinning instead of failing"; read in the 6.0 merge
   * log and the amdgpu-dkms compat check "v6.0 - f25cbb7a95a2").
   */
  deviceCoherent: boolean;
  /**
   * The proposals under study layered on this profile (kernel-model/variant.ts), absent on
   * a plain profile. Never mainline behaviour: each names its seed thread.
   */
  variant?: AppliedVariant;
}

export type ProfileName = 'linux-3.0' | 'linux-4.18' | 'linux-5.8' | 'linux-5.15' | 'linux-6.x';

const base: KernelProfile = {
  name: 'linux-6.x', release: '6.16',
  notes: [
    'today\'s rules, as in spec/kernel.md',
    'assumed: the OOM reaper sends CLEAR (today\'s zap_vma_for_reaping); the release that switched from UNMAP was not identified',
  ],
  atomicCallbacks: false, invalidatePageAfterClear: false, blockableFlag: true, notifierRangeStruct: true,
  eventTypes: true, rangeFlags: true, intervalNotifiers: true, hmmRangeFault: true, follPin: true,
  cowReuse: 'anon-exclusive', gupForceCowBreak: false, forkCopiesPinned: true, writeProtectSeq: true,
  anonExclusive: true, unshareAnyCow: true, mprotectTryChangeWritable: true, refuseLongtermFileWrite: true,
  umemForceWrite: false, oomReapEvent: 'CLEAR', odp: true, odpNotifier: 'interval', odpFault: 'hmm',
  thpCowCopiesHuge: false, hmmMapOrder: true, hugetlbDontneed: true, odpHugetlb: 'hpage-shift',
  devicePrivate: true, migrateVma: true, makeDeviceExclusive: true, deviceCoherent: true,
};

/** linux-5.15 (2021): the kernel of seed 001's story after the 5.9 fixes, before PageAnonExclusive. */
const linux515: KernelProfile = {
  ...base, name: 'linux-5.15', release: '5.15',
  notes: [
    'COW reuse only when the refcount says the page is ours alone (5.9, 09854ba94c6a)',
    'MMF_HAS_PINNED and the early copy of maybe-pinned anonymous pages at fork (5.9; a flag in mm->flags since a458b76a4171)',
    'fork\'s COW copy holds mm->write_protect_seq; FOLL_PIN gup-fast backs off to the slow path (5.11, 57efa1fe5957)',
    'ODP faults through hmm_range_fault (5.10, 36f30e486dce)',
    'no PageAnonExclusive (5.19): a read-only pin of a COW-shared or zero page pins what the page table maps',
    'no MM_CP_TRY_CHANGE_WRITABLE (6.0); writable long-term file pins allowed (refused from 6.5)',
    'ib_umem_get still pins with FOLL_WRITE (and FOLL_FORCE for read-only MRs) until 6.2',
    'the OOM reaper\'s non-blockable range is UNMAP (mm/oom_kill.c __oom_reap_task_mm, read in the 5.x and >= 6.3 trees)',
    'MADV_DONTNEED on hugetlb VMAs is refused with -EINVAL (allowed from 5.18, 90e7e7f5ef3f)',
  ],
  cowReuse: 'refcount', anonExclusive: false, unshareAnyCow: false, mprotectTryChangeWritable: false,
  refuseLongtermFileWrite: false, umemForceWrite: true, oomReapEvent: 'UNMAP', hugetlbDontneed: false,
  deviceCoherent: false,
};

export const PROFILES: Readonly<Record<ProfileName, KernelProfile>> = {
  'linux-3.0': {
    ...base, name: 'linux-3.0', release: '3.0',
    notes: [
      'classic notifiers only, callbacks under RCU (no sleeping); invalidate_page after the PTE changed',
      'GUP takes plain references; COW reuse by mapcount (reuse_swap_page); no ODP (3.19)',
    ],
    atomicCallbacks: true, invalidatePageAfterClear: true, blockableFlag: false, notifierRangeStruct: false,
    eventTypes: false, rangeFlags: false, intervalNotifiers: false, hmmRangeFault: false, follPin: false,
    cowReuse: 'mapcount', forkCopiesPinned: false, writeProtectSeq: false, anonExclusive: false,
    unshareAnyCow: false, mprotectTryChangeWritable: false, refuseLongtermFileWrite: false, umemForceWrite: true,
    odp: false, odpNotifier: 'ucontext', odpFault: 'gup',
    thpCowCopiesHuge: true, hmmMapOrder: false, hugetlbDontneed: false, odpHugetlb: 'hugetlb-vma',
    devicePrivate: false, migrateVma: false, makeDeviceExclusive: false, deviceCoherent: false,
  },
  'linux-4.18': {
    ...base, name: 'linux-4.18', release: '4.18',
    notes: [
      'callbacks may sleep (SRCU); start/end bracket every change; no blockable argument (4.19), no range struct (5.0), no event types (5.2), no interval notifiers (5.5)',
      'GUP takes plain references (get_user_pages_longterm); COW reuse by mapcount (reuse_swap_page)',
      'ODP: one classic notifier per ucontext with its own interval tree of umems and the notifiers_seq/notifiers_count retry check, pages faulted with get_user_pages_remote',
      'the OOM reaper gives up on an mm with blockable notifiers: it sleeps HZ and reports done, the mm gets MMF_OOM_SKIP unreaped (oom_reap_task_mm, mm_has_blockable_invalidate_notifiers, 4.16 to 4.18); assumed: every subscriber blocks (no MMU_INVALIDATE_DOES_NOT_BLOCK in the model)',
    ],
    blockableFlag: false, notifierRangeStruct: false, eventTypes: false, rangeFlags: false, intervalNotifiers: false,
    hmmRangeFault: false, follPin: false, cowReuse: 'mapcount', forkCopiesPinned: false, writeProtectSeq: false,
    anonExclusive: false, unshareAnyCow: false, mprotectTryChangeWritable: false, refuseLongtermFileWrite: false,
    umemForceWrite: true, odpNotifier: 'ucontext', odpFault: 'gup',
    thpCowCopiesHuge: true, hmmMapOrder: false, hugetlbDontneed: false, odpHugetlb: 'hugetlb-vma',
    migrateVma: false, makeDeviceExclusive: false, deviceCoherent: false,
  },
  'linux-5.8': {
    ...base, name: 'linux-5.8', release: '5.8',
    notes: [
      'event types, range flags, interval notifiers, hmm_range_fault with HMM_PFN_REQ_FAULT (new in 5.8); FOLL_PIN with the 1024 bias',
      'GUP forces a COW break for pinning and GET lookups in COW mappings (should_force_cow_break, 17839856fd58; gone in 5.9)',
      'COW reuse still by mapcount (reuse_swap_page); fork does not copy pinned pages early (5.9)',
      'ODP over interval notifiers, still faulting with get_user_pages_remote (hmm_range_fault from 5.10)',
    ],
    cowReuse: 'mapcount', gupForceCowBreak: true, forkCopiesPinned: false, writeProtectSeq: false,
    anonExclusive: false, unshareAnyCow: false, mprotectTryChangeWritable: false, refuseLongtermFileWrite: false,
    umemForceWrite: true, odpFault: 'gup', oomReapEvent: 'UNMAP',
    hmmMapOrder: false, hugetlbDontneed: false, odpHugetlb: 'hugetlb-vma',
    migrateVma: false, makeDeviceExclusive: false, deviceCoherent: false,
  },
  'linux-5.15': linux515,
  'linux-6.x': base,
};

export const PROFILE_NAMES = Object.keys(PROFILES) as ProfileName[];

/** Look a profile up by name; an unknown name is an error naming the valid ones. */
export function profileByName(name: string): KernelProfile | { error: string } {
  const p = Object.hasOwn(PROFILES, name) ? (PROFILES as Record<string, KernelProfile>)[name] : undefined;
  if (!p) return { error: `unknown profile '${name}'; valid profiles: ${PROFILE_NAMES.join(', ')}` };
  return p;
}

/** The release that introduced each interface a profile may lack. */
export const INTRODUCED_IN = {
  blockableFlag: '4.19',
  notifierRangeStruct: '5.0',
  eventTypes: '5.2',
  rangeFlags: '5.2',
  intervalNotifiers: '5.5',
  follPin: '5.6',
  hmmRangeFault: '5.8',
  odp: '3.19',
  devicePrivate: '4.14',
  migrateVma: '5.9',
  makeDeviceExclusive: '5.14',
  deviceCoherent: '6.0',
} as const;

/** What came before an interface, for the refusal's text. */
const BEFORE: Partial<Record<keyof typeof INTRODUCED_IN, string>> = {
  blockableFlag: 'before it every invalidation could sleep',
  notifierRangeStruct: 'before it callbacks got (mm, start, end) and, from 4.19, a bool blockable',
  eventTypes: 'before it the range said nothing about why it was invalidated',
  rangeFlags: '4.19 passed a bool blockable argument, 5.0 a bool blockable in struct mmu_notifier_range',
  intervalNotifiers: 'before it drivers kept their own interval trees behind a classic notifier',
  follPin: 'before it get_user_pages(FOLL_LONGTERM) took plain references',
  hmmRangeFault: 'earlier forms took a different pfn format and flags',
  odp: 'IB_ACCESS_ON_DEMAND was an unknown access flag',
  devicePrivate: 'before it ZONE_DEVICE only held persistent memory the CPU could map',
  migrateVma: '5.4 to 5.8 had migrate_vma_setup with a src_owner and no MIGRATE event, 4.14 to 5.3 one migrate_vma() call with callbacks',
  makeDeviceExclusive: 'before it a device wanting atomic access had to migrate the page to its memory',
  deviceCoherent: 'before it device memory the CPU could map was FS DAX or MEMORY_DEVICE_GENERIC, which migrate_vma could not move; a GPU migrating into its memory used device-private pages',
};

/**
 * Refuse an interface the profile's kernel did not have: returns -EINVAL and records
 * why, naming the release that introduced it. Returns 0 when available.
 */
export function requireInterface(
  profile: KernelProfile,
  feature: keyof typeof INTRODUCED_IN,
  api: string,
  report: (message: string) => void,
): number {
  if (profile[feature]) return 0;
  const before = BEFORE[feature];
  report(`${api} does not exist in ${profile.name}: it was introduced in Linux ${INTRODUCED_IN[feature]}${before ? ` (${before})` : ''}`);
  return -EINVAL;
}
