// The public face of the kernel model. Other folders import only from here.
export * from './sim/index.ts';
export * from './errno.ts';
export * from './constants.ts';
export { PROFILES, PROFILE_NAMES, profileByName, requireInterface, INTRODUCED_IN, type KernelProfile, type ProfileName } from './profile.ts';
export { Kernel, type KernelOptions, type NotifierStreamEvent } from './kernel.ts';
export { CPU_COST_SOURCES, DEFAULT_CPU_COSTS, ZERO_CPU_COSTS, cpuCosts, type CpuCosts } from './cpu-costs.ts';
export { MmStruct } from './mm.ts';
export { Process, MS_ASYNC, MS_SYNC, MS_INVALIDATE } from './process.ts';
export { Vma, VM_READ, VM_WRITE, VM_EXEC, VM_SHARED, VM_MAYREAD, VM_MAYWRITE, VM_MAYSHARE, VM_IO, VM_PFNMAP, VM_DONTCOPY, VM_LOCKED, VM_HUGETLB, VM_HUGEPAGE, VM_NOHUGEPAGE } from './vma.ts';
export { File } from './file.ts';
export {
  PhysicalMemory, GUP_PIN_COUNTING_BIAS, ZERO_PFN,
  PG_DIRTY, PG_WRITEBACK, PG_LOCKED, PG_UPTODATE, PG_ANON, PG_SWAPBACKED, PG_ANON_EXCLUSIVE, PG_PRIVATE,
  PG_LRU, PG_ACTIVE, PG_REFERENCED, PG_LAZYFREE, PG_MOVABLE_ZONE, PG_SWAPCACHE, PG_ALLOCATED, PG_KSM, PG_HUGETLB, PG_ZONE_DEVICE, type RmapItem,
} from './page-frames.ts';
export {
  PageTable, PTE_PRESENT, PTE_WRITE, PTE_ACCESSED, PTE_DIRTY, PTE_SWAP, PTE_PROTNONE, PTE_MIGRATION,
  pteFrame, pteFlags, ptePresent, pteWrite, pteHas, makePte, isMigrationEntry, makeMigrationEntry,
  PTE_DEVICE_PRIVATE, isDevicePrivateEntry, makeDevicePrivateEntry, PTE_DEVICE_EXCLUSIVE, isDeviceExclusiveEntry,
} from './page-table.ts';
export { DmaBus } from './dma-bus.ts';
export {
  TransparentHugepage, HPAGE_PMD_ORDER, HPAGE_PMD_NR, HPAGE_PMD_SIZE, VM_FAULT_FALLBACK, thpVmaAllowable, thpSuitable,
  doHugePmdAnonymousPage, splitHugePmd, splitPartialHugePmds, splitHugePage, collapseHugePage, khugepagedScanMm, copyHugePmd,
  type ThpEnabled,
} from './huge-memory.ts';
export { HugetlbPool, HUGETLB_PAGE_SIZE, HUGETLB_PAGE_ORDER, isVmHugetlbPage, hugetlbFault, hugetlbWp } from './hugetlb.ts';
export { Lru } from './lru.ts';
export { SwapArea } from './swap.ts';
export { handleMmFault, faultInPage, notifyPageChange, wpPageCopy, zapPteRange, FAULT_FLAG_WRITE, FAULT_FLAG_UNSHARE, FAULT_FLAG_REMOTE } from './memory.ts';
export { findOrReadPage, folioMarkDirty, folioMkclean, writebackPage, writebackFile, truncatePages } from './filemap.ts';
export { mmput, exitMmap } from './exit.ts';
export { MMAP_BASE } from './mmap.ts';
export { doBrk, setBrkBase, sbrk } from './brk.ts';
export {
  MmuNotifyEvent, MMU_NOTIFIER_RANGE_BLOCKABLE, mmuNotifierRangeInit, mmuNotifierRangeBlockable, eventName,
  type MmuNotifierRange,
} from './mmu-notifier-range.ts';
export {
  hmmRangeFault, hmmRangeInit, hmmPfnRecord, hmmPfnEncode, hmmPfnDecode, HMM_RANGE_DEFAULT_TIMEOUT_NS,
  HMM_PFN_VALID, HMM_PFN_WRITE, HMM_PFN_ERROR, HMM_PFN_DMA_MAPPED, HMM_PFN_P2PDMA, HMM_PFN_P2PDMA_BUS,
  HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, type HmmRange, type HmmPfn,
} from './hmm-range-fault.ts';

export { DmaBuf, DmaBufAttachment, type DmaBufImporterOps, type DmaBufExporterOptions } from './dma-buf.ts';
export {
  getUserPages, getUserPagesFast, getUserPagesRemote, pinUserPages, pinUserPagesFast, folioIsLongtermPinnable, putUserPages, putUserPagesDirty, unpinUserPages,
  unpinUserPagesDirtyLock, accountPinnedVm, unaccountPinnedVm,
  FOLL_WRITE, FOLL_GET, FOLL_FORCE, FOLL_LONGTERM, FOLL_PIN, FOLL_PCI_P2PDMA, FOLL_TOUCH, FOLL_REMOTE,
} from './gup.ts';
export { migratePage, migrationEntryWait, type MigrateReason } from './migrate.ts';
export { startDamon, type DamonOptions, type DamonRegion, type DamonStats } from './damon.ts';
export {
  startKsmd, ksmDoScan, ksmStats, ksmdRunning, ksmMergeable, ksmUnmergeable, VM_MERGEABLE, KSM_PAGES_TO_SCAN, KSM_SLEEP_NS,
  type KsmStats, type KsmdOptions,
} from './ksm.ts';
export { flushTlbMmRange, flushTlbPage, tlbFinishMmu, zapPteRangeWork, gatherPage, secondaryTlbsFlushedByArch, type GatheredSpan } from './tlb.ts';
export {
  allocPages, freePages, mightAlloc, fsReclaimAcquire, fsReclaimRelease, currentGfpContext, inReclaim, minWatermark, gfpName,
  gfpflagsAllowBlocking, memallocNoreclaimSave, memallocNoreclaimRestore, memallocNofsSave, memallocNofsRestore,
  memallocNoioSave, memallocNoioRestore, FS_RECLAIM_MAP, SWAP_CLUSTER_MAX, MAX_RECLAIM_RETRIES,
  GFP_KERNEL, GFP_ATOMIC, GFP_NOWAIT, GFP_NOFS, GFP_NOIO, GFP_USER, GFP_HIGHUSER_MOVABLE,
  __GFP_HIGH, __GFP_IO, __GFP_FS, __GFP_DIRECT_RECLAIM, __GFP_KSWAPD_RECLAIM, __GFP_RECLAIM, __GFP_NOWARN, __GFP_NOLOCKDEP,
  __GFP_MOVABLE, __GFP_HARDWALL, __GFP_HIGHMEM, PF_MEMALLOC, PF_MEMALLOC_NOFS, PF_MEMALLOC_NOIO,
} from './page-alloc.ts';
export { startNumaBalancing, type NumaBalancingOptions, type NumaBalancingStats } from './numa-balancing.ts';
export { shrinkPage, shrinkLru, reclaimRange, startKswapd, newReclaimStats, type ReclaimStats, type KswapdOptions } from './vmscan.ts';
export { startFlusher, type FlusherOptions, type FlusherStats } from './writeback.ts';
export { oomKill, oomReapTaskMm, MAX_OOM_REAP_RETRIES, OOM_REAP_RETRY_NS, type OomReapResult } from './oom-kill.ts';

export { inNotifierCallback, refuseInterface } from './notifier-callback.ts';

// ---- mmu notifiers (classic and interval) --------------------------------------------
export { IntervalTree, IntervalTreeNode } from './interval-tree.ts';
export {
  MmuNotifier, MmuNotifierSubscriptions, INVALIDATE_RANGE_START_MAP,
  mmuNotifierRegister, __mmuNotifierRegister, mmuNotifierGet, mmuNotifierGetLocked, mmuNotifierPut,
  mmuNotifierUnregister, mmuNotifierSynchronize, mmuNotifierSubscriptionsDestroy,
  mmuNotifierInvalidateRangeStart, mmuNotifierInvalidateRangeStartNonblock, mmuNotifierInvalidateRangeEnd,
  mmuNotifierRelease, mmuNotifierClearFlushYoung, mmuNotifierClearYoung, mmuNotifierTestYoung,
  mmuNotifierArchInvalidateSecondaryTlbs, mmuNotifierInvalidatePage,
  type MmuNotifierOps, type NotifierResult,
} from './mmu-notifier.ts';
export {
  MmuIntervalNotifier, mmuIntervalNotifierInsert, mmuIntervalNotifierInsertLocked, mmuIntervalNotifierRemove,
  mmuIntervalReadBegin, mmuIntervalReadRetry, mmuIntervalCheckRetry, mmuIntervalSetSeq,
  type MmuIntervalNotifierOps, type MmuIntervalNotifierInsertOptions, type SubscriberLock,
} from './mmu-interval-notifier.ts';
// ---- end of mmu notifiers ------------------------------------------------------------
export {
  VARIANTS, VARIANT_NAMES, DRIVER_PROPOSALS, NO_PROPOSAL, OUTCOME_LABELS, PG_DMA_PINNED, DMA_IDLE_POLL_NS,
  defineVariant, isVariantDefinition, variantByName, applyVariants, proposal, gupReferences, waitForDmaIdle,
  type KernelVariant, type AppliedVariant, type ProposalSwitches, type ProfilePatch, type OutcomeLabel, type VariantExpectation,
} from './variant.ts';
export { DIRTY_EXPIRE_INTERVAL_NS, DIRTY_WRITEBACK_INTERVAL_NS } from './writeback.ts';
export {
  MemoryType, DEVICE_PFN_BASE, DevPagemap, memremapPages, isDevicePfn, isZoneDevicePage, isDeviceCoherentPage, pagePgmap, zoneDevicePageInit,
  devicePageGet, devicePagePut, devicePageRefcount, devicePageLocked, devicePageTrylock, devicePageUnlock, devicePageMappings,
  type DevPagemapOps, type DevPagemapInit, type VmFault,
} from './memremap.ts';
export {
  MIGRATE_VMA_SELECT_SYSTEM, MIGRATE_VMA_SELECT_DEVICE_PRIVATE, MIGRATE_VMA_SELECT_DEVICE_COHERENT,
  MIGRATE_PFN_VALID, MIGRATE_PFN_MIGRATE, MIGRATE_PFN_WRITE, MIGRATE_PFN_SHIFT,
  migratePfn, migratePfnToPage, migratePfnFlags, migrateVmaInit, migrateVmaSetup, migrateVmaPages, migrateVmaFinalize,
  migrateDeviceRange, migrateDevicePages, migrateDeviceFinalize, migrateDeviceCoherentFolio,
  type MigrateVma,
} from './migrate-device.ts';
export { makeDeviceExclusive, removeDeviceExclusiveEntry, type DeviceExclusiveResult } from './device-exclusive.ts';
