/**
 * The collection of deliberately broken drivers: each a small change of a reference
 * strategy (driver/umem-odp.ts, umem-pinned.ts, umem-holdoff.ts) reproducing one
 * real-world bug, with the sanitizer checker expected to catch it. The fuzzer
 * (scenarios/fuzz) runs them by name; its tests check that each is caught, by random
 * search or, where the registry says `directed`, by a dedicated test.
 *
 * The driver may not import the sanitizer (it judges the driver), so checker ids are
 * plain strings here; scenarios/fuzz checks them against the sanitizer's ids.
 *
 * @example
 *   const b = brokenDriver('no-set-seq')!;
 *   const strategy = b.strategy({ holdoffTimeoutNs: 20_000, batchWindowNs: 50_000 });
 */
import type { ProfileName } from '../../kernel-model/index.ts';
import type { UmemStrategy } from '../umem.ts';
import { noSetSeqStrategy } from './no-set-seq.ts';
import { readRetryUnlockedStrategy } from './read-retry-unlocked.ts';
import { installAfterUnlockStrategy } from './install-after-unlock.ts';
import { deferredInvalidationStrategy } from './deferred-invalidation.ts';
import { zapWithoutSyncStrategy } from './zap-without-sync.ts';
import { holdoffEarlyReturnStrategy } from './holdoff-early-return.ts';
import { sleepInNonblockableStrategy } from './sleep-in-nonblockable.ts';
import { noDirtyAtUnmapStrategy } from './no-dirty-at-unmap.ts';
import { follGetForkStrategy } from './foll-get-fork.ts';
import { unpinNoDirtyStrategy } from './unpin-no-dirty.ts';
import { mmputUnderMutexStrategy } from './mmput-under-mutex.ts';
import { ignoreProtectionVmaStrategy } from './ignore-protection-vma.ts';
import { noClampStrategy } from './no-clamp.ts';
import { allocUnderUmemMutexStrategy } from './alloc-under-umem-mutex.ts';
import { skipEveryMigrateStrategy } from './skip-every-migrate.ts';
import { checkRetryInstallStrategy } from './check-retry-install.ts';
import { removeBeforeFenceStrategy } from './remove-before-fence.ts';
import { holdoffNoWaitStrategy } from './holdoff-no-wait.ts';
import { pinWithoutWriteStrategy } from './pin-without-write.ts';

/** Parameters a strategy factory may need (the fuzzer's choices; defaults in `DEFAULT_BROKEN_PARAMS`). */
export interface BrokenParams {
  /** Holdoff variants: how long an invalidation waits for DMA (virtual ns). */
  holdoffTimeoutNs: number;
  /** The 2011 deferred-invalidation variant: its worker's batching window (virtual ns). */
  batchWindowNs: number;
}

export const DEFAULT_BROKEN_PARAMS: Readonly<BrokenParams> = Object.freeze({ holdoffTimeoutNs: 20_000, batchWindowNs: 50_000 });

export interface BrokenDriver {
  name: string;
  /** The reference strategy it is a change of. */
  base: 'odp' | 'pinned' | 'holdoff';
  /** The NIC it runs on: a faultable one registers ON_DEMAND MRs through the device's `odp` strategy. */
  nic: 'faultable' | 'non-faultable';
  /** The kernel profile the bug shows on. */
  profile: ProfileName;
  strategy(params: BrokenParams): UmemStrategy;
  /** What is wrong, in one sentence. */
  bug: string;
  /** The real-world bug or rule it reproduces. */
  realWorld: string;
  /** The sanitizer checker (violation id) expected to catch it. */
  expectedChecker: string;
  /**
   * When the expected checker also reports things the reference strategy legitimately
   * causes (pinned-incoherence for a pinned MR), what the report must show to count as
   * this bug (the fuzzer turns it into a predicate over the violation's trail).
   */
  evidence?: string;
  /** Caught by random search (`fuzz`) or only by a dedicated test (`directed`, with why). */
  detection: 'fuzz' | 'directed';
  /** For `directed`: why random search does not reach it. */
  whyDirected?: string;
  /** The file with the change. */
  file: string;
}

export const BROKEN_DRIVERS: readonly BrokenDriver[] = [
  {
    name: 'no-set-seq', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => noSetSeqStrategy(),
    bug: 'invalidate never calls mmu_interval_set_seq',
    realWorld: 'missed collision, hazard H2 (kernel rules 26-28)',
    expectedChecker: 'notifier-contract', detection: 'fuzz', file: 'driver/broken/no-set-seq.ts',
  },
  {
    name: 'read-retry-unlocked', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => readRetryUnlockedStrategy(),
    bug: 'the fault path checks mmu_interval_read_retry before taking the umem mutex',
    realWorld: 'read_retry without the driver lock, hazard H2 (kernel rule 28)',
    expectedChecker: 'notifier-contract', detection: 'fuzz', file: 'driver/broken/read-retry-unlocked.ts',
  },
  {
    name: 'install-after-unlock', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => installAfterUnlockStrategy(),
    bug: 'device entries installed after the umem mutex is dropped',
    realWorld: 'SPTEs installed after the lock, hazard H2 (kernel rule 28)',
    expectedChecker: 'notifier-contract', detection: 'fuzz', file: 'driver/broken/install-after-unlock.ts',
  },
  {
    name: 'deferred-invalidation', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: (p) => deferredInvalidationStrategy({ batchWindowNs: p.batchWindowNs }),
    bug: 'the callback takes page references and returns at once; a worker zaps and syncs later',
    realWorld: 'the 2011 IB mmu-notifier prototype (Sagi Grimberg, seed 004): munmap then mmap at the same address while the NIC still uses the old page',
    expectedChecker: 'use-after-invalidate', detection: 'fuzz', file: 'driver/broken/deferred-invalidation.ts',
  },
  {
    name: 'zap-without-sync', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => zapWithoutSyncStrategy(),
    bug: 'invalidate zaps the device page table but never waits for a sync',
    realWorld: 'rdma C5 / kernel rule 11: the translation cache still holds the entry after the callback returned',
    expectedChecker: 'use-after-invalidate', detection: 'fuzz', file: 'driver/broken/zap-without-sync.ts',
  },
  {
    name: 'holdoff-early-return', base: 'holdoff', nic: 'non-faultable', profile: 'linux-6.x',
    strategy: (p) => holdoffEarlyReturnStrategy({ holdoffTimeoutNs: p.holdoffTimeoutNs }),
    bug: 'on holdoff timeout the invalidation returns with DMA in flight and the device unfenced',
    realWorld: 'the holdoff design of seed 000 (rdma H3) with a bounded wait taken for a bounded obligation (kernel rule 11)',
    expectedChecker: 'use-after-invalidate', detection: 'fuzz', file: 'driver/broken/holdoff-early-return.ts',
  },
  {
    name: 'sleep-in-nonblockable', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => sleepInNonblockableStrategy(),
    bug: 'invalidate takes the umem mutex (and waits for the device) in a non-blockable range',
    realWorld: 'rdma C2, kernel rules 15-17, hazard H5: the OOM reaper\'s invalidation must not sleep, even when the lock happens to be free',
    expectedChecker: 'sleep-in-atomic', detection: 'fuzz', file: 'driver/broken/sleep-in-nonblockable.ts',
  },
  {
    name: 'no-dirty-at-unmap', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => noDirtyAtUnmapStrategy(),
    bug: 'pages mapped writable are not marked dirty when the mirror drops them',
    realWorld: 'rdma C8 (ib_umem_odp_unmap_dma_pages dirties written pages)',
    expectedChecker: 'lost-write', detection: 'fuzz', file: 'driver/broken/no-dirty-at-unmap.ts',
  },
  {
    name: 'foll-get-fork', base: 'pinned', nic: 'non-faultable', profile: 'linux-6.x',
    strategy: () => follGetForkStrategy(),
    bug: 'pages taken with get_user_pages (FOLL_GET, 5.8-era flags) instead of FOLL_PIN; then fork and a parent write',
    realWorld: 'the 2020 has_pinned thread (hazard H8, kernel rules 57, 66, 67): fork protects only FOLL_PIN pins',
    expectedChecker: 'pinned-incoherence',
    evidence: 'the incoherence comes from a COW break in the process (a write fault after fork), not from munmap or MADV_DONTNEED',
    detection: 'fuzz', file: 'driver/broken/foll-get-fork.ts',
  },
  {
    // linux-5.8: writable long-term pins of shared file mappings were still allowed (refused
    // since 6.5), so the page the device wrote can be a page-cache page that writeback cleaned.
    name: 'unpin-no-dirty', base: 'pinned', nic: 'non-faultable', profile: 'linux-5.8',
    strategy: () => unpinNoDirtyStrategy(),
    bug: 'deregistration unpins without dirtying pages the device wrote',
    realWorld: 'kernel rule 63 and the 2018 put_user_pages thread (John Hubbard)',
    expectedChecker: 'lost-write', detection: 'fuzz', file: 'driver/broken/unpin-no-dirty.ts',
  },
  {
    name: 'mmput-under-mutex', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => mmputUnderMutexStrategy(),
    bug: 'the fault path drops the mm reference while holding the umem mutex',
    realWorld: 'CVE-2022-48675, "IB/core: Fix a nested dead lock as part of ODP flow" (rdma C10)',
    expectedChecker: 'deadlock', detection: 'fuzz', file: 'driver/broken/mmput-under-mutex.ts',
  },
  {
    name: 'ignore-protection-vma', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => ignoreProtectionVmaStrategy(),
    bug: 'event filtering treats PROTECTION_VMA as harmless',
    realWorld: 'hazard H6, kernel rule 22: only MIGRATE/EXCLUSIVE events of one\'s own owner may be skipped; mprotect(PROT_READ) leaves the device writable',
    expectedChecker: 'stale-translation', detection: 'fuzz', file: 'driver/broken/ignore-protection-vma.ts',
  },
  {
    name: 'no-clamp', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => noClampStrategy(),
    bug: 'the invalidation range is not clamped to the MR',
    realWorld: 'hazard H19, kernel rule 13: interval subscribers get the whole operation range',
    expectedChecker: 'stale-translation', detection: 'fuzz', file: 'driver/broken/no-clamp.ts',
  },
  {
    name: 'alloc-under-umem-mutex', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => allocUnderUmemMutexStrategy(),
    bug: 'the fault path allocates a page with GFP_KERNEL while holding the umem mutex its invalidate takes',
    realWorld: 'mlx5, 2025: "IB/mlx5: Fix potential deadlock in MR deregistration" (2ed25aa7) and the fs_reclaim -> umem_mutex ' +
      'annotation in ib_init_umem_odp (3f5f6321); direct reclaim invalidates and the callback takes the mutex again',
    expectedChecker: 'lock-order', detection: 'fuzz', file: 'driver/broken/alloc-under-umem-mutex.ts',
  },
  {
    name: 'check-retry-install', base: 'odp', nic: 'faultable', profile: 'linux-6.x',
    strategy: () => checkRetryInstallStrategy(),
    bug: 'the fault path trusts mmu_interval_check_retry outside the lock and installs without read_retry',
    realWorld: 'kernel rule 29: mmu_interval_check_retry is a lockless hint; only read_retry under the driver lock may let entries in (H2)',
    expectedChecker: 'notifier-contract', detection: 'fuzz', file: 'driver/broken/check-retry-install.ts',
  },
  {
    name: 'remove-before-fence', base: 'holdoff', nic: 'non-faultable', profile: 'linux-6.x',
    strategy: (p) => removeBeforeFenceStrategy({ holdoffTimeoutNs: p.holdoffTimeoutNs }),
    bug: 'deregistration removes the interval notifier before it fences the device',
    realWorld: 'rdma C9 (ib_umem_odp_release: stop the device, then remove the notifier); the notifier must outlive every device use',
    expectedChecker: 'teardown-order', detection: 'fuzz', file: 'driver/broken/remove-before-fence.ts',
  },
  {
    name: 'holdoff-no-wait', base: 'holdoff', nic: 'non-faultable', profile: 'linux-6.x',
    strategy: (p) => holdoffNoWaitStrategy({ holdoffTimeoutNs: p.holdoffTimeoutNs }),
    bug: 'the invalidation zaps at once instead of holding off for DMA in progress',
    realWorld: 'the holdoff design of seed 000 (rdma H3): pending operations are to complete, not to fail',
    expectedChecker: 'holdoff-liveness', detection: 'fuzz', file: 'driver/broken/holdoff-no-wait.ts',
  },
  {
    // linux-5.8: GUP does not unshare a page pinned for read (rule 61 came with 5.19).
    name: 'pin-without-write', base: 'pinned', nic: 'non-faultable', profile: 'linux-5.8',
    strategy: () => pinWithoutWriteStrategy(),
    bug: 'a writable MR is pinned without FOLL_WRITE, so the zero page or a COW-shared page is pinned',
    realWorld: 'ib_umem_get\'s FOLL_WRITE (and FOLL_FORCE) before 6.2, kernel rules 54, 58, 61: a read pin takes the zero page or a page shared with a child',
    expectedChecker: 'shared-page-write', detection: 'fuzz', file: 'driver/broken/pin-without-write.ts',
  },
];

/** A broken driver by name. */
export function brokenDriver(name: string): BrokenDriver | undefined {
  return BROKEN_DRIVERS.find((b) => b.name === name);
}

export {
  noSetSeqStrategy, readRetryUnlockedStrategy, installAfterUnlockStrategy, deferredInvalidationStrategy, zapWithoutSyncStrategy,
  holdoffEarlyReturnStrategy, sleepInNonblockableStrategy, noDirtyAtUnmapStrategy, follGetForkStrategy, unpinNoDirtyStrategy,
  mmputUnderMutexStrategy, ignoreProtectionVmaStrategy, noClampStrategy, allocUnderUmemMutexStrategy,
  checkRetryInstallStrategy, removeBeforeFenceStrategy, holdoffNoWaitStrategy, pinWithoutWriteStrategy,
  // Not in BROKEN_DRIVERS yet: the fuzzer has no command that migrates memory to a device.
  skipEveryMigrateStrategy,
};
