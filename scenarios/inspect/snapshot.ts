/**
 * A snapshot of the world at one instant: what `lab inspect` prints and the HTML page's
 * state panel shows. Plain JSON (numbers, strings, arrays), built by reading model state
 * only: taking one changes nothing in the run.
 *
 * What it holds, per node: the processes with their VMAs and present PTEs (collapsed into
 * runs), each mm's notifier subscriptions (classic and interval, with `invalidate_seq` and
 * the mm's sequence `S` and active count `A`, kernel rule 24), the frames with GUP
 * references (pins and gets) and their counts, the open invalidation ranges; per NIC the
 * MRs with their device page tables (runs), the entries that disagree with the CPU's page
 * table (the stale translations), the translation cache, the QPs with their states and
 * outstanding work, DMA in flight and unresolved device faults. Across nodes: the locks
 * with holder and waiters.
 */
import {
  GUP_PIN_COUNTING_BIAS, PG_ANON, PG_DIRTY, PG_LOCKED, PG_LRU, PG_SWAPCACHE, PG_WRITEBACK, PTE_ACCESSED, PTE_DIRTY,
  PTE_MIGRATION, PTE_PRESENT, PTE_PROTNONE, PTE_SWAP, PTE_WRITE, VM_EXEC, VM_READ, VM_WRITE, pteFlags, pteFrame, ptePresent, pteHas,
  type Kernel, type MmStruct, type MmuIntervalNotifier,
} from '../../kernel-model/index.ts';
import {
  PTE_READ_WRITE, qpStateName, wrOpcodeName, type MemoryRegion, type Nic, type QueuePair, type Translation,
} from '../../device/index.ts';
import type { IbDevice, IbUmem } from '../../driver/index.ts';

export const PAGE = 4096;

/** Sections `--what` can choose. */
export const SECTIONS = ['processes', 'notifiers', 'invalidations', 'pins', 'nics', 'stale', 'locks', 'tasks'] as const;
export type Section = (typeof SECTIONS)[number];

/** A run of consecutive CPU PTEs whose frames follow each other with the same flags. */
export interface PteRun {
  /** First virtual address. */
  va: number;
  pages: number;
  /** Frame of the first page (a swap slot when `flags` has 's'). */
  frame: number;
  /** w writable, a accessed, d dirty, n PROT_NONE/NUMA hint; s swap entry, m migration entry (not present). */
  flags: string;
}

export interface VmaInfo {
  start: number;
  end: number;
  /** rwx + p(rivate)/s(hared), as /proc/pid/maps. */
  perms: string;
  file: string | null;
}

export interface ProcessInfo {
  pid: number;
  name: string;
  mm: number;
  exited: boolean;
  vmas: VmaInfo[];
  ptes: PteRun[];
  /** Present pages (RSS) and swap entries. */
  present: number;
  swapped: number;
  /** Who holds the mm's mmap_lock, read from the lock itself (the trace names it per mm id only). */
  mmapLock: string;
}

export interface IntervalSubInfo {
  name: string;
  start: number;
  /** Inclusive. */
  last: number;
  invalidateSeq: number;
  /** In the interval tree, or only on the deferred list (insert or removal pending). */
  where: 'tree' | 'deferred' | 'tree, removal deferred';
}

export interface NotifierInfo {
  mm: number;
  /** The mm's interval sequence S: odd while an invalidation overlaps a subscriber. */
  seq: number;
  /** Invalidations in progress (A). */
  active: number;
  classic: string[];
  interval: IntervalSubInfo[];
}

export interface OpenInvalidation {
  mm: number;
  start: number;
  end: number;
  event: string;
  blockable: boolean;
  /** The S the subscribers saw. */
  curSeq: number;
  since: number;
  task: string | null;
}

/** What a frame is: the page a translation points at. */
export interface FrameInfo {
  frame: number;
  allocated: boolean;
  refcount: number;
  mapcount: number;
  /** Allocation generation: it changes every time the frame is handed out again. */
  generation: number;
  flags: string[];
  /** Where the CPU maps it (the rmap): `mm1 0x7f...`. */
  mappedAt: string[];
}

export interface PinInfo {
  frame: number;
  /** Outstanding FOLL_PIN and FOLL_GET references taken through GUP (from the gup records). */
  pins: number;
  gets: number;
  refcount: number;
  mapcount: number;
  /** folio_maybe_dma_pinned as the kernel would answer (false before pin tracking, 5.7). */
  maybeDmaPinned: boolean;
}

export interface DeviceRun {
  /** MR page index of the first page. */
  index: number;
  /** Virtual address of that page in the bound mm (null for an MR not backed by process memory). */
  va: number | null;
  pages: number;
  frame: number;
  perm: 'r' | 'rw';
}

/** A present device entry (or cached translation) that disagrees with the CPU page table. */
export interface StaleEntry {
  nic: string;
  key: number;
  strategy: string;
  mm: number;
  index: number;
  va: number;
  /** Where it was seen: the device page table or only the translation cache (zapped, not yet synced). */
  source: 'page-table' | 'cache';
  device: { frame: number; perm: 'r' | 'rw'; generation: number; installedAt: number };
  /** What the CPU maps at va: a frame, a swap entry, or nothing. */
  cpu: { state: 'none' | 'swap' | 'present'; frame: number | null; writable: boolean; flags: string };
  why: string;
  /** An open invalidation covers va (the CPU is changing it: not yet a violation). */
  inWindow: boolean;
  /** `mirrored` MRs must follow the CPU; a `pinned` MR keeps its pages by design. */
  kind: 'mirrored' | 'pinned';
  deviceFrame: FrameInfo;
  cpuFrame: FrameInfo | null;
}

export interface MrInfo {
  key: number;
  iova: number;
  length: number;
  pages: number;
  state: string;
  onDemand: boolean;
  implicit: boolean;
  strategy: string | null;
  mm: number | null;
  addr: number | null;
  present: number;
  entries: DeviceRun[];
  counters: { faults: number; updatedPages: number; zappedPages: number; accesses: number };
}

export interface CacheRun {
  key: number;
  index: number;
  pages: number;
  frame: number;
  perm: 'r' | 'rw';
}

export interface QpInfo {
  qpn: number;
  type: string;
  state: string;
  destQpn: number;
  /** Send WQEs posted and not completed: opcode, wr id, bytes, whether transmitted. */
  outstanding: string[];
  receivesPosted: number;
  responderFault: string | null;
}

export interface NicInfo {
  name: string;
  mrs: MrInfo[];
  cache: { capacity: number; size: number; entries: CacheRun[] };
  qps: QpInfo[];
  dma: string[];
  faults: string[];
  stats: { syncs: number; updateCommands: number; zapCommands: number };
}

export interface NodeInfo {
  name: string;
  freeFrames: number;
  processes: ProcessInfo[];
  notifiers: NotifierInfo[];
  invalidations: OpenInvalidation[];
  pins: PinInfo[];
  nics: NicInfo[];
}

export interface LockInfo {
  lock: string;
  holders: string[];
  waiters: string[];
}

export interface TaskInfo {
  id: number;
  name: string;
  kind: string;
}

export interface WorldSnapshot {
  /** Virtual time (ns). */
  t: number;
  /** What instant this is: `time 29.4 µs`, `trace record 812`, `violation 1 (stale-translation)`. */
  at: string;
  /** The trace record or violation the instant was chosen by, if any. */
  record?: string;
  violation?: { index: number; id: string; severity: string; message: string };
  nodes: NodeInfo[];
  stale: StaleEntry[];
  locks: LockInfo[];
  tasks: TaskInfo[];
}

/** State the model does not keep in one place, gathered from the streams (see observer.ts). */
export interface ObservedState {
  openInvalidations(kernel: Kernel): OpenInvalidation[];
  gupRefs(kernel: Kernel): Map<number, { pins: number; gets: number }>;
  locks(): LockInfo[];
  tasks(): TaskInfo[];
}

export interface InspectedNode {
  kernel: Kernel;
  nic: Nic;
  device: IbDevice;
}

/** Most stale entries listed per MR (the count says how many more). */
const MAX_STALE_PER_MR = 32;

export function takeSnapshot(nodes: readonly InspectedNode[], observed: ObservedState, at: string): WorldSnapshot {
  const t = nodes[0]?.kernel.sim.now() ?? 0;
  const stale: StaleEntry[] = [];
  const out: NodeInfo[] = nodes.map((n) => {
    const k = n.kernel;
    const open = observed.openInvalidations(k);
    return {
      name: k.node,
      freeFrames: k.phys.freeFrames,
      processes: [...k.processes.values()].map((p) => processInfo(p.pid, p.name, p.mm)),
      notifiers: notifierInfos(k),
      invalidations: open,
      pins: pinInfos(k, observed.gupRefs(k)),
      nics: [nicInfo(n, open, stale)],
    };
  });
  return { t, at, nodes: out, stale, locks: observed.locks(), tasks: observed.tasks() };
}

// ---- processes -----------------------------------------------------------------------------

/** PTE runs of a page table, kept until the table changes (its version moves). */
const pteRunCache = new WeakMap<object, { version: number; ptes: PteRun[]; present: number; swapped: number }>();

function processInfo(pid: number, name: string, mm: MmStruct): ProcessInfo {
  const vmas: VmaInfo[] = mm.vmas.map((v) => ({
    start: v.start, end: v.end,
    perms: (v.flags & VM_READ ? 'r' : '-') + (v.flags & VM_WRITE ? 'w' : '-') + (v.flags & VM_EXEC ? 'x' : '-') + (v.shared ? 's' : 'p'),
    file: v.file ? v.file.name : null,
  }));
  const pt = mm.pageTable;
  let cached = pteRunCache.get(pt);
  if (!cached || cached.version !== pt.version) {
    const ptes: PteRun[] = [];
    let present = 0;
    let swapped = 0;
    // 2^36 pages: the whole 48-bit address space; the walk visits only leaves that exist.
    pt.forEach(0, 2 ** 36, (vpn, pte) => {
      const flags = cpuFlags(pte);
      if (flags === 's' || flags.startsWith('m')) swapped++;
      else present++;
      const frame = frameOfPte(pte);
      const last = ptes[ptes.length - 1];
      if (last && last.flags === flags && last.va + last.pages * PAGE === vpn * PAGE &&
          (frame === 0 ? last.frame === 0 : last.frame + last.pages === frame)) {
        last.pages++;
      } else {
        ptes.push({ va: vpn * PAGE, pages: 1, frame, flags });
      }
    });
    cached = { version: pt.version, ptes, present, swapped };
    pteRunCache.set(pt, cached);
  }
  const lock = mm.mmapLock;
  const holders = lock.holders().map((t) => `${t.id} ${t.name}`);
  const mmapLock = holders.length === 0 ? 'free' : `held for ${lock.writer ? 'write' : 'read'} by ${holders.join(', ')}`;
  return { pid, name, mm: mm.id, exited: mm.exited, vmas, ptes: cached.ptes, present: cached.present, swapped: cached.swapped, mmapLock };
}

// The PTE encoding is the kernel model's (kernel-model/page-table.ts); local bindings keep
// the hot loops off the module namespace's getters.
const frameOfPte = pteFrame;
const flagsOfPte = pteFlags;
const PRESENT = PTE_PRESENT;
const PROTNONE = PTE_PROTNONE;
const WRITE = PTE_WRITE;

function cpuFlagsOf(bits: number): string {
  if (bits & PTE_MIGRATION) return 'm' + (bits & PTE_WRITE ? 'w' : '');
  if (bits & PTE_SWAP || !(bits & PTE_PRESENT)) return 's';
  return (bits & PTE_WRITE ? 'w' : '') + (bits & PTE_ACCESSED ? 'a' : '') + (bits & PTE_DIRTY ? 'd' : '') + (bits & PTE_PROTNONE ? 'n' : '');
}

/** The flag text of each bit pattern seen (a hot loop reads it per PTE). */
const FLAG_TEXT = new Map<number, string>();

function cpuFlags(pte: number): string {
  const bits = flagsOfPte(pte);
  let t = FLAG_TEXT.get(bits);
  if (t === undefined) FLAG_TEXT.set(bits, (t = cpuFlagsOf(bits)));
  return t;
}

// ---- notifiers -----------------------------------------------------------------------------

function notifierInfos(k: Kernel): NotifierInfo[] {
  const out: NotifierInfo[] = [];
  const mms = new Set<MmStruct>();
  for (const p of k.processes.values()) mms.add(p.mm);
  for (const mm of mms) {
    const subs = mm.notifierSubscriptions;
    if (!subs) continue;
    const deferred = subs.deferredList;
    const interval: IntervalSubInfo[] = [];
    const seen = new Set<MmuIntervalNotifier>();
    for (const s of subs.itree.values()) {
      seen.add(s);
      interval.push({ name: s.name, start: s.start, last: s.last, invalidateSeq: s.invalidateSeq, where: deferred.has(s) ? 'tree, removal deferred' : 'tree' });
    }
    for (const s of deferred) {
      if (!seen.has(s)) interval.push({ name: s.name, start: s.start, last: s.last, invalidateSeq: s.invalidateSeq, where: 'deferred' });
    }
    interval.sort((a, b) => a.start - b.start || a.name.localeCompare(b.name));
    out.push({ mm: mm.id, seq: subs.invalidateSeq, active: subs.activeInvalidateRanges, classic: subs.list.map((s) => s.name), interval });
  }
  return out.sort((a, b) => a.mm - b.mm);
}

// ---- frames and pins -----------------------------------------------------------------------

export function frameInfo(k: Kernel, f: number): FrameInfo {
  const ph = k.phys;
  const flags: string[] = [];
  const named: [number, string][] = [[PG_ANON, 'anon'], [PG_DIRTY, 'dirty'], [PG_WRITEBACK, 'writeback'], [PG_LOCKED, 'locked'], [PG_LRU, 'lru'], [PG_SWAPCACHE, 'swapcache']];
  for (const [bit, name] of named) if (ph.has(f, bit)) flags.push(name);
  if (f === 0) flags.push('zero-page');
  if (ph.mappingFile[f]! >= 0) flags.push(`file ${k.fileById(ph.mappingFile[f]!)?.name ?? ph.mappingFile[f]} index ${ph.index[f]}`);
  return {
    frame: f, allocated: ph.isAllocated(f), refcount: ph.refcount[f]!, mapcount: ph.mapcount[f]!, generation: ph.generation[f]!,
    flags, mappedAt: ph.mappingsOf(f).map((r) => `mm${r.mm.id} ${hex(r.addr)}`),
  };
}

function pinInfos(k: Kernel, refs: Map<number, { pins: number; gets: number }>): PinInfo[] {
  const out: PinInfo[] = [];
  const ph = k.phys;
  const frames = new Set<number>(refs.keys());
  // Frames whose refcount carries the pin bias even if no gup record says so (a pin taken
  // before observation started cannot happen here, but a driver may pin by other paths).
  const refcount = ph.refcount;
  const bias = GUP_PIN_COUNTING_BIAS;
  for (let f = 1; f < refcount.length; f++) if ((refcount[f] as number) >= bias) frames.add(f);
  for (const f of [...frames].sort((a, b) => a - b)) {
    const r = refs.get(f) ?? { pins: 0, gets: 0 };
    if (r.pins === 0 && r.gets === 0 && ph.refcount[f]! < GUP_PIN_COUNTING_BIAS) continue;
    out.push({ frame: f, pins: r.pins, gets: r.gets, refcount: ph.refcount[f]!, mapcount: ph.mapcount[f]!, maybeDmaPinned: ph.maybeDmaPinned(f) });
  }
  return out;
}

// ---- the NIC -------------------------------------------------------------------------------

interface Binding {
  umem: IbUmem;
  mm: MmStruct;
  /** va = pageIova(index) + delta. */
  delta: number;
  kind: 'mirrored' | 'pinned' | 'other';
}

function bindingOf(device: IbDevice, mr: MemoryRegion): Binding | null {
  const umem = device.umemByKey.get(mr.lkey);
  if (!umem || umem.mr !== mr) return null;
  const kind = umem.strategy.startsWith('dmabuf') ? 'other' : umem.strategy === 'pinned' ? 'pinned' : 'mirrored';
  return { umem, mm: umem.ctx.mm, delta: umem.addr - mr.iova, kind };
}

const permName = (perm: number): 'r' | 'rw' => (perm === PTE_READ_WRITE ? 'rw' : 'r');

/** Device runs and the entries that disagree with the CPU, kept until either table changes. */
const mrCache = new WeakMap<MemoryRegion, {
  version: number; cpuVersion: number; bound: boolean; entries: DeviceRun[]; differing: (Translation & { index: number })[];
}>();

/** Whether a device entry disagrees with the CPU PTE (the cheap test; compare() says how). */
function differs(b: Binding, mr: MemoryRegion, index: number, frame: number, perm: number): boolean {
  const pte = b.mm.pageTable.get(Math.floor((mr.pageIova(index) + b.delta) / PAGE));
  const bits = flagsOfPte(pte);
  if (!(bits & PRESENT) || bits & PROTNONE) return true;
  if (frameOfPte(pte) !== frame) return true;
  return perm === PTE_READ_WRITE && !(bits & WRITE);
}

function nicInfo(n: InspectedNode, open: OpenInvalidation[], stale: StaleEntry[]): NicInfo {
  const { nic, device, kernel: k } = n;
  const mrs: MrInfo[] = [];
  for (const mr of nic.memoryRegions()) {
    const b = bindingOf(device, mr);
    const vaOf = (i: number): number | null => (b && b.kind !== 'other' ? mr.pageIova(i) + b.delta : null);
    const cpuVersion = b && b.kind !== 'other' ? b.mm.pageTable.version : -1;
    let c = mrCache.get(mr);
    if (!c || c.version !== mr.pageTable.version || c.cpuVersion !== cpuVersion || c.bound !== (b !== null)) {
      const entries: DeviceRun[] = [];
      const differing: (Translation & { index: number })[] = [];
      mr.pageTable.forEachPresent((index, frame, perm, generation, installedAt) => {
        const p = permName(perm);
        const last = entries[entries.length - 1];
        if (last && last.perm === p && last.index + last.pages === index && last.frame + last.pages === frame) last.pages++;
        else entries.push({ index, va: vaOf(index), pages: 1, frame, perm: p });
        if (b && b.kind !== 'other' && differs(b, mr, index, frame, perm)) differing.push({ index, frame, perm, generation, installedAt, fromCache: false });
      });
      c = { version: mr.pageTable.version, cpuVersion, bound: b !== null, entries, differing };
      mrCache.set(mr, c);
    }
    const staleHere: StaleEntry[] = [];
    if (b && b.kind !== 'other') {
      for (const d of c.differing.slice(0, MAX_STALE_PER_MR)) {
        const e = compare(k, nic.name, mr, b, d.index, d, 'page-table', open);
        if (e) staleHere.push(e);
      }
    }
    const extra = Math.max(0, c.differing.length - MAX_STALE_PER_MR);
    const info: MrInfo = {
      key: mr.lkey, iova: mr.iova, length: mr.length, pages: mr.pages, state: mr.state, onDemand: mr.onDemand, implicit: mr.implicit,
      strategy: b?.umem.strategy ?? null, mm: b && b.kind !== 'other' ? b.mm.id : null, addr: b?.umem.addr ?? null,
      present: mr.pageTable.presentPages, entries: c.entries, counters: { ...mr.counters },
    };
    mrs.push(info);
    stale.push(...staleHere);
    if (extra > 0) info.strategy = `${info.strategy} (${extra} more stale entries not listed)`;
  }
  // The translation cache: runs per MR, and cached translations that disagree with the CPU
  // where the page table no longer has them (zapped, not yet synced: the device still uses them).
  const cache: CacheRun[] = [];
  const cached: { mr: MemoryRegion; index: number; t: Translation }[] = [];
  const mrOf = new Map<unknown, MemoryRegion>();
  for (const mr of nic.memoryRegions()) mrOf.set(mr, mr);
  nic.cache.forEachEntry((owner, index, t) => {
    const mr = mrOf.get(owner);
    if (mr) cached.push({ mr, index, t: { ...t } });
  });
  cached.sort((a, b) => a.mr.lkey - b.mr.lkey || a.index - b.index);
  for (const c of cached) {
    const p = permName(c.t.perm);
    const last = cache[cache.length - 1];
    if (last && last.key === c.mr.lkey && last.perm === p && last.index + last.pages === c.index && last.frame + last.pages === c.t.frame) last.pages++;
    else cache.push({ key: c.mr.lkey, index: c.index, pages: 1, frame: c.t.frame, perm: p });
    const b = bindingOf(device, c.mr);
    if (!b || b.kind === 'other') continue;
    if (c.mr.pageTable.frameOf(c.index) === c.t.frame && c.mr.pageTable.generationOf(c.index) === c.t.generation) continue;
    const s = compare(k, nic.name, c.mr, b, c.index, c.t, 'cache', open);
    if (s) stale.push(s);
  }
  const qps: QpInfo[] = nic.queuePairs().map((qp) => qpInfo(qp));
  const dma = nic.dmaActivity.allActive().map((op) =>
    `qp ${op.qpNum} ${op.side} ${wrOpcodeName(op.opcode)} since ${fmtNs(op.since)}: ` +
    op.ranges.map((r) => `key ${hex(r.mr.lkey)} [${hex(r.iova)}, ${hex(r.iova + r.length)})`).join(', '));
  const faults = nic.pendingFaults().map((f) =>
    `fault ${f.id} qp ${f.qpNum} ${f.side} key ${hex(f.mrKey)} iova ${hex(f.iova)} +${f.length} ${f.write ? 'write' : 'read'} (${f.reason}) at ${fmtNs(f.time)}`);
  return {
    name: nic.name, mrs, cache: { capacity: nic.cache.capacity, size: nic.cache.size, entries: cache }, qps, dma, faults,
    stats: { syncs: nic.stats.syncs, updateCommands: nic.stats.updateCommands, zapCommands: nic.stats.zapCommands },
  };
}

function compare(
  k: Kernel, nicName: string, mr: MemoryRegion, b: Binding, index: number, t: Translation, source: StaleEntry['source'], open: OpenInvalidation[],
): StaleEntry | null {
  const va = mr.pageIova(index) + b.delta;
  const pte = b.mm.pageTable.get(Math.floor(va / PAGE));
  const present = ptePresent(pte) && !pteHas(pte, PTE_PROTNONE);
  const cpuFrame = present ? pteFrame(pte) : null;
  const writable = present && pteHas(pte, PTE_WRITE);
  const devWrite = t.perm === PTE_READ_WRITE;
  let why = '';
  if (!present) {
    why = pte === 0 ? 'the CPU maps nothing there (PTE none)' : ptePresent(pte) ? 'the CPU PTE is PROT_NONE'
      : flagsOfPte(pte) & PTE_MIGRATION ? 'the CPU PTE is a migration entry (the page is being moved)' : 'the CPU page is swapped out';
  }
  else if (cpuFrame !== t.frame) why = `the CPU maps frame ${cpuFrame} there`;
  else if (devWrite && !writable) why = 'the device may write, the CPU PTE is read-only';
  if (!why) return null;
  const inWindow = open.some((o) => o.mm === b.mm.id && o.start <= va && va < o.end);
  return {
    nic: nicName, key: mr.lkey, strategy: b.umem.strategy, mm: b.mm.id, index, va, source,
    device: { frame: t.frame, perm: permName(t.perm), generation: t.generation, installedAt: t.installedAt },
    cpu: { state: pte === 0 ? 'none' : present ? 'present' : 'swap', frame: cpuFrame, writable, flags: pte === 0 ? '' : cpuFlags(pte) },
    why, inWindow, kind: b.kind === 'pinned' ? 'pinned' : 'mirrored',
    deviceFrame: frameInfo(k, t.frame), cpuFrame: cpuFrame === null ? null : frameInfo(k, cpuFrame),
  };
}

function qpInfo(qp: QueuePair): QpInfo {
  const outstanding: string[] = [];
  for (let i = qp.sqHead; i < qp.sq.length; i++) {
    const w = qp.sq[i];
    if (!w) continue;
    outstanding.push(`wr ${w.wr.wrId} ${wrOpcodeName(w.wr.opcode)} ${w.length} B${i < qp.sqNext ? ', sent' : ''}${w.responded ? ', responded' : ''}`);
  }
  const f = qp.responderFault;
  return {
    qpn: qp.qpNum, type: qp.transport, state: qpStateName(qp.state), destQpn: qp.destQpNum, outstanding,
    receivesPosted: Math.max(0, qp.rq.length - qp.rqHead),
    responderFault: f ? `fault ${f.id} key ${hex(f.mrKey)} iova ${hex(f.iova)}` : null,
  };
}

// ---- formatting helpers shared by the renderers ----------------------------------------------

export function hex(n: number): string {
  if (n >= 2 ** 64 - 1) return '0xffffffffffffffff';
  return '0x' + Math.trunc(n).toString(16);
}

/** Virtual ns as a short figure: 850 ns, 29.400 µs, 1.500 ms, 2.000000 s. */
export function fmtNs(ns: number): string {
  if (ns < 1_000) return `${ns} ns`;
  if (ns < 1_000_000) return `${(ns / 1_000).toFixed(3)} µs`;
  if (ns < 1_000_000_000) return `${(ns / 1_000_000).toFixed(3)} ms`;
  return `${(ns / 1_000_000_000).toFixed(6)} s`;
}

