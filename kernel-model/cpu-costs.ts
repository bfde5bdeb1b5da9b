/**
 * The CPU-side cost model: virtual time the kernel (and the driver code running in it)
 * spends on the operations a driver's latency depends on, each a named parameter with a
 * documented default and its source, or marked "assumed" (DESIGN "Costs and
 * calibration"). Each is charged where the kernel spends it, with `Simulation.cpu`
 * (time on the CPU, not a sleep: allowed in atomic context):
 *
 * | parameter | charged in |
 * |---|---|
 * | pageFaultNs | memory.ts `handleMmFault`, every CPU fault (exception entry to return) |
 * | swapInIoNs | swap.ts `swapIn`, a read from the swap device (not a swap-cache hit), on top |
 * | zapPerPageNs | tlb.ts `zapPteRangeWork`, per page of the zapped span (zap_pte_range), inside the notifier window |
 * | tlbFlushNs | tlb.ts `flushTlbMmRange`, per flush (flush_tlb_mm_range with its shootdown IPIs) |
 * | notifierDispatchNs | mmu-notifier.ts, per subscriber called for an invalidation |
 * | pinPerPageNs | gup.ts `pinUserPages`/`pinUserPagesFast`, per page pinned |
 * | unpinPerPageNs | driver/umem-pinned.ts `dereg` (ib_umem_release), per page unpinned or put |
 * | mmapLockHandoffNs | sim/rw-semaphore.ts, a contended `mmap_lock` handed to a waiter (its wake-up) |
 * | hmmRangeFaultPerPageNs | driver/umem-odp.ts, per page an ODP fault asked hmm_range_fault for (caller side) |
 * | odpDmaMapPerPageNs | driver/umem-odp.ts, per page an ODP fault maps for DMA (ib_umem_odp_map_dma_single_page) |
 * | odpFaultWorkNs | driver/umem-odp.ts, once per NIC fault (mlx5_ib_eqe_pf_action's work item) |
 * | inlineMissNs | driver/umem-odp.ts, once per inline (rxe) miss instead of the work item |
 *
 * All times are virtual nanoseconds.
 *
 * A charge yields: other tasks run while the CPU time passes. The model has no page-table
 * lock, so a charge must never sit between a check of a PTE (or PMD, or a page's state)
 * and the change it guards, where the kernel holds the PTL or the folio lock: settle the
 * change, then charge (memory.ts wpPageCopy, ksm.ts writeProtectPage, huge-memory paths),
 * or re-check after the charge (swap.ts swapIn after the swap read).
 *
 * @example
 *   new Kernel({ cpuCosts: { pageFaultNs: 2_000 } }); // everything else default
 */
export interface CpuCosts {
  /** A CPU page fault of any kind, from the exception to the return to user mode (or to GUP/HMM). */
  pageFaultNs: number;
  /** The read of a swapped-out page from the swap device (a major fault), on top of `pageFaultNs`. */
  swapInIoNs: number;
  /** Clearing one PTE of a zapped range (zap_pte_range: the PTE, rmap, counters). */
  zapPerPageNs: number;
  /** One TLB flush of a range, with the shootdown IPIs to the other CPUs running the mm. */
  tlbFlushNs: number;
  /** Calling one notifier subscriber for an invalidation (SRCU/interval-tree walk and the indirect call). */
  notifierDispatchNs: number;
  /** Pinning one page (pin_user_pages: the walk, the refcount bias, the accounting). */
  pinPerPageNs: number;
  /** Releasing one pinned or referenced page (unpin_user_pages_dirty_lock: dirtying, the refcount drop). */
  unpinPerPageNs: number;
  /**
   * A contended mmap_lock handed to a waiting task: the lock is the waiter's from the
   * release on (rwsem_mark_wake grants it), but the waiter runs only after its wake-up
   * and context switch, and holds the lock meanwhile.
   */
  mmapLockHandoffNs: number;
  /** hmm_range_fault's walk per page of the range (the page present on the CPU side). */
  hmmRangeFaultPerPageNs: number;
  /** Mapping one page for the device's DMA (ib_umem_odp_map_dma_single_page: dma_map_page, IOMMU). */
  odpDmaMapPerPageNs: number;
  /**
   * The driver's work for one NIC page fault outside the mapping itself: the page-fault
   * work item (mlx5_ib_eqe_pf_action -> mlx5_ib_mr_wqe_pfault_handler or the RDMA
   * responder handler -> pagefault_single_data_segment): reading and parsing the WQE,
   * finding the mkey, taking its use count.
   */
  odpFaultWorkNs: number;
  /** rxe's own cost of one ODP miss resolved inline (rxe_odp_map_range_and_lock's fixed part). */
  inlineMissNs: number;
}

export const DEFAULT_CPU_COSTS: Readonly<CpuCosts> = Object.freeze({
  pageFaultNs: 1_000,
  swapInIoNs: 55_000,
  zapPerPageNs: 20,
  tlbFlushNs: 2_000,
  notifierDispatchNs: 50,
  pinPerPageNs: 60,
  unpinPerPageNs: 30,
  mmapLockHandoffNs: 2_000,
  hmmRangeFaultPerPageNs: 60,
  odpDmaMapPerPageNs: 65,
  odpFaultWorkNs: 10_000,
  inlineMissNs: 2_000,
});

/**
 * No CPU time at all: the timeline of order alone, where only sleeps, locks and the
 * device's costs move time. For a test or exploration of an ordering rule whose windows
 * the charges would shift or close (`new Kernel({ cpuCosts: ZERO_CPU_COSTS })`).
 */
export const ZERO_CPU_COSTS: Readonly<CpuCosts> = Object.freeze(
  Object.fromEntries(Object.keys(DEFAULT_CPU_COSTS).map((key) => [key, 0])) as unknown as CpuCosts,
);

/** Where each default comes from: a publication, or "assumed" with the reasoning. */
export const CPU_COST_SOURCES: Readonly<Record<keyof CpuCosts, string>> = Object.freeze({
  pageFaultNs: 'assumed: order of 1 us for a minor fault on x86-64 (exception entry, handle_mm_fault, return)',
  swapInIoNs: 'calibrated: a major fault is about 60 us (NP-RDMA, arXiv 2310.11062, 2023); the swap read is what remains after the minor fault and the driver\'s share',
  zapPerPageNs: 'assumed: a few cache misses per PTE in zap_pte_range',
  tlbFlushNs: 'assumed: a local flush plus the shootdown IPI round trip to the mm\'s other CPUs, order of 1 to 5 us',
  notifierDispatchNs: 'assumed: an interval-tree or SRCU list step and an indirect call',
  pinPerPageNs: 'assumed: the GUP walk and an atomic refcount update per page',
  unpinPerPageNs: 'assumed: half a pin, no walk: an atomic refcount drop and, for a writable MR, set_page_dirty_lock',
  mmapLockHandoffNs: 'assumed: a wake-up and context switch on an idle CPU, order of 1 to 5 us (rwsem_mark_wake, then try_to_wake_up)',
  hmmRangeFaultPerPageNs: 'assumed: the page-table walk per present page; with odpDmaMapPerPageNs and cost.updateEntriesPerPageNs it makes the 4 KiB to 4 MiB slope of the ASPLOS 2017 NIC fault (220 to 350 us)',
  odpDmaMapPerPageNs: 'assumed: dma_map_page through the IOMMU per page; see hmmRangeFaultPerPageNs for the calibrated slope',
  odpFaultWorkNs: 'assumed: the share of the ASPLOS 2017 fixed 220 us given to the driver\'s work item; the rest is the device\'s (cost.faultReportNs, faultInterruptNs, faultResumeNs)',
  inlineMissNs: 'calibrated: a software minor fault is 3.5 to 5.7 us (NP-RDMA, arXiv 2310.11062, 2023); rxe\'s inline miss (rxe_odp_map_range_and_lock) with the walk, the mapping and the device update lands inside it',
});

/** Defaults with overrides. */
export function cpuCosts(over: Partial<CpuCosts> = {}): CpuCosts {
  return { ...DEFAULT_CPU_COSTS, ...over };
}
