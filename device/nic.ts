import { Observable, Subject } from 'rxjs';
import type { Co, Simulation } from '../kernel-model/sim/index.ts';
import {
  IBV_ACCESS_FLUSH_GLOBAL, IBV_ACCESS_FLUSH_PERSISTENT, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_ATOMIC, IBV_ACCESS_REMOTE_WRITE,
  IBV_ACCESS_SUPPORTED_MASK, accessWritable,
} from './access-flags.ts';
import {
  IBV_DEVICE_SRQ_RESIZE, IBV_DEVICE_XRC, IB_UVERBS_DEVICE_ATOMIC_WRITE, IB_UVERBS_DEVICE_FLUSH_GLOBAL,
  IB_UVERBS_DEVICE_FLUSH_PERSISTENT, hasDeviceCap, isFaultable, nicCapabilities, supportsImplicitOdp,
  transportOdpCaps, type NicCapabilities,
} from './capabilities.ts';
import { CompletionQueue } from './completion-queue.ts';
import { costModel, type CostModel } from './cost-model.ts';
import { DEVICE_HUGE_PAGES, PTE_READ, PTE_READ_WRITE } from './device-page-table.ts';
import { DmaActivity } from './dma-activity.ts';
import { DmaEngine, type DeviceAccess, type DeviceDmaBus } from './dma-engine.ts';
import { EBUSY, EINVAL, EIO, ENOMEM, EOPNOTSUPP } from './errno.ts';
import { Fabric, type FabricEndpoint } from './fabric.ts';
import { MemoryRegion } from './memory-region.ts';
import type { Packet } from './packet.ts';
import { FaultQueue, type DeviceFault, type FaultResume } from './page-fault.ts';
import {
  IBV_QPS_ERR, IBV_QPS_RESET, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPS_SQE, IBV_QPT_RC, IBV_QPT_UD, IBV_QPT_XRC_RECV,
  IBV_QPT_XRC_SEND, QueuePair, mtuBytes, qpTransitionAllowed, type QpAttr, type QpInitAttr,
} from './queue-pair.ts';
import {
  IBV_SRQT_BASIC, IBV_SRQT_XRC, IBV_SRQ_LIMIT, IBV_SRQ_MAX_WR, SharedReceiveQueue, type SrqInitAttr,
} from './shared-receive-queue.ts';
import { XrcDomain } from './xrc-domain.ts';
import { Requester } from './requester.ts';
import { Responder } from './responder.ts';
import { TranslationCache } from './translation-cache.ts';
import { IBV_WC_WR_FLUSH_ERR, type WorkCompletion } from './work-completion.ts';
import {
  IBV_FLUSH_GLOBAL, IBV_FLUSH_MR, IBV_FLUSH_PERSISTENT, IBV_FLUSH_RANGE, IBV_WR_ATOMIC_CMP_AND_SWP,
  IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_WR_ATOMIC_WRITE, IBV_WR_FLUSH, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, IBV_WR_SEND,
  isAtomic, type RecvWr, type SendWr,
} from './work-request.ts';

export interface NicOptions {
  name: string;
  caps?: Partial<NicCapabilities>;
  costs?: Partial<CostModel>;
  /** Entries in the translation cache. Default 4096, assumed (NIC cache sizes are not published). */
  translationCacheEntries?: number;
  /** Depth of the page-fault event queue. Default 4096 (mlx5's MLX5_IB_NUM_PF_EQE, rdma B7). */
  faultQueueDepth?: number;
  /** Outstanding RC requests per QP before the send engine waits for ACKs. Default 128, assumed. */
  sendWindow?: number;
  /** The network to join. Without one the NIC gets a private fabric (loopback only). */
  fabric?: Fabric;
  /** Seeded fault injection: probability that an update command fails with -EIO. */
  commandFailureRate?: number;
}

export type NicAsyncEventType = 'IBV_EVENT_QP_FATAL' | 'IBV_EVENT_QP_ACCESS_ERR' | 'IBV_EVENT_QP_REQ_ERR' | 'IBV_EVENT_CQ_ERR'
  | 'IBV_EVENT_SRQ_LIMIT_REACHED';

/**
 * A translation command as it completed: an update installs entries (each with this end
 * time as its install time), a zap clears them, a sync fences the cache and in-flight DMA.
 * `task` is the engine task that issued it (the driver code path), for contract checks.
 */
export interface DeviceCommand {
  nic: string;
  kind: 'update' | 'zap' | 'sync';
  begin: number;
  end: number;
  task: number | null;
  /** 0 for a sync. */
  mrKey: number;
  firstPage: number;
  count: number;
}

/** An affiliated asynchronous event (`ibv_get_async_event`); there is no MR-level event (rdma F4). */
export interface NicAsyncEvent {
  nic: string;
  type: NicAsyncEventType;
  qpNum?: number;
  cqNum?: number;
  srqNum?: number;
  time: number;
}

export interface NicStats {
  packetsReceived: number;
  /** Packets for a QP number this NIC does not have. */
  packetsToUnknownQp: number;
  retransmits: number;
  timeouts: number;
  rnrNaksSent: number;
  syncs: number;
  updateCommands: number;
  zapCommands: number;
  /** Present entries cleared by zap commands. */
  zappedEntries: number;
  /** Translation-cache entries dropped by syncs. */
  flushedTranslations: number;
}

/** Commands (update, zap, sync) run one at a time, in order, as on a UMR queue. */
class CommandQueue {
  private busy = false;
  private waiters: (() => void)[] = [];
  constructor(private readonly sim: Simulation) {}

  *enter(): Co {
    if (!this.busy) {
      this.busy = true;
      return;
    }
    yield* this.sim.park<void>((wake) => this.waiters.push(() => wake()));
  }

  exit(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.busy = false;
  }
}

/**
 * The NIC: memory regions with device page tables, a translation cache, the DMA engine with
 * RC and UD queue pairs and completion queues, the page-fault queue, and a port on a fabric.
 * It knows no Linux: it sees frames through the DmaBus and the translations the driver
 * installs with commands.
 *
 * Verbs-like calls (`allocPd`, `createMr`, `createCq`, `createQp`, `modifyQp`, `postSend`,
 * `postRecv`) return an object or 0, and a negative errno on bad input, like rdma-core;
 * they never throw for bad input. The translation commands (`updateEntries`,
 * `zapEntries`, `sync`) are coroutines that take virtual time.
 *
 * @example
 *   const nic = new Nic(sim, new DmaBus(phys), { name: 'nic0' });
 *   const pd = nic.allocPd();
 *   const mr = nic.createMr({ pd, iova: 0x10000, length: 8192, access: IBV_ACCESS_LOCAL_WRITE, onDemand: true });
 *   nic.fault$.subscribe((f) => sim.spawn('pf', function* () {
 *     yield* nic.updateEntries(mr as MemoryRegion, 0, [frame], true);
 *     nic.resumeFault(f.id);
 *   }));
 */
export class Nic implements FabricEndpoint {
  readonly name: string;
  readonly caps: NicCapabilities;
  readonly costs: CostModel;
  readonly fabric: Fabric;
  readonly lid: number;
  readonly sendWindow: number;
  readonly cache: TranslationCache;
  readonly engine: DmaEngine;
  readonly faultQueue: FaultQueue;
  /** DMA work in progress per MR (send WQEs from doorbell to completion, executing requests). */
  readonly dmaActivity: DmaActivity;
  /** Every page access the DMA engine makes (only built while observed). */
  readonly access$: Observable<DeviceAccess>;
  /** Every page fault, when the driver can see it. */
  readonly fault$: Observable<DeviceFault>;
  /** Every resume of a fault by the driver. */
  readonly faultResume$: Observable<FaultResume>;
  private readonly commandSubject = new Subject<DeviceCommand>();
  /** Every completed translation command (update, zap, sync), with who issued it. */
  readonly command$: Observable<DeviceCommand> = this.commandSubject.asObservable();
  private readonly asyncSubject = new Subject<NicAsyncEvent>();
  readonly asyncEvent$: Observable<NicAsyncEvent> = this.asyncSubject.asObservable();
  /** Seeded fault injection (may be changed during a run): a failing update command. */
  readonly faultInjection: { commandFailureRate: number };
  readonly stats: NicStats = {
    packetsReceived: 0, packetsToUnknownQp: 0, retransmits: 0, timeouts: 0, rnrNaksSent: 0,
    syncs: 0, updateCommands: 0, zapCommands: 0, zappedEntries: 0, flushedTranslations: 0,
  };
  private readonly pds = new Set<number>();
  private nextPd = 1;
  private readonly mrs = new Map<number, MemoryRegion>();
  private nextMrIndex = 1;
  private keyVariant = 0;
  private readonly qps = new Map<number, QueuePair>();
  private nextQpn = 0x10;
  private readonly srqs = new Map<number, SharedReceiveQueue>();
  private nextSrqn = 1;
  private nextXrcdn = 1;
  private nextCqn = 1;
  /** The NIC-wide translation generation: bumped for every installed entry. */
  private generation = 0;
  private readonly commands: CommandQueue;
  private readonly requester = new Requester(this);
  private readonly responder = new Responder(this);

  constructor(readonly sim: Simulation, readonly dmaBus: DeviceDmaBus, opts: NicOptions) {
    this.name = opts.name;
    this.caps = nicCapabilities(opts.caps);
    this.costs = costModel(opts.costs);
    this.fabric = opts.fabric ?? new Fabric(sim);
    this.lid = this.fabric.attach(this);
    this.sendWindow = opts.sendWindow ?? 128;
    this.cache = new TranslationCache(opts.translationCacheEntries ?? 4096);
    this.engine = new DmaEngine(sim, this.name, dmaBus, this.cache, this.costs);
    this.faultQueue = new FaultQueue(sim, this.costs, opts.faultQueueDepth ?? 4096, this.caps.odpMissHandling === 'inline');
    this.dmaActivity = new DmaActivity(sim);
    this.access$ = this.engine.access$;
    this.faultInjection = { commandFailureRate: opts.commandFailureRate ?? 0 };
    this.fault$ = this.faultQueue.fault$;
    this.faultResume$ = this.faultQueue.resume$;
    this.commands = new CommandQueue(sim);
  }

  /** Whether this NIC can take page faults (ODP). */
  get faultable(): boolean {
    return isFaultable(this.caps);
  }

  private publishCommand(kind: DeviceCommand['kind'], begin: number, mrKey: number, firstPage: number, count: number): void {
    if (!this.commandSubject.observed) return;
    this.commandSubject.next({ nic: this.name, kind, begin, end: this.sim.now(), task: this.sim.current?.id ?? null, mrKey, firstPage, count });
  }

  // ---- protection domains and memory regions ------------------------------------------------

  allocPd(): number {
    const pd = this.nextPd++;
    this.pds.add(pd);
    return pd;
  }

  deallocPd(pd: number): number {
    return this.pds.delete(pd) ? 0 : -EINVAL;
  }

  /**
   * Create a device MR (an mkey) with an empty page table. `onDemand` (or ON_DEMAND in
   * `access`) makes it faultable; `implicit` makes it cover [0, caps.maxMrSize).
   * Errors: -EINVAL for an unknown PD, unknown access bits, remote write or atomic without
   * local write (rdma A1), an empty or oversized range, an implicit MR with a non-zero iova
   * or on a NIC without implicit ODP (A7); -EOPNOTSUPP for ODP on a NIC that cannot fault (A2).
   */
  createMr(init: { pd: number; iova: number; length: number; access: number; onDemand?: boolean; implicit?: boolean }): MemoryRegion | number {
    if (!this.pds.has(init.pd)) return -EINVAL;
    const access = init.access;
    if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) && !(access & IBV_ACCESS_LOCAL_WRITE)) return -EINVAL;
    if (access & ~IBV_ACCESS_SUPPORTED_MASK) return -EINVAL;
    const onDemand = init.onDemand ?? (access & IBV_ACCESS_ON_DEMAND) !== 0;
    const implicit = init.implicit ?? false;
    if (onDemand && !this.faultable) return -EOPNOTSUPP;
    // rdma A1 step 4 (`ib_check_mr_access`): FLUSH access needs the device's flush capability.
    if (access & IBV_ACCESS_FLUSH_GLOBAL && !hasDeviceCap(this.caps, IB_UVERBS_DEVICE_FLUSH_GLOBAL)) return -EOPNOTSUPP;
    if (access & IBV_ACCESS_FLUSH_PERSISTENT && !hasDeviceCap(this.caps, IB_UVERBS_DEVICE_FLUSH_PERSISTENT)) return -EOPNOTSUPP;
    let iova = init.iova;
    let length = init.length;
    if (implicit) {
      if (!onDemand || !supportsImplicitOdp(this.caps) || iova !== 0) return -EINVAL;
      iova = 0;
      length = this.caps.maxMrSize;
    }
    if (!(length > 0) || !(iova >= 0) || length > this.caps.maxMrSize) return -EINVAL;
    const index = this.nextMrIndex++;
    const key = index * 256 + (this.keyVariant++ & 0xff);
    const mr = new MemoryRegion({ lkey: key, rkey: key, pd: init.pd, iova, length, access, onDemand, implicit });
    this.mrs.set(key, mr);
    return mr;
  }

  /** Destroy an MR: its key stops resolving at once. */
  destroyMr(mr: MemoryRegion): number {
    if (this.mrs.get(mr.lkey) !== mr) return -EINVAL;
    this.mrs.delete(mr.lkey);
    mr.state = 'destroyed';
    return 0;
  }

  /**
   * Revoke an MR (idempotent): every later access through its key fails as a protection
   * error, never as a fault, and its entries can no longer be updated (rdma G6).
   */
  revokeMr(mr: MemoryRegion): number {
    if (mr.state === 'destroyed') return -EINVAL;
    mr.state = 'revoked';
    return 0;
  }

  /** The live MR with this key, if any. */
  mrByKey(key: number): MemoryRegion | undefined {
    return this.mrs.get(key);
  }

  /** Every live MR, in creation order (a read-only view for inspection). */
  memoryRegions(): MemoryRegion[] {
    return [...this.mrs.values()];
  }

  // ---- translation commands ----------------------------------------------------------------

  /**
   * Install translations for pages [firstPage, firstPage + frames.length) of `mr` (a UMR
   * populate). `writable` is one flag for all pages or one per page. The entries take effect
   * when the command completes, each with a fresh generation and that install time.
   * Returns 0, or -EINVAL (dead or revoked MR, range outside the MR, a writable entry in a
   * MR without write access).
   */
  *updateEntries(mr: MemoryRegion, firstPage: number, frames: ArrayLike<number>, writable: boolean | ArrayLike<boolean>, order = 0): Co<number> {
    const n = frames.length;
    // `order` 9: each frame starts a 2 MiB page mapped by one entry (DEVICE_HUGE_PAGES pages
    // from firstPage + i * 512; firstPage aligned). An entry may reach past the MR's last page.
    const span = order > 0 ? DEVICE_HUGE_PAGES : 1;
    if (order !== 0 && order !== 9) return -EINVAL;
    if (!mr.valid || !Number.isInteger(firstPage) || firstPage < 0 || (order > 0 ? firstPage % span !== 0 || firstPage + (n - 1) * span >= mr.pages : firstPage + n > mr.pages)) return -EINVAL;
    const canWrite = accessWritable(mr.access);
    for (let i = 0; i < n; i++) {
      const w = typeof writable === 'boolean' ? writable : writable[i];
      if (w && !canWrite) return -EINVAL;
    }
    yield* this.commands.enter();
    const t0 = this.sim.now();
    try {
      yield* this.sim.sleep(this.costs.updateEntriesBaseNs + n * this.costs.updateEntriesPerPageNs);
      if (!mr.valid) return -EINVAL;
      // A failed command installs nothing (the firmware rejected the whole UMR).
      const rate = this.faultInjection.commandFailureRate;
      if (rate > 0 && this.sim.rng('fault-inject:device-command').chance(rate)) return -EIO;
      const now = this.sim.now();
      for (let i = 0; i < n; i++) {
        const w = typeof writable === 'boolean' ? writable : writable[i];
        if (order > 0) mr.pageTable.setHuge(firstPage + i * span, frames[i] as number, w ? PTE_READ_WRITE : PTE_READ, ++this.generation, now);
        else mr.pageTable.set(firstPage + i, frames[i] as number, w ? PTE_READ_WRITE : PTE_READ, ++this.generation, now);
      }
      mr.counters.updatedPages += n * span;
      this.stats.updateCommands++;
      this.publishCommand('update', t0, mr.lkey, firstPage, n);
      return 0;
    } finally {
      this.commands.exit();
    }
  }

  /**
   * Clear the entries of pages [firstPage, firstPage + count) of `mr` (a UMR zap). On a
   * `device-fence` device the translation cache is not touched: until a sync completes the
   * device may still use a zapped translation. On an `mkey-umr` device (mlx5) the zap is
   * synchronous for that mkey: its new accesses wait, those in flight drain, and its cached
   * translations are dropped before the command completes; other mkeys run on. Returns how
   * many present entries were cleared, or -EINVAL.
   */
  *zapEntries(mr: MemoryRegion, firstPage: number, count: number, order = 0): Co<number> {
    // `order` 9: the pages are 2 MiB entries (count a multiple of 512), each one MTT entry to
    // clear, costed as one (assumed: a huge entry costs what a small one does).
    const span = order > 0 ? DEVICE_HUGE_PAGES : 1;
    if (mr.state === 'destroyed' || !Number.isInteger(firstPage) || firstPage < 0 || count < 0 || (order > 0 ? firstPage >= mr.pages && count > 0 : firstPage + count > mr.pages)) return -EINVAL;
    yield* this.commands.enter();
    const t0 = this.sim.now();
    const perMkey = this.caps.invalidation === 'mkey-umr';
    try {
      if (perMkey) {
        // mlx5r_umr_update_xlt (MLX5_IB_UPD_XLT_ZAP): the UMR on this mkey completes only
        // when the mkey's accesses in flight are done and its cached translations are gone.
        // Only this mkey's traffic waits meanwhile (assumed).
        this.engine.fenceRegion(mr);
        yield* this.engine.drainRegion(mr);
      }
      yield* this.sim.sleep(this.costs.zapEntriesBaseNs + Math.ceil(count / span) * this.costs.zapEntriesPerPageNs);
      const cleared = mr.pageTable.clearRange(firstPage, count);
      if (perMkey) this.stats.flushedTranslations += this.cache.flushRegion(mr);
      mr.counters.zappedPages += cleared;
      this.stats.zapCommands++;
      this.stats.zappedEntries += cleared;
      this.publishCommand('zap', t0, mr.lkey, firstPage, count);
      return cleared;
    } finally {
      if (perMkey) this.engine.unfenceRegion(mr);
      this.commands.exit();
    }
  }

  /**
   * Fence the translation cache: stall the DMA engine, wait for the page accesses in flight
   * (they are reported as fenced), empty the translation cache, keep the engine stalled for
   * at least `syncDmaStallNs`, and complete after at least `syncNs`. After a sync, no access
   * can use a translation zapped before it began. Returns 0.
   */
  *sync(): Co<number> {
    yield* this.commands.enter();
    try {
      const t0 = this.sim.now();
      const engine = this.engine;
      engine.stall();
      engine.fencing = true;
      try {
        yield* engine.drain();
        this.stats.flushedTranslations += this.cache.flush();
      } finally {
        engine.fencing = false;
      }
      const stallEnd = t0 + this.costs.syncDmaStallNs;
      if (this.sim.now() < stallEnd) yield* this.sim.sleep(stallEnd - this.sim.now());
      engine.unstall();
      const end = t0 + this.costs.syncNs;
      if (this.sim.now() < end) yield* this.sim.sleep(end - this.sim.now());
      this.stats.syncs++;
      this.publishCommand('sync', t0, 0, 0, 0);
      return 0;
    } finally {
      this.commands.exit();
    }
  }

  // ---- faults ------------------------------------------------------------------------------

  /**
   * Resume a fault (`PAGE_FAULT_RESUME`): the stalled queue runs again `faultResumeNs`
   * later and retries the access (which may fault again); with `error`, the work request
   * fails instead. Faults may be resumed in any order. Returns 0, or -ENOENT.
   */
  resumeFault(faultId: number, opts: { error?: boolean } = {}): number {
    return this.faultQueue.resume(faultId, opts.error ?? false);
  }

  /** Faults on the stream that have not been resumed, oldest first. */
  pendingFaults(): DeviceFault[] {
    return this.faultQueue.pending();
  }

  // ---- completion queues and queue pairs -----------------------------------------------------

  createCq(cqe: number): CompletionQueue | number {
    if (!(Number.isInteger(cqe) && cqe >= 1 && cqe <= this.caps.maxCqe)) return -EINVAL;
    return new CompletionQueue(this.sim, this.nextCqn++, cqe);
  }

  // ---- shared receive queues and XRC domains -----------------------------------------------

  /**
   * `ibv_create_srq` / `ibv_create_srq_ex`. -EINVAL for an unknown PD, `maxWr` or `maxSge`
   * out of range (ibv_create_srq(3): "exceeds the device's capabilities"), an XRC SRQ without
   * a live XRC domain or CQ; -EOPNOTSUPP for an XRC SRQ on a device without XRC; -ENOMEM
   * when the device has `maxSrq` SRQs. `srqLimit` is ignored here, as the man page says.
   */
  createSrq(init: SrqInitAttr): SharedReceiveQueue | number {
    const type = init.srqType ?? IBV_SRQT_BASIC;
    if (type !== IBV_SRQT_BASIC && type !== IBV_SRQT_XRC) return -EINVAL;
    if (!this.pds.has(init.pd)) return -EINVAL;
    if (!isCount(init.maxWr, this.caps.maxSrqWr) || !isCount(init.maxSge, this.caps.maxSrqSge)) return -EINVAL;
    if (type === IBV_SRQT_XRC) {
      if (!hasDeviceCap(this.caps, IBV_DEVICE_XRC)) return -EOPNOTSUPP;
      if (!init.xrcd || init.xrcd.destroyed || !init.cq) return -EINVAL;
    }
    if (this.srqs.size >= this.caps.maxSrq) return -ENOMEM;
    const srq = new SharedReceiveQueue(this.nextSrqn++, { ...init, srqType: type });
    if (srq.xrcd) srq.xrcd.users++;
    this.srqs.set(srq.srqNum, srq);
    return srq;
  }

  /**
   * `ibv_modify_srq`. IBV_SRQ_LIMIT arms the limit event (0 disarms); a limit not below the
   * SRQ's size is -EINVAL (`mlx5_ib_modify_srq`: srq_limit >= max). IBV_SRQ_MAX_WR resizes,
   * only on a device with IBV_DEVICE_SRQ_RESIZE (mlx5 refuses any resize with -EINVAL, "We
   * don't support resizing SRQs yet"); shrinking below the WQEs already posted is -EINVAL
   * (rxe `rxe_srq_chk_attr`).
   */
  modifySrq(srq: SharedReceiveQueue, attr: { maxWr?: number; srqLimit?: number }, mask: number): number {
    if (srq.destroyed || mask & ~(IBV_SRQ_MAX_WR | IBV_SRQ_LIMIT)) return -EINVAL;
    let maxWr = srq.maxWr;
    if (mask & IBV_SRQ_MAX_WR) {
      if (!hasDeviceCap(this.caps, IBV_DEVICE_SRQ_RESIZE)) return -EINVAL;
      if (!isCount(attr.maxWr, this.caps.maxSrqWr) || (attr.maxWr as number) < srq.depth) return -EINVAL;
      maxWr = attr.maxWr as number;
    }
    if (mask & IBV_SRQ_LIMIT) {
      const limit = attr.srqLimit;
      if (limit === undefined || !Number.isInteger(limit) || limit < 0 || limit >= maxWr) return -EINVAL;
    }
    srq.maxWr = maxWr;
    if (mask & IBV_SRQ_LIMIT) srq.limit = attr.srqLimit as number;
    return 0;
  }

  /** `ibv_destroy_srq`: -EBUSY while a QP is attached (`ib_destroy_srq_user` checks the use count). */
  destroySrq(srq: SharedReceiveQueue): number {
    if (srq.destroyed) return -EINVAL;
    if (srq.users > 0) return -EBUSY;
    srq.destroyed = true;
    if (srq.xrcd) srq.xrcd.users--;
    this.srqs.delete(srq.srqNum);
    return 0;
  }

  srqByNum(srqNum: number): SharedReceiveQueue | undefined {
    return this.srqs.get(srqNum);
  }

  /**
   * `ibv_post_srq_recv`. -EINVAL (destroyed SRQ, more SGEs than `maxSge`), -ENOMEM when the
   * SRQ already holds `maxWr` WQEs (the overflow rxe's `post_one_recv` and mlx5's
   * `mlx5_post_srq_recv` report).
   */
  postSrqRecv(srq: SharedReceiveQueue, wr: RecvWr): number {
    if (srq.destroyed || wr.sgList.length > srq.maxSge) return -EINVAL;
    if (srq.depth >= srq.maxWr) return -ENOMEM;
    srq.push(wr);
    return 0;
  }

  /**
   * Take the next WQE of an SRQ for a message; when that leaves fewer WQEs than an armed
   * limit, disarm it and raise IBV_EVENT_SRQ_LIMIT_REACHED (rxe `get_srq_wqe`).
   */
  takeSrqWqe(srq: SharedReceiveQueue): RecvWr | undefined {
    const wr = srq.take();
    if (wr && srq.limit > 0 && srq.depth < srq.limit) {
      srq.limit = 0;
      srq.limitEvents++;
      this.asyncSubject.next({ nic: this.name, type: 'IBV_EVENT_SRQ_LIMIT_REACHED', srqNum: srq.srqNum, time: this.sim.now() });
    }
    return wr;
  }

  /** An XRC domain (the device half of `ibv_open_xrcd`); -EOPNOTSUPP without IBV_DEVICE_XRC. */
  allocXrcd(): XrcDomain | number {
    if (!hasDeviceCap(this.caps, IBV_DEVICE_XRC)) return -EOPNOTSUPP;
    return new XrcDomain(this.nextXrcdn++);
  }

  /** `ibv_close_xrcd`: -EBUSY while XRC SRQs or target QPs use it. */
  deallocXrcd(xrcd: XrcDomain): number {
    if (xrcd.destroyed) return -EINVAL;
    if (xrcd.users > 0) return -EBUSY;
    xrcd.destroyed = true;
    return 0;
  }

  /**
   * `ibv_create_qp` / `ibv_create_qp_ex`. RC and UD need a PD and both CQs; with `srq` their
   * receives come from that (basic) SRQ. XRC_SEND needs a PD and a send CQ; XRC_RECV only an
   * XRC domain. -EOPNOTSUPP for another QP type or XRC on a device without it; -EINVAL for a
   * missing or dead PD, CQ, SRQ or domain, an XRC SRQ given to a non-XRC QP, or caps beyond
   * the device's.
   */
  createQp(init: QpInitAttr): QueuePair | number {
    const t = init.qpType;
    if (t !== IBV_QPT_RC && t !== IBV_QPT_UD && t !== IBV_QPT_XRC_SEND && t !== IBV_QPT_XRC_RECV) return -EOPNOTSUPP;
    if ((t === IBV_QPT_XRC_SEND || t === IBV_QPT_XRC_RECV) && !hasDeviceCap(this.caps, IBV_DEVICE_XRC)) return -EOPNOTSUPP;
    if (t === IBV_QPT_XRC_RECV) {
      if (!init.xrcd || init.xrcd.destroyed) return -EINVAL;
    } else {
      if (!this.pds.has(init.pd) || !init.sendCq) return -EINVAL;
      if (t !== IBV_QPT_XRC_SEND && !init.recvCq) return -EINVAL;
    }
    if (init.srq && (t === IBV_QPT_XRC_SEND || t === IBV_QPT_XRC_RECV || init.srq.destroyed || init.srq.type !== IBV_SRQT_BASIC)) return -EINVAL;
    const cap = {
      maxSendWr: init.cap?.maxSendWr ?? 256,
      maxRecvWr: init.cap?.maxRecvWr ?? 256,
      maxSendSge: init.cap?.maxSendSge ?? 4,
      maxRecvSge: init.cap?.maxRecvSge ?? 4,
    };
    if (cap.maxSendWr > this.caps.maxQpWr || cap.maxRecvWr > this.caps.maxQpWr) return -EINVAL;
    if (cap.maxSendSge > this.caps.maxSge || cap.maxRecvSge > this.caps.maxSge) return -EINVAL;
    const qp = new QueuePair(this.nextQpn++, init, cap);
    if (qp.srq) qp.srq.users++;
    if (t === IBV_QPT_XRC_RECV) qp.xrcd!.users++;
    this.qps.set(qp.qpNum, qp);
    this.sim.spawn(`${this.name}.qp${qp.qpNum}.send`, () => this.requester.runTransmitter(qp), { kind: 'device' });
    this.sim.spawn(`${this.name}.qp${qp.qpNum}.complete`, () => this.requester.runCompleter(qp), { kind: 'device' });
    this.sim.spawn(`${this.name}.qp${qp.qpNum}.recv`, () => this.responder.run(qp), { kind: 'device' });
    return qp;
  }

  qpByNum(qpNum: number): QueuePair | undefined {
    return this.qps.get(qpNum);
  }

  /** Every QP not yet destroyed, in creation order (a read-only view for inspection). */
  queuePairs(): QueuePair[] {
    return [...this.qps.values()];
  }

  /**
   * `ibv_modify_qp`: change attributes and, with `qpState`, the state. -EINVAL for an illegal
   * transition (see `qpTransitionAllowed`), an out-of-range attribute, or an RC QP taken to
   * RTR without a destination (ahAttr and destQpNum).
   */
  modifyQp(qp: QueuePair, attr: QpAttr): number {
    if (qp.destroyed) return -EINVAL;
    const to = attr.qpState ?? qp.state;
    if (attr.qpState !== undefined && !qpTransitionAllowed(qp.state, to)) return -EINVAL;
    const inRange = (v: number | undefined, max: number) => v === undefined || (Number.isInteger(v) && v >= 0 && v <= max);
    if (!inRange(attr.retryCnt, 7) || !inRange(attr.rnrRetry, 7) || !inRange(attr.timeout, 31) || !inRange(attr.minRnrTimer, 31)) return -EINVAL;
    if (!inRange(attr.maxRdAtomic, this.caps.maxQpRdAtom) || !inRange(attr.maxDestRdAtomic, this.caps.maxQpRdAtom)) return -EINVAL;
    // A path MTU must be an `enum ibv_mtu` value no larger than the port's active MTU.
    if (attr.pathMtu !== undefined && (mtuBytes(attr.pathMtu) === 0 || mtuBytes(attr.pathMtu) > this.caps.mtu)) return -EINVAL;
    if (attr.pathMtu !== undefined) qp.pathMtu = mtuBytes(attr.pathMtu);
    if (attr.qpAccessFlags !== undefined) qp.qpAccessFlags = attr.qpAccessFlags;
    if (attr.qkey !== undefined) qp.qkey = attr.qkey;
    if (attr.destQpNum !== undefined) qp.destQpNum = attr.destQpNum;
    if (attr.ahAttr !== undefined) qp.dlid = attr.ahAttr.dlid;
    if (attr.timeout !== undefined) qp.timeout = attr.timeout;
    if (attr.retryCnt !== undefined) qp.retryCnt = attr.retryCnt;
    if (attr.rnrRetry !== undefined) qp.rnrRetry = attr.rnrRetry;
    if (attr.minRnrTimer !== undefined) qp.minRnrTimer = attr.minRnrTimer;
    if (attr.maxRdAtomic !== undefined) qp.maxRdAtomic = attr.maxRdAtomic;
    if (attr.maxDestRdAtomic !== undefined) qp.maxDestRdAtomic = attr.maxDestRdAtomic;
    if (attr.qpState === undefined || attr.qpState === qp.state && to !== IBV_QPS_RESET) {
      if (attr.qpState !== undefined) qp.state = to;
      return 0;
    }
    const from = qp.state;
    switch (to) {
      case IBV_QPS_RESET:
        this.resetQp(qp);
        break;
      case IBV_QPS_ERR:
        this.qpToError(qp);
        return 0;
      case IBV_QPS_RTR:
        if (qp.reliable && qp.dlid === 0) return -EINVAL;
        if (attr.rqPsn !== undefined) qp.ePsn = attr.rqPsn;
        break;
      case IBV_QPS_RTS:
        if (from === IBV_QPS_RTR) {
          const psn = attr.sqPsn ?? 0;
          qp.sqBasePsn = psn - qp.sq.length;
          qp.nextPsn = psn;
          qp.retryLeft = qp.retryCnt;
          qp.rnrRetryLeft = qp.rnrRetry;
        }
        break;
      default:
        break;
    }
    qp.state = to;
    qp.kickRequester();
    qp.kickCompleter();
    qp.kickResponder();
    return 0;
  }

  destroyQp(qp: QueuePair): number {
    if (qp.destroyed) return -EINVAL;
    this.resetQp(qp);
    qp.destroyed = true;
    if (qp.srq) qp.srq.users--;
    if (qp.type === IBV_QPT_XRC_RECV) qp.xrcd!.users--;
    this.qps.delete(qp.qpNum);
    qp.kickRequester();
    qp.kickCompleter();
    qp.kickResponder();
    return 0;
  }

  /**
   * `ibv_post_send` (and the WQEs the `ibv_wr_*` builders produce). 0, or -EINVAL (QP not yet
   * RTS, an XRC target QP, an opcode the transport does not carry, missing remote address,
   * too many SGEs, an atomic whose local buffer is not one 8-byte SGE, a FLUSH or ATOMIC_WRITE
   * the device does not support or whose arguments are malformed), -ENOMEM (send queue full).
   * Posting to a QP in ERR succeeds and the WR is flushed.
   */
  postSend(qp: QueuePair, wr: SendWr): number {
    const bad = this.checkSendWr(qp, wr);
    if (bad !== 0) return bad;
    const op = wr.opcode;
    if (qp.sq.length - qp.sqHead >= qp.cap.maxSendWr) return -ENOMEM;
    let length = 0;
    if (op === IBV_WR_FLUSH) length = wr.flush!.length;
    else if (op === IBV_WR_ATOMIC_WRITE) length = 8;
    else if (wr.inlineData) length = wr.inlineData.length;
    else for (const s of wr.sgList) length += s.length;
    // FLUSH and ATOMIC_WRITE read no local memory: the 8 bytes travel in the WQE (rxe copies
    // them at post time), and a FLUSH carries no data at all.
    const local = wr.inlineData || op === IBV_WR_FLUSH || op === IBV_WR_ATOMIC_WRITE;
    const wqe = {
      wr, psn: qp.nextPsn++, signaled: qp.sqSigAll || ((wr.sendFlags ?? 0) & 2) !== 0, length, responded: false,
      resumeSeg: 0, respSeg: 0, goBacks: 0,
      visibleAt: this.sim.now() + this.costs.doorbellNs,
      dma: local ? null : this.dmaActivity.begin(qp.qpNum, 'requester', op, this.dmaActivity.sglRanges(wr.sgList, (k) => this.mrs.get(k))),
    };
    qp.sq.push(wqe);
    if (qp.state === IBV_QPS_ERR || qp.state === IBV_QPS_SQE) qp.kickRequester();
    // The doorbell: the NIC sees the WQE once it has fetched it. A busy send engine finds it
    // by itself; an idle one is woken then.
    else if (qp.requesterWake) this.ringDoorbell(qp, wqe.visibleAt);
    return 0;
  }

  /** The checks of `postSend` that do not depend on room in the queue: 0 or -EINVAL. */
  checkSendWr(qp: QueuePair, wr: SendWr): number {
    if (qp.destroyed || qp.state < IBV_QPS_RTS || qp.type === IBV_QPT_XRC_RECV) return -EINVAL;
    const op = wr.opcode;
    if (qp.type === IBV_QPT_UD) {
      if (op !== IBV_WR_SEND || !wr.ud) return -EINVAL;
    } else if (op !== IBV_WR_SEND && op !== IBV_WR_RDMA_WRITE && op !== IBV_WR_RDMA_READ
      && op !== IBV_WR_ATOMIC_CMP_AND_SWP && op !== IBV_WR_ATOMIC_FETCH_AND_ADD && op !== IBV_WR_FLUSH && op !== IBV_WR_ATOMIC_WRITE) {
      return -EINVAL;
    }
    if ((op === IBV_WR_RDMA_WRITE || op === IBV_WR_RDMA_READ || op === IBV_WR_FLUSH || op === IBV_WR_ATOMIC_WRITE) && !wr.rdma) return -EINVAL;
    if (isAtomic(op) && (!wr.atomic || wr.sgList.length !== 1 || wr.sgList[0]?.length !== 8)) return -EINVAL;
    if (op === IBV_WR_FLUSH && !this.flushWrValid(wr)) return -EINVAL;
    if (op === IBV_WR_ATOMIC_WRITE && (!hasDeviceCap(this.caps, IB_UVERBS_DEVICE_ATOMIC_WRITE) || wr.atomicWrite?.length !== 8)) return -EINVAL;
    if (wr.sgList.length > qp.cap.maxSendSge) return -EINVAL;
    if (wr.inlineData && op !== IBV_WR_SEND && op !== IBV_WR_RDMA_WRITE) return -EINVAL;
    return 0;
  }

  /** Free slots in a QP's send queue. */
  sendQueueRoom(qp: QueuePair): number {
    return qp.cap.maxSendWr - (qp.sq.length - qp.sqHead);
  }

  /**
   * A FLUSH WQE: placement type bits among GLOBAL and PERSISTENT, each one the device
   * supports (IB_UVERBS_DEVICE_FLUSH_*), level RANGE or MR, no local buffers.
   */
  private flushWrValid(wr: SendWr): boolean {
    const f = wr.flush;
    if (!f || wr.sgList.length !== 0) return false;
    if (f.type === 0 || f.type & ~(IBV_FLUSH_GLOBAL | IBV_FLUSH_PERSISTENT)) return false;
    if (f.type & IBV_FLUSH_GLOBAL && !hasDeviceCap(this.caps, IB_UVERBS_DEVICE_FLUSH_GLOBAL)) return false;
    if (f.type & IBV_FLUSH_PERSISTENT && !hasDeviceCap(this.caps, IB_UVERBS_DEVICE_FLUSH_PERSISTENT)) return false;
    if (f.level !== IBV_FLUSH_RANGE && f.level !== IBV_FLUSH_MR) return false;
    return Number.isInteger(f.length) && f.length >= 0;
  }

  /** Wake the transmit side of `qp` at `at` (once, however many WQEs are waiting to be seen). */
  ringDoorbell(qp: QueuePair, at: number): void {
    if (qp.doorbellEvent) return;
    qp.doorbellEvent = this.sim.scheduler.at(at, () => {
      qp.doorbellEvent = null;
      qp.kickRequester();
    });
  }

  /**
   * `ibv_post_recv`. 0, or -EINVAL (QP in RESET, too many SGEs, a QP that takes its receives
   * from an SRQ as rxe's `rxe_post_recv` refuses, an XRC QP, which has no receive queue),
   * -ENOMEM (receive queue full).
   */
  postRecv(qp: QueuePair, wr: RecvWr): number {
    if (qp.destroyed || qp.state === IBV_QPS_RESET || qp.srq || qp.type === IBV_QPT_XRC_SEND || qp.type === IBV_QPT_XRC_RECV) return -EINVAL;
    if (wr.sgList.length > qp.cap.maxRecvSge) return -EINVAL;
    if (qp.rq.length - qp.rqHead >= qp.cap.maxRecvWr) return -ENOMEM;
    qp.rq.push(wr);
    if (qp.state === IBV_QPS_ERR) this.flushRecv(qp);
    return 0;
  }

  // ---- device internals used by the send and receive engines ---------------------------------

  /** Whether an ODP MR may fault for this QP's transport and operation bit (rdma A3). */
  odpAllowed(qp: QueuePair, bit: number): boolean {
    return this.faultable && (transportOdpCaps(this.caps, qp.transport) & bit) !== 0;
  }

  /** Check a local key for [addr, addr + length): live, same PD, LOCAL_WRITE if writing, in bounds. */
  checkLocalKey(qp: QueuePair, key: number, addr: number, length: number, write: boolean): MemoryRegion | null {
    return this.checkLocalKeyPd(qp.pd, key, addr, length, write);
  }

  /** The same check against a given PD (an SRQ's receive buffers belong to the SRQ's PD). */
  checkLocalKeyPd(pd: number, key: number, addr: number, length: number, write: boolean): MemoryRegion | null {
    const mr = this.mrs.get(key);
    if (!mr || mr.lkey !== key || !mr.valid || mr.pd !== pd) return null;
    if (write && !(mr.access & IBV_ACCESS_LOCAL_WRITE)) return null;
    if (!mr.contains(addr, length)) return null;
    return mr;
  }

  /**
   * Check an rkey (rxe `check_rkey` order): live, same PD as the responder QP (an XRC target
   * uses the PD of the XRC SRQ the packet names), every access flag in `flag`, bounds
   * (skipped for a whole-MR FLUSH, `length` < 0).
   */
  checkRemoteKey(qp: QueuePair, key: number, addr: number, length: number, flag: number, pd = qp.pd): MemoryRegion | null {
    const mr = this.mrs.get(key);
    if (!mr || mr.rkey !== key || !mr.valid) return null;
    if (mr.pd !== pd) return null;
    if ((mr.access & flag) !== flag) return null;
    if (length >= 0 && !mr.contains(addr, length)) return null;
    return mr;
  }

  /**
   * Put a QP's packet on the wire `delayNs` from now (pipelined processing), never before
   * the same side's previous packet: each side of a QP sends in order.
   */
  transmit(pkt: Packet, qp: QueuePair, side: 'requester' | 'responder', delayNs: number): void {
    const now = this.sim.now();
    const prev = side === 'requester' ? qp.sqDepartAt : qp.rqDepartAt;
    const at = Math.max(now + delayNs, prev);
    if (side === 'requester') qp.sqDepartAt = at;
    else qp.rqDepartAt = at;
    this.fabric.send(pkt, at);
  }

  /** FabricEndpoint: a packet arrived for one of this NIC's QPs. */
  receive(packet: Packet): void {
    this.stats.packetsReceived++;
    const qp = this.qps.get(packet.dstQpn);
    if (!qp) {
      this.stats.packetsToUnknownQp++;
      return;
    }
    if (packet.kind === 'request') {
      qp.inbound.push(packet);
      qp.kickResponder();
    } else {
      qp.responses.push(packet);
      qp.kickCompleter();
    }
  }

  /** Write a CQE after `cqeNs`. CQEs of one NIC are written in the order they were produced. */
  writeCqe(cq: CompletionQueue, wc: WorkCompletion): void {
    this.sim.scheduler.after(this.costs.cqeNs, () => {
      wc.time = this.sim.now();
      if (!cq.push(wc)) this.asyncSubject.next({ nic: this.name, type: 'IBV_EVENT_CQ_ERR', cqNum: cq.cqNum, time: this.sim.now() });
    });
  }

  raiseAsyncEvent(type: NicAsyncEventType, qp: QueuePair): void {
    this.asyncSubject.next({ nic: this.name, type, qpNum: qp.qpNum, time: this.sim.now() });
  }

  /** Move a QP to ERR: flush both queues with IBV_WC_WR_FLUSH_ERR (rdma F3), drop what is in flight. */
  qpToError(qp: QueuePair): void {
    if (qp.state === IBV_QPS_ERR) return;
    qp.state = IBV_QPS_ERR;
    this.endRxMessage(qp);
    this.cancelTimers(qp);
    qp.responses.length = 0;
    qp.inbound.length = 0;
    this.flushSend(qp);
    this.flushRecv(qp);
    qp.kickRequester();
    qp.kickCompleter();
    qp.kickResponder();
  }

  /** A UD send error: the send queue errors (SQE) and is flushed; receives go on. */
  qpToSqe(qp: QueuePair): void {
    qp.state = IBV_QPS_SQE;
    this.flushSend(qp);
  }

  flushSend(qp: QueuePair): void {
    for (let i = qp.sqHead; i < qp.sq.length; i++) {
      const w = qp.sq[i]!;
      this.dmaActivity.end(w.dma);
      this.writeCqe(qp.sendCq, flushed(w.wr.wrId, qp.qpNum));
    }
    qp.sqHead = qp.sq.length;
    qp.sqNext = qp.sqHead;
    qp.sqHighSent = Math.max(qp.sqHighSent, qp.sqHead);
    qp.rdAtomicOutstanding = 0;
    qp.localError = null;
    qp.completerStalled = false;
  }

  /**
   * Flush the receive side: the WQE held from an SRQ (if any) and the QP's own receive queue.
   * WQEs still in an SRQ stay there for the other QPs (rxe `check_resource` in the error state).
   */
  flushRecv(qp: QueuePair): void {
    const held = qp.heldRecv;
    if (held) {
      qp.heldRecv = null;
      this.writeCqe(held.srq.cq ?? qp.recvCq, flushed(held.wr.wrId, qp.qpNum));
    }
    for (let i = qp.rqHead; i < qp.rq.length; i++) this.writeCqe(qp.recvCq, flushed(qp.rq[i]!.wrId, qp.qpNum));
    qp.rqHead = qp.rq.length;
  }

  private cancelTimers(qp: QueuePair): void {
    if (qp.timerEvent) qp.timerEvent.cancelled = true;
    if (qp.rnrEvent) qp.rnrEvent.cancelled = true;
    if (qp.doorbellEvent) qp.doorbellEvent.cancelled = true;
    qp.timerEvent = null;
    qp.rnrEvent = null;
    qp.doorbellEvent = null;
    qp.timerExpired = false;
    qp.rnrUntil = 0;
  }

  /** The multi-packet message being received is over (done, failed, or the QP left RTS). */
  endRxMessage(qp: QueuePair): void {
    this.dmaActivity.end(qp.rxMessageDma);
    qp.rxMessageDma = null;
  }

  private resetQp(qp: QueuePair): void {
    this.cancelTimers(qp);
    this.endRxMessage(qp);
    qp.epoch++;
    qp.state = IBV_QPS_RESET;
    for (let i = qp.sqHead; i < qp.sq.length; i++) this.dmaActivity.end(qp.sq[i]!.dma);
    qp.sq = [];
    qp.sqBasePsn = 0;
    qp.sqHead = qp.sqNext = qp.sqHighSent = 0;
    qp.nextPsn = 0;
    qp.rq = [];
    qp.rqHead = 0;
    qp.responses.length = 0;
    qp.inbound.length = 0;
    qp.ePsn = 0;
    qp.eSeg = 0;
    qp.responderFault = null;
    qp.heldRecv = null;
    qp.atomicReplay.clear();
    qp.rdAtomicOutstanding = 0;
    qp.localError = null;
    qp.completerStalled = false;
  }
}

function isCount(v: number | undefined, max: number): boolean {
  return v !== undefined && Number.isInteger(v) && v >= 1 && v <= max;
}

function flushed(wrId: number, qpNum: number): WorkCompletion {
  return { wrId, status: IBV_WC_WR_FLUSH_ERR, opcode: undefined, vendorErr: 0, byteLen: 0, qpNum, srcQp: 0, wcFlags: 0, slid: 0, time: 0 };
}


