/**
 * Userspace revocation demos (DESIGN "Scenarios": userspace revocation and recovery; rdma
 * F1 to F4, G3, G5 to G7, H3; user pains (d) 9 and 10). An application's memory region is
 * taken away under it, and we watch what the application sees and how long it is without
 * service. Three ways in:
 *
 * - `revoke-dmabuf`: a GPU driver (a dma-buf exporter) moves the buffer an MR imports. A
 *   NIC without ODP imports it pinned and today's exporter cannot move it; under THE 2026
 *   REVOCABLE-IMPORTER PROPOSAL (rdma G7, not mainline) the exporter tells the pinned
 *   importer anyway, and the importer takes that as a permanent revocation. Under an ODP
 *   NIC the dynamic importer just zaps and refaults (rdma G3): the application sees nothing.
 * - `revoke-holdoff-timeout`: the holdoff strategy (a design under study, seed 000, rdma H3)
 *   on a NIC that cannot fault. kswapd reclaims a page of a buffer a long RDMA WRITE is
 *   reading; the invalidation waits for the DMA, gives up at the holdoff timeout, moves the
 *   QP to ERROR and revokes the MR.
 * - `revoke-munmap-holdoff`: another part of the application unmaps a registered buffer
 *   (the registration-cache hazard, (d) 8). The holdoff invalidation waits for the WRITE in
 *   flight, then zaps; the next post finds nothing to remap and fails with LOC_PROT_ERR (F1).
 *
 * Each runs three applications side by side (`app.behaviour=all`, each with its own pair of
 * nodes, so their timings are identical up to the revocation) or one of them:
 * - **give-up** stops at the first error completion;
 * - **reregister** on an error completion deregisters, maps and registers again, reconnects
 *   the QP (it is in ERROR) and resumes;
 * - **mr-event** does the same, and also listens to the emulator's opt-in `mr:revoked` /
 *   `mr:invalidated` events (an EXTENSION: real verbs have none, rdma F4; seed 003 asked for
 *   "explicit opt-in" notification of userspace): before each post it replaces an MR the
 *   event says is gone, so it can avoid the error completion altogether.
 *
 * The figure that matters is `<behaviour>: out of service (µs)`: from the last successful
 * completion of work posted before the revocation to the first successful completion of
 * work posted after it ('never' when the application gave up).
 */
import { Subject, type Subscription } from 'rxjs';
import { z } from 'zod';
import {
  DmaBuf, EBUSY, PAGE_SIZE, errnoName, startKswapd, type Co, type Kernel, type ReclaimStats, type Simulation, type Task,
} from '../kernel-model/index.ts';
import {
  IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE, IBV_QPS_RTS, IBV_SEND_SIGNALED, IBV_WC_SUCCESS,
  IBV_WR_RDMA_WRITE, DEFAULT_FABRIC, MLX5_ODP_CAPS, NO_ODP_CAPS, wcStatusName, type NicCapabilities, type QueuePair,
} from '../device/index.ts';
import {
  holdoffStrategy, odpStrategy, pinnedStrategy, type DmabufUmem, type HoldoffUmem, type IbDeviceOptions, type IbvMr,
  type MrEvent, type RdmaNode,
} from '../driver/index.ts';
import { ANON, RW, connectRc, mapAnon, must, openApp, pattern, regOk, store, type App } from './app.ts';
import type { ParamDoc, ParamValues } from './params.ts';
import type { ScenarioContext, ScenarioDefinition } from './scenario.ts';

export type AppBehaviour = 'give-up' | 'reregister' | 'mr-event';
export const APP_BEHAVIOURS: readonly AppBehaviour[] = ['give-up', 'reregister', 'mr-event'];

/** The parameters the three revocation scenarios add to the common ones. */
export const REVOCATION_PARAMS: readonly ParamDoc[] = [
  {
    key: 'app.behaviour',
    description: 'what the application does about revocation: give-up (stop at the first error completion), reregister (on an error '
      + 'completion: deregister, map and register again, reconnect, resume), mr-event (also react to the opt-in mr:revoked / '
      + 'mr:invalidated extension event before posting), or all (the three side by side, each on its own pair of nodes)',
    default: 'all',
    schema: z.enum(['all', 'give-up', 'reregister', 'mr-event']),
  },
  {
    key: 'app.reconnectNs',
    description: 'what re-establishing an RC connection costs the application (destroy both QPs, exchange QP numbers out of band, '
      + 'INIT/RTR/RTS on both sides); assumed: a connection-manager exchange of a few hundred µs, no published figure used',
    default: 200_000,
    schema: z.coerce.number().int().nonnegative(),
  },
];

const MR_ACCESS = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
/** Where the dma-buf MRs live in the NIC's address space (any page-aligned iova will do). */
const DMABUF_IOVA = 0x10_0000_0000;

const us = (ns: number) => Math.round(ns / 100) / 10;

// ---- the application ------------------------------------------------------------------------

/** One completed work request as the application saw it. */
interface Completion {
  wrId: number;
  postedAt: number;
  time: number;
  status: number;
}

/** What the mr-event application heard (the opt-in extension events). */
interface HeardEvent {
  type: 'revoked' | 'invalidated';
  mr: IbvMr;
}

/** The memory the application sends from, as each scenario provides it. */
interface Source {
  /** The address its work requests name (an iova for a dma-buf MR) and the message size. */
  addr: number;
  readonly length: number;
  /** Register it, mapping a fresh buffer first when the old one is gone (munmap). Must succeed. */
  register(): Co<IbvMr>;
  /** Whether the memory behind the MR is gone from the address space (so registering again needs a new mapping). */
  gone(): boolean;
}

/** How the application paces its work. */
interface Workload {
  /** One WRITE is posted every `periodNs` (0: back to back). */
  periodNs: number;
  /** The first WRITE's length, when the application checks the connection with a short one first (default: the source's). */
  firstLength?: number;
  /** Stop after this many successful completions of work posted after the revocation. */
  okAfterRevocation: number;
  /** Stop anyway this long after the traffic started. */
  deadlineNs: number;
}

/**
 * One application (a process with a verbs context on its own node) and its peer (the
 * process whose buffer it writes into, on another node), with its behaviour and its log.
 */
class Lane {
  readonly log: Completion[] = [];
  /** Successful completions, as they happen (for the stories that wait for one). */
  readonly ok$ = new Subject<Completion>();
  mr!: IbvMr;
  qp!: QueuePair;
  peerQp!: QueuePair;
  target = { addr: 0, rkey: 0 };
  trafficStart = 0;
  /** When the driver reported the MR invalidated or revoked (the first time). */
  revokedAt: number | null = null;
  gaveUp = false;
  reregistrations = 0;
  reconnects = 0;
  /** Re-registrations made on an event, before any error completion. */
  proactive = 0;
  /** When the mr-event application first heard an extension event. */
  heardAt: number | null = null;
  private heard: HeardEvent[] = [];
  private said = new Set<string>();
  private readonly subs: Subscription[] = [];

  constructor(
    readonly ctx: ScenarioContext,
    readonly behaviour: AppBehaviour,
    readonly app: App,
    readonly peer: App,
    readonly source: Source,
  ) {
    if (behaviour === 'mr-event') {
      app.ctx.enableMrEvents();
      const hear = (e: HeardEvent) => {
        this.heardAt ??= this.sim.now();
        this.heard.push(e);
      };
      app.ctx.on('mr:revoked', (mr) => hear({ type: 'revoked', mr }));
      app.ctx.on('mr:invalidated', (mr) => hear({ type: 'invalidated', mr }));
    }
  }

  get sim(): Simulation {
    return this.ctx.sim;
  }

  say(text: string): void {
    this.ctx.say(`[${this.behaviour}] ${text}`);
  }

  /** Say `text` once per `key` (repeated events are not news). */
  sayOnce(key: string, text: string): void {
    if (this.said.has(key)) return;
    this.said.add(key);
    this.say(text);
  }

  /**
   * Watch the driver's side of MR events (ucontext.mrEvents, which every application has:
   * the extension only decides whether the application hears them) to time the revocation.
   */
  watchRevocation(onFirst: (ev: MrEvent) => void): void {
    this.subs.push(this.app.ctx.ucontext.mrEvents.subscribe((ev) => {
      if (this.revokedAt !== null) return;
      this.revokedAt = this.sim.now();
      onFirst(ev);
    }));
  }

  /** The peer's buffer, registered, and a connected RC QP pair. */
  *setUpPeer(pages: number): Co {
    const dst = yield* mapAnon(this.peer, pages);
    const mr = yield* regOk(this.peer, dst, pages * PAGE_SIZE, MR_ACCESS);
    this.target = { addr: dst, rkey: mr.rkey };
    [this.qp, this.peerQp] = connectRc(this.app, this.peer);
  }

  /**
   * The application's I/O thread: one signalled RDMA WRITE of the source per period, waiting
   * for its completion; on an error, what its behaviour says.
   */
  *run(w: Workload): Co {
    const { sim } = this;
    this.trafficStart = sim.now();
    let wrId = 0;
    for (;;) {
      if (sim.now() >= this.trafficStart + w.deadlineNs) {
        this.say(`stops at its deadline, ${us(w.deadlineNs)} µs after it started`);
        return;
      }
      if (this.behaviour === 'mr-event') yield* this.actOnEvents();
      const postedAt = sim.now();
      const id = ++wrId;
      const r = yield* this.app.ctx.postSend(this.qp, {
        wrId: id, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED,
        sgList: [{ addr: this.source.addr, length: id === 1 && w.firstLength ? w.firstLength : this.source.length, lkey: this.mr.lkey }],
        rdma: { remoteAddr: this.target.addr, rkey: this.target.rkey },
      });
      if (r < 0) throw new Error(`[${this.behaviour}] ibv_post_send failed with ${errnoName(r)}`);
      yield* this.app.cq.wait();
      const [wc] = this.app.ctx.pollCq(this.app.cq, 1);
      if (!wc) throw new Error('a CQE was announced and not there');
      const c: Completion = { wrId: id, postedAt, time: wc.time, status: wc.status };
      this.log.push(c);
      if (wc.status === IBV_WC_SUCCESS) {
        this.ok$.next(c);
        if (this.revokedAt !== null && postedAt >= this.revokedAt) {
          this.sayOnce('resumed', `WRITE ${id} completed: in service again`);
          if (this.okPostedAfterRevocation().length >= w.okAfterRevocation) return;
        }
      } else {
        this.say(`WRITE ${id} completed with ${wcStatusName(wc.status)}; the QP is in ERROR (rdma F1/F3)`);
        if (this.behaviour === 'give-up') {
          this.gaveUp = true;
          this.say('gives up: it reports the failure and serves nothing more');
          return;
        }
        yield* this.recover(`after ${wcStatusName(wc.status)}`);
        continue; // post again at once
      }
      const next = postedAt + w.periodNs;
      if (next > sim.now()) yield* sim.sleep(next - sim.now());
    }
  }

  /**
   * The mr-event application, before it posts: an `mr:revoked` for its MR means the MR is
   * dead; an `mr:invalidated` matters only when the memory itself is gone (munmap), else the
   * driver maps it again by itself (a holdoff remap, an ODP refault).
   */
  private *actOnEvents(): Co {
    const evs = this.heard.splice(0).filter((e) => e.mr === this.mr);
    if (evs.length === 0) return;
    if (evs.some((e) => e.type === 'revoked')) {
      this.say(`heard mr:revoked for MR ${hex(this.mr.lkey)} (the opt-in extension event): replaces it before posting`);
    } else if (this.source.gone()) {
      this.say(`heard mr:invalidated for MR ${hex(this.mr.lkey)} and finds its buffer unmapped (as /proc/self/maps would say): replaces it before posting`);
    } else {
      this.sayOnce('invalidated-ok', `heard mr:invalidated for MR ${hex(this.mr.lkey)}; the memory is still there and the driver maps it again by itself: nothing to do`);
      return;
    }
    this.proactive++;
    yield* this.recover('on the event');
  }

  /** Deregister, map and register again, reconnect if the QP is not RTS. */
  private *recover(why: string): Co {
    const { sim } = this;
    const t0 = sim.now();
    const old = this.mr;
    must(yield* this.app.ctx.deregMr(old), 'ibv_dereg_mr');
    const remapped = this.source.gone();
    this.mr = yield* this.source.register();
    this.reregistrations++;
    let reconnected = false;
    if (this.qp.state !== IBV_QPS_RTS) {
      must(this.app.ctx.destroyQp(this.qp), 'ibv_destroy_qp');
      must(this.peer.ctx.destroyQp(this.peerQp), 'ibv_destroy_qp (peer)');
      yield* sim.sleep(Number(this.ctx.params['app.reconnectNs']));
      [this.qp, this.peerQp] = connectRc(this.app, this.peer);
      this.reconnects++;
      reconnected = true;
    }
    this.say(`${why}: deregistered MR ${hex(old.lkey)}, ${remapped ? 'mapped a new buffer and ' : ''}registered it again `
      + `(MR ${hex(this.mr.lkey)})${reconnected ? ', reconnected the QP' : ''} in ${us(sim.now() - t0)} µs`);
  }

  okPostedAfterRevocation(): Completion[] {
    const at = this.revokedAt;
    return at === null ? [] : this.log.filter((c) => c.status === IBV_WC_SUCCESS && c.postedAt >= at);
  }

  errors(): Completion[] {
    return this.log.filter((c) => c.status !== IBV_WC_SUCCESS);
  }

  /**
   * From the last successful completion of work posted before the revocation (or the start of
   * traffic) to the first successful completion of work posted after it; 'never' when there
   * is none; null when nothing was revoked.
   */
  outOfServiceNs(): number | 'never' | null {
    const at = this.revokedAt;
    if (at === null) return null;
    const before = this.log.filter((c) => c.status === IBV_WC_SUCCESS && c.postedAt < at);
    const last = before.length ? Math.max(...before.map((c) => c.time)) : this.trafficStart;
    const first = this.okPostedAfterRevocation()[0];
    return first ? first.time - last : 'never';
  }

  /** The gap between the last two successful completions before the revocation: service as usual. */
  normalGapNs(): number | null {
    const at = this.revokedAt ?? Infinity;
    const t = this.log.filter((c) => c.status === IBV_WC_SUCCESS && c.postedAt < at).map((c) => c.time);
    const a = t[t.length - 2];
    const b = t[t.length - 1];
    return a === undefined || b === undefined ? null : b - a;
  }

  /** The lane's figures, and a one-line summary for the narrative. */
  report(): string {
    const b = this.behaviour;
    const oos = this.outOfServiceNs();
    const errs = this.errors();
    const oosText = oos === null ? 'no revocation' : oos === 'never' ? 'never' : us(oos);
    this.ctx.figure(`${b}: out of service (µs)`, oosText);
    this.ctx.figure(`${b}: error completions`, errs.length);
    this.ctx.figure(`${b}: first error`, errs[0] ? wcStatusName(errs[0].status) : 'none');
    this.ctx.figure(`${b}: re-registrations`, this.reregistrations);
    this.ctx.figure(`${b}: reconnects`, this.reconnects);
    const what = oos === 'never' ? 'never back in service' : oos === null ? 'nothing revoked' : `out of service ${oosText} µs`;
    return `${b}: ${what}, ${errs.length} error completion(s)${this.proactive ? `, ${this.proactive} re-registration(s) on the event` : ''}`;
  }

  dispose(): void {
    for (const s of this.subs) s.unsubscribe();
    this.ok$.complete();
  }
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function behavioursOf(params: ParamValues): AppBehaviour[] {
  const b = String(params['app.behaviour'] ?? 'all');
  return b === 'all' ? [...APP_BEHAVIOURS] : [b as AppBehaviour];
}

/** Two nodes with the same NIC and driver: one for the application, one for its peer. */
function nodePair(ctx: ScenarioContext, b: AppBehaviour, device: () => IbDeviceOptions, caps: Partial<NicCapabilities>, frames?: number): [RdmaNode, RdmaNode] {
  const opts = frames === undefined ? {} : { frames };
  return [ctx.node(`${b}-host`, { device: device(), caps, ...opts }), ctx.node(`${b}-peer`, { device: device(), caps, ...opts })];
}

/**
 * The shared body of the three stories: per application, set up (in its own thread), start
 * the story's revocation, run the traffic; then the comparison, and a clean exit (contexts
 * closed, processes gone) so that the end-of-run checks judge a finished run.
 */
function* runLanes(
  ctx: ScenarioContext,
  lanes: readonly Lane[],
  story: {
    setUp(lane: Lane): Co;
    workload: Workload;
    /** Started once the lane's traffic starts; returns the task that causes the revocation. */
    revoke(lane: Lane): () => Co;
    revokeOn(lane: Lane): 'user' | 'worker';
    /** What the comparison means, said after it. */
    epilogue?(): void;
  },
): Co {
  const { sim } = ctx;
  const tasks: Task<unknown>[] = [];
  for (const lane of lanes) {
    tasks.push(lane.app.p.spawnThread('io', function* () {
      yield* story.setUp(lane);
      const body = story.revoke(lane);
      tasks.push(story.revokeOn(lane) === 'user' ? lane.app.p.spawnThread('revoker', body) : sim.spawn(`${lane.behaviour}/revoker`, body, { kind: 'worker' }));
      yield* lane.run(story.workload);
    }));
  }
  for (let i = 0; i < tasks.length; i++) yield* sim.join(tasks[i] as Task<unknown>);
  const gap = lanes[0]?.normalGapNs();
  if (gap != null) ctx.figure('normal gap (µs)', us(gap));
  ctx.say('comparison: ' + lanes.map((l) => l.report()).join('; ')
    + (gap != null ? ` (between two good WRITEs before, the gap was ${us(gap)} µs)` : ''));
  story.epilogue?.();
  for (const lane of lanes) {
    lane.dispose();
    yield* lane.app.ctx.close();
    yield* lane.peer.ctx.close();
    yield* lane.app.p.exit();
    yield* lane.peer.p.exit();
  }
}

// ---- (a) dma-buf: the exporter moves the buffer ---------------------------------------------

const DMABUF_PAGES = 64;
const DMABUF_PERIOD_NS = 250_000;

/**
 * A GPU buffer (a dma-buf) streamed to a peer: every 250 µs the application RDMA WRITEs the
 * 256 KiB buffer from its dma-buf MR into the peer's memory. Between two WRITEs the GPU
 * driver needs the VRAM back and moves the buffer.
 *
 * - `pinned-importer` (a NIC without ODP, rdma G5): the importer pinned the buffer, so
 *   today's `move` fails with -EBUSY and the VRAM stays put. Under THE 2026 REVOCABLE-
 *   IMPORTER PROPOSAL (rdma G7, not mainline) the exporter tells the pinned importer anyway;
 *   it revokes its mkey, fences the NIC, unmaps and unpins (G6), and the move proceeds. The
 *   MR stays revoked until deregistered: the next WRITE from it completes with
 *   LOC_PROT_ERR, unless the application re-registered first (mr-event).
 * - `dynamic-importer` (a NIC with ODP, rdma G2, G3): the importer zaps and unmaps the whole
 *   MR; the next WRITE faults, and the fault maps the whole MR again after the exporter's
 *   copy fence. No application sees anything but a slower WRITE.
 */
export const revokeDmabuf: ScenarioDefinition = {
  name: 'revoke-dmabuf',
  summary: 'a GPU driver moves a dma-buf under an MR: revoked on a NIC without ODP (2026 proposal), refaulted with ODP; apps give up, re-register or react to mr:revoked',
  seeds: ['003'],
  defaultProfile: 'linux-6.x',
  drivers: ['pinned-importer', 'dynamic-importer'],
  defaultDriver: 'pinned-importer',
  params: REVOCATION_PARAMS,
  untilNs: 1_000_000_000,
  expect: () => [],
  setup(ctx) {
    const dynamic = ctx.driver === 'dynamic-importer';
    const caps = { odp: dynamic ? MLX5_ODP_CAPS : NO_ODP_CAPS };
    const device = (): IbDeviceOptions => (dynamic ? { nonOdp: pinnedStrategy(), odp: odpStrategy() } : { nonOdp: pinnedStrategy() });
    const bufs = new Map<Lane, DmaBuf>();
    const lanes = behavioursOf(ctx.params).map((b) => {
      const [host, peerNode] = nodePair(ctx, b, device, caps);
      const app = openApp(host, host.kernel.createProcess(`${b}-app`));
      const peer = openApp(peerNode, peerNode.kernel.createProcess(`${b}-peer`));
      const buf = DmaBuf.create(host.kernel, `${b}-vram`, DMABUF_PAGES * PAGE_SIZE);
      if (typeof buf === 'number') throw new Error(`DmaBuf.create failed with ${errnoName(buf)}`);
      fillBuffer(host.kernel, buf, 7);
      const source: Source = {
        addr: DMABUF_IOVA,
        length: buf.size,
        *register() {
          return must(yield* app.ctx.regDmabufMr(app.pd, 0, buf.size, DMABUF_IOVA, buf, MR_ACCESS), 'ibv_reg_dmabuf_mr');
        },
        gone: () => false,
      };
      const lane = new Lane(ctx, b, app, peer, source);
      bufs.set(lane, buf);
      return lane;
    });
    ctx.say(`${lanes.length} application(s), each on its own node pair with a ${dynamic ? 'faultable (ODP)' : 'non-faultable (no ODP)'} NIC, `
      + `stream a ${DMABUF_PAGES * PAGE_SIZE / 1024} KiB GPU buffer (a dma-buf) to a peer with one RDMA WRITE every ${us(DMABUF_PERIOD_NS)} µs`);
    const narrated = { revoked: false };
    for (const lane of lanes) {
      lane.watchRevocation((ev) => {
        if (narrated.revoked) return;
        narrated.revoked = true;
        ctx.figure('moved at (µs)', us(ctx.sim.now()));
        ctx.say(ev.type === 'revoked'
          ? 'the pinned importer took the move as a permanent revocation (2026 proposal, rdma G7): mkey revoked, NIC fenced, buffer unmapped and unpinned (G6); the MR stays until dereg'
          : 'the dynamic importer zapped every entry of the MR, synced and unmapped it (rdma G3); the next access will fault the whole MR back in');
      });
    }
    return () => runLanes(ctx, lanes, {
      *setUp(lane) {
        lane.mr = yield* lane.source.register();
        yield* lane.setUpPeer(DMABUF_PAGES);
        const umem = lane.mr.umem as DmabufUmem;
        if (lane === lanes[0]) ctx.say(`registered with the ${umem.importer} importer: ${umem.importer === 'pinned' ? 'the buffer is pinned and mapped once (rdma G5)' : 'nothing mapped until the first access faults (rdma G3)'}`);
      },
      workload: { periodNs: DMABUF_PERIOD_NS, okAfterRevocation: 4, deadlineNs: 40 * DMABUF_PERIOD_NS },
      revokeOn: () => 'worker',
      epilogue() {
        ctx.say(dynamic
          ? 'with ODP nobody notices: the first WRITE after the move faulted the whole MR back in (rdma G3); what the gap gained is that fault and a cold translation cache'
          : 'the event let the mr-event application re-register before it posted again: no error, no reconnect; the other two learnt of the revocation from LOC_PROT_ERR (rdma F4: real verbs have no MR event)');
      },
      revoke: (lane) => function* () {
        const buf = bufs.get(lane) as DmaBuf;
        const sim = ctx.sim;
        // Between two WRITEs: after the sixth has completed, before the seventh is posted.
        yield* sim.sleep(lane.trafficStart + 5 * DMABUF_PERIOD_NS + ctx.vary('revoke offset', 200_000, 150_000, 250_000) - sim.now());
        const first = lane === lanes[0];
        const today = yield* buf.move();
        if (today === -EBUSY) {
          if (first) {
            ctx.figure('move today', errnoName(today));
            ctx.say(`the GPU driver needs the VRAM back: today's move fails with ${errnoName(today)}, the pinned importer holds the buffer in place (rdma G5, (d) 9)`);
            ctx.say('so it moves it under THE 2026 REVOCABLE-IMPORTER PROPOSAL (rdma G7, not mainline): pinned importers are told too');
          }
          must(yield* buf.move({ revokePinned: true }), 'dma-buf move (revoking pinned importers)');
        } else {
          must(today, 'dma-buf move');
          if (first) ctx.figure('move today', 'ok');
        }
        if (first) ctx.say(`the GPU driver moved the buffer (${buf.moves} move, copy fence ${us(buf.fenceUntil - sim.now())} µs more)`);
      },
    });
  },
};

function fillBuffer(k: Kernel, buf: DmaBuf, seed: number): void {
  const bytes = pattern(seed, PAGE_SIZE);
  for (const f of buf.frames) k.phys.write(f, 0, bytes);
}

// ---- (b) holdoff timeout: reclaim under a long transfer -------------------------------------

/**
 * Pages of a WRITE that keeps the NIC busy well past the holdoff timeout: the requester
 * gathers every page, the message crosses the fabric, the responder writes every page
 * (device/cost-model.ts, a translation miss per page), and the reclaim may start up to a
 * kswapd period (1 ms) into it. About 26 MiB for the default 10 ms; at most half the node.
 */
function longTransferPages(params: ParamValues, timeoutNs: number, frames: number): number {
  const access = PAGE_SIZE / Number(params['cost.pcieBytesPerNs']) + Number(params['cost.translationMissNs']);
  const perPageNs = 2 * access + PAGE_SIZE / DEFAULT_FABRIC.bytesPerNs;
  const want = Math.ceil((1.2 * (timeoutNs + 2_000_000)) / perPageNs);
  return Math.max(64, Math.min(want, Math.floor(frames / 2)));
}

/** Memory the holdoff-timeout nodes have besides the buffer: 4 MiB. */
const SPARE_PAGES = 1024;

/**
 * The holdoff strategy (seed 000: "holding off the unmapping [in] the mmu notifier callback
 * until any pending operation is complete"; rdma H3; a design under study, no mainline driver
 * does it) on NICs that cannot fault. The application checks its connection with a one-page
 * WRITE, then sends a buffer of some 26 MiB (sized to outlast the holdoff timeout) in one
 * RDMA WRITE. As it starts, a short-lived batch job on the same node (which has 4 MiB to
 * spare besides the buffer) takes most of the free memory for 1.5 ms; kswapd wakes and reclaims the
 * oldest pages, which are the buffer's: the CPU never touched them (the registration faulted
 * them in), and the NIC sets no accessed bits. The holdoff invalidation waits for the WRITE
 * reading them, up to the
 * holdoff timeout (`holdoff.timeoutNs`), then fences: the QP goes to ERROR (the WRITE is
 * flushed), the MR is revoked. kswapd was held all that time. The applications that recover
 * register the buffer again (faulting the reclaimed pages back in from swap), reconnect and
 * send it again.
 *
 * The mr-event application cannot do better here: a timeout revocation happens only because
 * a transfer is in flight, and that transfer fails whatever the application does.
 */
export const revokeHoldoffTimeout: ScenarioDefinition = {
  name: 'revoke-holdoff-timeout',
  summary: 'seed 000 holdoff: kswapd reclaims under a long RDMA WRITE, the holdoff times out, the QP errors and the MR is revoked; apps give up or re-register',
  seeds: ['000', '003'],
  defaultProfile: 'linux-6.x',
  drivers: ['holdoff'],
  defaultDriver: 'holdoff',
  params: REVOCATION_PARAMS,
  untilNs: 2_000_000_000,
  expect: () => [],
  setup(ctx) {
    const timeoutNs = Number(ctx.params['holdoff.timeoutNs']);
    const device = (): IbDeviceOptions => ({ nonOdp: holdoffStrategy({ holdoffTimeoutNs: timeoutNs }) });
    const pages = longTransferPages(ctx.params, timeoutNs, Number(ctx.params['memory.frames']));
    const lanes = behavioursOf(ctx.params).map((b) => {
      // A node with little memory to spare: the buffer plus 4 MiB.
      const [host, peerNode] = nodePair(ctx, b, device, { odp: NO_ODP_CAPS }, pages + SPARE_PAGES);
      const app = openApp(host, host.kernel.createProcess(`${b}-app`));
      const peer = openApp(peerNode, peerNode.kernel.createProcess(`${b}-peer`));
      const source: Source = {
        addr: 0,
        length: pages * PAGE_SIZE,
        *register() {
          return yield* regOk(app, this.addr, this.length, MR_ACCESS);
        },
        gone: () => false,
      };
      return new Lane(ctx, b, app, peer, source);
    });
    ctx.say(`${lanes.length} application(s), each on its own node pair with NICs that cannot fault and the holdoff driver (a design under study, `
      + `rdma H3), check the connection with a one-page RDMA WRITE, then send a ${(pages * PAGE_SIZE / 2 ** 20).toFixed(1)} MiB buffer in one WRITE; holdoff timeout ${us(timeoutNs)} µs`);
    ctx.figure('transfer (MiB)', Number((pages * PAGE_SIZE / 2 ** 20).toFixed(1)));
    const kswapd = new Map<Lane, ReclaimStats>();
    for (const lane of lanes) {
      lane.watchRevocation((ev) => {
        const umem = ev.umem as HoldoffUmem;
        if (lane !== lanes[0]) return;
        ctx.figure('revoked at (µs)', us(ctx.sim.now()));
        ctx.figure('holdoff wait (µs)', us(umem.stats.maxHoldoffNs));
        ctx.say(ev.type === 'revoked'
          ? `kswapd, reclaiming a page of the buffer, waited ${us(umem.stats.maxHoldoffNs)} µs in the holdoff invalidation for the WRITE to drain, hit the timeout and fenced the NIC: QP to ERROR (the WRITE is flushed), MR revoked, zapped, synced (rdma H3, F3)`
          : `kswapd's invalidation waited ${us(umem.stats.maxHoldoffNs)} µs for DMA and zapped: the WRITE drained within the holdoff, nothing was revoked`);
      });
    }
    return () => runLanes(ctx, lanes, {
      *setUp(lane) {
        const { app } = lane;
        kswapd.set(lane, startKswapd(app.k));
        // No CPU store: the registration faults the buffer in (zero-filled; what it holds does not matter here).
        lane.source.addr = yield* mapAnon(app, lane.source.length / PAGE_SIZE);
        lane.mr = yield* lane.source.register();
        yield* lane.setUpPeer(lane.source.length / PAGE_SIZE);
      },
      workload: { periodNs: 0, firstLength: PAGE_SIZE, okAfterRevocation: 1, deadlineNs: 200_000_000 },
      revokeOn: () => 'worker',
      epilogue() {
        const ev = lanes.find((l) => l.behaviour === 'mr-event');
        const flushed = ev?.errors()[0];
        const first = lanes[0];
        const reclaim = first ? kswapd.get(first) : undefined;
        if (reclaim) {
          ctx.figure('kswapd reclaimed (pages)', reclaim.reclaimed);
          const revoked = lanes.some((l) => l.errors().length > 0);
          ctx.say(`kswapd reclaimed ${reclaim.reclaimed} pages of the buffer in that round (swapped out); `
            + (revoked ? 'registering again faulted them back in' : "the provider's remap faulted them back in before the next WRITE"));
        }
        if (!ev || !flushed || ev.revokedAt === null) return;
        const late = us(ev.revokedAt - flushed.time);
        ctx.say((ev.heardAt === null
          ? `mr-event never heard mr:revoked: the flush completion came ${late} µs before the driver finished fencing and revoking, and the application had deregistered the MR by then`
          : `mr-event heard mr:revoked ${us(ev.heardAt - flushed.time)} µs after its WRITE was flushed`)
          + '. A timeout revocation happens only because a transfer is in flight, and that transfer fails whatever the application does: the event spares it nothing here');
      },
      revoke: (lane) => function* () {
        // The batch job: it starts with the long WRITE, takes all but a few hundred free
        // pages for 1.5 ms, and exits. kswapd's next round (within its 1 ms period) finds
        // memory below its low watermark and reclaims the oldest pages it can; the pressure
        // is gone by the time the applications register again.
        const sim = ctx.sim;
        const k = lane.app.k;
        yield* sim.waitFor(lane.ok$);
        const job = k.createProcess(`${lane.behaviour}-batch-job`);
        const low = Math.max(8, Math.floor(k.phys.frames / 32));
        const take = k.phys.freeFrames - Math.floor(low / 2);
        yield* sim.join(job.spawnThread('run', function* () {
          if (take <= 0) return;
          const at = must(yield* job.mmap(0, take * PAGE_SIZE, RW, ANON), 'mmap (batch job)');
          must(yield* job.store(at, new Uint8Array(take * PAGE_SIZE).fill(1)), 'store (batch job)');
          if (lane === lanes[0]) ctx.say(`a batch job on the application's node takes ${take} pages, leaving ${k.phys.freeFrames} free: below kswapd's low watermark (${low})`);
          yield* sim.sleep(1_500_000);
        }));
        must(yield* job.exit(), 'exit (batch job)');
      },
    });
  },
};

// ---- (c) munmap of a registered buffer under holdoff ----------------------------------------

const MUNMAP_PAGES = 64;
const MUNMAP_PERIOD_NS = 250_000;

/**
 * The registration-cache hazard ((d) 8) under the holdoff strategy (rdma H3, seed 000): the
 * application's I/O thread WRITEs a 256 KiB registered buffer to its peer every 250 µs; in
 * the middle of one WRITE another thread (its allocator) unmaps the buffer, not knowing it is
 * registered. The holdoff invalidation waits for that WRITE to drain (it completes fine),
 * zaps and returns. The next post finds the range invalid, the provider's remap finds
 * nothing mapped, and the NIC fails the WRITE with LOC_PROT_ERR (rdma F1): the QP is in
 * ERROR. The mr-event application heard `mr:invalidated`, saw its buffer was gone, and
 * mapped and registered a new one before it posted. (A pinned MR would have kept the old
 * pages and sent stale data without a word.)
 */
export const revokeMunmapHoldoff: ScenarioDefinition = {
  name: 'revoke-munmap-holdoff',
  summary: 'seed 000 holdoff: a registered buffer is unmapped mid-WRITE; the next post fails with LOC_PROT_ERR unless the app heard mr:invalidated',
  seeds: ['000', '003'],
  defaultProfile: 'linux-6.x',
  drivers: ['holdoff'],
  defaultDriver: 'holdoff',
  params: REVOCATION_PARAMS,
  untilNs: 1_000_000_000,
  expect: () => [],
  setup(ctx) {
    const timeoutNs = Number(ctx.params['holdoff.timeoutNs']);
    const device = (): IbDeviceOptions => ({ nonOdp: holdoffStrategy({ holdoffTimeoutNs: timeoutNs }) });
    const lanes = behavioursOf(ctx.params).map((b) => {
      const [host, peerNode] = nodePair(ctx, b, device, { odp: NO_ODP_CAPS });
      const app = openApp(host, host.kernel.createProcess(`${b}-app`));
      const peer = openApp(peerNode, peerNode.kernel.createProcess(`${b}-peer`));
      let fill = 11;
      const source: Source = {
        addr: 0,
        length: MUNMAP_PAGES * PAGE_SIZE,
        *register() {
          if (this.gone()) {
            this.addr = yield* mapAnon(app, MUNMAP_PAGES);
            yield* store(app, this.addr, pattern(fill++, this.length));
          }
          return yield* regOk(app, this.addr, this.length, MR_ACCESS);
        },
        gone() {
          return this.addr === 0 || !app.p.mm.findVma(this.addr);
        },
      };
      return new Lane(ctx, b, app, peer, source);
    });
    ctx.say(`${lanes.length} application(s), each on its own node pair with NICs that cannot fault and the holdoff driver (a design under study, `
      + `rdma H3), WRITE a registered ${MUNMAP_PAGES * PAGE_SIZE / 1024} KiB buffer to a peer every ${us(MUNMAP_PERIOD_NS)} µs`);
    for (const lane of lanes) {
      lane.watchRevocation((ev) => {
        if (lane !== lanes[0]) return;
        const umem = ev.umem as HoldoffUmem;
        ctx.figure('invalidated at (µs)', us(ctx.sim.now()));
        ctx.figure('holdoff wait (µs)', us(umem.stats.maxHoldoffNs));
        ctx.say(`the holdoff invalidation waited ${us(umem.stats.maxHoldoffNs)} µs for the WRITE in flight to drain, then zapped and synced: the range is invalid now`);
      });
    }
    return () => runLanes(ctx, lanes, {
      *setUp(lane) {
        lane.mr = yield* lane.source.register();
        yield* lane.setUpPeer(MUNMAP_PAGES);
      },
      workload: { periodNs: MUNMAP_PERIOD_NS, okAfterRevocation: 4, deadlineNs: 40 * MUNMAP_PERIOD_NS },
      revokeOn: () => 'user',
      epilogue() {
        const giveUp = lanes.find((l) => l.behaviour === 'give-up');
        const stats = giveUp ? (giveUp.mr.umem as HoldoffUmem).stats : null;
        if (stats) ctx.say(`give-up's post made ${stats.remaps} remap system call(s), ${stats.remapFailures} failed: nothing is mapped there, so the NIC met zapped entries (rdma F1)`);
        ctx.say('mr:invalidated alone does not mean the memory is gone (reclaim and migration invalidate too, and the provider remaps then), so the mr-event application looked at its mapping first');
      },
      revoke: (lane) => function* () {
        // The allocator thread: in the middle of the sixth WRITE, it gives the buffer back.
        const sim = ctx.sim;
        yield* sim.sleep(lane.trafficStart + 5 * MUNMAP_PERIOD_NS + ctx.vary('munmap offset', 20_000, 10_000, 30_000) - sim.now());
        const t0 = sim.now();
        must(yield* lane.app.p.munmap(lane.source.addr, lane.source.length), 'munmap');
        if (lane !== lanes[0]) return;
        ctx.figure('munmap took (µs)', us(sim.now() - t0));
        ctx.say(`the allocator thread unmapped the registered buffer in the middle of a WRITE; munmap took ${us(sim.now() - t0)} µs (held off by the DMA)`);
      },
    });
  },
};

/** The three revocation demos, for the catalogue. */
export const REVOCATION_SCENARIOS: readonly ScenarioDefinition[] = [revokeDmabuf, revokeHoldoffTimeout, revokeMunmapHoldoff];
