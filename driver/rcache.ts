/**
 * A userspace registration cache, on the provider side (what runs in the application's
 * process, above the verbs API), modelled on UCX's rcache (ucs/memory/rcache.c) and its
 * memory hooks (ucm):
 *
 * - `get(addr, length)` looks the page-aligned range up (ucs_rcache_get): a valid region
 *   covering it is a hit (its reference count goes up and it moves to the LRU's tail);
 *   otherwise the range (as the policy widens it) is registered with ibv_reg_mr and
 *   inserted: a miss. `put(region)` drops the reference (ucs_rcache_region_put).
 * - LRU with a size bound (UCX_RCACHE_MAX_REGIONS, UCX_RCACHE_MAX_SIZE; both unlimited by
 *   default in UCX): after an insertion, unreferenced regions are deregistered from the
 *   LRU's head until the cache is within both bounds.
 * - Reference counts for in-flight work: an invalidated region that is still referenced
 *   leaves the lookup structure at once but is deregistered only at its last `put`.
 * - Invalidation sources (`RcacheSource`):
 *   `memory-hooks`: ucm's hooks intercept munmap, madvise, brk and mremap BEFORE the
 *     system call (ucm_event_dispatch of UCM_EVENT_VM_UNMAPPED); the application's calls go
 *     through `munmap`, `madvise`, `brk`, `mremap` here. UCX queues the range (inv_q) and
 *     processes it at the next get; here it is processed at once, in the hook, so the pins
 *     drop before the memory goes (the lookup outcome is the same).
 *   `mr-event`: the project's opt-in MR event extension (IbvContext.enableMrEvents,
 *     `mr:invalidated`/`mr:revoked`). Only strategies that follow the CPU send it (holdoff,
 *     ODP); a pinned MR never does (there is no notifier behind it). Processed at the
 *     next get or put, as UCX processes its inv_q.
 *   `none`: a cache that trusts itself: nothing invalidates it.
 *   `odp`: no pinning: one implicit ODP MR (rdma A7) covers the address space, every
 *     lookup returns its keys; the NIC follows the CPU through page faults.
 *   `hooks-failed`: hooks were asked for and did not install (UCX pull request #5910: CUDA
 *     frees its hooks did not see); this cache keeps trusting itself, as UCX's did then
 *     (today UCX refuses to create an rcache whose hooks failed, UCS_ERR_UNSUPPORTED).
 *
 * Every step is published on the device's `rcache$` stream for the sanitizer.
 */
import { MADV_DONTNEED, MADV_FREE, MADV_REMOVE, pageAlignDown, pageAlignUp, type Co, type Process } from '../kernel-model/index.ts';
import { IBV_ACCESS_ON_DEMAND, IBV_SEND_SIGNALED, type QueuePair, type SendWr } from '../device/index.ts';
import type { IbvContext, IbvMr } from './verbs.ts';
import { SIZE_MAX } from './ib-device.ts';
import type { RcacheSource, RcacheStreamEvent } from './rcache-event.ts';

export type { RcacheSource } from './rcache-event.ts';
export const RCACHE_SOURCES: readonly RcacheSource[] = ['memory-hooks', 'mr-event', 'none', 'odp', 'hooks-failed'];

/** A region as a policy sees it. */
export interface RcacheRegionInfo {
  readonly start: number;
  readonly end: number;
  readonly key: number;
  readonly refcount: number;
  /** Virtual time of the last get that returned it. */
  readonly lastUse: number;
}

/**
 * What a cache policy decides (a user's policy is a module: driver/rcache-define.ts). Every
 * hook is optional; the defaults are UCX's.
 */
export interface RcachePolicy {
  readonly name: string;
  readonly source: RcacheSource;
  /** Region count bound (default unlimited, UCX_RCACHE_MAX_REGIONS=inf). */
  readonly maxRegions?: number;
  /** Registered bytes bound (default unlimited, UCX_RCACHE_MAX_SIZE=inf). */
  readonly maxBytes?: number;
  /** The range registered on a miss, from the page-aligned request (default: as is). */
  registerRange?(start: number, end: number): { start: number; end: number };
  /** The unreferenced region to evict first (default: least recently used). */
  pickVictim?(candidates: readonly RcacheRegionInfo[]): RcacheRegionInfo | undefined;
  /** Whether to drop a region an invalidation overlaps (default: yes; a policy that says no goes stale). */
  onInvalidate?(region: RcacheRegionInfo, start: number, end: number, cause: string): boolean;
}

export class RcacheRegion implements RcacheRegionInfo {
  refcount = 0;
  lastUse = 0;
  /** In the lookup structure; false once invalidated or evicted. */
  valid = true;
  constructor(readonly start: number, readonly end: number, readonly mr: IbvMr, readonly implicit: boolean) {}
  get key(): number {
    return this.mr.lkey;
  }
  get rkey(): number {
    return this.mr.rkey;
  }
}

export interface RcacheStats {
  lookups: number;
  hits: number;
  misses: number;
  registrations: number;
  deregistrations: number;
  invalidations: number;
  evictions: number;
}

export interface RcacheOptions {
  /** Access flags of the registrations (ON_DEMAND is added for the odp source). */
  access: number;
  pd: number;
  policy: RcachePolicy;
  name?: string;
}

/** A policy of one of the built-in sources with UCX's defaults. */
export function rcachePolicy(source: RcacheSource, bounds: { maxRegions?: number; maxBytes?: number } = {}): RcachePolicy {
  return { name: source, source, ...bounds };
}

export class RegistrationCache {
  readonly name: string;
  readonly policy: RcachePolicy;
  readonly stats: RcacheStats = { lookups: 0, hits: 0, misses: 0, registrations: 0, deregistrations: 0, invalidations: 0, evictions: 0 };
  /** Regions in LRU order (head = least recently used). */
  private readonly regions: RcacheRegion[] = [];
  private implicitMr: RcacheRegion | null = null;
  /** Ranges queued by the MR event (UCX's inv_q). */
  private readonly invQueue: { start: number; end: number; cause: string }[] = [];
  private readonly process: Process;
  private readonly nic: string;
  private readonly stream: { next(e: RcacheStreamEvent): void; readonly observed: boolean };

  constructor(readonly ctx: IbvContext, readonly opts: RcacheOptions) {
    this.policy = opts.policy;
    this.name = opts.name ?? `rcache(${opts.policy.name})`;
    this.process = ctx.ucontext.process;
    const dev = ctx.ucontext.device;
    this.nic = dev.nic.name;
    this.stream = dev.rcache$;
    if (this.policy.source === 'hooks-failed') this.publish({ type: 'hooks-failed', nic: this.nic, mmId: this.mmId, cache: this.name });
    if (this.policy.source === 'mr-event') {
      ctx.enableMrEvents();
      ctx.on('mr:invalidated', (mr, start, end) => this.queue(mr, start, end, 'mr:invalidated'));
      ctx.on('mr:revoked', (mr) => this.queue(mr, mr.addr, mr.addr + mr.length, 'mr:revoked'));
    }
  }

  get mmId(): number {
    return this.process.mm.id;
  }

  /** Regions in the lookup structure, LRU first. */
  get size(): number {
    return this.regions.length;
  }

  get bytes(): number {
    return this.regions.reduce((n, r) => n + (r.end - r.start), 0);
  }

  private publish(e: RcacheStreamEvent): void {
    if (this.stream.observed) this.stream.next(e);
  }

  private queue(mr: IbvMr, start: number, end: number, cause: string): void {
    if (this.regions.some((r) => r.mr === mr)) this.invQueue.push({ start, end, cause });
  }

  /**
   * ucs_rcache_get: a region covering [addr, addr + length), referenced once more, or
   * -errno from the registration.
   */
  *get(addr: number, length: number): Co<RcacheRegion | number> {
    yield* this.drainQueue();
    this.stats.lookups++;
    this.publish({ type: 'lookup', nic: this.nic, mmId: this.mmId, cache: this.name, addr, length });
    const now = this.ctx.ucontext.device.kernel.sim.now();
    if (this.policy.source === 'odp') {
      if (!this.implicitMr) {
        const mr = yield* this.ctx.regMr(this.opts.pd, 0, SIZE_MAX, this.opts.access | IBV_ACCESS_ON_DEMAND);
        if (typeof mr === 'number') return mr;
        this.stats.misses++;
        this.stats.registrations++;
        this.implicitMr = new RcacheRegion(0, SIZE_MAX, mr, true);
        this.publish({ type: 'register', nic: this.nic, mmId: this.mmId, cache: this.name, key: mr.lkey, start: 0, end: SIZE_MAX });
      } else {
        this.stats.hits++;
        this.publish({ type: 'hit', nic: this.nic, mmId: this.mmId, cache: this.name, addr, length, key: this.implicitMr.key, start: 0, end: SIZE_MAX });
      }
      this.implicitMr.refcount++;
      this.implicitMr.lastUse = now;
      return this.implicitMr;
    }
    const start = pageAlignDown(addr);
    const end = pageAlignUp(addr + length);
    for (let i = this.regions.length - 1; i >= 0; i--) {
      const r = this.regions[i] as RcacheRegion;
      if (r.start <= start && end <= r.end) {
        this.regions.splice(i, 1);
        this.regions.push(r);
        r.refcount++;
        r.lastUse = now;
        this.stats.hits++;
        this.publish({ type: 'hit', nic: this.nic, mmId: this.mmId, cache: this.name, addr, length, key: r.key, start: r.start, end: r.end });
        return r;
      }
    }
    this.stats.misses++;
    const want = this.policy.registerRange ? this.policy.registerRange(start, end) : { start, end };
    const s = Math.min(start, pageAlignDown(want.start));
    const e = Math.max(end, pageAlignUp(want.end));
    const mr = yield* this.ctx.regMr(this.opts.pd, s, e - s, this.opts.access);
    if (typeof mr === 'number') return mr;
    this.stats.registrations++;
    const region = new RcacheRegion(s, e, mr, false);
    region.refcount = 1;
    region.lastUse = now;
    this.regions.push(region);
    this.publish({ type: 'register', nic: this.nic, mmId: this.mmId, cache: this.name, key: mr.lkey, start: s, end: e });
    yield* this.evictOverBounds();
    return region;
  }

  /** ucs_rcache_region_put: drop a reference; an invalidated region goes with its last one. */
  *put(region: RcacheRegion): Co {
    region.refcount = Math.max(0, region.refcount - 1);
    if (region.refcount === 0 && !region.valid && !region.implicit) yield* this.deregister(region, 'invalidated while in use');
    yield* this.drainQueue();
  }

  private *deregister(region: RcacheRegion, why: string): Co {
    this.stats.deregistrations++;
    yield* this.ctx.deregMr(region.mr);
    this.publish({ type: 'deregister', nic: this.nic, mmId: this.mmId, cache: this.name, key: region.key, start: region.start, end: region.end, why });
  }

  private *evictOverBounds(): Co {
    const maxRegions = this.policy.maxRegions ?? Infinity;
    const maxBytes = this.policy.maxBytes ?? Infinity;
    while (this.regions.length > maxRegions || this.bytes > maxBytes) {
      const idle = this.regions.filter((r) => r.refcount === 0);
      const victim = (this.policy.pickVictim ? this.policy.pickVictim(idle) : idle[0]) as RcacheRegion | undefined;
      if (!victim || !idle.includes(victim)) return;
      this.regions.splice(this.regions.indexOf(victim), 1);
      victim.valid = false;
      this.stats.evictions++;
      yield* this.deregister(victim, 'evicted (LRU bound)');
    }
  }

  /**
   * ucs_rcache_invalidate_range: regions overlapping [start, end) leave the lookup
   * structure; unreferenced ones are deregistered now, the others at their last put.
   */
  *invalidate(start: number, end: number, cause: string): Co {
    const hit = this.regions.filter((r) => r.start < end && start < r.end && (this.policy.onInvalidate?.(r, start, end, cause) ?? true));
    this.stats.invalidations++;
    this.publish({ type: 'invalidate', nic: this.nic, mmId: this.mmId, cache: this.name, start, end, source: this.policy.source, cause, keys: hit.map((r) => r.key) });
    for (const r of hit) {
      this.regions.splice(this.regions.indexOf(r), 1);
      r.valid = false;
      if (r.refcount === 0) yield* this.deregister(r, `invalidated (${cause})`);
    }
  }

  private *drainQueue(): Co {
    while (this.invQueue.length) {
      const q = this.invQueue.shift()!;
      yield* this.invalidate(q.start, q.end, q.cause);
    }
  }

  // ---- memory hooks (ucm): the application's unmapping calls, hooked before the syscall ----

  private hooked(): boolean {
    return this.policy.source === 'memory-hooks';
  }

  /** munmap(2) as ucm's hook sees it: invalidate, then the system call. */
  *munmap(addr: number, length: number): Co<number> {
    if (this.hooked()) yield* this.invalidate(addr, addr + pageAlignUp(length), 'munmap');
    return yield* this.process.munmap(addr, length);
  }

  /** madvise(2): DONTNEED, FREE and REMOVE release pages (ucm_madvise dispatches VM_UNMAPPED for them). */
  *madvise(addr: number, length: number, advice: number): Co<number> {
    if (this.hooked() && (advice === MADV_DONTNEED || advice === MADV_FREE || advice === MADV_REMOVE)) {
      yield* this.invalidate(addr, addr + pageAlignUp(length), 'madvise');
    }
    return yield* this.process.madvise(addr, length, advice);
  }

  /** brk(2): a shrink releases [new break, old break) (ucm_brk). */
  *brk(addr: number): Co<number> {
    const old = this.process.mm.brk;
    if (this.hooked() && addr > 0 && addr < old) yield* this.invalidate(pageAlignUp(addr), pageAlignUp(old), 'brk');
    return yield* this.process.brk(addr);
  }

  /** mremap(2): the old range goes (ucm_mremap dispatches VM_UNMAPPED for it). */
  *mremap(oldAddr: number, oldLength: number, newLength: number, flags = 0, newAddr = 0): Co<number> {
    if (this.hooked()) yield* this.invalidate(oldAddr, oldAddr + pageAlignUp(oldLength), 'mremap');
    return yield* this.process.mremap(oldAddr, oldLength, newLength, flags, newAddr);
  }

  // ---- what the library tells the stream besides the cache's own steps ----------------

  /** The allocator handed out (or took back) a block: published for the checker's trail. */
  noteAlloc(fn: string, addr: number, length: number): void {
    this.publish({ type: 'alloc', nic: this.nic, mmId: this.mmId, fn, addr, length });
  }

  noteFree(fn: string, addr: number, length: number): void {
    this.publish({ type: 'free', nic: this.nic, mmId: this.mmId, fn, addr, length });
  }

  /** A work request through `key` was posted (the doorbell rang). */
  notePost(key: number, addr: number, length: number, opcode: string, direction: 'out' | 'in'): void {
    this.publish({ type: 'post', nic: this.nic, mmId: this.mmId, key, addr, length, opcode, direction });
  }

  /**
   * ibv_post_send of one signalled WR from a cached region (its lkey in the single SGE):
   * posted, then published as the NIC reading (or, for RDMA READ, writing) the range.
   */
  *postSend(qp: QueuePair, wr: Omit<SendWr, 'sendFlags'> & { sendFlags?: number }, opcodeName: string): Co<number> {
    const r = yield* this.ctx.postSend(qp, { ...wr, sendFlags: wr.sendFlags ?? IBV_SEND_SIGNALED });
    if (r === 0) for (const sge of wr.sgList) this.notePost(sge.lkey, sge.addr, sge.length, opcodeName, opcodeName === 'RDMA_READ' ? 'in' : 'out');
    return r;
  }

  /** Deregister everything (the cache is destroyed with its context). */
  *destroy(): Co {
    for (const r of [...this.regions]) {
      this.regions.splice(this.regions.indexOf(r), 1);
      r.valid = false;
      if (r.refcount === 0) yield* this.deregister(r, 'cache destroyed');
    }
    if (this.implicitMr) {
      yield* this.deregister(this.implicitMr, 'cache destroyed');
      this.implicitMr = null;
    }
  }
}

