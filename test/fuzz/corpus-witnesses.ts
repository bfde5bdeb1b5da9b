/**
 * The witness of each regression-corpus entry (test/fuzz/corpus/*.json): a predicate over
 * the replayed run's trace records that is true only when the run reached the racy
 * interleaving the entry was kept for. An entry that replays violation-free without its
 * witness passes trivially (the timeline moved the race away, as the CPU-cost calibration
 * did to every timestamp), which is worse than no entry: regressions.test.ts fails it.
 *
 * Most witnesses look for a `race-guard` record (kernel-model/sim/trace.ts): the model's
 * check against that race took its racy branch, named by the kernel function whose check it
 * models. The others read records the trace already had (lock contention, GUP pins).
 */
import type { TraceRecord } from '../../kernel-model/sim/index.ts';

export interface Witness {
  /** The interleaving, in words. */
  describe: string;
  holds(records: readonly TraceRecord[]): boolean;
}

type Rec<T extends TraceRecord['type']> = Extract<TraceRecord, { type: T }>;

function guards(records: readonly TraceRecord[], fn: string, what: string): Rec<'race-guard'>[] {
  return records.filter((r): r is Rec<'race-guard'> => r.type === 'race-guard' && r.fn === fn && r.what === what);
}

/** A race-guard record of `fn` meeting `what`. */
function guard(fn: string, what: string): (records: readonly TraceRecord[]) => boolean {
  return (records) => guards(records, fn, what).length > 0;
}

/** A record after `after` (by seq) about the same node and frame, of one of `types`. */
function laterOnFrame(records: readonly TraceRecord[], after: Rec<'race-guard'>, types: readonly string[], before = Infinity): boolean {
  return records.some((r) => r.seq > after.seq && r.seq < before && types.includes(r.type) &&
    'frame' in r && r.frame === after.frame && 'node' in r && r.node === after.node);
}

/** The syscall task `task` was inside at record `seq` (its last syscall-begin without an end). */
function syscallAt(records: readonly TraceRecord[], task: number | null, seq: number): Rec<'syscall-begin'> | null {
  let cur: Rec<'syscall-begin'> | null = null;
  for (const r of records) {
    if (r.seq >= seq) break;
    if (r.task !== task) continue;
    if (r.type === 'syscall-begin') cur = r;
    else if (r.type === 'syscall-end') cur = null;
  }
  return cur;
}

/**
 * A page-cache frame pinned (FOLL_PIN) by two processes of one node at once, and one of
 * them exiting while both pins were held: the pin-leak ledger's release attribution
 * (sanitizer/pin-ledger.ts) is exercised only then.
 */
function twoPinsOneFrameThenExit(records: readonly TraceRecord[]): boolean {
  const pidOf = new Map<number, number | null>();
  for (const r of records) if (r.type === 'task-spawn') pidOf.set(r.id, r.pid);
  // node:frame -> pid -> pins held
  const held = new Map<string, Map<number, number>>();
  for (const r of records) {
    if (r.type === 'gup' && r.pin) {
      const pid = pidOf.get(r.task ?? -1);
      if (pid === undefined || pid === null) continue;
      for (const f of r.frames) {
        const k = `${r.node}:${f}`;
        const m = held.get(k) ?? new Map<number, number>();
        m.set(pid, (m.get(pid) ?? 0) + 1);
        held.set(k, m);
      }
    } else if (r.type === 'gup-release' && r.pin) {
      const pid = pidOf.get(r.task ?? -1);
      for (const f of r.frames) {
        const m = held.get(`${r.node}:${f}`);
        if (!m || pid === undefined || pid === null) continue;
        const n = (m.get(pid) ?? 0) - 1;
        if (n > 0) m.set(pid, n);
        else m.delete(pid);
      }
    } else if (r.type === 'syscall-begin' && r.name === 'exit') {
      for (const [k, m] of held) {
        if (k.startsWith(`${r.node}:`) && m.size >= 2 && m.has(r.pid)) return true;
      }
    }
  }
  return false;
}

const numaHintAfterWriteback: Witness = {
  describe: 'do_numa_page kept a NUMA hint of a clean shared file page read-only on a write, after writeback cleaned that page and dropped its buffers',
  holds: (records) => guards(records, 'do_numa_page', 'hint-kept-readonly-no-buffers').some((g) =>
    records.some((r) => r.type === 'writeback' && r.seq < g.seq && r.frame === g.frame && r.node === g.node)),
};

const pageoutSharedKsm: Witness = {
  describe: 'MADV_PAGEOUT (madvise_cold_or_pageout_pte_range) met a KSM page another mapping also maps, and left it',
  holds: guard('madvise_cold_or_pageout_pte_range', 'ksm-mapped-shared'),
};

const pageMkwriteVsReclaim: Witness = {
  describe: 'a write fault slept on the folio lock in page_mkwrite, and the page was reclaimed (or its PTE or page-cache slot changed) meanwhile: do_page_mkwrite, do_wp_page or do_shared_fault re-checked and retried',
  holds: (records) => guards(records, 'do_page_mkwrite', 'folio-lock-wait').some((g) =>
    records.some((r) => r.seq > g.seq && r.type === 'race-guard' && r.frame === g.frame && r.node === g.node &&
      ((r.fn === 'do_page_mkwrite' && r.what === 'folio-gone') || (r.fn === 'do_wp_page' && r.what === 'pte-changed') ||
        (r.fn === 'do_shared_fault' && r.what === 'page-changed')))),
};

export const CORPUS_WITNESSES: Readonly<Record<string, Witness>> = {
  'holdoff-numa-hint-after-writeback.json': numaHintAfterWriteback,
  'pinned-numa-retry-vs-fast-scan.json': {
    describe: 'one access kept faulting: each NUMA hinting fault failed to migrate a pinned page, found its PTE changed (do_numa_page !pte_same) and returned to fault again, more than 190 times in a row (the depth at which the recursive retry overflowed the stack)',
    holds: (records) => guards(records, 'do_numa_page', 'pte-changed').length > 190,
  },
  'holdoff-lazyfree-ksm-vs-merge.json': {
    describe: 'reclaim discarded a lazyfree KSM page from a process that never called MADV_FREE: the other sharer freed it while ksmd was merging (try_to_unmap_one, lazyfree-ksm-discard)',
    holds: (records) => {
      const mmsByFrame = new Map<string, Set<number | undefined>>();
      for (const g of guards(records, 'try_to_unmap_one', 'lazyfree-ksm-discard')) {
        const key = `${g.node}:${g.frame}`;
        mmsByFrame.set(key, (mmsByFrame.get(key) ?? new Set()).add(g.mm));
      }
      return [...mmsByFrame.values()].some((mms) => mms.size >= 2);
    },
  },
  'holdoff-pageout-shared-ksm-page.json': pageoutSharedKsm,
  'odp-pageout-shared-ksm-page.json': pageoutSharedKsm,
  'holdoff-swap-free-vs-reclaim.json': {
    describe: 'free_swap_and_cache dropped the last swap reference of a swap-cache folio reclaim held locked (between try_to_unmap and __remove_mapping): its folio_trylock failed, and reclaim finished with that folio later',
    holds: (records) => guards(records, 'free_swap_and_cache', 'folio-locked').some((g) => laterOnFrame(records, g, ['reclaim'])),
  },
  'holdoff-swapin-page-mapped-by-child.json': {
    describe: "do_swap_page found a swap-cache page on the slot's last swap entry that another PTE (a fork's child) still maps, and did not take it as exclusive",
    holds: guard('do_swap_page', 'mapped-not-exclusive'),
  },
  'holdoff-truncate-vs-mprotect-split.json': {
    describe: 'truncation (unmap_mapping_range) reached a VMA piece that a concurrent mprotect split off after the walk began',
    holds: guard('unmap_mapping_range', 'vma-split-during-walk'),
  },
  'odp-ksm-swapin-reuse.json': {
    describe: 'do_swap_page found, on the last swap entry, a swap-cache page that is a KSM page or that another process maps, and did not take it as exclusive',
    holds: (records) => guard('do_swap_page', 'ksm-not-exclusive')(records) || guard('do_swap_page', 'mapped-not-exclusive')(records),
  },
  'odp-madv-free-redirtied.json': {
    describe: "try_to_unmap_one's MADV_FREE check found a lazily-freed page reclaim chose to discard while clean dirtied since (a CLEAR callback's set_page_dirty)",
    holds: guard('try_to_unmap_one', 'lazyfree-folio-redirtied'),
  },
  'odp-migrate-vs-munmap.json': {
    describe: "a migration's unmap (try_to_migrate_one) found a PTE of the page gone: a concurrent zap took it while the CLEAR's callbacks ran",
    holds: (records) => guard('try_to_migrate_one', 'pte-gone')(records) || guard('migrate_pages', 'freed-by-owner')(records),
  },
  'odp-mkclean-after-munmap.json': {
    describe: "folio_mkclean's PROTECTION_PAGE found the PTE it was cleaning changed after the callbacks (page_vma_mkclean_one's re-walk): a concurrent MAP_FIXED mmap or munmap cleared it",
    holds: guard('page_vma_mkclean_one', 'pte-changed'),
  },
  'odp-mkclean-vs-mprotect-split.json': {
    describe: "folio_mkclean's rmap walk reached a VMA piece a concurrent mprotect split off after the walk began",
    holds: guard('folio_mkclean', 'vma-split-during-walk'),
  },
  'odp-page-mkwrite-vs-reclaim-freed.json': pageMkwriteVsReclaim,
  'odp-swapin-ksm-page.json': {
    describe: 'do_swap_page (write) found a KSM page in the swap cache on its last swap entry, and did not take it as exclusive (ksm_might_need_to_copy)',
    holds: guard('do_swap_page', 'ksm-not-exclusive'),
  },
  'holdoff-pwrite-vs-truncate.json': {
    describe: "a pwrite waited for the inode lock (generic_file_write_iter's inode_lock) an ftruncate held while its unmap_mapping_range was held off",
    holds: (records) => records.some((r) => {
      if (r.type !== 'lock-contend' || !r.lock.endsWith('.i_rwsem')) return false;
      return syscallAt(records, r.task, r.seq)?.name === 'pwrite' && syscallAt(records, r.owner, r.seq)?.name === 'ftruncate';
    }),
  },
  'odp-truncate-vs-extend.json': {
    describe: "an ftruncate waited for the inode lock (do_truncate's inode_lock) another ftruncate held",
    holds: (records) => records.some((r) => {
      if (r.type !== 'lock-contend' || !r.lock.endsWith('.i_rwsem')) return false;
      const mine = syscallAt(records, r.task, r.seq);
      const theirs = syscallAt(records, r.owner, r.seq);
      return mine?.name === 'ftruncate' && theirs?.name === 'ftruncate';
    }),
  },
  'pinned-exit-two-pins-one-frame.json': {
    describe: 'two processes of one node pinned one page-cache frame, and one of them exited holding its pin',
    holds: twoPinsOneFrameThenExit,
  },
  'pinned-two-pins-one-page-cache-frame.json': {
    describe: 'two processes of one node pinned one page-cache frame, and one of them exited holding its pin',
    holds: twoPinsOneFrameThenExit,
  },
  'pinned-swapin-vs-reclaim.json': {
    describe: 'do_swap_page waited for the lock of a swap-cache folio reclaim held (folio_lock_or_retry), reclaim finishing with it meanwhile',
    holds: (records) => guards(records, 'do_swap_page', 'folio-lock-wait').some((g) => laterOnFrame(records, g, ['reclaim'])),
  },
};
