import type { Co } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import type { Vma } from './vma.ts';
import type { RmapItem } from './page-frames.ts';
import { EINVAL } from './errno.ts';
import { requireInterface } from './profile.ts';

/**
 * ZONE_DEVICE memory a driver registers with memremap_pages (mm/memremap.c,
 * include/linux/memremap.h): a `struct dev_pagemap` with a type, an owner and ops.
 *
 * Device pages are not system frames: they have no bytes the CPU can reach (a
 * device-private page's data lives on the device, here wherever the driver keeps it), so
 * their pfns live above every system frame (DEVICE_PFN_BASE) and their struct-page state
 * (refcount, lock, mappings, zone_device_data) lives in the pgmap, not in PageFrames.
 */
export enum MemoryType {
  /** MEMORY_DEVICE_PRIVATE: CPU-inaccessible; mapped by device-private swap entries. */
  DEVICE_PRIVATE = 1,
  /** MEMORY_DEVICE_COHERENT (6.0): CPU-accessible device memory. Not modelled yet. */
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
   * VM_FAULT_SIGBUS, -ENOMEM for VM_FAULT_OOM.
   */
  migrateToRam(vmf: VmFault): Co<number>;
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
 * memremap_pages (mm/memremap.c): register device memory. A device-private pgmap needs
 * both ops and an owner ("Missing owner", "Missing migrate_to_ram method", "Missing
 * page_free method": -EINVAL); an empty range is -EINVAL. Device-coherent memory is not
 * modelled yet (-EOPNOTSUPP would be wrong: the kernel has it since 6.0; the model
 * refuses it with -EINVAL and a note). Refused on profiles before device-private memory.
 */
export function memremapPages(kernel: Kernel, init: DevPagemapInit): DevPagemap | number {
  if (requireInterface(kernel.profile, 'devicePrivate', 'memremap_pages(MEMORY_DEVICE_PRIVATE)', (m) => kernel.sim.emit({ type: 'note', text: m })) < 0) return -EINVAL;
  if (init.type !== MemoryType.DEVICE_PRIVATE) {
    kernel.sim.emit({ type: 'note', text: 'memremap_pages: only MEMORY_DEVICE_PRIVATE is modelled (device-coherent memory is not)' });
    return -EINVAL;
  }
  if (!Number.isInteger(init.npages) || init.npages <= 0) return -EINVAL;
  if (init.owner === null || init.owner === undefined) return -EINVAL;
  if (typeof init.ops?.migrateToRam !== 'function' || typeof init.ops?.pageFree !== 'function') return -EINVAL;
  const reg = registry(kernel);
  const map = new DevPagemap(init, reg.next);
  reg.next += init.npages;
  reg.maps.push(map);
  return map;
}

/** pfn_valid for a device pfn: is it any pgmap's? */
export function isDevicePfn(pfn: number): boolean {
  return pfn >= DEVICE_PFN_BASE;
}

/** page_pgmap(pfn_to_page(pfn)), or null when no pgmap holds the pfn. */
export function pagePgmap(kernel: Kernel, pfn: number): DevPagemap | null {
  if (!isDevicePfn(pfn)) return null;
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
