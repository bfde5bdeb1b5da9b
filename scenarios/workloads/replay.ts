/**
 * Replaying a workload trace (trace-format.ts) into a process of the model, with NIC
 * traffic from the program's buffers through a registration cache (driver/rcache.ts),
 * under any strategy. README.md beside this file documents the rules; in short:
 *
 * - Processes and threads: the trace's first thread is the main thread of a model
 *   process; `thread` starts another user thread (task) of the same process, `fork` forks
 *   the model process, `exec` gives the thread's process a fresh address space (the old
 *   one exits), `exit` ends a thread, `exit_group` its process. Each thread is a task that
 *   sleeps until each of its events' time (trace µs x `timeScale` virtual ns).
 * - System calls replay at the addresses the trace returned: mmap with MAP_FIXED at the
 *   returned address (file mappings become private anonymous memory: no file contents are
 *   captured), mremap moves with MREMAP_FIXED to the returned address, the first brk sets
 *   the heap base as the ELF loader does (setBrkBase), later ones call brk(2). munmap,
 *   madvise, brk and mremap go through the cache's memory hooks (they see them only when
 *   the cache has hooks). An address beyond the model's space (TASK_SIZE) is reported and
 *   the call skipped; a call the model refuses is counted, not fatal.
 * - Touch rule: an allocation (malloc, calloc, realloc, memalign) writes one 8-byte word
 *   at the start of each page of its block, up to `touchPages` pages, as a program writes
 *   what it allocated; mmap and brk growth touch nothing (the kernel maps lazily); free
 *   touches nothing.
 * - Traffic policy: every allocation of at least `minBytes` is sent to a peer (RDMA WRITE
 *   of its first `wrBytes` bytes from the buffer, through the cache: lookup, post, wait,
 *   put), then the peer RDMA-WRITEs a fresh pattern into it through the region's rkey.
 *   Bytes the peer received that differ from what the process had there are
 *   "misdirected"; bytes the peer wrote that the process does not see are "lost".
 */
import {
  MADV_DOFORK, MADV_DONTFORK, MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED,
  MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, TASK_SIZE, eventName, hex, setBrkBase,
  type Co, type Process,
} from '../../kernel-model/index.ts';
import { IBV_ACCESS_ON_DEMAND, IBV_WR_RDMA_WRITE, MLX5_ODP_CAPS, NO_ODP_CAPS, type QueuePair } from '../../device/index.ts';
import {
  holdoffStrategy, odpStrategy, pinnedStrategy, rcachePolicy, RegistrationCache,
  type IbDeviceOptions, type IbvMr, type RcachePolicy, type RcacheRegion, type RcacheSource,
} from '../../driver/index.ts';
import { ALL_ACCESS, completions, connectRc, mapAnon, openApp, pattern, regOk, type App } from '../app.ts';
import { percentile } from '../deferred-invalidation-reuse.ts';
import type { ScenarioContext, ScenarioDefinition } from '../scenario.ts';
import type { TraceEvent, WorkloadTrace } from './trace-format.ts';

/** The drivers a workload runs under (a user's strategy stands in for one of the first three). */
export const WORKLOAD_DRIVERS = ['pinned', 'holdoff', 'odp', 'implicit'] as const;
export type WorkloadDriver = (typeof WORKLOAD_DRIVERS)[number];
/** `--cache` names: an invalidation source of driver/rcache.ts, or `off` (register and deregister around every send). */
export const WORKLOAD_CACHES = ['memory-hooks', 'mr-event', 'none', 'odp', 'hooks-failed', 'off'] as const;
export type WorkloadCacheName = (typeof WORKLOAD_CACHES)[number];

/** The cache each driver gets when none is named: what a library would pick there. */
export function defaultCacheFor(driver: WorkloadDriver): WorkloadCacheName {
  return driver === 'pinned' ? 'memory-hooks' : driver === 'holdoff' ? 'mr-event' : driver === 'implicit' ? 'odp' : 'none';
}

export interface WorkloadOptions {
  driver: WorkloadDriver;
  /** A built-in cache, or a user's policy (driver/rcache-define.ts). */
  cache: WorkloadCacheName | RcachePolicy;
  /** Allocations of at least this many bytes are sent and written (default 64 KiB). */
  minBytes?: number;
  /** Bytes moved per work request (default 16 KiB). */
  wrBytes?: number;
  /** Pages an allocation touches at most (default 64). */
  touchPages?: number;
  /** Virtual nanoseconds per trace microsecond (default 1000: real time). */
  timeScale?: number;
  /** Physical frames of the replaying node (default 262144, 1 GiB: a real program needs more than a story). */
  frames?: number;
}

const MADVICE: Record<string, number> = { dontneed: MADV_DONTNEED, free: MADV_FREE, remove: MADV_REMOVE, dontfork: MADV_DONTFORK, dofork: MADV_DOFORK };

function protOf(s: string): number {
  return (s[0] === 'r' ? PROT_READ : 0) | (s[1] === 'w' ? PROT_WRITE : 0) | (s[2] === 'x' ? PROT_EXEC : 0);
}

function endOf(e: TraceEvent): number {
  switch (e.op) {
    case 'mmap': case 'munmap': case 'mprotect': case 'madvise': return e.addr + e.length;
    case 'mremap': return Math.max(e.addr + e.oldLength, e.ret + e.newLength);
    case 'brk': return Math.max(e.request, e.ret);
    case 'malloc': case 'memalign': return e.ret + e.size;
    case 'calloc': return e.ret + e.count * e.size;
    case 'realloc': return Math.max(e.old, e.ret + e.size);
    case 'free': return e.addr + 1;
    default: return 0;
  }
}

/** Per-process state of the replay: the model process, its verbs side, its cache and traffic. */
interface ProcState {
  p: Process;
  app: App | null;
  qp: QueuePair | null;
  peerQp: QueuePair | null;
  cache: RegistrationCache | null;
  /** Live allocations: address -> size (to size a free). */
  live: Map<number, number>;
  /** The QP broke (an error completion): no more traffic from this process. */
  broken: boolean;
}

/**
 * A scenario that replays `trace` (for `lab workload` and the catalogue's workload story).
 * `driver` names the reference strategy the device gets (a user's strategy stands in for
 * it through runScenario); the figures are the report of issue 20 item 3.
 */
export function workloadScenario(trace: WorkloadTrace, name: string, given: Partial<WorkloadOptions>, summary?: string): ScenarioDefinition {
  const timeScale = given.timeScale ?? 1000;
  const last = trace.events[trace.events.length - 1]?.t ?? 0;
  const role = given.driver === 'implicit' ? 'odp' : given.driver;
  return {
    name,
    summary: summary ?? `replay of ${trace.header.command ?? 'a captured program'} (${trace.events.length} events)`,
    seeds: [],
    defaultProfile: 'linux-6.x',
    // Without a fixed driver the story runs under whichever of the three the run names.
    drivers: role ? [role] : ['pinned', 'holdoff', 'odp'],
    defaultDriver: role ?? 'pinned',
    untilNs: last * timeScale + 20_000_000_000,
    expect: () => [],
    setup(ctx) {
      const driver = given.driver ?? (ctx.driver as WorkloadDriver);
      const opts: WorkloadOptions = { ...given, driver, cache: given.cache ?? defaultCacheFor(driver) };
      return replaySetup(ctx, trace, opts, timeScale);
    },
  };
}

function replaySetup(ctx: ScenarioContext, trace: WorkloadTrace, opts: WorkloadOptions, timeScale: number): () => Co<void> {
  const { sim } = ctx;
  const minBytes = opts.minBytes ?? 64 * 1024;
  const wrBytes = opts.wrBytes ?? 16 * 1024;
  const touchPages = opts.touchPages ?? 64;
  const odp = opts.driver === 'odp' || opts.driver === 'implicit';
  const device: IbDeviceOptions = odp ? { nonOdp: pinnedStrategy(), odp: odpStrategy() }
    : { nonOdp: opts.driver === 'holdoff' ? holdoffStrategy({ holdoffTimeoutNs: Number(ctx.params['holdoff.timeoutNs'] ?? 10_000_000) }) : pinnedStrategy() };
  const frames = opts.frames ?? 262_144;
  const host = ctx.node('host', { caps: { odp: odp ? MLX5_ODP_CAPS : NO_ODP_CAPS }, device, frames });
  const peerNode = ctx.node('peer', { device: { nonOdp: pinnedStrategy() }, frames: 8192 });
  const peer = openApp(peerNode, peerNode.kernel.createProcess('peer'));
  const k = host.kernel;
  const cacheName = typeof opts.cache === 'string' ? opts.cache : opts.cache.name;
  const policy: RcachePolicy | null = typeof opts.cache === 'string' ? (opts.cache === 'off' ? null : rcachePolicy(opts.cache as RcacheSource)) : opts.cache;
  const access = ALL_ACCESS | (opts.driver === 'odp' ? IBV_ACCESS_ON_DEMAND : 0);

  // ---- what the report counts -------------------------------------------------------------
  const syscallOfTask = new Map<number, string>();
  const invByKey = new Map<string, number>();
  let nicFaults = 0;
  host.nic.fault$.subscribe(() => nicFaults++);
  let invPages = 0;
  let invalidations = 0;
  k.notifier$.subscribe((e) => {
    if (e.phase !== 'start') return;
    invalidations++;
    // exit_mmap's RELEASE covers the whole address space: its pages are not counted.
    if (e.range.end <= TASK_SIZE) invPages += Math.ceil((e.range.end - e.range.start) / PAGE_SIZE);
    const cur = sim.current;
    const src = (cur && syscallOfTask.get(cur.id)) ?? (cur ? `[${cur.kind}]` : '[kernel]');
    const key = `${eventName(e.range.event)} from ${src}`;
    invByKey.set(key, (invByKey.get(key) ?? 0) + 1);
  });
  const counts = { replayed: 0, refused: 0, ignored: 0, outside: 0, sends: 0, peerWrites: 0, misdirected: 0, lost: 0, failedWrs: 0, registrations: 0, deregistrations: 0, hits: 0, lookups: 0 };
  const outside: string[] = [];
  const wrLatency: number[] = [];
  const procs = new Map<number, ProcState>();
  const caches: RegistrationCache[] = [];
  let peerBuf = 0;
  let peerMr: { lkey: number; rkey: number } | null = null;
  let wrId = 1;
  let allocOrdinal = 0;

  const verbsOf = (st: ProcState): App => {
    if (!st.app) {
      st.app = openApp(host, st.p);
      const [a, b] = connectRc(st.app, peer);
      st.qp = a;
      st.peerQp = b;
      if (policy) {
        st.cache = new RegistrationCache(st.app.ctx, { pd: st.app.pd, access, policy });
        caches.push(st.cache);
      }
    }
    return st.app;
  };

  function* syscall(task: number, name: string, body: () => Co<number>): Co<number> {
    syscallOfTask.set(task, name);
    try {
      return yield* body();
    } finally {
      syscallOfTask.delete(task);
    }
  }

  /** The traffic of one allocation: send it, then let the peer write into it. */
  function* traffic(st: ProcState, addr: number, size: number): Co {
    if (st.broken) return;
    const app = verbsOf(st);
    const len = Math.min(size, wrBytes);
    const before = yield* st.p.load(addr, len);
    if (typeof before === 'number') return;
    let region: RcacheRegion | null = null;
    let key: number;
    let rkey: number;
    let ownMr: IbvMr | null = null;
    if (st.cache) {
      const r = yield* st.cache.get(addr, len);
      if (typeof r === 'number') return void counts.refused++;
      region = r;
      key = r.key;
      rkey = r.rkey;
    } else {
      const r = yield* app.ctx.regMr(app.pd, addr, len, access);
      if (typeof r === 'number') return void counts.refused++;
      counts.registrations++;
      ownMr = r;
      key = r.lkey;
      rkey = r.rkey;
    }
    const t0 = sim.now();
    const post = st.cache
      ? yield* st.cache.postSend(st.qp!, { wrId: wrId++, opcode: IBV_WR_RDMA_WRITE, sgList: [{ addr, length: len, lkey: key }], rdma: { remoteAddr: peerBuf, rkey: peerMr!.rkey } }, 'RDMA_WRITE')
      : yield* app.ctx.postSend(st.qp!, { wrId: wrId++, opcode: IBV_WR_RDMA_WRITE, sendFlags: 2, sgList: [{ addr, length: len, lkey: key }], rdma: { remoteAddr: peerBuf, rkey: peerMr!.rkey } });
    let ok = post === 0;
    if (ok) {
      const [wc] = yield* completions(app, 1);
      wrLatency.push(sim.now() - t0);
      ok = wc?.status === 0;
    }
    counts.sends++;
    if (ok) {
      const got = yield* peer.p.load(peerBuf, len);
      if (typeof got !== 'number') for (let i = 0; i < len; i++) if (got[i] !== before[i]) counts.misdirected++;
      // The peer writes a fresh pattern into the buffer through the region's rkey.
      const msg = pattern(wrId, len);
      yield* peer.p.store(peerBuf, msg);
      const t1 = sim.now();
      const r = yield* peer.ctx.postSend(st.peerQp!, { wrId: wrId++, opcode: IBV_WR_RDMA_WRITE, sendFlags: 2, sgList: [{ addr: peerBuf, length: len, lkey: peerMr!.lkey }], rdma: { remoteAddr: addr, rkey } });
      if (r === 0) {
        st.cache?.notePost(key, addr, len, 'RDMA_WRITE from the peer', 'in');
        const [wc] = yield* completions(peer, 1);
        wrLatency.push(sim.now() - t1);
        counts.peerWrites++;
        if (wc?.status === 0) {
          const seen = yield* st.p.load(addr, len);
          if (typeof seen !== 'number') for (let i = 0; i < len; i++) if (seen[i] !== msg[i]) counts.lost++;
        } else ok = false;
      }
    }
    if (!ok) {
      counts.failedWrs++;
      st.broken = true;
    }
    if (region && st.cache) yield* st.cache.put(region);
    if (ownMr) {
      yield* app.ctx.deregMr(ownMr);
      counts.deregistrations++;
    }
  }

  /** The touch rule: one word per page of the block, up to touchPages pages. */
  function* touch(st: ProcState, addr: number, size: number): Co {
    const ord = ++allocOrdinal;
    const word = new Uint8Array(8);
    const first = Math.floor(addr / PAGE_SIZE);
    const lastPage = Math.floor((addr + Math.max(size, 1) - 1) / PAGE_SIZE);
    for (let pg = first, n = 0; pg <= lastPage && n < touchPages; pg++, n++) {
      const a = Math.max(addr, pg * PAGE_SIZE);
      const len = Math.min(8, addr + size - a);
      if (len <= 0) break;
      for (let i = 0; i < 8; i++) word[i] = (ord * 31 + pg + i) & 0xff;
      yield* st.p.store(a, word.subarray(0, len));
    }
  }

  function* allocated(st: ProcState, fn: string, addr: number, size: number): Co {
    if (addr === 0) return;
    st.live.set(addr, size);
    st.cache?.noteAlloc(fn, addr, size);
    yield* touch(st, addr, size);
    if (size >= minBytes) yield* traffic(st, addr, size);
  }

  function freed(st: ProcState, fn: string, addr: number): void {
    const size = st.live.get(addr);
    if (size === undefined) return;
    st.live.delete(addr);
    st.cache?.noteFree(fn, addr, size);
  }

  // ---- the threads ------------------------------------------------------------------------
  const byTid = new Map<number, TraceEvent[]>();
  for (const e of trace.events) {
    let l = byTid.get(e.tid);
    if (!l) byTid.set(e.tid, (l = []));
    l.push(e);
  }
  const tidProc = new Map<number, ProcState>();

  const newProc = (name: string): ProcState => {
    const st: ProcState = { p: k.createProcess(name), app: null, qp: null, peerQp: null, cache: null, live: new Map(), broken: false };
    procs.set(st.p.pid, st);
    return st;
  };

  function* exitProc(st: ProcState): Co {
    if (!st.p.alive) return;
    const task = sim.current?.id ?? -1;
    syscallOfTask.set(task, 'exit_group');
    if (st.cache) yield* st.cache.destroy();
    if (st.app) yield* st.app.ctx.close();
    yield* st.p.exit();
    syscallOfTask.delete(task);
  }

  function* runEvent(tid: number, e: TraceEvent): Co<'continue' | 'stop'> {
    let st = tidProc.get(tid)!;
    const task = sim.current?.id ?? -1;
    const end = endOf(e);
    if (end > TASK_SIZE) {
      counts.outside++;
      if (outside.length < 5) outside.push(`line ${e.line}: ${e.op} at ${hex(end)} is beyond the model's address space (TASK_SIZE ${hex(TASK_SIZE)})`);
      return 'continue';
    }
    counts.replayed++;
    const p = st.p;
    const call = (name: string, body: () => Co<number>) => syscall(task, name, body);
    const hooks = () => (st.cache ?? null);
    let r = 0;
    switch (e.op) {
      case 'exec': {
        if (st.p.mm.vmas.length === 0 && st.p.mm.startBrk === 0) break;
        yield* exitProc(st);
        const fresh = newProc(`pid${tid}`);
        for (const [t, s] of tidProc) if (s === st) tidProc.set(t, fresh);
        st = fresh;
        break;
      }
      case 'mmap': {
        const flags = (e.flags[0] === 's' ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED;
        r = yield* call('mmap', () => p.mmap(e.addr, e.length, protOf(e.prot), flags));
        break;
      }
      case 'munmap':
        r = yield* call('munmap', () => (hooks() ? hooks()!.munmap(e.addr, e.length) : p.munmap(e.addr, e.length)));
        break;
      case 'mprotect':
        r = yield* call('mprotect', () => p.mprotect(e.addr, e.length, protOf(e.prot)));
        break;
      case 'madvise': {
        const advice = MADVICE[e.advice];
        if (advice === undefined) {
          counts.ignored++;
          break;
        }
        r = yield* call('madvise', () => (hooks() ? hooks()!.madvise(e.addr, e.length, advice) : p.madvise(e.addr, e.length, advice)));
        break;
      }
      case 'mremap': {
        const moved = e.ret !== e.addr;
        const flags = moved ? MREMAP_MAYMOVE | MREMAP_FIXED : 0;
        const newAddr = moved ? e.ret : 0;
        r = yield* call('mremap', () => (hooks() ? hooks()!.mremap(e.addr, e.oldLength, e.newLength, flags, newAddr) : p.mremap(e.addr, e.oldLength, e.newLength, flags, newAddr)));
        if (r >= 0 && r !== e.ret) counts.refused++;
        break;
      }
      case 'brk': {
        if (p.mm.startBrk === 0) {
          r = setBrkBase(p.mm, e.ret);
          break;
        }
        if (e.request === 0) break;
        const got = yield* call('brk', () => (hooks() ? hooks()!.brk(e.request) : p.brk(e.request)));
        if (got !== e.ret) counts.refused++;
        break;
      }
      case 'thread': {
        tidProc.set(e.child, st);
        spawnThread(st, e.child);
        break;
      }
      case 'fork': {
        syscallOfTask.set(task, 'fork');
        const child = yield* p.fork(`pid${e.child}`);
        syscallOfTask.delete(task);
        if (typeof child === 'number') {
          r = child;
          break;
        }
        const cst: ProcState = { p: child, app: null, qp: null, peerQp: null, cache: null, live: new Map(st.live), broken: false };
        procs.set(child.pid, cst);
        tidProc.set(e.child, cst);
        spawnThread(cst, e.child);
        break;
      }
      case 'exit':
        return 'stop';
      case 'exit_group':
        yield* exitProc(st);
        return 'stop';
      case 'malloc':
        yield* allocated(st, 'malloc', e.ret, e.size);
        break;
      case 'calloc':
        yield* allocated(st, 'calloc', e.ret, e.count * e.size);
        break;
      case 'memalign':
        yield* allocated(st, 'posix_memalign', e.ret, e.size);
        break;
      case 'realloc':
        if (e.old) freed(st, 'realloc', e.old);
        yield* allocated(st, 'realloc', e.ret, e.size);
        break;
      case 'free':
        freed(st, 'free', e.addr);
        break;
    }
    if (r < 0) counts.refused++;
    return 'continue';
  }

  function spawnThread(st: ProcState, tid: number): void {
    const events = byTid.get(tid) ?? [];
    st.p.spawnThread(`tid${tid}`, function* () {
      for (const e of events) {
        const at = e.t * timeScale;
        if (at > sim.now()) yield* sim.sleep(at - sim.now());
        if ((yield* runEvent(tid, e)) === 'stop') return;
        if (!tidProc.get(tid)!.p.alive) return;
      }
    });
  }

  return function* () {
    const first = trace.events[0];
    ctx.say(`replaying ${trace.events.length} events of ${trace.header.command ?? 'a trace'} under ${opts.driver} with cache ${cacheName}`);
    peerBuf = yield* mapAnon(peer, Math.ceil(wrBytes / PAGE_SIZE));
    const m = yield* regOk(peer, peerBuf, wrBytes);
    peerMr = { lkey: m.lkey, rkey: m.rkey };
    if (!first) return;
    const main = newProc(`pid${first.tid}`);
    tidProc.set(first.tid, main);
    spawnThread(main, first.tid);
    // Wait until every process of the trace is gone (or the trace ended without exit_group).
    while ([...procs.values()].some((s) => s.p.alive && s.p.threads.some((t) => !t.done))) yield* sim.sleep(1_000_000);
    for (const s of procs.values()) yield* exitProc(s);
    for (const c of caches) {
      counts.registrations += c.stats.registrations;
      counts.deregistrations += c.stats.deregistrations;
      counts.hits += c.stats.hits;
      counts.lookups += c.stats.lookups;
    }
    const seconds = Math.max(sim.now(), 1) / 1e9;
    ctx.figure('workload.events replayed', counts.replayed);
    ctx.figure('workload.calls the model refused', counts.refused);
    ctx.figure('workload.madvise ignored (advice not modelled)', counts.ignored);
    ctx.figure('workload.addresses beyond the model', counts.outside);
    ctx.figure('invalidations', invalidations);
    ctx.figure('invalidations per second', Number((invalidations / seconds).toFixed(1)));
    for (const [key, n] of [...invByKey].sort((a, b) => b[1] - a[1])) ctx.figure(`invalidations/s ${key}`, Number((n / seconds).toFixed(1)));
    ctx.figure('pages invalidated', invPages);
    ctx.figure('NIC faults', nicFaults);
    ctx.figure('registration calls', counts.registrations);
    ctx.figure('deregistration calls', counts.deregistrations);
    ctx.figure('cache lookups', counts.lookups);
    ctx.figure('cache hits', counts.hits);
    ctx.figure('sends', counts.sends);
    ctx.figure('peer writes', counts.peerWrites);
    ctx.figure('work requests failed', counts.failedWrs);
    ctx.figure('WR latency p50 (ns)', percentile(wrLatency, 50));
    ctx.figure('WR latency p99 (ns)', percentile(wrLatency, 99));
    ctx.figure('bytes misdirected (peer got other bytes)', counts.misdirected);
    ctx.figure('bytes lost (peer wrote, process does not see)', counts.lost);
    for (const o of outside) ctx.say(o);
    ctx.say(`done: ${counts.replayed} events, ${counts.sends} sends, ${counts.registrations} registrations, ${counts.misdirected} bytes misdirected, ${counts.lost} lost`);
  };
}

