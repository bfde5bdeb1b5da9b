import { Observable, Subject } from 'rxjs';
import type { Co, Simulation } from '../kernel-model/sim/index.ts';
import type { DmaBus } from '../kernel-model/dma-bus.ts';
import type { CostModel } from './cost-model.ts';
import { DEVICE_PAGE_SIZE, PTE_READ_WRITE, type Translation } from './device-page-table.ts';
import type { MemoryRegion } from './memory-region.ts';
import type { TranslationCache } from './translation-cache.ts';

/** What the device needs of the bus: read and write bytes of a frame (DESIGN "Device"). */
/** What the device needs of memory; `readShared` (no copy) is used when the bus has it. */
export type DeviceDmaBus = Pick<DmaBus, 'read' | 'write'> & Partial<Pick<DmaBus, 'readShared'>>;

/**
 * One page access by the DMA engine, on the access stream. It names the translation it
 * used (generation and install time), so a checker can tell an access through a zapped
 * but still cached translation (`stale`) from one through a current entry.
 */
export interface DeviceAccess {
  readonly nic: string;
  readonly time: number;
  readonly qpNum: number;
  readonly side: 'requester' | 'responder';
  /** The work-request opcode being executed. */
  readonly opcode: number;
  /** The key the access went through (lkey or rkey). */
  readonly mrKey: number;
  readonly iova: number;
  readonly length: number;
  readonly frame: number;
  /** Offset of the access within the frame. */
  readonly offset: number;
  readonly write: boolean;
  /** Generation of the translation used (NIC-wide counter, bumped at each install). */
  readonly generation: number;
  /** Virtual time the translation used was installed. */
  readonly installedAt: number;
  /** Served from the translation cache rather than a page-table walk. */
  readonly fromCache: boolean;
  /**
   * The translation used no longer matches the page table: the page's entry was zapped, or
   * now names another frame. Only a translation-cache hit can be stale. (A cached copy made
   * obsolete by an in-place upgrade of the same frame, rdma B1, is not stale: compare
   * `generation` to see that it was superseded.)
   */
  readonly stale: boolean;
  /**
   * The access was in flight when a sync began and the sync waited for it: it completed
   * before that sync's cache flush, so it is ordered before the sync's completion.
   */
  readonly fenced: boolean;
}

/** Result codes of a translation. */
export const XLATE_OK = 0;
export const XLATE_FAULT_ABSENT = 1;
export const XLATE_FAULT_READ_ONLY = 2;
/** No usable entry and the access may not fault (non-ODP MR or an operation without its ODP bit). */
export const XLATE_PROT = 3;

/** Who is accessing: the QP, its side, the opcode, and a scratch translation owned by the caller. */
export interface AccessContext {
  readonly qpNum: number;
  readonly side: 'requester' | 'responder';
  opcode: number;
  readonly xlate: Translation;
}

export interface DmaStats {
  accesses: number;
  bytesRead: number;
  bytesWritten: number;
  staleAccesses: number;
  fencedAccesses: number;
}

/**
 * The DMA engine's page-access path, shared by every QP of a NIC: wait out a sync stall,
 * translate (translation cache, then the MR's page table), take the access's time, move the
 * bytes through the DmaBus, and publish the access. The hot path allocates nothing except
 * the bytes the bus returns and, while someone observes `access$`, the event.
 */
export class DmaEngine {
  private readonly accessSubject = new Subject<DeviceAccess>();
  readonly access$: Observable<DeviceAccess> = this.accessSubject.asObservable();
  /** Page accesses translated and not yet committed. */
  inFlight = 0;
  /** A sync has begun and has not flushed yet: accesses committing now are fenced. */
  fencing = false;
  private stallDepth = 0;
  private stallWaiters: (() => void)[] = [];
  private drainWaiters: (() => void)[] = [];
  readonly stats: DmaStats = { accesses: 0, bytesRead: 0, bytesWritten: 0, staleAccesses: 0, fencedAccesses: 0 };

  constructor(
    private readonly sim: Simulation,
    readonly nicName: string,
    private readonly bus: DeviceDmaBus,
    readonly cache: TranslationCache,
    private readonly costs: CostModel,
  ) {}

  get stalled(): boolean {
    return this.stallDepth > 0;
  }

  // ---- translation ---------------------------------------------------------------------

  /**
   * Translate one page of `mr` for a read or a write into `out`. A cached entry is used if
   * it grants enough (even if the page table no longer has it: only a sync empties the
   * cache); otherwise the page table decides, and a usable entry is cached.
   */
  translate(mr: MemoryRegion, index: number, write: boolean, faultable: boolean, out: Translation): number {
    if (this.cache.lookup(mr, index, out) && (!write || out.perm === PTE_READ_WRITE)) return XLATE_OK;
    if (!mr.pageTable.lookup(index, out)) return faultable ? XLATE_FAULT_ABSENT : XLATE_PROT;
    if (write && out.perm !== PTE_READ_WRITE) return faultable ? XLATE_FAULT_READ_ONLY : XLATE_PROT;
    this.cache.insert(mr, index, out);
    return XLATE_OK;
  }

  /** Time of one page access of `bytes` through translation `t`. */
  accessNs(bytes: number, t: Translation): number {
    return bytes / this.costs.pcieBytesPerNs + (t.fromCache ? this.costs.translationHitNs : this.costs.translationMissNs);
  }

  // ---- page accesses -------------------------------------------------------------------

  /**
   * Read `length` bytes at `iova` (within one page) through `mr`. Returns the bytes, or an
   * XLATE_* code when the page cannot be used. `extraNs` is added to the access's time.
   */
  *readPage(ctx: AccessContext, mr: MemoryRegion, key: number, iova: number, length: number, faultable: boolean, extraNs: number): Co<Uint8Array | number> {
    if (this.stallDepth > 0 || mr.fenceDepth > 0) yield* this.waitRunnable(mr);
    const index = mr.pageIndexOf(iova);
    const t = ctx.xlate;
    const code = this.translate(mr, index, false, faultable, t);
    if (code !== XLATE_OK) return code;
    this.inFlight++;
    mr.inFlight++;
    yield* this.sim.sleep(this.accessNs(length, t) + extraNs);
    const offset = iova - Math.floor(iova / DEVICE_PAGE_SIZE) * DEVICE_PAGE_SIZE;
    // No copy: the payload is a snapshot of the page that later writes do not change.
    const data = this.bus.readShared ? this.bus.readShared(t.frame, offset, length) : this.bus.read(t.frame, offset, length);
    this.stats.bytesRead += length;
    this.committed(ctx, mr, key, index, iova, length, offset, false);
    return data;
  }

  /** Write `data` (within one page) at `iova` through `mr`. Returns XLATE_OK or a code. */
  *writePage(ctx: AccessContext, mr: MemoryRegion, key: number, iova: number, data: Uint8Array, faultable: boolean, extraNs: number): Co<number> {
    if (this.stallDepth > 0 || mr.fenceDepth > 0) yield* this.waitRunnable(mr);
    const index = mr.pageIndexOf(iova);
    const t = ctx.xlate;
    const code = this.translate(mr, index, true, faultable, t);
    if (code !== XLATE_OK) return code;
    this.inFlight++;
    mr.inFlight++;
    yield* this.sim.sleep(this.accessNs(data.length, t) + extraNs);
    const offset = iova - Math.floor(iova / DEVICE_PAGE_SIZE) * DEVICE_PAGE_SIZE;
    this.bus.write(t.frame, offset, data);
    this.stats.bytesWritten += data.length;
    this.committed(ctx, mr, key, index, iova, data.length, offset, true);
    return XLATE_OK;
  }

  /**
   * Make sure the page of `iova` is translated (for a write when `write`) without moving
   * data: what a FLUSH needs of each page it covers. Takes one translation's time (assumed:
   * the host's cache write-back is not modelled). Returns XLATE_OK or a code; publishes no
   * access event, since no byte crosses the bus.
   */
  *touchPage(ctx: AccessContext, mr: MemoryRegion, iova: number, write: boolean, faultable: boolean): Co<number> {
    if (this.stallDepth > 0 || mr.fenceDepth > 0) yield* this.waitRunnable(mr);
    const t = ctx.xlate;
    const code = this.translate(mr, mr.pageIndexOf(iova), write, faultable, t);
    if (code !== XLATE_OK) return code;
    yield* this.sim.sleep(this.accessNs(0, t));
    return XLATE_OK;
  }

  /**
   * An 8-byte atomic at `iova`: one translation with write access, a read and a write of
   * the same bytes (two access events). `apply` computes the new value from the old; the
   * old value is returned (or an XLATE_* code as a number when the page cannot be used).
   */
  *atomicPage(ctx: AccessContext, mr: MemoryRegion, key: number, iova: number, faultable: boolean, apply: (old: bigint) => bigint): Co<{ original: bigint } | number> {
    if (this.stallDepth > 0 || mr.fenceDepth > 0) yield* this.waitRunnable(mr);
    const index = mr.pageIndexOf(iova);
    const t = ctx.xlate;
    const code = this.translate(mr, index, true, faultable, t);
    if (code !== XLATE_OK) return code;
    this.inFlight++;
    mr.inFlight++;
    yield* this.sim.sleep(this.accessNs(16, t) + this.costs.atomicNs);
    const offset = iova - Math.floor(iova / DEVICE_PAGE_SIZE) * DEVICE_PAGE_SIZE;
    const old = this.bus.read(t.frame, offset, 8);
    const original = new DataView(old.buffer, old.byteOffset, 8).getBigUint64(0, true);
    const next = new Uint8Array(8);
    new DataView(next.buffer).setBigUint64(0, BigInt.asUintN(64, apply(original)), true);
    this.bus.write(t.frame, offset, next);
    this.stats.bytesRead += 8;
    this.stats.bytesWritten += 8;
    // Both halves of the read-modify-write are one in-flight access; publish both.
    this.inFlight++;
    mr.inFlight++;
    this.committed(ctx, mr, key, index, iova, 8, offset, false);
    this.committed(ctx, mr, key, index, iova, 8, offset, true);
    return { original };
  }

  private committed(ctx: AccessContext, mr: MemoryRegion, key: number, index: number, iova: number, length: number, offset: number, write: boolean): void {
    this.stats.accesses++;
    mr.counters.accesses++;
    const t = ctx.xlate;
    const fenced = this.fencing;
    if (fenced) this.stats.fencedAccesses++;
    let stale = false;
    if (t.fromCache && mr.pageTable.frameOf(index) !== t.frame) {
      stale = true;
      this.stats.staleAccesses++;
    }
    if (this.accessSubject.observed) {
      this.accessSubject.next({
        nic: this.nicName, time: this.sim.now(), qpNum: ctx.qpNum, side: ctx.side, opcode: ctx.opcode,
        mrKey: key, iova, length, frame: t.frame, offset, write,
        generation: t.generation, installedAt: t.installedAt, fromCache: t.fromCache, stale, fenced,
      });
    }
    if (--mr.inFlight === 0 && mr.drainWaiters.length > 0) {
      const ws = mr.drainWaiters;
      mr.drainWaiters = [];
      for (const w of ws) w();
    }
    if (--this.inFlight === 0 && this.drainWaiters.length > 0) {
      const ws = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of ws) w();
    }
  }

  // ---- stalls and fences (the sync command) ----------------------------------------------

  /** Sleep while the engine is stalled by a sync, or `mr` is fenced by a UMR on its mkey. */
  *waitRunnable(mr?: MemoryRegion): Co {
    for (;;) {
      if (this.stallDepth > 0) yield* this.sim.park<void>((wake) => this.stallWaiters.push(() => wake()));
      else if (mr && mr.fenceDepth > 0) yield* this.sim.park<void>((wake) => mr.fenceWaiters.push(() => wake()));
      else return;
    }
  }

  /**
   * Fence one mkey (a per-mkey UMR, the device capability `invalidation: 'mkey-umr'`):
   * new accesses through `mr` wait; the rest of the engine runs on (assumed: mlx5 does not
   * document what a UMR stalls; the model stalls only that mkey's traffic).
   */
  fenceRegion(mr: MemoryRegion): void {
    mr.fenceDepth++;
  }

  unfenceRegion(mr: MemoryRegion): void {
    if (mr.fenceDepth === 0) throw new Error('MR unfenced more often than fenced');
    if (--mr.fenceDepth === 0) {
      const ws = mr.fenceWaiters;
      mr.fenceWaiters = [];
      for (const w of ws) w();
    }
  }

  /** Sleep until no page access through `mr` is in flight. */
  *drainRegion(mr: MemoryRegion): Co {
    while (mr.inFlight > 0) yield* this.sim.park<void>((wake) => mr.drainWaiters.push(() => wake()));
  }

  /** Stop new page accesses from starting. */
  stall(): void {
    this.stallDepth++;
  }

  unstall(): void {
    if (this.stallDepth === 0) throw new Error('DMA engine unstalled more often than stalled');
    if (--this.stallDepth === 0) {
      const ws = this.stallWaiters;
      this.stallWaiters = [];
      for (const w of ws) w();
    }
  }

  /** Sleep until no page access is in flight. */
  *drain(): Co {
    while (this.inFlight > 0) yield* this.sim.park<void>((wake) => this.drainWaiters.push(() => wake()));
  }
}
