import type { Co } from '../kernel-model/sim/index.ts';
import {
  EFAULT, GFP_HIGHUSER_MOVABLE, GFP_USER, MemoryType, MIGRATE_PFN_MIGRATE, MIGRATE_PFN_WRITE, MIGRATE_VMA_SELECT_DEVICE_COHERENT,
  MIGRATE_VMA_SELECT_DEVICE_PRIVATE, isDevicePfn,
  PAGE_SIZE, PG_LOCKED, allocPages, memremapPages, migrateDeviceFinalize, migrateDevicePages, migrateDeviceRange, migratePfn, migratePfnFlags, migratePfnToPage, migrateVmaFinalize,
  migrateVmaInit, migrateVmaPages, migrateVmaSetup, pagePgmap, zoneDevicePageInit,
  type DevPagemap, type Kernel, type MigrateVma, type VmFault,
} from '../kernel-model/index.ts';

/** DEVMEM_CHUNK_SIZE in lib/test_hmm.c: 256 MiB of device pages per chunk. */
export const DEVMEM_CHUNK_PAGES = (256 * 1024 * 1024) / PAGE_SIZE;

/** Whoever mirrors through this device: the device page's data holder points back at it. */
export interface DmirrorDeviceUser {
  /** xa_erase(&dmirror->pt, addr >> PAGE_SHIFT): drop one mirror entry (migrate_to_ram does it itself, rule 22). */
  dropEntry(vpn: number): void;
}

/**
 * lib/test_hmm.c's `struct dmirror_device` (mdevice): the owner of device memory of one
 * zone_device_type. Its chunks are pgmaps registered with memremap_pages
 * (dmirror_allocate_chunk, owner = the mdevice), its free pages a list
 * (dmirror_devmem_alloc_page / dmirror_devmem_free). A device-private page is backed by a
 * hidden system page (BACKING_PAGE, "rpage") holding its data, as the test module
 * simulates device memory with system memory; a device-coherent page holds its own data
 * (BACKING_PAGE(page) is the page: the CPU reaches it directly), as /dev/hmm_dmirror2 and 3
 * do with the spm_addr_dev0/1 ranges. `chunkPages` is the model's (the source's is 256 MiB;
 * a coherent chunk is carved out of the rig's memory, so tests pass a small one).
 */
export class DmirrorDevice {
  readonly chunks: DevPagemap[] = [];
  private readonly free: number[] = [];
  /** Device pfn -> its backing system frame (dpage->zone_device_data). */
  readonly backing = new Map<number, number>();
  /** Backing frame -> the mirror that migrated it (rpage->zone_device_data). */
  readonly users = new Map<number, DmirrorDeviceUser>();
  /** Pages allocated and freed, as mdevice->calloc / cfree. */
  calloc = 0;
  cfree = 0;

  constructor(
    readonly kernel: Kernel,
    readonly name = 'dmirror_device',
    readonly chunkPages = DEVMEM_CHUNK_PAGES,
    /** mdevice->zone_device_type (HMM_DMIRROR_MEMORY_DEVICE_PRIVATE or _COHERENT). */
    readonly zoneDeviceType: MemoryType = MemoryType.DEVICE_PRIVATE,
  ) {}

  /**
   * dmirror_select_device: the migrate_vma_setup selection that finds this device's pages
   * (SELECT_DEVICE_PRIVATE or SELECT_DEVICE_COHERENT).
   */
  get selectFlags(): number {
    return this.zoneDeviceType === MemoryType.DEVICE_PRIVATE ? MIGRATE_VMA_SELECT_DEVICE_PRIVATE : MIGRATE_VMA_SELECT_DEVICE_COHERENT;
  }

  /** dmirror_allocate_chunk: a new pgmap; -errno when memremap_pages refuses (e.g. an old profile). */
  private allocateChunk(): number {
    const map = memremapPages(this.kernel, {
      type: this.zoneDeviceType,
      owner: this,
      npages: this.chunkPages,
      ops: {
        migrateToRam: (vmf) => this.devmemFault(vmf),
        pageFree: (pfn) => this.devmemFree(pfn),
      },
    });
    if (typeof map === 'number') return map;
    this.chunks.push(map);
    for (let i = map.npages - 1; i >= 0; i--) this.free.push(map.pfn(i));
    return 0;
  }

  /**
   * dmirror_devmem_alloc_page: a free device page (a new chunk when none is left), for
   * device-private memory with a fresh backing page (alloc_page(GFP_HIGHUSER)), taken into
   * use by zone_device_page_init (one reference, locked). -errno when memory or a chunk
   * cannot be had.
   */
  *allocPage(): Co<number> {
    if (this.free.length === 0) {
      const r = this.allocateChunk();
      if (r < 0) return r;
    }
    if (this.zoneDeviceType !== MemoryType.DEVICE_PRIVATE) {
      const dpage = this.free.pop() as number;
      zoneDevicePageInit(this.kernel, dpage);
      this.calloc++;
      return dpage;
    }
    const rpage = yield* allocPages(this.kernel, GFP_USER);
    if (rpage < 0) return rpage;
    const dpage = this.free.pop() as number;
    this.backing.set(dpage, rpage);
    zoneDevicePageInit(this.kernel, dpage);
    this.calloc++;
    return dpage;
  }

  /** BACKING_PAGE(dpage): the hidden page of a device-private page; a device-coherent page itself. */
  backingPage(dpage: number): number {
    if (!isDevicePfn(dpage)) return dpage;
    return this.backing.get(dpage) ?? -1;
  }

  /**
   * dmirror_devmem_free (the pgmap's page_free): free the backing page ("if (rpage !=
   * page)": a device-coherent page has none), return the page to the list.
   */
  private devmemFree(pfn: number): void {
    if (!isDevicePfn(pfn)) this.users.delete(pfn);
    const rpage = this.backing.get(pfn);
    if (rpage !== undefined) {
      this.users.delete(rpage);
      this.kernel.phys.put(rpage);
      this.backing.delete(pfn);
    }
    this.cfree++;
    this.free.push(pfn);
  }

  /**
   * dmirror_devmem_fault (the pgmap's migrate_to_ram): migrate the one faulting page back
   * with migrate_vma_setup(SELECT_DEVICE_PRIVATE, pgmap_owner = this device, fault_page),
   * copy it into a new system page, and let migrate_vma_pages / finalize map it. The
   * MIGRATE invalidation carries this device as owner, so the mirror skips it (rule 22):
   * alloc_and_copy erases the mirror entry itself. A failing setup is VM_FAULT_SIGBUS.
   */
  private *devmemFault(vmf: VmFault): Co<number> {
    const args = migrateVmaInit(vmf.vma, vmf.address, vmf.address + PAGE_SIZE, this, MIGRATE_VMA_SELECT_DEVICE_PRIVATE, vmf.page);
    if ((yield* migrateVmaSetup(args)) !== 0) return -EFAULT;
    yield* this.allocAndCopyToSystem(args);
    yield* migrateVmaPages(args);
    yield* migrateVmaFinalize(args);
    return 0;
  }

  /**
   * dmirror_devmem_fault_alloc_and_copy: for each collected device page, a new system
   * page (GFP_HIGHUSER_MOVABLE), locked, the mirror entry erased, the data copied from
   * the backing page; writable if the device entry was.
   */
  *allocAndCopyToSystem(args: MigrateVma): Co {
    const { phys } = this.kernel;
    for (let i = 0; i < args.npages; i++) {
      const src = args.src[i] as number;
      const spage = migratePfnToPage(src);
      if (spage < 0 || !(migratePfnFlags(src) & MIGRATE_PFN_MIGRATE)) continue;
      const m = pagePgmap(this.kernel, spage);
      if (!m || m.owner !== this) continue; // WARN: not a device page of ours
      const rpage = this.backingPage(spage);
      const dpage = yield* allocPages(this.kernel, GFP_HIGHUSER_MOVABLE);
      if (dpage < 0) continue;
      phys.set(dpage, PG_LOCKED);
      this.users.get(rpage)?.dropEntry(args.start / PAGE_SIZE + i);
      if (rpage >= 0) phys.copyPage(dpage, rpage);
      else phys.zeroPage(dpage);
      args.dst[i] = migratePfn(dpage) + (migratePfnFlags(src) & MIGRATE_PFN_WRITE);
    }
  }

  /**
   * dmirror_device_evict_chunk for every chunk (HMM_DMIRROR_RELEASE): migrate_device_range
   * over the chunk's pfns, a new system page for each page still in use (GFP_HIGHUSER_MOVABLE;
   * __GFP_NOFAIL in the source, a skipped page here when memory runs out), copied from its
   * backing page, then migrate_device_pages and migrate_device_finalize. The chunks stay
   * registered (the source then unmaps them, memunmap_pages). Returns 0 or -errno.
   */
  *evictAll(): Co<number> {
    const { phys } = this.kernel;
    for (const chunk of this.chunks) {
      const src = new Float64Array(chunk.npages);
      const dst = new Float64Array(chunk.npages);
      const r = yield* migrateDeviceRange(this.kernel, src, chunk.firstPfn, chunk.npages);
      if (r < 0) return r;
      for (let i = 0; i < chunk.npages; i++) {
        const spage = migratePfnToPage(src[i] as number);
        if (spage < 0 || !(migratePfnFlags(src[i] as number) & MIGRATE_PFN_MIGRATE)) continue;
        const rpage = this.backingPage(spage);
        const dpage = yield* allocPages(this.kernel, GFP_HIGHUSER_MOVABLE);
        if (dpage < 0) continue;
        phys.set(dpage, PG_LOCKED);
        if (rpage >= 0) phys.copyPage(dpage, rpage);
        else phys.zeroPage(dpage);
        dst[i] = migratePfn(dpage) + (migratePfnFlags(src[i] as number) & MIGRATE_PFN_WRITE);
      }
      yield* migrateDevicePages(this.kernel, src, dst, chunk.npages);
      yield* migrateDeviceFinalize(this.kernel, src, dst, chunk.npages);
    }
    return 0;
  }
}
