/**
 * dma-buf memory registration (`ibv_reg_dmabuf_mr`, rdma G1 to G7): an MR over a buffer
 * another driver exports (a GPU's VRAM, a VFIO BAR), not over process memory. There is
 * no mm and no mmu notifier here: the exporter owns the pages and tells its importers,
 * under the buffer's reservation lock, when it is about to move them.
 *
 * Two importers, chosen by what the NIC can do, as mlx5 does:
 *
 * - **dynamic** (a faultable NIC, rdma G2, G3): attach with an `invalidateMappings`
 *   callback, map nothing at registration, and let the first device access fault. The
 *   fault handler maps the ENTIRE MR, not just the faulting page, under the reservation
 *   lock and after the exporter's copy fence has signalled (`pagefault_dmabuf_mr`). The
 *   callback zaps every device entry of the MR, syncs, and unmaps the attachment
 *   (`mlx5_ib_dmabuf_invalidate_cb`); it does nothing when nothing is mapped or the MR is
 *   already gone (G4), because the exporter calls every importer, mapped or not.
 * - **pinned** (a NIC without ODP, rdma G5): pin the buffer at attach (an exporter that
 *   cannot pin refuses with EOPNOTSUPP), map it once and program every entry. The
 *   exporter then cannot move it (`move` gives -EBUSY). Mainline's callback for this
 *   importer only warns (`ib_umem_dmabuf_unsupported_move_notify`); here it follows the
 *   2026 revocable-importer proposal (rdma G7) and takes the call as a permanent
 *   revocation: the device MR is revoked and fenced, the attachment unmapped and
 *   unpinned (the G6 revoke), and the umem stays until `dereg_mr`.
 *
 * Why the dynamic importer needs no page references: the reservation lock orders the
 * callback against every map, and the callback does not return until the device is
 * fenced (zap, then sync), so the exporter may reuse the old frames as soon as its copy
 * fence retires.
 *
 * @example
 *   const buf = DmaBuf.create(kernel, 'vram0', 64 * 4096) as DmaBuf;
 *   const mr = yield* ctx.regDmabufMr(pd, 0, 64 * 4096, 0x10000, buf, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
 */
import {
  EINVAL, EOVERFLOW, PAGE_SIZE, type Co, type DmaBuf, type DmaBufAttachment,
} from '../kernel-model/index.ts';
import {
  IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_REMOTE_ATOMIC, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE,
  accessWritable, type DeviceFault, type MemoryRegion, type Nic,
} from '../device/index.ts';
import type { IbUcontext } from './ib-ucontext.ts';
import { newUmemCounters, type IbUmem, type RegMrRequest, type UmemCounters } from './umem.ts';

/**
 * `IBV_ACCESS_RELAXED_ORDERING` (= `IBV_ACCESS_OPTIONAL_FIRST`, bit 20): an optional
 * access bit a device may ignore. The NIC model has no relaxed ordering, so it is
 * accepted at the verbs layer and dropped before the device MR is created, as libibverbs
 * drops optional bits a device does not support.
 */
export const IBV_ACCESS_RELAXED_ORDERING = 1 << 20;

/** The access bits `ibv_reg_dmabuf_mr` accepts (rdma G1); anything else, ON_DEMAND included, is EINVAL. */
export const IBV_DMABUF_ACCESS_MASK =
  IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC | IBV_ACCESS_RELAXED_ORDERING;

export type DmabufImporter = 'dynamic' | 'pinned';

/** A dma-buf umem (`struct ib_umem_dmabuf` with its mlx5 MR). */
export interface DmabufUmem extends IbUmem {
  readonly importer: DmabufImporter;
  readonly dmabuf: DmaBuf;
  readonly attachment: DmaBufAttachment;
  /** Offset of the MR's first byte in the buffer. */
  readonly offset: number;
  /** Whether the attachment is mapped now (`umem_dmabuf->sgt != NULL`). */
  readonly mapped: boolean;
  /** Set by the G6 revoke: later maps fail with EINVAL. */
  readonly revoked: boolean;
  /**
   * `ib_umem_dmabuf_map_pages`: map the attachment if it is not mapped, then wait for the
   * exporter's fence. The caller holds the reservation lock. 0, or -EINVAL once revoked.
   */
  mapPages(): Co<number>;
  /** `ib_umem_dmabuf_revoke` (G6): takes the reservation lock; idempotent. */
  revoke(): Co<void>;
}

/**
 * Register `[offset, offset + req.length)` of `dmabuf` as an MR at `req.iova` (the
 * kernel half of `ibv_reg_dmabuf_mr`: `ib_uverbs_reg_dmabuf_mr`, `ib_umem_dmabuf_get` or
 * `ib_umem_dmabuf_get_pinned`, `mlx5_ib_reg_user_mr_dmabuf`). The verbs layer has checked
 * the access mask and the page offsets (G1). Picks the dynamic importer on a faultable
 * NIC and the pinned one otherwise; on success the umem is registered with the device
 * (faults on its key route to it) and the user context. Returns the umem or -errno:
 * -EINVAL for an unknown PD, remote write or atomic without local write (A1), an empty
 * range or one past the buffer's end; -EOVERFLOW when offset + length overflows; what the
 * exporter returns (-ENODEV after revocation; -EOPNOTSUPP when it cannot pin).
 */
export function* regDmabufUmem(ctx: IbUcontext, req: RegMrRequest, dmabuf: DmaBuf, offset: number): Co<DmabufUmem | number> {
  const { device } = ctx;
  if (!ctx.pds.has(req.pd)) return -EINVAL;
  if (req.access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC) && !(req.access & IBV_ACCESS_LOCAL_WRITE)) return -EINVAL;
  if (!Number.isInteger(offset) || offset < 0 || !Number.isInteger(req.length) || req.length <= 0) return -EINVAL;
  const end = offset + req.length;
  if (!Number.isSafeInteger(end)) return -EOVERFLOW;
  if (end > dmabuf.size) return -EINVAL;
  const umem = device.nic.faultable
    ? new DynamicDmabufUmem(ctx, req, dmabuf, offset)
    : new PinnedDmabufUmem(ctx, req, dmabuf, offset);
  const r = yield* umem.init();
  if (r < 0) return r;
  device.umemByKey.set(umem.mr.lkey, umem);
  ctx.umems.add(umem);
  return umem;
}

/** What both importers share: the attachment, the device MR, map/unmap and the G6 revoke. */
abstract class DmabufUmemBase implements DmabufUmem {
  abstract readonly importer: DmabufImporter;
  readonly counters: UmemCounters = newUmemCounters();
  readonly addr: number;
  readonly length: number;
  readonly access: number;
  /** First page of the buffer the MR covers, and how many pages (= the device MR's). */
  readonly firstBufPage: number;
  readonly pageCount: number;
  revoked = false;
  /**
   * The MR pointer the callback reads (`umem_dmabuf->private`). Cleared at dereg, under the
   * reservation lock, so a callback that runs later does nothing (G4, the Feb 2025 fix).
   */
  protected liveMr: MemoryRegion | null = null;
  private deviceMr: MemoryRegion | null = null;
  private at: DmaBufAttachment | null = null;
  protected readonly nic: Nic;

  constructor(readonly ctx: IbUcontext, protected readonly req: RegMrRequest, readonly dmabuf: DmaBuf, readonly offset: number) {
    this.nic = ctx.device.nic;
    this.addr = req.iova;
    this.length = req.length;
    this.access = req.access & ~IBV_ACCESS_RELAXED_ORDERING;
    this.firstBufPage = Math.floor(offset / PAGE_SIZE);
    this.pageCount = Math.ceil((offset + req.length) / PAGE_SIZE) - this.firstBufPage;
  }

  get strategy(): string {
    return `dmabuf-${this.importer}`;
  }

  get mr(): MemoryRegion {
    if (!this.deviceMr) throw new Error('dma-buf umem used before its MR was created');
    return this.deviceMr;
  }

  get attachment(): DmaBufAttachment {
    if (!this.at) throw new Error('dma-buf umem used before attach');
    return this.at;
  }

  get mapped(): boolean {
    return this.at?.frames != null;
  }

  /** Attach, create the device MR, and whatever the importer does at registration. 0 or -errno. */
  abstract init(): Co<number>;

  protected *attach(dynamicCallback: (at: DmaBufAttachment) => Co<void>): Co<number> {
    // Both importers attach dynamically with a callback, as the kernel does: the pinned one
    // passes ib_umem_dmabuf_attach_pinned_ops, whose callback should never run (G5).
    const at = yield* this.dmabuf.attach({ invalidateMappings: dynamicCallback }, { dynamic: true, name: `${this.ctx.device.name}/mr` });
    if (typeof at === 'number') return at;
    this.at = at;
    return 0;
  }

  protected createDeviceMr(onDemand: boolean): number {
    const mr = this.nic.createMr({ pd: this.req.pd, iova: this.req.iova, length: this.req.length, access: this.access, onDemand });
    if (typeof mr === 'number') return mr;
    if (mr.pages !== this.pageCount) throw new Error(`dma-buf MR spans ${mr.pages} device pages, the buffer range ${this.pageCount}`);
    this.deviceMr = mr;
    this.liveMr = mr;
    return 0;
  }

  /** The buffer's frames behind the MR's pages, from the current mapping. */
  protected mappedFrames(): number[] {
    const frames = this.attachment.frames;
    if (!frames) throw new Error('dma-buf umem not mapped');
    return frames.slice(this.firstBufPage, this.firstBufPage + this.pageCount);
  }

  *mapPages(): Co<number> {
    if (!this.dmabuf.resv.heldByCurrent()) throw new Error('ib_umem_dmabuf_map_pages without the reservation lock');
    if (this.revoked) return -EINVAL;
    if (!this.mapped) {
      const frames = this.dmabuf.mapAttachment(this.attachment);
      if (typeof frames === 'number') return frames;
    }
    // The sg list is valid now, but the pages may still be being copied by a move: wait
    // for the exporter's fence before the device may use them (dma_resv_wait_timeout).
    yield* this.dmabuf.waitFences();
    return 0;
  }

  protected unmapPages(): void {
    if (this.mapped) this.dmabuf.unmapAttachment(this.attachment);
  }

  /**
   * The G6 revoke with the reservation lock held (the 2026 helper split out so that the
   * invalidate callback, which already holds the lock, can call it): unmap, unpin if
   * pinned, set the revoked flag. Idempotent. The caller has fenced the device first.
   */
  protected revokeLocked(): void {
    if (this.revoked) return;
    this.unmapPages();
    if (this.attachment.pinned) this.dmabuf.unpin(this.attachment);
    this.revoked = true;
  }

  *revoke(): Co<void> {
    yield* this.dmabuf.resv.lock();
    try {
      if (this.revoked) return;
      if (this.liveMr) {
        this.nic.revokeMr(this.liveMr);
        yield* this.nic.sync();
      }
      this.revokeLocked();
    } finally {
      this.dmabuf.resv.unlock();
    }
  }

  /**
   * ib_dereg_mr: under the reservation lock clear the MR pointer (a callback after this
   * does nothing, G4), fence the device and unmap; then destroy the mkey, unpin and detach
   * (`ib_umem_dmabuf_release`).
   */
  *dereg(): Co<number> {
    const mr = this.mr;
    yield* this.dmabuf.resv.lock();
    try {
      this.liveMr = null;
      if (mr.valid) this.nic.revokeMr(mr);
      yield* this.nic.sync();
      this.unmapPages();
      if (this.attachment.pinned) this.dmabuf.unpin(this.attachment);
    } finally {
      this.dmabuf.resv.unlock();
    }
    this.nic.destroyMr(mr);
    this.dmabuf.detach(this.attachment);
    return 0;
  }

  /** Undo a half-done registration (attach done, perhaps pinned, mapped, MR created). */
  protected *abort(r: number): Co<number> {
    if (this.deviceMr) this.nic.destroyMr(this.deviceMr);
    this.liveMr = null;
    if (this.at) {
      yield* this.dmabuf.resv.lock();
      this.unmapPages();
      if (this.at.pinned) this.dmabuf.unpin(this.at);
      this.dmabuf.resv.unlock();
      this.dmabuf.detach(this.at);
    }
    return r;
  }
}

/** The dynamic importer (mlx5 on an ODP-capable NIC, rdma G2 to G4). */
class DynamicDmabufUmem extends DmabufUmemBase {
  readonly importer = 'dynamic' as const;

  *init(): Co<number> {
    const r = yield* this.attach((at) => this.invalidateMappings(at));
    if (r < 0) return r;
    // mlx5_ib_init_dmabuf_mr: an ODP mkey with an empty table; the first access faults.
    const m = this.createDeviceMr(true);
    if (m < 0) return yield* this.abort(m);
    return 0;
  }

  /**
   * `mlx5_ib_dmabuf_invalidate_cb`, with the reservation lock held by the exporter. The
   * exporter calls it for every importer on every move, mapped or not (G4): with nothing
   * mapped, or with the MR already torn down, there is nothing to do. Otherwise zap every
   * entry of the whole MR and sync before unmapping, so that when this returns the
   * device can no longer reach the frames the exporter is about to copy away.
   */
  private *invalidateMappings(_at: DmaBufAttachment): Co<void> {
    if (!this.dmabuf.resv.heldByCurrent()) throw new Error('invalidate_mappings without the reservation lock (rdma G2)');
    const mr = this.liveMr;
    if (!this.mapped || !mr) return;
    const cleared = yield* this.nic.zapEntries(mr, 0, mr.pages);
    yield* this.nic.sync();
    this.unmapPages();
    this.counters.invalidations++;
    if (cleared > 0) this.counters.invalidationPages += cleared;
    this.ctx.mrEvents.next({ type: 'invalidated', umem: this, start: this.addr, end: this.addr + this.length });
  }

  /**
   * `pagefault_dmabuf_mr`: whatever page faulted, map the whole buffer range under the
   * reservation lock (after the exporter's fence) and program every entry of the MR, then
   * resume. A revoked buffer or a torn-down MR resumes the fault with an error, and the
   * work request completes with an error status.
   */
  *handleFault(fault: DeviceFault): Co<void> {
    const mr = this.mr;
    let r: number;
    yield* this.dmabuf.resv.lock();
    try {
      if (!this.liveMr) r = -EINVAL;
      else {
        r = yield* this.mapPages();
        if (r === 0) {
          r = yield* this.nic.updateEntries(mr, 0, this.mappedFrames(), accessWritable(this.access));
          if (r < 0) this.unmapPages();
        }
      }
    } finally {
      this.dmabuf.resv.unlock();
    }
    if (r < 0) {
      this.nic.resumeFault(fault.id, { error: true });
      return;
    }
    this.counters.faultPages += mr.pages;
    this.counters.faultsHandled++;
    this.nic.resumeFault(fault.id);
  }
}

/** The pinned importer (a NIC without ODP, rdma G5), revocable per the 2026 proposal (G7). */
class PinnedDmabufUmem extends DmabufUmemBase {
  readonly importer = 'pinned' as const;
  /** Calls of the callback (mainline would log a rate-limited warning for each). */
  unexpectedMoves = 0;

  *init(): Co<number> {
    const r = yield* this.attach((at) => this.invalidateMappings(at));
    if (r < 0) return r;
    // ib_umem_dmabuf_get_pinned: pin and map once, under the reservation lock.
    yield* this.dmabuf.resv.lock();
    let p = this.dmabuf.pin(this.attachment);
    if (p === 0) p = yield* this.mapPages();
    this.dmabuf.resv.unlock();
    // An exporter that cannot pin (VFIO's) refuses a pinned importer here: -EOPNOTSUPP.
    if (p < 0) return yield* this.abort(p);
    const m = this.createDeviceMr(false);
    if (m < 0) return yield* this.abort(m);
    if (this.revoked) {
      // Revoked between the map and the mkey: the callback found no MR to revoke.
      this.nic.revokeMr(this.mr);
      return 0;
    }
    const u = yield* this.nic.updateEntries(this.mr, 0, this.mappedFrames(), accessWritable(this.access));
    // A revocation while the entries were being programmed revoked the mkey already
    // (updateEntries then fails): keep the umem, as a revoked one, until dereg.
    if (u < 0 && !this.revoked) return yield* this.abort(u);
    return 0;
  }

  /**
   * The exporter should never call a pinned importer: it cannot move a pinned buffer. It
   * does when it revokes the buffer for good (a VFIO reset, a hot unplug). Mainline only
   * warns here (`ib_umem_dmabuf_unsupported_move_notify`, G5) and the device keeps using
   * the pages. THE 2026 REVOCABLE-IMPORTER PROPOSAL (rdma G7, not mainline): a pinned
   * importer takes the call as a permanent revocation. Revoke the mkey and fence the device
   * before returning (bounded time), then the G6 revoke: unmap, unpin, set the flag. The
   * umem stays until dereg; the application learns of it from error completions, or from
   * the opt-in 'mr:revoked' extension event.
   */
  private *invalidateMappings(_at: DmaBufAttachment): Co<void> {
    if (!this.dmabuf.resv.heldByCurrent()) throw new Error('invalidate_mappings without the reservation lock (rdma G2)');
    this.unexpectedMoves++;
    if (this.revoked) return;
    this.ctx.device.kernel.sim.emit({
      type: 'note',
      text: `${this.ctx.device.name}: pinned dma-buf MR ${this.liveMr?.lkey ?? '(gone)'} told to move: taken as a permanent revocation (2026 revocable-importer proposal, rdma G7)`,
    });
    const mr = this.liveMr;
    if (mr) {
      this.nic.revokeMr(mr);
      yield* this.nic.sync();
    }
    this.revokeLocked();
    this.counters.invalidations++;
    this.counters.invalidationPages += this.pageCount;
    if (mr) this.ctx.mrEvents.next({ type: 'revoked', umem: this, start: this.addr, end: this.addr + this.length });
  }
}
