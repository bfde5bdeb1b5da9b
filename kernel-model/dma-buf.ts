import type { Co } from './sim/index.ts';
import { Mutex } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import { EINVAL, ENODEV, ENOMEM, EOPNOTSUPP, EBUSY } from './errno.ts';
import { PAGE_SIZE } from './constants.ts';

/** What an importer provides (G2): the move/invalidate callback, mandatory when dynamic. */
export interface DmaBufImporterOps {
  /**
   * `move_notify`, renamed `invalidate_mappings` in the 2026 series. Called with the
   * reservation lock held, for every attachment, mapped or not (G4).
   */
  invalidateMappings?(attach: DmaBufAttachment): Co<void> | void;
}

export interface DmaBufExporterOptions {
  /** Whether the exporter can pin (VFIO's cannot, so it can always revoke, G5). */
  canPin: boolean;
  /** Virtual ns the exporter's copy fence takes on a move. */
  moveFenceNs: number;
}

/** One importer's attachment. `frames` is the current mapping (the sg table), or null. */
export class DmaBufAttachment {
  frames: number[] | null = null;
  pinned = false;
  detached = false;

  constructor(readonly buf: DmaBuf, readonly ops: DmaBufImporterOps, readonly dynamic: boolean, readonly name: string) {}
}

/**
 * A dma-buf exporter (for example a GPU driver's VRAM buffer, modelled as frames of the
 * kernel's physical memory). Moves and revocation happen under the reservation lock;
 * each importer's invalidate callback runs with it held; the data copy of a move is a
 * fence that importers wait for before mapping again (G3). Revocation is permanent:
 * later maps fail (G6).
 *
 * @example
 *   const buf = DmaBuf.create(kernel, 'vram0', 16 * 4096);
 *   const at = yield* buf.attach({ invalidateMappings: (a) => zapAll(a) }, { dynamic: true });
 */
export class DmaBuf {
  readonly resv: Mutex;
  readonly attachments: DmaBufAttachment[] = [];
  frames: number[] = [];
  revoked = false;
  /** Virtual time until which the last move's copy fence is pending. */
  fenceUntil = 0;
  moves = 0;

  private constructor(readonly kernel: Kernel, readonly name: string, readonly size: number, readonly opts: DmaBufExporterOptions) {
    this.resv = new Mutex(kernel.sim, `dma_resv(${name})`, 'dma_resv');
  }

  /** Allocate a buffer of `size` bytes (rounded up to pages); -ENOMEM if memory is short. */
  static create(kernel: Kernel, name: string, size: number, opts: Partial<DmaBufExporterOptions> = {}): DmaBuf | number {
    if (size <= 0) return -EINVAL;
    const buf = new DmaBuf(kernel, name, Math.ceil(size / PAGE_SIZE) * PAGE_SIZE, { canPin: opts.canPin ?? true, moveFenceNs: opts.moveFenceNs ?? 20_000 });
    const frames = buf.allocFrames();
    if (typeof frames === 'number') return frames;
    buf.frames = frames;
    return buf;
  }

  get pages(): number {
    return this.size / PAGE_SIZE;
  }

  private allocFrames(): number[] | number {
    const out: number[] = [];
    for (let i = 0; i < this.size / PAGE_SIZE; i++) {
      const f = this.kernel.phys.allocPage();
      if (f < 0) {
        for (const g of out) this.kernel.phys.put(g);
        return f;
      }
      out.push(f);
    }
    return out;
  }

  /**
   * dma_buf_dynamic_attach / dma_buf_attach. A dynamic importer without an invalidate
   * callback is refused with -EINVAL (G2). With `revocableOnly` (the proposed
   * dma_buf_attach_revocable, G7) a static (pinning) importer is refused too.
   */
  *attach(ops: DmaBufImporterOps, opts: { dynamic: boolean; name?: string; revocableOnly?: boolean }): Co<DmaBufAttachment | number> {
    if (opts.dynamic && !ops.invalidateMappings) return -EINVAL;
    if (opts.revocableOnly && !opts.dynamic) return -EOPNOTSUPP;
    if (this.revoked) return -ENODEV;
    const at = new DmaBufAttachment(this, ops, opts.dynamic, opts.name ?? `importer${this.attachments.length}`);
    this.attachments.push(at);
    return at;
  }

  /** dma_buf_pin: a pinned importer keeps the buffer in place; some exporters cannot (G5). */
  pin(at: DmaBufAttachment): number {
    if (!this.opts.canPin) return -EOPNOTSUPP;
    at.pinned = true;
    return 0;
  }

  unpin(at: DmaBufAttachment): void {
    at.pinned = false;
  }

  /**
   * dma_buf_map_attachment: the frames backing the buffer now. Requires the reservation
   * lock for dynamic importers. Fails with -EINVAL once revoked (G6).
   */
  mapAttachment(at: DmaBufAttachment): number[] | number {
    if (this.revoked) return -EINVAL;
    if (at.dynamic && !this.resv.heldByCurrent()) {
      this.kernel.sim.emit({ type: 'notifier-warn', sub: at.name, message: 'dma_buf_map_attachment without the reservation lock' });
    }
    at.frames = [...this.frames];
    return at.frames;
  }

  unmapAttachment(at: DmaBufAttachment): void {
    at.frames = null;
  }

  /** Wait until the last move's copy fence has signalled (dma_resv_wait_timeout). */
  *waitFences(): Co {
    const now = this.kernel.sim.now();
    if (this.fenceUntil > now) yield* this.kernel.sim.sleep(this.fenceUntil - now);
  }

  private *notifyAll(): Co {
    for (const at of this.attachments) {
      if (at.detached || !at.ops.invalidateMappings) continue;
      const r = at.ops.invalidateMappings(at);
      if (r && typeof (r as Co<void>).next === 'function') yield* r as Co<void>;
    }
  }

  /**
   * Move the buffer to new frames (eviction, migration between memory types): under the
   * reservation lock, tell every importer (G4), then copy behind a fence. -EBUSY when a
   * pinned importer holds it in place.
   *
   * `revokePinned` is THE 2026 REVOCABLE-IMPORTER PROPOSAL (rdma G7, not mainline): an
   * exporter may tell pinned importers too; each takes the call as a permanent revocation
   * of its mapping and unpins, and the move then goes ahead. Still -EBUSY if an importer
   * kept its pin (the dynamic importers have been told by then and refault as usual).
   *
   * @example
   *   if ((yield* buf.move()) === -EBUSY) yield* buf.move({ revokePinned: true });
   */
  *move(opts: { revokePinned?: boolean } = {}): Co<number> {
    const pinned = () => this.attachments.some((a) => a.pinned && !a.detached);
    yield* this.resv.lock();
    try {
      if (this.revoked) return -EINVAL;
      if (pinned() && !opts.revokePinned) return -EBUSY;
      yield* this.notifyAll();
      if (pinned()) return -EBUSY;
      const next = this.allocFrames();
      if (typeof next === 'number') return next === -ENOMEM ? -ENOMEM : next;
      for (let i = 0; i < next.length; i++) this.kernel.phys.copyPage(next[i] as number, this.frames[i] as number);
      const old = this.frames;
      this.frames = next;
      this.fenceUntil = this.kernel.sim.now() + this.opts.moveFenceNs;
      this.moves++;
      // The old pages go once the copy fence signals.
      this.kernel.sim.scheduler.at(this.fenceUntil, () => {
        for (const f of old) this.kernel.phys.put(f);
      });
      return 0;
    } finally {
      this.resv.unlock();
    }
  }

  /**
   * Revoke the buffer for good (a VFIO device reset, a hot unplug): every importer is told
   * under the reservation lock, pinned ones included (the 2026 proposal treats that as a
   * permanent revocation, G7); the memory goes once the fences retire; maps fail after.
   */
  *revoke(): Co<number> {
    yield* this.resv.lock();
    try {
      if (this.revoked) return 0;
      this.revoked = true;
      yield* this.notifyAll();
      const old = this.frames;
      this.frames = [];
      this.kernel.sim.scheduler.at(Math.max(this.fenceUntil, this.kernel.sim.now()), () => {
        for (const f of old) this.kernel.phys.put(f);
      });
      return 0;
    } finally {
      this.resv.unlock();
    }
  }

  detach(at: DmaBufAttachment): void {
    at.detached = true;
    at.frames = null;
    const i = this.attachments.indexOf(at);
    if (i >= 0) this.attachments.splice(i, 1);
  }
}
