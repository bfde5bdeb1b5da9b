/**
 * Traffic benchmark: how fast the emulator runs an ODP data path, and how much memory it
 * needs doing so. One node talks to itself (two RC QPs on the same NIC, loopback): a 1 GiB
 * ODP MR takes 1M RDMA WRITEs of 4 KiB at random page-aligned offsets (seeded), while a
 * second thread of the process now and then drops a random 64 KiB piece of the buffer with
 * madvise(MADV_DONTNEED), so the MR keeps being invalidated and refaulted.
 *
 * Figures: wall seconds (and CPU seconds), simulated device page accesses per wall second,
 * peak RSS (sampled with process.memoryUsage.rss() during the run), and the simulated
 * counts behind them.
 * Wall time and RSS are bench-side readings; they do not feed back into the simulation.
 *
 * `TRAFFIC_WRITES` sets the number of writes for a quick run (the output says what ran).
 * `TRAFFIC_MTU` sets the QPs' path MTU in bytes (256..4096; unset: one packet per message,
 * which for these 4 KiB WRITEs is the same as 4096): below 4096 each WRITE is several
 * packets, each of which can fault on its own. `TRAFFIC_FAULT_RESUME_NS` sets the NIC's
 * PAGE_FAULT_RESUME cost (2000 gives back roughly the fast fault of the figures taken
 * before issue 15's calibration).
 *
 * @example
 *   npx tsx bench/traffic.ts                        # the full 1M writes
 *   TRAFFIC_WRITES=20000 npx tsx bench/traffic.ts   # a quick run
 *   TRAFFIC_FAULT_RESUME_NS=2000 npx tsx bench/traffic.ts
 */
import { pathToFileURL } from 'node:url';
import {
  MADV_DONTNEED, MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, Simulation, errnoName, type Co,
} from '../kernel-model/index.ts';
import {
  Fabric, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE, IBV_QPS_INIT,
  IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, IBV_SEND_SIGNALED, IBV_WC_SUCCESS, IBV_WR_RDMA_WRITE, wcStatusName,
  type CompletionQueue, type QueuePair,
} from '../device/index.ts';
import { createRdmaNode, openDevice, pinnedStrategy, type IbvContext, type IbvMr } from '../driver/index.ts';
import { odpStrategy } from '../driver/odp-strategy.ts';
import { attachSanitizer, type CheckerId } from '../sanitizer/index.ts';

const GiB = 2 ** 30;
const MR_BYTES = GiB;
const MR_PAGES = MR_BYTES / PAGE_SIZE;
const DEFAULT_WRITES = 1_000_000;
const WRITE_BYTES = 4096;
/** Work requests kept outstanding on the send queue. */
const WINDOW = 64;
/** Virtual time between two background invalidations (each one 64 KiB piece). */
const INVALIDATE_EVERY_NS = 200_000;
const INVALIDATE_BYTES = 64 * 1024;
/** Completions between two RSS samples. */
const RSS_SAMPLE_EVERY = 2048;
const SEED = 0x7aff1c;

export interface TrafficOptions {
  writes?: number;
  seed?: number;
  /** Attach the sanitizer (for bench/sanitizer.ts's overhead figure). */
  sanitizer?: boolean;
  /** With `sanitizer`: attach only these checkers (default: all); for attributing the overhead. */
  sanitizerCheckers?: readonly CheckerId[];
  /** Path MTU in bytes (default: TRAFFIC_MTU, else unset: one packet per message). */
  mtu?: number;
  /**
   * The NIC's PAGE_FAULT_RESUME cost (device/cost-model.ts faultResumeNs; default:
   * TRAFFIC_FAULT_RESUME_NS, else the calibrated 200 µs). 2000 gives back roughly the
   * uncalibrated fault the figures before issue 15 were measured with, for comparison.
   */
  faultResumeNs?: number;
}

const MTUS = [256, 512, 1024, 2048, 4096];

function must(r: number, what: string): number {
  if (r < 0) throw new Error(`${what} failed with ${errnoName(r)}`);
  return r;
}

function mr(r: IbvMr | number, what: string): IbvMr {
  if (typeof r === 'number') throw new Error(`${what} failed with ${errnoName(r)}`);
  return r;
}

/** Two RC QPs of one context, connected to each other over the NIC's loopback. */
function loopbackPair(ctx: IbvContext, pd: number, cq: CompletionQueue, lid: number, mtu: number | undefined): [QueuePair, QueuePair] {
  const mk = () => {
    const qp = ctx.createQp({ qpType: IBV_QPT_RC, pd, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1024, maxRecvWr: 16 } });
    if (typeof qp === 'number') throw new Error(`createQp failed with ${errnoName(qp)}`);
    return qp;
  };
  const q1 = mk();
  const q2 = mk();
  const attr = {
    timeout: 14, retryCnt: 7, rnrRetry: 7, minRnrTimer: 1, maxRdAtomic: 16, maxDestRdAtomic: 16,
    // enum ibv_mtu: IBV_MTU_256 = 1 .. IBV_MTU_4096 = 5
    ...(mtu ? { pathMtu: Math.log2(mtu) - 7 } : {}),
  };
  const access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  for (const [q, peer] of [[q1, q2], [q2, q1]] as const) {
    must(ctx.modifyQp(q, { qpState: IBV_QPS_INIT, qpAccessFlags: access }), 'modify_qp INIT');
    must(ctx.modifyQp(q, { ...attr, qpState: IBV_QPS_RTR, destQpNum: peer.qpNum, ahAttr: { dlid: lid } }), 'modify_qp RTR');
    must(ctx.modifyQp(q, { ...attr, qpState: IBV_QPS_RTS }), 'modify_qp RTS');
  }
  return [q1, q2];
}

export function benchTraffic(opts: TrafficOptions = {}): Record<string, unknown> {
  const envWrites = Number(process.env['TRAFFIC_WRITES']);
  const writes = opts.writes ?? (Number.isInteger(envWrites) && envWrites > 0 ? envWrites : DEFAULT_WRITES);
  const seed = opts.seed ?? SEED;
  const envMtu = process.env['TRAFFIC_MTU'];
  const mtu = opts.mtu ?? (envMtu ? Number(envMtu) : undefined);
  if (mtu !== undefined && !MTUS.includes(mtu)) throw new Error(`TRAFFIC_MTU must be one of ${MTUS.join(', ')} (got ${envMtu})`);

  const envResume = process.env['TRAFFIC_FAULT_RESUME_NS'];
  const faultResumeNs = opts.faultResumeNs ?? (envResume ? Number(envResume) : undefined);
  if (faultResumeNs !== undefined && !(Number.isInteger(faultResumeNs) && faultResumeNs >= 0)) throw new Error(`TRAFFIC_FAULT_RESUME_NS must be a whole number of ns (got ${envResume})`);

  const sim = new Simulation({ seed });
  const fabric = new Fabric(sim);
  const node = createRdmaNode(sim, fabric, {
    name: 'solo',
    nic: faultResumeNs === undefined ? {} : { costs: { faultResumeNs } },
    // The whole MR may be resident at once, plus room for the rest of the process.
    kernel: { frames: MR_PAGES + 16_384 },
    device: { nonOdp: pinnedStrategy(), odp: odpStrategy() },
  });
  const { kernel, nic } = node;
  const proc = kernel.createProcess('traffic');
  const ctx = openDevice(node.device, proc);
  const pd = ctx.allocPd();
  const cq = ctx.createCq(4 * WINDOW);
  if (typeof cq === 'number') throw new Error(`createCq failed with ${errnoName(cq)}`);
  const [q1] = loopbackPair(ctx, pd, cq, nic.lid, mtu);
  const rng = sim.rng('bench:traffic:offsets');
  const invRng = sim.rng('bench:traffic:invalidations');

  let peakRss = process.memoryUsage.rss();
  const sampleRss = () => {
    const r = process.memoryUsage.rss();
    if (r > peakRss) peakRss = r;
  };
  let done = false;
  let completed = 0;
  let errors = 0;
  let firstError = '';
  let invalidations = 0;
  let dst: IbvMr | null = null;
  let dstBase = 0;

  const main = proc.spawnThread('main', function* (): Co {
    const access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_ON_DEMAND;
    dstBase = must(yield* proc.mmap(0, MR_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS), 'mmap dst');
    const srcBase = must(yield* proc.mmap(0, 16 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS), 'mmap src');
    const pattern = new Uint8Array(WRITE_BYTES);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 31 + 7) & 0xff;
    must(yield* proc.store(srcBase, pattern), 'store src');
    const src = mr(yield* ctx.regMr(pd, srcBase, 16 * PAGE_SIZE, access), 'reg_mr src');
    dst = mr(yield* ctx.regMr(pd, dstBase, MR_BYTES, access), 'reg_mr dst');
    let posted = 0;
    while (completed < writes) {
      while (posted < writes && posted - completed < WINDOW) {
        const page = rng.int(0, MR_PAGES - 1);
        must(yield* ctx.postSend(q1, {
          wrId: posted, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
          sgList: [{ addr: srcBase, length: WRITE_BYTES, lkey: src.lkey }],
          rdma: { remoteAddr: dstBase + page * PAGE_SIZE, rkey: dst.rkey },
        }), 'post_send');
        posted++;
      }
      yield* cq.wait();
      for (const wc of cq.poll(WINDOW)) {
        if (wc.status !== IBV_WC_SUCCESS) {
          errors++;
          if (!firstError) firstError = wcStatusName(wc.status);
        }
        completed++;
        if (completed % RSS_SAMPLE_EVERY === 0) sampleRss();
      }
      if (errors > 0) throw new Error(`RDMA WRITE completed with ${firstError}`);
    }
    done = true;
  });

  // "Now and then" the application drops a random 64 KiB piece of the MR's buffer.
  proc.spawnThread('invalidator', function* (): Co {
    const pieces = MR_BYTES / INVALIDATE_BYTES;
    while (!done) {
      yield* sim.sleep(INVALIDATE_EVERY_NS);
      if (done || !dst) continue;
      const piece = invRng.int(0, pieces - 1);
      must(yield* proc.madvise(dstBase + piece * INVALIDATE_BYTES, INVALIDATE_BYTES, MADV_DONTNEED), 'madvise');
      invalidations++;
    }
  });

  const san = opts.sanitizer ? attachSanitizer({
    sim, kernels: [kernel], nics: [nic], bindings$: node.device.binding$, ...(opts.sanitizerCheckers ? { checkers: opts.sanitizerCheckers } : {}),
  }) : null;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const out = sim.run({ task: main, untilNs: 24 * 3600 * 1e9, maxEvents: 2_000_000_000 });
  san?.finish();
  const wallSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(c0);
  sampleRss();
  if (!main.done) throw new Error(`run ended before the writes finished: ${out.reason} ${out.failure ?? ''} (seed ${out.seed})`);

  const accesses = nic.engine.stats.accesses;
  const umem = (dst as IbvMr | null)?.umem;
  const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
  return {
    what: 'loopback RDMA WRITEs of 4 KiB at random page-aligned offsets into a 1 GiB ODP MR, with background madvise(DONTNEED) of random 64 KiB pieces',
    size: { writes, defaultWrites: DEFAULT_WRITES, full: writes === DEFAULT_WRITES, mrBytes: MR_BYTES, writeBytes: WRITE_BYTES, window: WINDOW, envVar: 'TRAFFIC_WRITES', pathMtu: mtu ?? 'unset (one packet per message)', faultResumeNs: faultResumeNs ?? 'calibrated default' },
    seed,
    wallSeconds: round(wallSeconds),
    // User + system CPU time of the process over the same span (all its threads, so the
    // GC's helper threads too): steadier than wall time on a shared machine.
    cpuSeconds: round((cpu.user + cpu.system) / 1e6),
    simulatedSeconds: round(out.now / 1e9, 6),
    engineEvents: out.events,
    pageAccesses: accesses,
    pageAccessesPerWallSecond: Math.round(accesses / wallSeconds),
    peakRssMiB: round(peakRss / 2 ** 20, 1),
    completions: completed,
    backgroundInvalidations: invalidations,
    invalidateEveryNs: INVALIDATE_EVERY_NS,
    dstMr: umem ? { strategy: umem.strategy, ...umem.counters, deviceFaults: umem.mr.counters.faults, devicePresentPages: umem.mr.pageTable.presentPages } : null,
    residentContentPages: kernel.phys.contentPages,
    sanitizer: san ? { attached: true, violations: san.violations.length } : { attached: false },
    packets: fabric.packets,
    nic: { rnrNaksSent: nic.stats.rnrNaksSent, retransmits: nic.stats.retransmits, syncs: nic.stats.syncs, zapCommands: nic.stats.zapCommands, updateCommands: nic.stats.updateCommands, faultsRaised: nic.faultQueue.raised },
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(benchTraffic(), null, 2));
}
