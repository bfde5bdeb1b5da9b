/**
 * Implicit ODP memory benchmark: what an implicit MR over the whole address space costs
 * the emulator when the device touches pages scattered across it. One node (loopback): the
 * process maps nearly all of its 128 TiB of user space (anonymous, never written) and
 * registers a remote-read implicit ODP MR (addr 0, length SIZE_MAX); a second QP then issues 100k
 * RDMA READs of 4 KiB, each from a different random page, which the NIC faults in
 * read-only (the shared zero page: never-written anonymous memory).
 *
 * Figures: peak RSS (target under 250 MiB) and wall seconds; `contentPages` checks that
 * no page contents were allocated for the never-written pages (only the sink the READs
 * land in, and the one page written by the CPU). What the sparse tables cost is listed
 * beside it (device page table bytes, implicit children, process PTEs).
 *
 * `IMPLICIT_READS` sets the number of READs for a quick run (the output says what ran).
 *
 * @example
 *   npx tsx bench/implicit.ts
 *   IMPLICIT_READS=10000 npx tsx bench/implicit.ts
 */
import { pathToFileURL } from 'node:url';
import {
  MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, Simulation, TASK_SIZE, errnoName, type Co,
} from '../kernel-model/index.ts';
import {
  Fabric, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE, IBV_QPS_INIT,
  IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, IBV_SEND_SIGNALED, IBV_WC_SUCCESS, IBV_WR_RDMA_READ, wcStatusName,
  type CompletionQueue, type QueuePair,
} from '../device/index.ts';
import { SIZE_MAX, createRdmaNode, openDevice, pinnedStrategy, type IbvContext, type IbvMr } from '../driver/index.ts';
import { odpStrategy } from '../driver/odp-strategy.ts';

const DEFAULT_READS = 100_000;
const READ_BYTES = 4096;
const WINDOW = 64;
/** Where the big mapping starts (mmap_min_addr); it ends at TASK_SIZE. */
const LOW = 0x10000;
const SINK_PAGES = 16;
const RSS_SAMPLE_EVERY = 1024;
const TARGET_RSS_MIB = 250;
const SEED = 0x1a1c17;

export interface ImplicitOptions {
  reads?: number;
  seed?: number;
}

function must(r: number, what: string): number {
  if (r < 0) throw new Error(`${what} failed with ${errnoName(r)}`);
  return r;
}

function loopbackPair(ctx: IbvContext, pd: number, cq: CompletionQueue, lid: number): [QueuePair, QueuePair] {
  const mk = () => {
    const qp = ctx.createQp({ qpType: IBV_QPT_RC, pd, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1024, maxRecvWr: 16 } });
    if (typeof qp === 'number') throw new Error(`createQp failed with ${errnoName(qp)}`);
    return qp;
  };
  const q1 = mk();
  const q2 = mk();
  const attr = { timeout: 14, retryCnt: 7, rnrRetry: 7, minRnrTimer: 1, maxRdAtomic: 16, maxDestRdAtomic: 16 };
  const access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  for (const [q, peer] of [[q1, q2], [q2, q1]] as const) {
    must(ctx.modifyQp(q, { qpState: IBV_QPS_INIT, qpAccessFlags: access }), 'modify_qp INIT');
    must(ctx.modifyQp(q, { ...attr, qpState: IBV_QPS_RTR, destQpNum: peer.qpNum, ahAttr: { dlid: lid } }), 'modify_qp RTR');
    must(ctx.modifyQp(q, { ...attr, qpState: IBV_QPS_RTS }), 'modify_qp RTS');
  }
  return [q1, q2];
}

export function benchImplicit(opts: ImplicitOptions = {}): Record<string, unknown> {
  const envReads = Number(process.env['IMPLICIT_READS']);
  const reads = opts.reads ?? (Number.isInteger(envReads) && envReads > 0 ? envReads : DEFAULT_READS);
  const seed = opts.seed ?? SEED;
  const rssAtStart = process.memoryUsage.rss();

  const sim = new Simulation({ seed });
  const fabric = new Fabric(sim);
  const node = createRdmaNode(sim, fabric, { name: 'solo', device: { nonOdp: pinnedStrategy(), odp: odpStrategy() } });
  const { kernel, nic } = node;
  const proc = kernel.createProcess('implicit');
  const ctx = openDevice(node.device, proc);
  const pd = ctx.allocPd();
  const cq = ctx.createCq(4 * WINDOW);
  if (typeof cq === 'number') throw new Error(`createCq failed with ${errnoName(cq)}`);
  const [q1] = loopbackPair(ctx, pd, cq, nic.lid);
  const rng = sim.rng('bench:implicit:pages');

  let peakRss = process.memoryUsage.rss();
  const sampleRss = () => {
    const r = process.memoryUsage.rss();
    if (r > peakRss) peakRss = r;
  };
  let implicitMr: IbvMr | null = null;
  let completed = 0;
  let distinctPages = 0;
  let writtenPages = 0;

  const main = proc.spawnThread('main', function* (): Co {
    // Nearly all of user space, never written. MAP_FIXED: a hint alone would go top-down.
    must(yield* proc.mmap(LOW, TASK_SIZE - LOW, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), 'mmap 128 TiB');
    // The sink the READ responses land in: the last pages of the mapping, written once by
    // the CPU, under an explicit writable ODP MR of its own.
    const sink = TASK_SIZE - SINK_PAGES * PAGE_SIZE;
    must(yield* proc.store(sink, new Uint8Array([1])), 'store sink');
    writtenPages = 1;
    const sinkMr = yield* ctx.regMr(pd, sink, SINK_PAGES * PAGE_SIZE, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND);
    if (typeof sinkMr === 'number') throw new Error(`reg_mr sink failed with ${errnoName(sinkMr)}`);
    // The implicit MR is remote-read only: mlx5 asks hmm_range_fault for write access on
    // every fault of a writable MR, which would allocate (content-less) anonymous frames;
    // read-only, the NIC's faults map the shared zero page.
    const r = yield* ctx.regMr(pd, 0, SIZE_MAX, IBV_ACCESS_REMOTE_READ | IBV_ACCESS_ON_DEMAND);
    if (typeof r === 'number') throw new Error(`reg_mr implicit failed with ${errnoName(r)}`);
    implicitMr = r;
    const mr = r;
    const pages = Math.floor((sink - LOW) / PAGE_SIZE);
    const seen = new Set<number>();
    let posted = 0;
    while (completed < reads) {
      while (posted < reads && posted - completed < WINDOW) {
        let page: number;
        do page = rng.int(0, pages - 1); while (seen.has(page));
        seen.add(page);
        must(yield* ctx.postSend(q1, {
          wrId: posted, opcode: IBV_WR_RDMA_READ, sendFlags: IBV_SEND_SIGNALED,
          sgList: [{ addr: sink + (posted % SINK_PAGES) * PAGE_SIZE, length: READ_BYTES, lkey: sinkMr.lkey }],
          rdma: { remoteAddr: LOW + page * PAGE_SIZE, rkey: mr.rkey },
        }), 'post_send');
        posted++;
      }
      yield* cq.wait();
      for (const wc of cq.poll(WINDOW)) {
        if (wc.status !== IBV_WC_SUCCESS) throw new Error(`RDMA READ ${wc.wrId} completed with ${wcStatusName(wc.status)}`);
        completed++;
        if (completed % RSS_SAMPLE_EVERY === 0) sampleRss();
      }
    }
    distinctPages = seen.size;
  });

  const t0 = process.hrtime.bigint();
  const out = sim.run({ task: main, untilNs: 24 * 3600 * 1e9, maxEvents: 2_000_000_000 });
  const wallSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  sampleRss();
  if (!main.done) throw new Error(`run ended before the reads finished: ${out.reason} ${out.failure ?? ''} (seed ${out.seed})`);

  const umem = (implicitMr as IbvMr | null)?.umem;
  const children = umem && 'children' in umem ? (umem.children as Map<number, unknown>).size : null;
  const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
  const peakRssMiB = round(peakRss / 2 ** 20);
  // Page contents exist only for pages someone wrote: the sink pages (the READ responses)
  // and the CPU's one store (inside the sink); a never-written page read by the NIC is the
  // zero page and has none.
  const contentPages = kernel.phys.contentPages;
  return {
    what: 'loopback RDMA READs of 4 KiB, each from a different random never-written page of a ~128 TiB anonymous mapping, through an implicit ODP MR',
    size: { reads, defaultReads: DEFAULT_READS, full: reads === DEFAULT_READS, distinctPages, spanBytes: TASK_SIZE - LOW, envVar: 'IMPLICIT_READS' },
    seed,
    wallSeconds: round(wallSeconds, 3),
    simulatedSeconds: round(out.now / 1e9, 6),
    peakRssMiB,
    rssAtStartMiB: round(rssAtStart / 2 ** 20),
    targetRssMiB: TARGET_RSS_MIB,
    underTarget: peakRssMiB < TARGET_RSS_MIB,
    contentPages,
    noContentsForNeverWrittenPages: contentPages <= SINK_PAGES + writtenPages,
    implicit: umem ? {
      ...umem.counters,
      children,
      deviceFaults: umem.mr.counters.faults,
      devicePresentPages: umem.mr.pageTable.presentPages,
      devicePageTableChunks: umem.mr.pageTable.chunkCount,
      devicePageTableMiB: round(umem.mr.pageTable.bytes / 2 ** 20),
    } : null,
    processPtes: proc.mm.pageTable.entries,
    framesInUse: kernel.phys.used,
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(JSON.stringify(benchImplicit(), null, 2));
}
