import type { Co } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import type { Vma } from './vma.ts';
import type { RmapItem } from './page-frames.ts';
import { EINVAL } from './errno.ts';
import { PG_ZONE_DEVICE } from './page-frames.ts';
import { requireInterface } from './profile.ts';

/**
 * ZONE_DEVICE memory a driver registers with memremap_pages (mm/memremap.c,
 * include/linux/memremap.h): a `struct dev_pagemap` with a type, an owner and ops.
 *
 * Device-private pages are not system frames: they have no bytes the CPU can reach (their
 * data lives on the device, here wherever the driver keeps it), so their pfns live above
 * every system frame (DEVICE_PFN_BASE) and their struct-page state (refcount, lock,
 * mappings, zone_device_data) lives in the pgmap, not in PageFrames.
 *
 * Device-coherent pages (6.0) are the opposite: the CPU reads and writes them like RAM
 * (arch_add_memory gives them a linear mapping, mm/memremap.c pagemap_range), ordinary
 * present PTEs map them, and they take part in the rmap and refcounting like any page. So
 * they are PageFrames frames (with their bytes), flagged PG_ZONE_DEVICE, carved out of the
 * allocator when the pgmap is registered; the pgmap only records which frames are its.
 */
export enum MemoryType {
  /** MEMORY_DEVICE_PRIVATE: CPU-inaccessible; mapped by device-private swap entries. */
  DEVICE_PRIVATE = 1,
  /**
   * MEMORY_DEVICE_COHERENT (6.0, f25cbb7a95a2 "mm: add zone device coherent type memory
   * support"): CPU-accessible device memory, mapped by present PTEs; never long-term
   * pinnable (folio_is_longterm_pinnable, include/linux/mm.h: "Coherent device memory
   * must always allow eviction").
   */
  DEVICE_COHERENT = 2,
}

/** Device pfns start here: far above any system frame, and frame * 512 stays exact in a double. */
export const DEVICE_PFN_BASE = 2 ** 36;

/** `struct vm_fault` as migrate_to_ram sees it. */
export interface VmFault {
  mm: MmStruct;
  vma: Vma;
  /** The faulting page's address (page aligned). */
  address: number;
  /** vmf->page: the device page the entry pointed at. */
  page: number;
  /** FAULT_FLAG_* of the fault. */
  flags: number;
}

/** `struct dev_pagemap_ops`. */
export interface DevPagemapOps {
  /**
   * Migrate the faulting device page back to system memory (do_swap_page calls it with the
   * page locked and referenced, mmap lock held for read). 0, or -EFAULT standing for
   * VM_FAULT_SIGBUS, -ENOMEM for VM_FAULT_OOM. Required for device-private memory only:
   * the CPU never faults on a device-coherent page.
   */
  migrateToRam?(vmf: VmFault): Co<number>;
  /** The page's last reference went (free_zone_device_folio -> page_free). */
  pageFree(pfn: number): void;
}

export interface DevPagemapInit {
  type: MemoryType;
  /** pgmap->owner: compared with migrate_vma's pgmap_owner and hmm_range's dev_private_owner. */
  owner: unknown;
  npages: number;
  ops: DevPagemapOps;
}

/** `struct dev_pagemap` plus the struct pages of its range. */
export class DevPagemap {
  readonly type: MemoryType;
  readonly owner: unknown;
  readonly ops: DevPagemapOps;
  readonly firstPfn: number;
  readonly npages: number;
  readonly refcount: Int32Array;
  readonly locked: Uint8Array;
  /** PageAnonExclusive of the device page (set by migrate_vma_insert_page's RMAP_EXCLUSIVE, cleared by fork). */
  readonly anonExclusive: Uint8Array;
  /** page->zone_device_data: the driver's per-page pointer. */
  readonly zoneDeviceData: unknown[];
  /** Where each mapped page is mapped (the anon rmap of a device-private folio), by index. */
  readonly mappings = new Map<number, RmapItem[]>();

  constructor(init: DevPagemapInit, firstPfn: number) {
    this.type = init.type;
    this.owner = init.owner;
    this.ops = init.ops;
    this.firstPfn = firstPfn;
    this.npages = init.npages;
    this.refcount = new Int32Array(init.npages);
    this.locked = new Uint8Array(init.npages);
    this.anonExclusive = new Uint8Array(init.npages);
    this.zoneDeviceData = new Array<unknown>(init.npages).fill(null);
  }

  contains(pfn: number): boolean {
    return pfn >= this.firstPfn && pfn < this.firstPfn + this.npages;
  }

  pfn(i: number): number {
    return this.firstPfn + i;
  }

  index(pfn: number): number {
    return pfn - this.firstPfn;
  }
}

interface PagemapRegistry {
  next: number;
  maps: DevPagemap[];
}

const registries = new WeakMap<Kernel, PagemapRegistry>();

function registry(kernel: Kernel): PagemapRegistry {
  let r = registries.get(kernel);
  if (!r) registries.set(kernel, (r = { next: DEVICE_PFN_BASE, maps: [] }));
  return r;
}

/**
 * memremap_pages (mm/memremap.c): register device memory. Its per-type checks, each
 * WARN and -EINVAL: a device-private pgmap needs migrate_to_ram, page_free and an owner;
 * a device-coherent one page_free and an owner ("Missing page_free method", "Missing
 * owner"); any other type is not modelled (-EINVAL with a note). An empty range is
 * -EINVAL. A device-coherent range is carved out of system memory (PhysicalMemory
 * reserveZoneDevice; -ENOMEM when no contiguous run is free: the model's, assumed).
 * Refused on profiles before device-private memory (4.14), and device-coherent memory on
 * profiles before 6.0.
 */
export function memremapPages(kernel: Kernel, init: DevPagemapInit): DevPagemap | number {
  const note = (m: string) => kernel.sim.emit({ type: 'note', text: m });
  if (requireInterface(kernel.profile, 'devicePrivate', 'memremap_pages(MEMORY_DEVICE_PRIVATE)', note) < 0) return -EINVAL;
  const coherent = init.type === MemoryType.DEVICE_COHERENT;
  if (coherent && requireInterface(kernel.profile, 'deviceCoherent', 'memremap_pages(MEMORY_DEVICE_COHERENT)', note) < 0) return -EINVAL;
  if (init.type !== MemoryType.DEVICE_PRIVATE && !coherent) {
    note('memremap_pages: only MEMORY_DEVICE_PRIVATE and MEMORY_DEVICE_COHERENT are modelled');
    return -EINVAL;
  }
  if (!Number.isInteger(init.npages) || init.npages <= 0) return -EINVAL;
  if (!coherent && typeof init.ops?.migrateToRam !== 'function') return -EINVAL; // "Missing migrate_to_ram method"
  if (typeof init.ops?.pageFree !== 'function') return -EINVAL; // "Missing page_free method"
  if (init.owner === null || init.owner === undefined) return -EINVAL; // "Missing owner"
  const reg = registry(kernel);
  let first: number;
  if (coherent) {
    first = kernel.phys.reserveZoneDevice(init.npages);
    if (first < 0) return first;
    // free_zone_device_folio -> pgmap->ops->page_free for every coherent pgmap of this kernel.
    kernel.phys.zoneDeviceFree = (f) => pagePgmap(kernel, f)?.ops.pageFree(f);
  } else {
    first = reg.next;
    reg.next += init.npages;
  }
  const map = new DevPagemap(init, first);
  reg.maps.push(map);
  return map;
}

/** pfn_valid for a device-private pfn: one above every system frame (device-coherent pages are system frames). */
export function isDevicePfn(pfn: number): boolean {
  return pfn >= DEVICE_PFN_BASE;
}

/** is_zone_device_page: a device-private pfn, or a system frame a device-coherent pgmap holds. */
export function isZoneDevicePage(kernel: Kernel, pfn: number): boolean {
  return isDevicePfn(pfn) || (pfn > 0 && pfn < kernel.phys.frames && kernel.phys.has(pfn, PG_ZONE_DEVICE));
}

/** is_device_coherent_page (include/linux/memremap.h): a zone-device page of a MEMORY_DEVICE_COHERENT pgmap. */
export function isDeviceCoherentPage(kernel: Kernel, pfn: number): boolean {
  return !isDevicePfn(pfn) && isZoneDevicePage(kernel, pfn) && pagePgmap(kernel, pfn)?.type === MemoryType.DEVICE_COHERENT;
}

/** page_pgmap(pfn_to_page(pfn)), or null when no pgmap holds the pfn. */
export function pagePgmap(kernel: Kernel, pfn: number): DevPagemap | null {
  if (!isZoneDevicePage(kernel, pfn)) return null;
  for (const m of registry(kernel).maps) if (m.contains(pfn)) return m;
  return null;
}

function pgmapOrThrow(kernel: Kernel, pfn: number): DevPagemap {
  const m = pagePgmap(kernel, pfn);
  // A pfn outside every pgmap would be a model bug (a stale entry), not user input.
  if (!m) throw new Error(`device pfn ${pfn} belongs to no pgmap`);
  return m;
}

/**
 * zone_device_page_init (mm/memremap.c): a driver takes a free device page into use: one
 * reference, locked (the state migrate_vma_pages expects of a destination page).
 */
export function zoneDevicePageInit(kernel: Kernel, pfn: number): void {
  const m = pgmapOrThrow(kernel, pfn);
  if (m.type === MemoryType.DEVICE_COHERENT) {
    kernel.phys.zoneDevicePageInit(pfn);
    return;
  }
  const i = m.index(pfn);
  m.refcount[i] = 1;
  m.locked[i] = 1;
  m.anonExclusive[i] = 0;
  m.mappings.delete(i);
}

export function devicePageGet(kernel: Kernel, pfn: number): void {
  const m = pgmapOrThrow(kernel, pfn);
  m.refcount[m.index(pfn)]!++;
}

/** folio_put on a device page: at zero, free_zone_device_folio calls the pgmap's page_free. */
export function devicePagePut(kernel: Kernel, pfn: number): void {
  const m = pgmapOrThrow(kernel, pfn);
  const i = m.index(pfn);
  const r = --m.refcount[i]!;
  if (r < 0) throw new Error(`device page refcount underflow on pfn ${pfn}`);
  if (r === 0) {
    m.locked[i] = 0;
    m.mappings.delete(i);
    m.ops.pageFree(pfn);
  }
}

export function devicePageRefcount(kernel: Kernel, pfn: number): number {
  const m = pgmapOrThrow(kernel, pfn);
  return m.refcount[m.index(pfn)]!;
}

/** trylock_page on a device page. */
export function devicePageTrylock(kernel: Kernel, pfn: number): boolean {
  const m = pgmapOrThrow(kernel, pfn);
  const i = m.index(pfn);
  if (m.locked[i]) return false;
  m.locked[i] = 1;
  return true;
}

export function devicePageUnlock(kernel: Kernel, pfn: number): void {
  const m = pgmapOrThrow(kernel, pfn);
  m.locked[m.index(pfn)] = 0;
}

export function devicePageLocked(kernel: Kernel, pfn: number): boolean {
  const m = pagePgmap(kernel, pfn);
  return m !== null && m.locked[m.index(pfn)] === 1;
}

/** folio_add_anon_rmap / folio_dup_file_rmap for a device page mapped at (mm, addr). */
export function devicePageRmapAdd(kernel: Kernel, pfn: number, mm: MmStruct, addr: number): void {
  const m = pgmapOrThrow(kernel, pfn);
  const i = m.index(pfn);
  let list = m.mappings.get(i);
  if (!list) m.mappings.set(i, (list = []));
  list.push({ mm, addr });
}

/** folio_remove_rmap_pte for a device page. */
export function devicePageRmapRemove(kernel: Kernel, pfn: number, mm: MmStruct, addr: number): void {
  const m = pgmapOrThrow(kernel, pfn);
  const list = m.mappings.get(m.index(pfn));
  const i = list ? list.findIndex((r) => r.mm === mm && r.addr === addr) : -1;
  if (list && i >= 0) list.splice(i, 1);
}

/** mremap moved a device-private entry. */
export function devicePageRmapMove(kernel: Kernel, pfn: number, mm: MmStruct, from: number, to: number): void {
  const m = pgmapOrThrow(kernel, pfn);
  const item = m.mappings.get(m.index(pfn))?.find((r) => r.mm === mm && r.addr === from);
  if (item) item.addr = to;
}

export function devicePageMappings(kernel: Kernel, pfn: number): readonly RmapItem[] {
  const m = pgmapOrThrow(kernel, pfn);
  return m.mappings.get(m.index(pfn)) ?? [];
}
