import {
  MADV_DONTNEED, MADV_MERGEABLE, MADV_PAGEOUT, startKsmd, startNumaBalancing, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PROFILES, PROT_READ, PROT_WRITE, Simulation,
  errnoName, startKswapd, type Co, type Process, type TraceRecord,
} from '../../kernel-model/index.ts';
import {
  Fabric, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_WRITE, IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS,
  IBV_QPT_RC, IBV_SEND_SIGNALED, IBV_WC_SUCCESS, IBV_WR_RDMA_WRITE, NO_ODP_CAPS, type CompletionQueue, type QueuePair,
} from '../../device/index.ts';
import {
  createRdmaNode, holdoffStrategy, openDevice, pinnedStrategy, type IbvContext, type IbvMr, type RdmaNode, type SyncBatcher,
} from '../../driver/index.ts';
import { odpStrategy } from '../../driver/odp-strategy.ts';
import { RunMetrics } from '../metrics.ts';
import type { PointParams } from './grid.ts';
import { percentile, type PointRecord } from './point-runners.ts';
import { pointPolicy, pointStrategy } from './point-policy.ts';

/**
 * The `batching` point runner: the sync-batching trade-off on the full model.
 *
 * Two nodes on one fabric. On node `a`, an application registers a 2 MiB buffer, as 32 MRs
 * of 64 KiB (one per piece), with the strategy under study (`odp`: ODP MRs on an
 * ODP-capable NIC; `holdoff`: non-ODP MRs on a NIC that cannot fault) whose sync batcher
 * (one per NIC) uses the point's policy, and keeps 16 RDMA WRITEs of 16 KiB in flight from
 * random places of it into a pinned MR on node `b`. One MR per piece because both
 * strategies wait for the sync under the MR's mutex (as mlx5 does under umem_mutex): only
 * invalidations of different MRs can be in flight together and share a sync.
 * `tasks` threads of the same process churn random 64 KiB pieces of the buffer, each
 * thinking 20 to 200 µs between operations:
 * - `dma-heavy`: munmap + mmap(MAP_FIXED) (after the writes in flight on the piece drain,
 *   as an application would) or madvise(DONTNEED), half and half;
 * - `dma-heavy-dontneed`: madvise(DONTNEED) only;
 * - `dma-heavy-reclaim`: munmap + mmap, DONTNEED or MADV_PAGEOUT, a third each, plus
 *   kswapd under memory pressure from a second process that keeps allocating, so the
 *   buffer's pages (the NIC sets no accessed bits) are reclaimed one by one in the background;
 * - `dma-heavy-punch`: the buffer is a MAP_SHARED mapping of a file and the tasks punch
 *   holes in it (fallocate(PUNCH_HOLE));
 * - `dma-heavy-mm`: `dma-heavy-reclaim` plus NUMA balancing scans and ksmd merging the
 *   buffer's repeated pages (MADV_MERGEABLE), the mm's other background invalidators.
 *
 * munmap takes mmap_lock for writing, so the munmap churn is serialized (and stalls the
 * ODP faults, which take it for reading, while its invalidation waits for a sync);
 * madvise(DONTNEED/PAGEOUT) takes it for reading, so those invalidations overlap and can
 * share syncs; hole punching takes no mmap_lock but the file's inode lock (ext4_punch_hole,
 * shmem_fallocate), so the punches go one at a time.
 *
 * Measured over `durationNs` of virtual time after set-up: invalidation latency (the
 * notifier callback, zap plus the wait for its sync; callbacks still waiting at the end
 * count with their age then, so a policy that strands a lone invalidation shows it), the
 * latency of the munmap/madvise/fallocate calls that waited, DMA throughput of `a`'s NIC, syncs,
 * faults, work-request latency.
 */
const BUF_PAGES = 512;
const PIECE_PAGES = 16;
const PIECES = BUF_PAGES / PIECE_PAGES;
const WR_PAGES = 4;
const WR_BYTES = WR_PAGES * PAGE_SIZE;
const IN_FLIGHT = 16;
const THINK_MIN_NS = 20_000;
const THINK_MAX_NS = 200_000;
/** The holdoff strategy's wait for DMA before it gives up and revokes the MR. */
const HOLDOFF_TIMEOUT_NS = 1_000_000;
/** Memory of node a under `dma-heavy-reclaim` (4 KiB frames): the buffer, and the hog's chunks down to kswapd's low watermark. */
const RECLAIM_FRAMES = 4096;
const HOG_CHUNK_PAGES = 16;
const HOG_PERIOD_NS = 20_000;
const KSWAPD_PERIOD_NS = 50_000;
/** `dma-heavy-mm`: a NUMA scan of 1 MiB every 2 ms, and ksmd scanning 64 pages every ms (assumed, scaled to a 10 ms run). */
const NUMA_SCAN_PERIOD_NS = 2_000_000;
const KSM_SLEEP_NS = 1_000_000;

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;

function must(r: number, what: string): number {
  if (r < 0) throw new Error(`${what} failed with ${errnoName(r)}`);
  return r;
}

function connect(ctxA: IbvContext, qa: QueuePair, ctxB: IbvContext, qb: QueuePair, a: RdmaNode, b: RdmaNode): void {
  const attr = { timeout: 14, retryCnt: 7, rnrRetry: 7, minRnrTimer: 1, maxRdAtomic: 16, maxDestRdAtomic: 16 };
  const access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
  for (const [ctx, q, peerQ, peer] of [[ctxA, qa, qb, b], [ctxB, qb, qa, a]] as const) {
    must(ctx.modifyQp(q, { qpState: IBV_QPS_INIT, qpAccessFlags: access }), 'modify_qp INIT');
    must(ctx.modifyQp(q, { ...attr, qpState: IBV_QPS_RTR, destQpNum: peerQ.qpNum, ahAttr: { dlid: peer.nic.lid } }), 'modify_qp RTR');
    must(ctx.modifyQp(q, { ...attr, qpState: IBV_QPS_RTS }), 'modify_qp RTS');
  }
}

/** The system calls of the churn threads, whose latency is the "kernel op" figure. */
const CHURN_CALLS = new Set(['munmap', 'madvise', 'fallocate']);

/** Latencies of invalidation callbacks and of the app's munmap/madvise calls, from the trace; open ones are kept. */
class LatencyTracker {
  readonly inv: number[] = [];
  readonly op: number[] = [];
  private readonly cb = new Map<number | null, number[]>();
  private readonly sys = new Map<number | null, { t: number; name: string }[]>();
  measuring = false;

  constructor(private readonly pid: number) {}

  on(r: TraceRecord): void {
    if (r.type === 'callback-start' && r.op === 'invalidate') {
      const s = this.cb.get(r.task) ?? [];
      s.push(r.t);
      this.cb.set(r.task, s);
    } else if (r.type === 'callback-return' && r.op === 'invalidate') {
      const t0 = this.cb.get(r.task)?.pop();
      if (t0 !== undefined && this.measuring) this.inv.push(r.t - t0);
    } else if (r.type === 'syscall-begin' && r.pid === this.pid) {
      const s = this.sys.get(r.task) ?? [];
      s.push({ t: r.t, name: r.name });
      this.sys.set(r.task, s);
    } else if (r.type === 'syscall-end' && r.pid === this.pid) {
      const top = this.sys.get(r.task)?.pop();
      if (top && this.measuring && CHURN_CALLS.has(top.name)) this.op.push(r.t - top.t);
    }
  }

  /** Count what is still waiting at `now` with its age. Returns how many callbacks were open. */
  closeAt(now: number): number {
    let open = 0;
    for (const s of this.cb.values()) for (const t0 of s) { this.inv.push(now - t0); open++; }
    for (const s of this.sys.values()) for (const x of s) if (CHURN_CALLS.has(x.name)) this.op.push(now - x.t);
    return open;
  }
}

export function runBatchingPoint(params: PointParams, seed: number, durationNs: number): PointRecord {
  const sim = new Simulation({ seed });
  const fabric = new Fabric(sim);
  const { name: policyName, policy } = pointPolicy(params, sim.scheduler);
  const profile = PROFILES[params.profile];
  const costs = params.syncNs !== null ? { syncNs: params.syncNs } : {};
  const mmChurn = params.workload === 'dma-heavy-mm';
  const reclaim = params.workload === 'dma-heavy-reclaim' || mmChurn;
  // A user strategy (a module reference) takes the place of odp or holdoff, by its NIC kind.
  const user = pointStrategy(params, { sim, batching: policy, batchingName: policyName });
  const holdoff = user ? user.def.nic === 'non-faultable' : params.strategy === 'holdoff';
  const hs = !user && holdoff ? holdoffStrategy({ holdoffTimeoutNs: HOLDOFF_TIMEOUT_NS, batching: policy, batchingName: policyName }) : null;
  const os = !user && !holdoff ? odpStrategy({ batching: policy, batchingName: policyName }) : null;
  const mine = user?.strategy ?? hs ?? os!;
  const a = createRdmaNode(sim, fabric, {
    name: 'a',
    kernel: { profile, ...(reclaim ? { frames: RECLAIM_FRAMES } : {}) },
    nic: { costs, ...(holdoff ? { caps: { odp: NO_ODP_CAPS } } : {}) },
    device: holdoff ? { nonOdp: mine } : { nonOdp: pinnedStrategy(), odp: mine },
  });
  const b = createRdmaNode(sim, fabric, { name: 'b', kernel: { profile }, nic: { costs }, device: { nonOdp: pinnedStrategy() } });

  const app = a.kernel.createProcess('app');
  const peer = b.kernel.createProcess('sink');
  const ctxA = openDevice(a.device, app);
  const ctxB = openDevice(b.device, peer);
  const pdA = ctxA.allocPd();
  const pdB = ctxB.allocPd();
  const cqA0 = ctxA.createCq(4 * IN_FLIGHT);
  const cqB = ctxB.createCq(16);
  if (typeof cqA0 === 'number' || typeof cqB === 'number') throw new Error('create_cq failed');
  const cqA = cqA0;
  const mkQp = (ctx: IbvContext, pd: number, cq: CompletionQueue) => {
    const qp = ctx.createQp({ qpType: IBV_QPT_RC, pd, sendCq: cq, recvCq: cq, cap: { maxSendWr: 4 * IN_FLIGHT, maxRecvWr: 16 } });
    if (typeof qp === 'number') throw new Error(`create_qp failed with ${errnoName(qp)}`);
    return qp;
  };
  const qa = mkQp(ctxA, pdA, cqA);
  const qb = mkQp(ctxB, pdB, cqB);
  connect(ctxA, qa, ctxB, qb, a, b);

  const metrics = new RunMetrics(sim, [a.kernel], [a.nic]);
  const lat = new LatencyTracker(app.pid);
  const traceSub = sim.trace$.subscribe((r) => lat.on(r));

  // Shared between the traffic and the churn threads.
  const inflight = new Int32Array(PIECES);
  const noTraffic = new Uint8Array(PIECES);
  const claimed = new Uint8Array(PIECES);
  const drainWaiters: (() => void)[][] = Array.from({ length: PIECES }, () => []);
  let t0 = 0;
  let end = Infinity;
  let started = false;
  let wrErrors = 0;
  let postErrors = 0;
  let churnErrors = 0;
  let wrBytes = 0;
  const base0 = { bytes: 0, syncs: 0, faults: 0, zaps: 0 };

  let buf = 0;
  const src: IbvMr[] = [];
  let dst: IbvMr | null = null;
  const rng = sim.rng('batching:traffic');

  function* traffic(): Co {
    const d = dst as IbvMr;
    const posted = new Map<number, { piece: number; t: number }>();
    let wrId = 0;
    for (;;) {
      if (sim.now() >= end) return;
      while (posted.size < IN_FLIGHT) {
        let piece = -1;
        let page = 0;
        for (let tries = 0; tries < 8; tries++) {
          page = rng.int(0, BUF_PAGES / WR_PAGES - 1) * WR_PAGES;
          const pc = Math.floor(page / PIECE_PAGES);
          if (!noTraffic[pc]) {
            piece = pc;
            break;
          }
        }
        if (piece < 0) break;
        inflight[piece] = (inflight[piece] ?? 0) + 1;
        const id = wrId++;
        const t = sim.now();
        const r = yield* ctxA.postSend(qa, {
          wrId: id, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
          sgList: [{ addr: buf + page * PAGE_SIZE, length: WR_BYTES, lkey: (src[piece] as IbvMr).lkey }],
          rdma: { remoteAddr: d.addr + (id % 4) * WR_BYTES, rkey: d.rkey },
        });
        if (r < 0) {
          postErrors++;
          release(piece);
          yield* sim.sleep(1_000);
          break;
        }
        posted.set(id, { piece, t });
      }
      if (posted.size === 0) {
        yield* sim.sleep(1_000);
        continue;
      }
      yield* cqA.wait();
      for (const wc of cqA.poll(IN_FLIGHT)) {
        const p = posted.get(wc.wrId);
        if (!p) continue;
        posted.delete(wc.wrId);
        release(p.piece);
        if (wc.status !== IBV_WC_SUCCESS) {
          wrErrors++;
          continue;
        }
        if (started && sim.now() <= end) {
          wrBytes += WR_BYTES;
          metrics.recordWr(sim.now() - p.t);
        }
      }
      if (wrErrors > 0) return; // the QP is in ERROR: traffic is over (the record says so)
    }
  }

  function release(piece: number): void {
    inflight[piece] = (inflight[piece] ?? 1) - 1;
    if (inflight[piece] === 0) for (const w of (drainWaiters[piece] ?? []).splice(0)) w();
  }

  function* churn(i: number): Co {
    const r = sim.rng(`batching:churn-${i}`);
    for (;;) {
      yield* sim.sleep(r.int(THINK_MIN_NS, THINK_MAX_NS));
      if (sim.now() >= end) return;
      let piece = r.int(0, PIECES - 1);
      for (let k = 0; k < PIECES && claimed[piece]; k++) piece = (piece + 1) % PIECES;
      if (claimed[piece]) continue;
      claimed[piece] = 1;
      const addr = buf + piece * PIECE_PAGES * PAGE_SIZE;
      const len = PIECE_PAGES * PAGE_SIZE;
      const op = file ? 3 : params.workload === 'dma-heavy-dontneed' ? 1 : reclaim ? r.int(0, 2) : r.int(0, 1);
      if (op === 3 && file) {
        if ((yield* app.punchHole(file, piece * PIECE_PAGES * PAGE_SIZE, len)) < 0) churnErrors++;
      } else if (op === 0) {
        // munmap + mmap: no new work on the piece, wait for what is in flight, then replace it
        noTraffic[piece] = 1;
        while ((inflight[piece] ?? 0) > 0) yield* sim.park<void>((wake) => drainWaiters[piece]?.push(() => wake()));
        if ((yield* app.munmap(addr, len)) < 0) churnErrors++;
        if ((yield* app.mmap(addr, len, RW, ANON | MAP_FIXED)) !== addr) churnErrors++;
        noTraffic[piece] = 0;
      } else {
        if ((yield* app.madvise(addr, len, op === 1 ? MADV_DONTNEED : MADV_PAGEOUT)) < 0) churnErrors++;
      }
      claimed[piece] = 0;
    }
  }

  const low = Math.max(8, Math.floor(RECLAIM_FRAMES / 32));
  const hogFill = new Uint8Array(HOG_CHUNK_PAGES * PAGE_SIZE).fill(0x5a);
  /** One more chunk of the hog's memory, while that leaves headroom for the buffer's refaults. */
  function* hogChunk(p: Process): Co<boolean> {
    if (a.kernel.phys.freeFrames - HOG_CHUNK_PAGES < (low * 3) / 4) return false;
    const m = yield* p.mmap(0, hogFill.length, RW, ANON);
    if (m < 0) return false;
    return (yield* p.store(m, hogFill)) === 0;
  }

  function* hog(p: Process): Co {
    for (;;) {
      yield* sim.sleep(HOG_PERIOD_NS);
      if (sim.now() >= end) return;
      yield* hogChunk(p);
    }
  }

  const file = params.workload === 'dma-heavy-punch' ? a.kernel.createFile('buffer', BUF_PAGES * PAGE_SIZE) : null;
  const hogProc = reclaim ? a.kernel.createProcess('hog') : null;
  const setup = app.spawnThread('setup', function* (): Co {
    buf = must(yield* app.mmap(0, BUF_PAGES * PAGE_SIZE, RW, file ? MAP_SHARED : ANON, file), 'mmap buffer');
    const pattern = new Uint8Array(BUF_PAGES * PAGE_SIZE);
    for (let i = 0; i < pattern.length; i += 64) pattern[i] = (i >> 6) & 0xff;
    must(yield* app.store(buf, pattern), 'store buffer');
    // The pattern repeats every 4 pages: KSM finds identical pages to merge.
    if (mmChurn) must(yield* app.madvise(buf, BUF_PAGES * PAGE_SIZE, MADV_MERGEABLE), 'madvise(MERGEABLE)');
    const access = IBV_ACCESS_LOCAL_WRITE | (holdoff ? 0 : IBV_ACCESS_ON_DEMAND);
    for (let pc = 0; pc < PIECES; pc++) {
      const mr = yield* ctxA.regMr(pdA, buf + pc * PIECE_PAGES * PAGE_SIZE, PIECE_PAGES * PAGE_SIZE, access);
      if (typeof mr === 'number') throw new Error(`reg_mr (${params.strategy}) failed with ${errnoName(mr)}`);
      src.push(mr);
    }
    const sinkBuf = must(yield* peer.mmap(0, 4 * WR_BYTES, RW, ANON), 'mmap sink');
    const dmr = yield* ctxB.regMr(pdB, sinkBuf, 4 * WR_BYTES, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    if (typeof dmr === 'number') throw new Error(`reg_mr (sink) failed with ${errnoName(dmr)}`);
    dst = dmr;
    // memory pressure: the hog fills memory down to kswapd's low watermark before the clock starts
    if (hogProc) while (yield* hogChunk(hogProc));
  });
  const s = sim.run({ task: setup, untilNs: 10_000_000_000 });
  if (s.failure !== undefined) throw new Error(`set-up failed: ${s.failure.split('\n')[0]}`);
  if (!setup.done) throw new Error(`set-up did not finish (${s.reason})`);

  t0 = sim.now();
  end = t0 + durationNs;
  started = true;
  lat.measuring = true;
  base0.bytes = a.nic.engine.stats.bytesRead + a.nic.engine.stats.bytesWritten;
  base0.syncs = a.nic.stats.syncs;
  base0.faults = a.nic.faultQueue.raised;
  base0.zaps = a.nic.stats.zapCommands;
  app.spawnThread('traffic', traffic);
  for (let i = 0; i < params.tasks; i++) app.spawnThread(`churn-${i}`, () => churn(i));
  let kswapd = null;
  if (hogProc) {
    kswapd = startKswapd(a.kernel, { periodNs: KSWAPD_PERIOD_NS });
    hogProc.spawnThread('hog', () => hog(hogProc));
  }
  let numa = null;
  let ksm = null;
  if (mmChurn) {
    // NUMA balancing's scans (PROTECTION_VMA invalidations, then hinting faults and
    // migrations) and ksmd merging the buffer's repeated pages, at periods scaled to the run.
    numa = startNumaBalancing(a.kernel, { periodNs: NUMA_SCAN_PERIOD_NS, scanSizeMb: 1 });
    ksm = startKsmd(a.kernel, { pagesToScan: 64, sleepNs: KSM_SLEEP_NS });
  }
  const outcome = sim.run({ untilNs: end });
  if (outcome.failure !== undefined) throw new Error(`simulation failed: ${outcome.failure.split('\n')[0]}`);
  const open = lat.closeAt(end);
  traceSub.unsubscribe();
  const m = metrics.summary();
  metrics.dispose();

  const batcher: SyncBatcher | undefined = hs ? hs.batcherOf(a.nic) : os?.batcherFor(a.nic);
  const bytes = a.nic.engine.stats.bytesRead + a.nic.engine.stats.bytesWritten - base0.bytes;
  const inv = lat.inv.sort((x, y) => x - y);
  const op = lat.op.sort((x, y) => x - y);
  const syncs = a.nic.stats.syncs - base0.syncs;
  return {
    invP50Ns: percentile(inv, 50),
    invP99Ns: percentile(inv, 99),
    opP50Ns: percentile(op, 50),
    opP99Ns: percentile(op, 99),
    throughputBytesPerSec: Math.round((bytes / durationNs) * 1e9),
    bytesMoved: bytes,
    invalidations: inv.length,
    syncs,
    faults: a.nic.faultQueue.raised - base0.faults,
    virtualNs: durationNs,
    invMaxNs: inv[inv.length - 1] ?? 0,
    invOpenAtEnd: open,
    opCount: op.length,
    wrP50Ns: m.wrNs.p50,
    wrP99Ns: m.wrNs.p99,
    wrBytesPerSec: Math.round((wrBytes / durationNs) * 1e9),
    wrErrors,
    postErrors,
    churnErrors,
    zaps: a.nic.stats.zapCommands - base0.zaps,
    meanBatch: batcher && batcher.stats.syncs > 0 ? Math.round((batcher.stats.requests / batcher.stats.syncs) * 1000) / 1000 : 0,
    heldOff: hs?.stats.heldOff ?? 0,
    holdoffTimeouts: hs?.stats.timeouts ?? 0,
    remaps: hs?.stats.remaps ?? 0,
    reclaimed: kswapd?.reclaimed ?? 0,
    numaMigrated: numa?.migrated ?? 0,
    ksmMerged: ksm?.merged ?? 0,
  };
}
