import { DevicePageTable, DEVICE_PAGE_SIZE } from './device-page-table.ts';
import type { CachedRegion } from './translation-cache.ts';

/**
 * Life of a device MR: `valid` until revoked (every access then fails as a protection
 * error, not a fault, rdma G6) or destroyed (its key no longer resolves).
 */
export type MrState = 'valid' | 'revoked' | 'destroyed';

/** Per-MR counters, after mlx5's ODP statistics (rdma B9), kept by the device. */
export interface MrCounters {
  /** Faults raised on this MR. */
  faults: number;
  /** Pages whose entries were installed by update commands. */
  updatedPages: number;
  /** Present pages cleared by zap commands (mlx5 counts invalidations in pages). */
  zappedPages: number;
  /** Page accesses made through this MR. */
  accesses: number;
}

export interface MemoryRegionInit {
  lkey: number;
  rkey: number;
  pd: number;
  iova: number;
  length: number;
  access: number;
  onDemand: boolean;
  implicit: boolean;
}

/**
 * The device's memory region (an mlx5 mkey): a key, an iova range, access rights, the PD
 * it belongs to, its device page table, whether it may fault (ODP) and whether it is still
 * valid. The device checks PD, access flags, bounds and validity on every use of a key;
 * the driver creates MRs, fills their tables and handles their faults.
 *
 * Page indices are relative to the MR's first page: page 0 covers the 4 KiB page that
 * contains `iova` (rdma A5: the umem spans align_down(addr) .. align_up(addr + len)).
 */
export class MemoryRegion implements CachedRegion {
  readonly lkey: number;
  readonly rkey: number;
  readonly pd: number;
  readonly iova: number;
  readonly length: number;
  readonly access: number;
  /** Faultable (ODP): a missing or read-only entry raises a fault instead of an error. */
  readonly onDemand: boolean;
  /** Implicit ODP: iova 0, covering the whole addressable range (rdma A7, E). */
  readonly implicit: boolean;
  /** iova / 4096, rounded down: the device page of page index 0. */
  readonly firstPage: number;
  readonly pageTable: DevicePageTable;
  state: MrState = 'valid';
  readonly counters: MrCounters = { faults: 0, updatedPages: 0, zappedPages: 0, accesses: 0 };
  /**
   * Per-mkey fence (a UMR on this mkey in progress, on a device whose invalidation is
   * per mkey): accesses through this MR wait while it is above 0. Owned by the DMA engine.
   */
  fenceDepth = 0;
  /** Page accesses through this MR translated and not yet committed. Owned by the DMA engine. */
  inFlight = 0;
  /** Tasks waiting for this MR's fence to lift, or for its in-flight accesses to drain (DMA engine). */
  fenceWaiters: (() => void)[] = [];
  drainWaiters: (() => void)[] = [];
  /** Page index -> translation-cache slot (owned by the TranslationCache). */
  readonly cacheSlots = new Map<number, number>();

  constructor(init: MemoryRegionInit) {
    this.lkey = init.lkey;
    this.rkey = init.rkey;
    this.pd = init.pd;
    this.iova = init.iova;
    this.length = init.length;
    this.access = init.access;
    this.onDemand = init.onDemand;
    this.implicit = init.implicit;
    this.firstPage = Math.floor(init.iova / DEVICE_PAGE_SIZE);
    const lastPage = Math.ceil((init.iova + init.length) / DEVICE_PAGE_SIZE);
    this.pageTable = new DevicePageTable(Math.max(0, lastPage - this.firstPage));
  }

  get valid(): boolean {
    return this.state === 'valid';
  }

  /** Pages the MR spans. */
  get pages(): number {
    return this.pageTable.pages;
  }

  /** The MR-relative page index of an iova (no bounds check). */
  pageIndexOf(iova: number): number {
    return Math.floor(iova / DEVICE_PAGE_SIZE) - this.firstPage;
  }

  /** The iova where page `index` starts (page 0 may start below `iova`). */
  pageIova(index: number): number {
    return (this.firstPage + index) * DEVICE_PAGE_SIZE;
  }

  /** Whether [iova, iova + length) lies inside the MR. */
  contains(iova: number, length: number): boolean {
    return iova >= this.iova && length >= 0 && iova + length <= this.iova + this.length;
  }
}
