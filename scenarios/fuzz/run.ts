/**
 * One fuzz run: build the world for a driver under test, run a command list in one
 * simulation with preemption on and the sanitizer attached, and report what it found.
 *
 * The world (fixed, not drawn): two nodes on one fabric, each a kernel, a NIC and the
 * driver's device with the strategy under test (as the `odp` strategy of a faultable NIC,
 * or the non-ODP strategy of one that cannot fault); a regular file and a dma-buf per
 * node; on each node processes 0 and 1, each with two user threads, a verbs context, a PD,
 * a CQ and an RC QP connected to the same process index on the other node. At setup each
 * of those processes maps slot 0 (anonymous, 8 pages) and slot 1 (the node's file,
 * shared, 8 pages), writes both, and registers MR 0 over slot 0, MR 1 over slot 1 and MR 3
 * over the dma-buf (what its profile and NIC allow). Then the commands run (commands.ts).
 *
 * The run ends with an epilogue: traffic drains, every verbs context is closed (its MRs
 * deregistered, the device fenced), and the sanitizer's end-of-run checks run.
 */
import type { Observable } from 'rxjs';
import {
  DmaBuf, MADV_DOFORK, MADV_DONTFORK, MADV_DONTNEED, MADV_FREE, MADV_PAGEOUT, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE,
  MAP_SHARED, MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE, PROFILES, PROT_NONE, PROT_READ, PROT_WRITE, Simulation, WaitQueue,
  migratePage, oomKill, pteFrame, ptePresent, shrinkLru, writebackFile, MADV_MERGEABLE, GFP_KERNEL, allocPages, freePages,
  minWatermark, startKsmd, startNumaBalancing,
  type Co, type File, type Kernel, type Process, type ProfileName, type RunOutcome, type ScheduleOption,
} from '../../kernel-model/index.ts';
import {
  Fabric, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE, IBV_QPS_ERR,
  IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, IBV_SEND_SIGNALED, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, IBV_WR_SEND,
  NO_ODP_CAPS, type CompletionQueue, type QueuePair,
} from '../../device/index.ts';
import {
  IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, createRdmaNode, openDevice,
  SIZE_MAX, pinnedStrategy, type IbvContext, type IbvMr, type RdmaNode, type UmemStrategy,
} from '../../driver/index.ts';
import { attachSanitizer, type MrBinding, type Violation } from '../../sanitizer/index.ts';
import {
  DMABUF_MR, FILE_PAGES, MAX_MAP_PAGES, MR_HANDLES, NODES, SLOT_PAGES, THREADS, isBackground, slotAddress,
  type BackgroundCommand, type Command, type Prot, type UserCommand,
} from './commands.ts';

const P = PAGE_SIZE;

/** What a run needs to know about the driver under test. */
export interface RunTarget {
  name: string;
  nic: 'faultable' | 'non-faultable';
  /** The strategy under test, for the run's simulation. */
  strategy(sim: Simulation): UmemStrategy;
}

/** Knobs of a run that are not commands (all part of a reproducer). */
export interface RunConfig {
  seed: number;
  profile: ProfileName;
  preempt: { probability: number; maxDelayNs: number } | false;
  /** The scheduling option (`lab fuzz --schedule pct:d=3`), instead of the jitter `preempt` describes. */
  schedule?: ScheduleOption;
  /** Physical memory per node, in frames. */
  frames: number;
  /** Virtual-time bound of the command phase and of the epilogue (ns). */
  commandPhaseNs: number;
  epilogueNs: number;
  /** Event bound of the whole run (every run is bounded). */
  maxEvents: number;
  /** Called once the world is built, before anything runs (to attach a trace, say). Not part of a reproducer. */
  observe?: (sim: Simulation, nodes: readonly RdmaNode[]) => void;
}

export const DEFAULT_RUN_CONFIG: Omit<RunConfig, 'seed' | 'profile'> = {
  preempt: { probability: 0.2, maxDelayNs: 2_000 },
  frames: 2_048,
  commandPhaseNs: 20_000_000,
  epilogueNs: 20_000_000,
  maxEvents: 3_000_000,
};

export interface RunResult {
  violations: Violation[];
  /** A model error (a task threw): a bug somewhere, reported like a violation. */
  failure?: string;
  /** Exceptions inside checkers (a sanitizer bug). */
  sanitizerErrors: readonly string[];
  /** How the command phase and the epilogue ended. */
  phases: { commands: RunOutcome; epilogue: RunOutcome };
  /** Commands that ran (the rest found nothing to act on, or their thread was gone). */
  executed: number;
  /** Virtual time at the end (ns). */
  endNs: number;
  events: number;
}

interface ProcState {
  p: Process;
  /** Verbs state (procs 0 and 1 only). */
  ctx: IbvContext | null;
  pd: number;
  cq: CompletionQueue | null;
  qp: QueuePair | null;
  mrs: (IbvMr | null)[];
  /** Per handle: the user span posts and prefetches use (an implicit MR's is the span it was registered for). */
  spans: ({ addr: number; length: number } | null)[];
  dmabufMr: IbvMr | null;
}

interface NodeState {
  index: number;
  node: RdmaNode;
  k: Kernel;
  file: File;
  dmabuf: DmaBuf | null;
  procs: ProcState[];
  /** The latest child of a fork (proc 2), if any. */
  child: Process | null;
}

const PROT: Record<Prot, number> = { none: PROT_NONE, r: PROT_READ, rw: PROT_READ | PROT_WRITE };
const ADVICE = { dontneed: MADV_DONTNEED, free: MADV_FREE, pageout: MADV_PAGEOUT, dontfork: MADV_DONTFORK, dofork: MADV_DOFORK } as const;
const QP_ATTR = { timeout: 10, retryCnt: 7, rnrRetry: 7, minRnrTimer: 1, maxRdAtomic: 16, maxDestRdAtomic: 16 };
const MR_ACCESS_RW = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
const MR_ACCESS_RO = IBV_ACCESS_REMOTE_READ;
const DMABUF_PAGES = 8;
const DMABUF_IOVA = 0x7000_0000;
/** Bytes one store or pwrite writes. */
const STORE_BYTES = 64;
/**
 * ksmd's scan period and batch in fuzz runs: the kernel's pages_to_scan (100) every 5 µs
 * instead of every 20 ms (assumed: the command phase lasts tens of µs, so the period is
 * compressed for merges to land among the other commands).
 */
const FUZZ_KSM = { sleepNs: 5_000, pagesToScan: 100 };

let fileBytes: Uint8Array | null = null;

/** What each node's file holds on disk at the start: a byte per 64-byte line. */
function fileContents(): Uint8Array {
  if (!fileBytes) {
    fileBytes = new Uint8Array(FILE_PAGES * P);
    for (let j = 0; j < fileBytes.length; j++) fileBytes[j] = (j >> 6) & 0xff;
  }
  return fileBytes;
}

function fill(byte: number, n: number): Uint8Array {
  return new Uint8Array(n).fill(byte & 0xff);
}

/** Run `commands` against `target` once. Deterministic: same inputs, same result. */
export function runCommands(target: RunTarget, commands: readonly Command[], config: RunConfig): RunResult {
  const sim = new Simulation({ seed: config.seed, preempt: config.preempt, ...(config.schedule ? { schedule: config.schedule } : {}) });
  const fabric = new Fabric(sim);
  const profile = PROFILES[config.profile];
  const strategy = target.strategy(sim);
  const faultable = target.nic === 'faultable';
  const access = (write: boolean) => (write ? MR_ACCESS_RW : MR_ACCESS_RO) | (faultable ? IBV_ACCESS_ON_DEMAND : 0);

  const nodes: NodeState[] = [];
  for (let i = 0; i < NODES; i++) {
    const node = createRdmaNode(sim, fabric, {
      name: `n${i}`,
      kernel: { profile, frames: config.frames },
      nic: { translationCacheEntries: 256, ...(faultable ? {} : { caps: { odp: NO_ODP_CAPS } }) },
      device: faultable ? { nonOdp: pinnedStrategy(), odp: strategy } : { nonOdp: strategy },
    });
    const k = node.kernel;
    const file = k.createFile('data', FILE_PAGES * P, fileContents());
    const buf = DmaBuf.create(k, `vram${i}`, DMABUF_PAGES * P);
    const procs: ProcState[] = [];
    for (let j = 0; j < 2; j++) {
      const p = k.createProcess(`n${i}p${j}`);
      const ctx = openDevice(node.device, p);
      const pd = ctx.allocPd();
      const cq = ctx.createCq(16_384);
      procs.push({ p, ctx, pd, cq: typeof cq === 'number' ? null : cq, qp: null, mrs: [null, null, null], spans: [null, null, null], dmabufMr: null });
    }
    nodes.push({ index: i, node, k, file, dmabuf: typeof buf === 'number' ? null : buf, procs, child: null });
  }
  for (let j = 0; j < 2; j++) connect(nodes[0]!.procs[j]!, nodes[1]!.procs[j]!, nodes[0]!, nodes[1]!);

  const sanitizer = attachSanitizer({
    sim, kernels: nodes.map((n) => n.k), nics: nodes.map((n) => n.node.nic),
    bindings$: nodes.map((n) => n.node.device.binding$ as Observable<MrBinding>),
  });

  config.observe?.(sim, nodes.map((n) => n.node));

  // ---- setup, then the commands ------------------------------------------------------------
  let setupPending = NODES * 2;
  let t0 = 0;
  const setupDone = new WaitQueue(sim, 'fuzz/setup-done');
  let executed = 0;
  let wrId = 1;

  function* waitSetup(): Co {
    yield* setupDone.waitEvent(() => setupPending === 0);
  }

  function* setup(n: NodeState, ps: ProcState): Co {
    const { p } = ps;
    const a0 = slotAddress(0);
    const a1 = slotAddress(1);
    // Slot 0: anonymous, pages 0-5 written (6 and 7 never touched); MR 0 over pages 1-6,
    // so that ranges cover more than the MR and some pages are not present yet.
    if ((yield* p.mmap(a0, SLOT_PAGES * P, PROT.rw, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)) >= 0) {
      for (let i = 0; i < SLOT_PAGES - 2; i++) yield* p.store(a0 + i * P, fill(0x10 + i, STORE_BYTES));
      yield* reg(ps, 0, a0 + P, SLOT_PAGES - 2, true);
    }
    // Slot 1: the node's file, shared by both processes, pages 0-3 written; MR 1 over all of it.
    if ((yield* p.mmap(a1, SLOT_PAGES * P, PROT.rw, MAP_SHARED | MAP_FIXED, n.file, 0)) >= 0) {
      for (let i = 0; i < SLOT_PAGES / 2; i++) yield* p.store(a1 + i * P + 128 * (1 + ps.p.pid % 4), fill(0x40 + i, STORE_BYTES));
      yield* reg(ps, 1, a1, SLOT_PAGES, true);
    }
    if (n.dmabuf && ps.ctx) {
      const mr = yield* ps.ctx.regDmabufMr(ps.pd, 0, DMABUF_PAGES * P, DMABUF_IOVA, n.dmabuf, MR_ACCESS_RW);
      ps.dmabufMr = typeof mr === 'number' ? null : mr;
    }
    if (--setupPending === 0) {
      t0 = sim.now();
      setupDone.wakeUpAll();
    }
  }

  function* reg(ps: ProcState, handle: number, addr: number, pages: number, write: boolean, implicit = false): Co<void> {
    if (!ps.ctx) return;
    const old = ps.mrs[handle];
    if (old) {
      ps.mrs[handle] = null;
      ps.spans[handle] = null;
      yield* ps.ctx.deregMr(old);
    }
    // An implicit ODP MR (rdma A7) needs an ODP NIC; elsewhere the handle gets an explicit MR.
    const mr = implicit && faultable
      ? yield* ps.ctx.regMr(ps.pd, 0, SIZE_MAX, access(write))
      : yield* ps.ctx.regMr(ps.pd, addr, pages * P, access(write));
    if (typeof mr !== 'number' && !ps.mrs[handle]) {
      ps.mrs[handle] = mr;
      ps.spans[handle] = { addr, length: pages * P };
    } else if (typeof mr !== 'number') {
      // Another thread registered the handle meanwhile: the application drops this one.
      yield* ps.ctx.deregMr(mr);
    }
  }

  function connect(a: ProcState, b: ProcState, na: NodeState, nb: NodeState): void {
    const make = (ps: ProcState) => {
      if (!ps.ctx || !ps.cq) return null;
      const qp = ps.ctx.createQp({ qpType: IBV_QPT_RC, pd: ps.pd, sendCq: ps.cq, recvCq: ps.cq, cap: { maxSendWr: 4096, maxRecvWr: 4096 } });
      return typeof qp === 'number' ? null : qp;
    };
    for (const ps of [a, b]) if (ps.qp && ps.ctx) ps.ctx.destroyQp(ps.qp);
    a.qp = make(a);
    b.qp = make(b);
    const up = (ps: ProcState, peer: ProcState, peerNode: NodeState) => {
      if (!ps.ctx || !ps.qp || !peer.qp) return;
      ps.ctx.modifyQp(ps.qp, { qpState: IBV_QPS_INIT, qpAccessFlags: MR_ACCESS_RW });
      ps.ctx.modifyQp(ps.qp, { ...QP_ATTR, qpState: IBV_QPS_RTR, destQpNum: peer.qp.qpNum, ahAttr: { dlid: peerNode.node.nic.lid } });
      ps.ctx.modifyQp(ps.qp, { ...QP_ATTR, qpState: IBV_QPS_RTS });
    };
    up(a, b, nb);
    up(b, a, na);
  }

  /** The process a user command acts as (procs 0 and 1, or the latest child). */
  function procOf(n: NodeState, proc: number): Process | null {
    return proc < 2 ? n.procs[proc]!.p : n.child;
  }

  function mrOf(ps: ProcState, handle: number): IbvMr | null {
    return handle === DMABUF_MR ? ps.dmabufMr : (ps.mrs[handle] ?? null);
  }

  /** The span a post or prefetch on a handle uses: the registered span (an implicit MR's iova is its address). */
  function spanOf(ps: ProcState, handle: number, mr: IbvMr): { addr: number; length: number } {
    return handle === DMABUF_MR ? { addr: mr.addr, length: mr.length } : (ps.spans[handle] ?? { addr: mr.addr, length: mr.length });
  }

  function* post(n: NodeState, c: Extract<UserCommand, { op: 'post' }>): Co<boolean> {
    const me = n.procs[c.proc]!;
    const peerNode = nodes[1 - n.index]!;
    const peer = peerNode.procs[c.proc]!;
    const lmr = mrOf(me, c.mr);
    const rmr = mrOf(peer, c.peerMr);
    if (!me.ctx || !peer.ctx || !lmr || !rmr) return false;
    if (!me.qp || !peer.qp || me.qp.state === IBV_QPS_ERR || peer.qp.state === IBV_QPS_ERR) {
      // The application recovers: both sides get a fresh connected QP.
      if (n.index === 0) connect(me, peer, n, peerNode);
      else connect(peer, me, peerNode, n);
      if (!me.qp || !peer.qp) return false;
    }
    const span = (ps: ProcState, handle: number, mr: IbvMr): [number, number] => {
      const s = spanOf(ps, handle, mr);
      const pages = Math.max(1, Math.ceil(s.length / P));
      const first = c.page % pages;
      const len = Math.min(c.pages * P, s.length - first * P);
      return [s.addr + first * P, len];
    };
    const [laddr, llen] = span(me, c.mr, lmr);
    const [raddr, rlen] = span(peer, c.peerMr, rmr);
    const len = Math.min(llen, rlen);
    if (len <= 0) return false;
    const id = wrId++;
    const sgList = [{ addr: laddr, length: len, lkey: lmr.lkey }];
    if (c.verb === 'send') {
      yield* peer.ctx.postRecv(peer.qp, { wrId: id, sgList: [{ addr: raddr, length: len, lkey: rmr.lkey }] });
      yield* me.ctx.postSend(me.qp, { wrId: id, opcode: IBV_WR_SEND, sendFlags: IBV_SEND_SIGNALED, sgList });
    } else {
      const opcode = c.verb === 'write' ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
      yield* me.ctx.postSend(me.qp, { wrId: id, opcode, sendFlags: IBV_SEND_SIGNALED, sgList, rdma: { remoteAddr: raddr, rkey: rmr.rkey } });
    }
    // Keep the CQs from filling up; nobody reads the completions.
    me.cq?.drain();
    peer.cq?.drain();
    return true;
  }

  function vmaLength(p: Process, addr: number): number {
    const v = p.mm.findVma(addr);
    return v && v.start === addr ? v.end - v.start : 0;
  }

  /** One user command; false when it had nothing to act on. */
  function* user(n: NodeState, p: Process, c: UserCommand): Co<boolean> {
    const ps = c.proc < 2 ? n.procs[c.proc]! : null;
    switch (c.op) {
      case 'mmap': {
        const addr = slotAddress(c.slot);
        const prot = PROT[c.prot];
        const len = c.pages * P;
        if (c.kind === 'anon') yield* p.mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED);
        else if (c.kind === 'shmem') yield* p.mmap(addr, len, prot, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED);
        else yield* p.mmap(addr, len, prot, (c.kind === 'shared-file' ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, n.file, 0);
        return true;
      }
      case 'munmap':
        yield* p.munmap(slotAddress(c.slot) + c.first * P, c.pages * P);
        return true;
      case 'mremap': {
        const addr = slotAddress(c.slot);
        const old = vmaLength(p, addr);
        if (old === 0) return false;
        if (c.to === null) yield* p.mremap(addr, old, c.pages * P, 0);
        else if (c.to !== c.slot) yield* p.mremap(addr, old, c.pages * P, MREMAP_MAYMOVE | MREMAP_FIXED, slotAddress(c.to));
        else return false;
        return true;
      }
      case 'mprotect':
        yield* p.mprotect(slotAddress(c.slot) + c.first * P, c.pages * P, PROT[c.prot]);
        return true;
      case 'madvise':
        yield* p.madvise(slotAddress(c.slot) + c.first * P, c.pages * P, ADVICE[c.advice]);
        return true;
      case 'store':
        yield* p.store(slotAddress(c.slot) + c.page * P + (c.byte * 16) % (P - STORE_BYTES), fill(c.byte, STORE_BYTES));
        return true;
      case 'load':
        yield* p.load(slotAddress(c.slot) + c.page * P, 8);
        return true;
      case 'fork': {
        const child = yield* p.fork(`${p.name}-child`);
        if (typeof child === 'number') return true;
        n.child = child;
        startChildThreads(n, child);
        return true;
      }
      case 'exit':
        if (!p.alive) return false;
        yield* p.exit();
        return true;
      case 'pwrite':
        yield* p.pwrite(n.file, c.page * P + (c.byte * 16) % (P - STORE_BYTES), fill(c.byte, STORE_BYTES));
        return true;
      case 'truncate':
        yield* p.ftruncate(n.file, c.pages * P);
        return true;
      case 'reg':
        if (!ps?.ctx) return false;
        yield* reg(ps, c.mr, slotAddress(c.slot) + c.first * P, c.pages, c.write, c.implicit === true);
        return true;
      case 'dereg': {
        const mr = ps?.mrs[c.mr];
        if (!ps?.ctx || !mr) return false;
        ps.mrs[c.mr] = null;
        ps.spans[c.mr] = null;
        yield* ps.ctx.deregMr(mr);
        return true;
      }
      case 'post':
        return yield* post(n, c);
      case 'merge':
        yield* p.madvise(slotAddress(c.slot), MAX_MAP_PAGES * P, MADV_MERGEABLE);
        startKsmd(n.k, FUZZ_KSM);
        return true;
      case 'prefetch': {
        const mr = ps?.mrs[c.mr];
        if (!ps?.ctx || !mr) return false;
        const advice = mr.umem.access & IBV_ACCESS_LOCAL_WRITE ? IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE : IBV_ADVISE_MR_ADVICE_PREFETCH;
        const s = spanOf(ps, c.mr, mr);
        yield* ps.ctx.adviseMr(ps.pd, advice, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr: s.addr, length: s.length, lkey: mr.lkey }]);
        return true;
      }
    }
  }

  function* background(n: NodeState, c: BackgroundCommand): Co<void> {
    const k = n.k;
    switch (c.op) {
      case 'reclaim':
        yield* shrinkLru(k, c.pages);
        return;
      case 'migrate': {
        const p = procOf(n, c.proc);
        if (!p) return;
        const pte = p.mm.pageTable.get(Math.floor((slotAddress(c.slot) + c.page * P) / P));
        if (ptePresent(pte)) yield* migratePage(k, pteFrame(pte), 'compaction');
        return;
      }
      case 'writeback':
        for (const f of k.allFiles()) if (!f.shmem) yield* writebackFile(k, f, c.dropBuffers);
        return;
      case 'oom': {
        const p = procOf(n, c.proc);
        if (!p?.alive || exiting.has(p)) return;
        oomKill(k, p);
        // SIGKILL: the victim's threads leave at their next kernel boundary and it exits
        // (exit_mmap races the reaper's non-blockable invalidations).
        exiting.add(p);
        p.spawnThread('sigkill', function* () {
          yield* quiet.waitEvent(() => (busy.get(p) ?? 0) === 0);
          yield* p.exit();
        });
        return;
      }
      case 'dmabuf-move':
        if (n.dmabuf) yield* n.dmabuf.move();
        return;
      case 'numa':
        if (!numaStarted.has(n.index)) {
          numaStarted.add(n.index);
          startNumaBalancing(k, { periodNs: c.periodUs * 1_000 });
        }
        return;
      case 'pressure': {
        // GFP_KERNEL allocations down to `pages` below the min watermark: the last ones
        // reclaim in this thread (direct reclaim), as do faults of every process meanwhile.
        const held: number[] = [];
        const want = Math.max(0, k.phys.freeFrames - minWatermark(k)) + c.pages;
        for (let i = 0; i < want; i++) {
          const f = yield* allocPages(k, GFP_KERNEL);
          if (f < 0) break;
          held.push(f);
        }
        yield* sim.sleep(c.holdUs * 1_000);
        for (const f of held) freePages(k, f);
        return;
      }
    }
  }

  // Commands per thread, in start order (stable for equal times).
  const byThread = new Map<string, UserCommand[]>();
  const byNodeBg = new Map<number, BackgroundCommand[]>();
  commands.forEach((c) => {
    if (isBackground(c)) {
      let l = byNodeBg.get(c.node);
      if (!l) byNodeBg.set(c.node, (l = []));
      l.push(c);
    } else {
      const key = `${c.node}:${c.proc}:${c.thread}`;
      let l = byThread.get(key);
      if (!l) byThread.set(key, (l = []));
      l.push(c);
    }
  });
  const sorted = <T extends { at: number }>(l: T[]) => l.map((c, i) => [c, i] as const).sort((a, b) => a[0].at - b[0].at || a[1] - b[1]).map(([c]) => c);

  function* untilAt(at: number): Co {
    const when = t0 + at * 1_000;
    if (sim.now() < when) yield* sim.sleep(when - sim.now());
  }

  const workers: { done: boolean }[] = [];
  /** Per process: fuzz threads inside a command, and processes on their way out. */
  const busy = new Map<Process, number>();
  const exiting = new Set<Process>();
  const numaStarted = new Set<number>();
  const quiet = new WaitQueue(sim, 'fuzz/threads-quiet');

  function* thread(n: NodeState, proc: number, list: readonly UserCommand[], child: Process | null): Co {
    yield* waitSetup();
    for (const c of list) {
      yield* untilAt(c.at);
      const p = child ?? procOf(n, proc);
      if (!p || (child && n.child !== child)) break; // a newer fork took over the child slot
      // A process that exited or was killed makes no more calls: its threads are gone.
      if (!p.alive || exiting.has(p)) break;
      busy.set(p, (busy.get(p) ?? 0) + 1);
      try {
        if (c.op === 'exit') {
          // exit_group: the other threads leave at their next kernel boundary, and the mm
          // goes only when none of them is still inside a call (each holds mm_users).
          exiting.add(p);
          yield* quiet.waitEvent(() => busy.get(p) === 1);
        }
        if (yield* user(n, p, c)) executed++;
      } finally {
        busy.set(p, (busy.get(p) ?? 1) - 1);
        quiet.wakeUpAll();
      }
    }
  }

  function startChildThreads(n: NodeState, child: Process): void {
    const now = sim.now();
    for (let t = 0; t < THREADS; t++) {
      const list = sorted(byThread.get(`${n.index}:2:${t}`) ?? []).filter((c) => t0 + c.at * 1_000 >= now);
      if (list.length > 0) workers.push(child.spawnThread(`fuzz-t${t}`, () => thread(n, 2, list, child)));
    }
  }

  for (const n of nodes) {
    for (let j = 0; j < 2; j++) {
      const ps = n.procs[j]!;
      for (let t = 0; t < THREADS; t++) {
        const list = sorted(byThread.get(`${n.index}:${j}:${t}`) ?? []);
        workers.push(ps.p.spawnThread(`fuzz-t${t}`, function* () {
          if (t === 0) yield* setup(n, ps);
          yield* thread(n, j, list, null);
        }));
      }
    }
    const bg = sorted(byNodeBg.get(n.index) ?? []);
    if (bg.length > 0) {
      workers.push(sim.spawn(`fuzz/bg-${n.index}`, function* () {
        yield* waitSetup();
        for (const c of bg) {
          yield* untilAt(c.at);
          executed++;
          sim.spawn(`fuzz/${c.op}`, () => background(n, c), { kind: 'kthread' });
        }
      }, { kind: 'script' }));
    }
  }

  const main = sim.spawn('fuzz/main', function* () {
    yield* waitSetup();
    // Every command thread (children included: they are added as forks happen) finishes.
    for (let i = 0; i < workers.length; i++) {
      const w = workers[i] as { done: boolean } & Parameters<typeof sim.join>[0];
      if (!w.done) yield* sim.join(w);
    }
  }, { kind: 'script' });
  const commandsOut = sim.run({ task: main, untilNs: config.commandPhaseNs, maxEvents: config.maxEvents });

  // ---- epilogue: let traffic drain, close every verbs context, end-of-run checks -----------
  const closers = nodes.flatMap((n) => n.procs.map((ps) => ps));
  const epilogue = sim.spawn('fuzz/epilogue', function* () {
    yield* sim.sleep(200_000);
    const tasks = closers.filter((ps) => ps.ctx).map((ps) => ps.p.spawnThread('fuzz-close', function* () {
      yield* (ps.ctx as IbvContext).close();
    }));
    for (const t of tasks) yield* sim.join(t);
  }, { kind: 'script' });
  const epilogueOut = commandsOut.reason === 'failed'
    ? commandsOut
    : sim.run({ task: epilogue, untilNs: sim.now() + config.epilogueNs, maxEvents: config.maxEvents });
  sanitizer.finish();
  const failure = epilogueOut.failure ?? commandsOut.failure;
  const result: RunResult = {
    violations: [...sanitizer.violations],
    sanitizerErrors: [...sanitizer.internalErrors],
    phases: { commands: commandsOut, epilogue: epilogueOut },
    executed,
    endNs: sim.now(),
    events: sim.totalEvents,
  };
  if (failure !== undefined) result.failure = failure;
  sanitizer.detach();
  return result;
}
