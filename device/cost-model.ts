/**
 * The NIC's cost model: every latency the device charges, as a named parameter with a
 * default and where that default comes from. Where nothing is published the default is
 * marked "assumed" (DESIGN "Device", rdma (c) "Published numbers" and open question 3).
 * All times are virtual nanoseconds; bandwidths are bytes per nanosecond (1 B/ns = 1 GB/s).
 *
 * The fabric's own latency and bandwidth are in `FabricOptions` (fabric.ts).
 *
 * @example
 *   const costs = costModel({ syncNs: 20_000 }); // everything else default
 */
export interface CostModel {
  /** Doorbell (MMIO write) until the NIC has fetched the WQE. */
  doorbellNs: number;
  /**
   * Per work request processing in the send engine. Pipelined: it delays the message's
   * departure, not the processing of the next WQE.
   */
  wqeProcessingNs: number;
  /**
   * Latency of the PCIe reads of a message (gather, or a READ response at the responder).
   * Pipelined like `wqeProcessingNs`: it delays the departure; the page reads occupy the
   * engine only for their bandwidth time.
   */
  dmaReadLatencyNs: number;
  /** PCIe payload bandwidth: a page access occupies its QP's engine for bytes / this. */
  pcieBytesPerNs: number;
  /** Extra cost of a page access whose translation came from the translation cache. */
  translationHitNs: number;
  /** Extra cost of a page access that walked the device page table (cache miss). */
  translationMissNs: number;
  /** Per incoming request on the responder. Pipelined: it delays the answer (ACK, NAK, response). */
  responderProcessingNs: number;
  /** Read-modify-write of an atomic at the responder (in addition to its two accesses). */
  atomicNs: number;
  /** Writing a completion queue entry. */
  cqeNs: number;
  /** Fixed cost of an update-entries command (a UMR that populates translations). */
  updateEntriesBaseNs: number;
  /** Per page written by an update-entries command. */
  updateEntriesPerPageNs: number;
  /** Fixed cost of a zap-entries command (a UMR that clears translations). */
  zapEntriesBaseNs: number;
  /** Per page cleared by a zap-entries command. */
  zapEntriesPerPageNs: number;
  /** Latency of a sync command (fence of the translation cache and in-flight DMA). */
  syncNs: number;
  /** How long a sync stalls the DMA engine (at least until in-flight accesses drained). */
  syncDmaStallNs: number;
  /** From the faulting access until the hardware has written the page-fault EQE. */
  faultReportNs: number;
  /** From the EQE until the driver's page-fault handler sees it (MSI-X interrupt, EQ polling, the work item queued). */
  faultInterruptNs: number;
  /** From the resume command until the stalled queue runs again (PAGE_FAULT_RESUME through the firmware command interface). */
  faultResumeNs: number;
}

export const DEFAULT_COSTS: Readonly<CostModel> = Object.freeze({
  doorbellNs: 300,
  wqeProcessingNs: 100,
  dmaReadLatencyNs: 600,
  pcieBytesPerNs: 12.6,
  translationHitNs: 0,
  translationMissNs: 600,
  responderProcessingNs: 100,
  atomicNs: 600,
  cqeNs: 150,
  updateEntriesBaseNs: 2_000,
  updateEntriesPerPageNs: 2,
  zapEntriesBaseNs: 2_000,
  zapEntriesPerPageNs: 2,
  syncNs: 5_000,
  syncDmaStallNs: 1_000,
  faultReportNs: 3_000,
  faultInterruptNs: 5_000,
  faultResumeNs: 200_000,
});

/** Where each default comes from: a publication, or "assumed" with the reasoning. */
export const COST_MODEL_SOURCES: Readonly<Record<keyof CostModel, string>> = Object.freeze({
  doorbellNs: 'assumed: one posted MMIO write plus one PCIe read of the WQE (order of a PCIe round trip)',
  wqeProcessingNs: 'assumed',
  dmaReadLatencyNs: 'assumed: PCIe Gen3 read round trip of a few hundred ns to 1 us',
  pcieBytesPerNs: 'PCIe 3.0 x16: 8 GT/s per lane, 128b/130b encoding = 15.75 GB/s raw (PCI-SIG); 80% TLP efficiency assumed',
  translationHitNs: 'assumed: an on-NIC cache hit adds nothing measurable',
  translationMissNs: 'assumed: one PCIe read of the MTT entry from host memory',
  responderProcessingNs: 'assumed',
  atomicNs: 'assumed: one PCIe read round trip for the read-modify-write',
  cqeNs: 'assumed: one posted PCIe write',
  updateEntriesBaseNs: 'assumed: no published UMR populate latency (rdma open question 3)',
  updateEntriesPerPageNs: 'assumed: 8 bytes of MTT per page at PCIe bandwidth, rounded up',
  zapEntriesBaseNs: 'assumed: no published UMR zap latency (rdma open question 3)',
  zapEntriesPerPageNs: 'assumed: as update',
  syncNs: 'assumed: no published figure for a translation-cache fence',
  syncDmaStallNs: 'assumed',
  faultReportNs: 'assumed: the hardware\'s share of detecting the miss and writing the EQE',
  faultInterruptNs: 'assumed: interrupt delivery, mlx5_ib_eq_pf_int and the queue_work to the page-fault work item',
  faultResumeNs: 'calibrated: what remains of the fixed part of an ODP NIC minor fault, about 220 us for 4 KiB and 350 us for 4 MiB on ConnectX-4 (Lesokhin et al., "Page Fault Support for Network Controllers", ASPLOS 2017, second-hand), after the other components; given to the PAGE_FAULT_RESUME firmware command (the split is assumed, the total is the published figure; lab calibrate checks it)',
});

/** Defaults with overrides. */
export function costModel(over: Partial<CostModel> = {}): CostModel {
  return { ...DEFAULT_COSTS, ...over };
}
