/**
 * The fuzzer's command language: what one random run does, as plain JSON-able records so
 * a failing list can be printed, saved and replayed (`lab replay file.json`).
 *
 * A run happens in a fixed world (run.ts): two nodes, each with two processes that have
 * a verbs context (procs 0 and 1) and a slot for the latest forked child (proc 2), each
 * process with two user threads. Commands name that world by small indices, so fast-check
 * can shrink a list without the indices losing their meaning:
 * - `node` 0..1, `proc` 0..2, `thread` 0..1;
 * - `slot` 0..3: a fixed virtual address per slot (`slotAddress`), mapped with MAP_FIXED,
 *   so munmap then mmap lands at the same address (the 2011 pattern);
 * - `mr` 0..2: an MR handle of the process (3 names its dma-buf MR).
 * `at` is when the command starts, in µs after the world is set up; commands of one thread
 * run in `at` order, threads and background commands run concurrently, and the engine's
 * preemption points interleave them further. A command that finds nothing to act on (an
 * MR handle never registered, a child that was never forked) does nothing.
 */
import fc from 'fast-check';
import { z } from 'zod';

export const NODES = 2;
/** Processes per node: 0 and 1 have verbs contexts, 2 is the latest child of a fork. */
export const PROCS = 3;
export const THREADS = 2;
export const SLOTS = 4;
/** MR handles per process; handle `DMABUF_MR` is the node's dma-buf MR. */
export const MR_HANDLES = 3;
export const DMABUF_MR = 3;
/** Pages of the slot mapped at setup, and the most a command maps. */
export const SLOT_PAGES = 8;
export const MAX_MAP_PAGES = 12;
/** Pages of each node's regular file. */
export const FILE_PAGES = 16;

const SLOT_BASE = 0x1000_0000;
const SLOT_STRIDE = 0x10_0000;

/** The fixed address of a slot (1 MiB apart, so any mapping fits). */
export function slotAddress(slot: number): number {
  return SLOT_BASE + slot * SLOT_STRIDE;
}

export type MapKind = 'anon' | 'shared-file' | 'private-file' | 'shmem';
export type Prot = 'none' | 'r' | 'rw';
export type Advice = 'dontneed' | 'free' | 'pageout' | 'dontfork' | 'dofork';
export type Verb = 'write' | 'read' | 'send';

interface User {
  node: number;
  proc: number;
  thread: number;
  /** Start time, µs after setup. */
  at: number;
}

interface Background {
  node: number;
  at: number;
}

export type UserCommand = User & (
  | { op: 'mmap'; slot: number; pages: number; kind: MapKind; prot: Prot }
  | { op: 'munmap'; slot: number; first: number; pages: number }
  | { op: 'mremap'; slot: number; pages: number; to: number | null }
  | { op: 'mprotect'; slot: number; first: number; pages: number; prot: Prot }
  | { op: 'madvise'; slot: number; first: number; pages: number; advice: Advice }
  | { op: 'store'; slot: number; page: number; byte: number }
  | { op: 'load'; slot: number; page: number }
  | { op: 'fork' }
  | { op: 'exit' }
  | { op: 'pwrite'; page: number; byte: number }
  | { op: 'truncate'; pages: number }
  /**
   * Register MR handle `mr` over `pages` pages of the slot from page `first` (a slot of
   * another handle makes overlapping MRs). `implicit`: on an ODP NIC, an implicit ODP MR
   * (addr 0, length SIZE_MAX, rdma A7) instead, whose posts and prefetches use that span.
   */
  | { op: 'reg'; mr: number; slot: number; first: number; pages: number; write: boolean; implicit?: boolean }
  | { op: 'dereg'; mr: number }
  | { op: 'post'; verb: Verb; mr: number; peerMr: number; page: number; pages: number }
  | { op: 'prefetch'; mr: number }
  /** MADV_MERGEABLE over the slot (KSM, mm/ksm.c); the node's ksmd starts with the first one. */
  | { op: 'merge'; slot: number }
);

export type BackgroundCommand = Background & (
  | { op: 'reclaim'; pages: number }
  | { op: 'migrate'; proc: number; slot: number; page: number }
  | { op: 'writeback'; dropBuffers: boolean }
  | { op: 'oom'; proc: number }
  | { op: 'dmabuf-move' }
  /** NUMA balancing's scanner starts on the node (its existing trigger, kernel-model/numa-balancing.ts). */
  | { op: 'numa'; periodUs: number }
  /**
   * Allocation pressure: a kernel thread allocates with GFP_KERNEL until `pages` below the
   * min watermark (each of those enters direct reclaim, kernel-model/page-alloc.ts), holds
   * them `holdUs`, then frees them.
   */
  | { op: 'pressure'; pages: number; holdUs: number }
);

export type Command = UserCommand | BackgroundCommand;

export const USER_OPS = ['mmap', 'munmap', 'mremap', 'mprotect', 'madvise', 'store', 'load', 'fork', 'exit', 'pwrite', 'truncate', 'reg', 'dereg', 'post', 'prefetch', 'merge'] as const;
export const BACKGROUND_OPS = ['reclaim', 'migrate', 'writeback', 'oom', 'dmabuf-move', 'numa', 'pressure'] as const;

export function isBackground(c: Command): c is BackgroundCommand {
  return (BACKGROUND_OPS as readonly string[]).includes(c.op);
}

// ---- fast-check arbitraries ----------------------------------------------------------------

/**
 * How a command list is drawn. Most of it is episodes: a focus (node, process, slot, page
 * range, start time) and a few steps that act on it within a few µs of each other (a post
 * that touches the pages, an munmap of them, a migration of one...), so that an
 * invalidation and the DMA or fault it must exclude really overlap. A few independent
 * commands go anywhere in the world.
 */
export interface CommandShape {
  maxEpisodes: number;
  maxSteps: number;
  maxSingles: number;
  /** Episodes and single commands start within [0, spanUs] µs after setup. */
  spanUs: number;
  /** Steps of an episode start within [0, stepSpreadUs] µs of the episode. */
  stepSpreadUs: number;
  /** Relative weights per step kind (0 leaves it out); missing kinds get their default. */
  weights?: Partial<Record<StepKind, number>>;
}

export const DEFAULT_SHAPE: CommandShape = { maxEpisodes: 8, maxSteps: 5, maxSingles: 4, spanUs: 60, stepSpreadUs: 8 };

const int = (min: number, max: number) => fc.integer({ min, max });

const prot = fc.constantFrom<Prot>('r', 'rw', 'none');
const kind = fc.constantFrom<MapKind>('anon', 'shared-file', 'private-file', 'shmem');
const advice = fc.constantFrom<Advice>('dontneed', 'free', 'pageout', 'dontneed', 'free', 'pageout', 'dontfork', 'dofork');
const verb = fc.constantFrom<Verb>('write', 'read', 'send');
const byte = int(1, 255);
const thread = int(0, THREADS - 1);

/** What an episode step does to its focus. */
export type StepKind =
  | 'store' | 'load' | 'local-post' | 'remote-post' | 'munmap' | 'remap' | 'mremap' | 'mprotect' | 'madvise' | 'fork' | 'exit'
  | 'reg' | 'reg-implicit' | 'dereg' | 'prefetch' | 'pwrite' | 'truncate' | 'migrate' | 'reclaim' | 'writeback' | 'oom' | 'dmabuf-move'
  | 'ksm' | 'numa' | 'pressure' | 'exit-during-fault' | 'lazyfree-write-pageout';

/**
 * Registration and deregistration weigh as much as a post (issue 19): a run has on average
 * about 13 steps, so most runs deregister or re-register an MR within a few µs of traffic,
 * a fault or an invalidation on it (the teardown races).
 */
export const DEFAULT_STEP_WEIGHTS: Record<StepKind, number> = {
  store: 7, load: 1, 'local-post': 6, 'remote-post': 8, munmap: 3, remap: 3, mremap: 1, mprotect: 4, madvise: 4, fork: 4,
  exit: 1, reg: 4, 'reg-implicit': 2, dereg: 5, prefetch: 2, pwrite: 1, truncate: 1, migrate: 3, reclaim: 2, writeback: 2, oom: 1, 'dmabuf-move': 1,
  ksm: 2, numa: 1, pressure: 2, 'exit-during-fault': 1, 'lazyfree-write-pageout': 1,
};

interface Focus {
  node: number;
  proc: number;
  slot: number;
  page: number;
  pages: number;
  at: number;
}

interface Step {
  kind: StepKind;
  dt: number;
  thread: number;
  verb: Verb;
  mr: number;
  byte: number;
  advice: Advice;
  prot: Prot;
  mapKind: MapKind;
  flag: boolean;
  to: number | null;
}

/** The MR handle setup registered over a slot (0 and 1), else handle 2 (registered by `reg` steps). */
function mrOfSlot(slot: number): number {
  return slot < 2 ? slot : 2;
}

/** The MR page index of a slot page: MR 0 starts at page 1 of slot 0 (run.ts). */
function mrPage(slot: number, page: number): number {
  return slot === 0 ? Math.max(0, page - 1) : page;
}

function stepCommand(f: Focus, st: Step, spanUs: number): Command | Command[] {
  const at = Math.min(spanUs + 16, f.at + st.dt);
  const me = { node: f.node, proc: f.proc, thread: st.thread, at };
  switch (st.kind) {
    case 'store': return { ...me, op: 'store', slot: f.slot, page: f.page, byte: st.byte };
    case 'load': return { ...me, op: 'load', slot: f.slot, page: f.page };
    case 'local-post': return { ...me, proc: Math.min(f.proc, 1), op: 'post', verb: st.verb, mr: mrOfSlot(f.slot), peerMr: st.mr, page: mrPage(f.slot, f.page), pages: Math.min(4, f.pages) };
    case 'remote-post': return { ...me, node: 1 - f.node, proc: Math.min(f.proc, 1), op: 'post', verb: st.verb, mr: st.mr, peerMr: mrOfSlot(f.slot), page: mrPage(f.slot, f.page), pages: Math.min(4, f.pages) };
    case 'munmap': return { ...me, op: 'munmap', slot: f.slot, first: f.page, pages: f.pages };
    case 'remap': return { ...me, op: 'mmap', slot: f.slot, pages: SLOT_PAGES, kind: st.mapKind, prot: 'rw' };
    case 'mremap': return { ...me, op: 'mremap', slot: f.slot, pages: st.flag ? SLOT_PAGES : f.pages, to: st.to };
    case 'mprotect': return { ...me, op: 'mprotect', slot: f.slot, first: f.page, pages: f.pages, prot: st.prot };
    case 'madvise': return { ...me, op: 'madvise', slot: f.slot, first: f.page, pages: f.pages, advice: st.advice };
    case 'fork': return { ...me, proc: Math.min(f.proc, 1), op: 'fork' };
    case 'exit': return { ...me, op: 'exit' };
    // Re-registration of the slot's own handle, or handle 2 over it (overlapping MRs).
    case 'reg': {
      const mr = st.mr === 2 || st.mr === DMABUF_MR ? 2 : mrOfSlot(f.slot);
      const c: Command = { ...me, proc: Math.min(f.proc, 1), op: 'reg', mr, slot: f.slot, first: st.flag ? 0 : f.page, pages: st.flag ? SLOT_PAGES : f.pages, write: st.byte % 4 !== 0 };
      return c;
    }
    // An implicit ODP MR in handle 2, its posts and prefetches over the focus's slot: with
    // MR 0 or 1 and their prefetches, explicit, implicit and prefetch on one mm.
    case 'reg-implicit': return { ...me, proc: Math.min(f.proc, 1), op: 'reg', mr: 2, slot: f.slot, first: st.flag ? 0 : f.page, pages: st.flag ? SLOT_PAGES : f.pages, write: st.byte % 4 !== 0, implicit: true };
    case 'dereg': return { ...me, proc: Math.min(f.proc, 1), op: 'dereg', mr: st.mr === 2 ? 2 : mrOfSlot(f.slot) };
    case 'prefetch': return { ...me, proc: Math.min(f.proc, 1), op: 'prefetch', mr: st.mr === 2 ? 2 : mrOfSlot(f.slot) };
    case 'pwrite': return { ...me, op: 'pwrite', page: f.page, byte: st.byte };
    case 'truncate': return { ...me, op: 'truncate', pages: st.flag ? FILE_PAGES : f.page };
    case 'migrate': return { node: f.node, at, op: 'migrate', proc: f.proc, slot: f.slot, page: f.page };
    case 'reclaim': return { node: f.node, at, op: 'reclaim', pages: 8 * f.pages };
    case 'writeback': return { node: f.node, at, op: 'writeback', dropBuffers: st.flag };
    case 'oom': return { node: f.node, at, op: 'oom', proc: f.proc };
    case 'dmabuf-move': return { node: f.node, at, op: 'dmabuf-move' };
    // Both verbs processes mark the slot mergeable: setup wrote identical pages in their slot 0.
    case 'ksm': return [0, 1].map((proc) => ({ ...me, proc, op: 'merge' as const, slot: f.slot }));
    case 'numa': return { node: f.node, at, op: 'numa', periodUs: 1 + (st.byte % 8) };
    case 'pressure': return { node: f.node, at, op: 'pressure', pages: 4 * f.pages, holdUs: st.byte % 16 };
    // Two patterns whose ordering random steps almost never produce (issue 19: no broken
    // driver caught by directed tests only). The process exits a few µs after the other
    // node writes a page of its MR 0 that setup never touched (slot 0 page 6: a NIC fault
    // that holds an mm reference, rdma C10); and a registered page is lazily freed, written
    // by the device, then paged out (only the driver's dirtying at unmap keeps the bytes, C8).
    case 'exit-during-fault': {
      const p = Math.min(f.proc, 1);
      return [
        { node: 1 - f.node, proc: p, thread: st.thread, at, op: 'post', verb: 'write', mr: 0, peerMr: 0, page: SLOT_PAGES - 3, pages: 1 },
        // The exit lands in the responder's NIC fault: on the calibrated timeline
        // (cpu-costs.ts) it starts about 232 µs after the post (the requester first faults its
        // own untouched source page, then the transfer is retried) and holds the mm ~13 µs;
        // test/fuzz/broken-directed.test.ts sweeps the same span.
        { node: f.node, proc: p, thread: 1 - st.thread, at: at + 225 + (st.byte % 24), op: 'exit' },
      ];
    }
    case 'lazyfree-write-pageout': {
      const p = Math.min(f.proc, 1);
      const page = Math.max(1, Math.min(f.page, SLOT_PAGES - 2));
      return [
        { node: f.node, proc: p, thread: st.thread, at, op: 'madvise', slot: 0, first: page, pages: 1, advice: 'free' },
        { node: 1 - f.node, proc: p, thread: st.thread, at: at + 10 + (st.byte % 16), op: 'post', verb: 'write', mr: 0, peerMr: 0, page: page - 1, pages: 1 },
        // The pageout once the device's write landed: on the calibrated timeline (cpu-costs.ts)
        // the responder's fault on the lazily-freed page puts the write 200-260 µs after the post.
        { node: f.node, proc: p, thread: st.thread, at: at + 290 + (st.byte % 16), op: 'madvise', slot: 0, first: page, pages: 1, advice: 'pageout' },
      ];
    }
  }
}

function stepArbitrary(shape: CommandShape): fc.Arbitrary<Step> {
  const kinds = (Object.keys(DEFAULT_STEP_WEIGHTS) as StepKind[])
    .map((k) => ({ arbitrary: fc.constant(k), weight: shape.weights?.[k] ?? DEFAULT_STEP_WEIGHTS[k] }))
    .filter((w) => w.weight > 0);
  return fc.record({
    kind: fc.oneof(...kinds),
    dt: int(0, shape.stepSpreadUs),
    thread,
    verb,
    mr: fc.constantFrom(0, 0, 1, 2, DMABUF_MR),
    byte,
    advice,
    prot,
    mapKind: kind,
    flag: fc.boolean(),
    to: fc.option(int(0, SLOTS - 1), { nil: null, freq: 2 }),
  });
}

/**
 * Focus: node 0 and process 0 are drawn most often (and shrink towards), so a run's
 * episodes mostly concern one address space and its MRs; slot 0 and 1 carry the MRs setup
 * registered; pages 1-6 are the pages of MR 0.
 */
function focusArbitrary(shape: CommandShape) {
  return fc.record({
    node: fc.constantFrom(0, 0, 0, 1),
    proc: fc.constantFrom(0, 0, 0, 1, 2),
    slot: fc.constantFrom(0, 0, 0, 1, 1, 2, 3),
    page: fc.oneof({ arbitrary: int(1, SLOT_PAGES - 2), weight: 4 }, { arbitrary: int(0, MAX_MAP_PAGES - 1), weight: 1 }),
    pages: fc.constantFrom(1, 1, 2, 3, SLOT_PAGES),
    at: int(0, shape.spanUs),
  });
}

/** One episode: its steps as commands. */
export function episodeArbitrary(shape: CommandShape = DEFAULT_SHAPE): fc.Arbitrary<Command[]> {
  return fc.tuple(focusArbitrary(shape), fc.array(stepArbitrary(shape), { minLength: 1, maxLength: shape.maxSteps }))
    .map(([f, steps]) => steps.flatMap((st) => stepCommand(f, st, shape.spanUs)));
}

/** A command anywhere in the world (any node, process, slot, page). */
export function singleArbitrary(shape: CommandShape = DEFAULT_SHAPE): fc.Arbitrary<Command[]> {
  const anyFocus = fc.record({
    node: int(0, NODES - 1), proc: int(0, PROCS - 1), slot: int(0, SLOTS - 1), page: int(0, MAX_MAP_PAGES - 1),
    pages: int(1, MAX_MAP_PAGES), at: int(0, shape.spanUs),
  });
  return fc.tuple(anyFocus, stepArbitrary(shape)).map(([f, st]) => [stepCommand(f, st, shape.spanUs)].flat());
}

/** A command list as fast-check draws and shrinks it: episodes, then single commands. */
export function commandsArbitrary(shape: CommandShape = DEFAULT_SHAPE): fc.Arbitrary<Command[]> {
  return fc.tuple(
    fc.array(episodeArbitrary(shape), { minLength: 1, maxLength: shape.maxEpisodes }),
    fc.array(singleArbitrary(shape), { maxLength: shape.maxSingles }),
  ).map(([episodes, singles]) => [...episodes.flat(), ...singles.flat()]);
}

// ---- validation (replay files) ---------------------------------------------------------

const idx = (n: number) => z.number().int().min(0).max(n - 1);
const userShape = { node: idx(NODES), proc: idx(PROCS), thread: idx(THREADS), at: z.number().int().min(0) };
const bgShape = { node: idx(NODES), at: z.number().int().min(0) };
const pagesShape = z.number().int().min(0).max(1024);
const protSchema = z.enum(['none', 'r', 'rw']);

export const commandSchema: z.ZodType<Command> = z.discriminatedUnion('op', [
  z.object({ ...userShape, op: z.literal('mmap'), slot: idx(SLOTS), pages: pagesShape, kind: z.enum(['anon', 'shared-file', 'private-file', 'shmem']), prot: protSchema }),
  z.object({ ...userShape, op: z.literal('munmap'), slot: idx(SLOTS), first: pagesShape, pages: pagesShape }),
  z.object({ ...userShape, op: z.literal('mremap'), slot: idx(SLOTS), pages: pagesShape, to: idx(SLOTS).nullable() }),
  z.object({ ...userShape, op: z.literal('mprotect'), slot: idx(SLOTS), first: pagesShape, pages: pagesShape, prot: protSchema }),
  z.object({ ...userShape, op: z.literal('madvise'), slot: idx(SLOTS), first: pagesShape, pages: pagesShape, advice: z.enum(['dontneed', 'free', 'pageout', 'dontfork', 'dofork']) }),
  z.object({ ...userShape, op: z.literal('store'), slot: idx(SLOTS), page: pagesShape, byte: z.number().int().min(0).max(255) }),
  z.object({ ...userShape, op: z.literal('load'), slot: idx(SLOTS), page: pagesShape }),
  z.object({ ...userShape, op: z.literal('fork') }),
  z.object({ ...userShape, op: z.literal('exit') }),
  z.object({ ...userShape, op: z.literal('pwrite'), page: pagesShape, byte: z.number().int().min(0).max(255) }),
  z.object({ ...userShape, op: z.literal('truncate'), pages: pagesShape }),
  z.object({ ...userShape, op: z.literal('reg'), mr: idx(MR_HANDLES), slot: idx(SLOTS), first: pagesShape, pages: pagesShape, write: z.boolean(), implicit: z.boolean().optional() }),
  z.object({ ...userShape, op: z.literal('dereg'), mr: idx(MR_HANDLES) }),
  z.object({ ...userShape, op: z.literal('post'), verb: z.enum(['write', 'read', 'send']), mr: idx(MR_HANDLES + 1), peerMr: idx(MR_HANDLES + 1), page: pagesShape, pages: pagesShape }),
  z.object({ ...userShape, op: z.literal('prefetch'), mr: idx(MR_HANDLES) }),
  z.object({ ...userShape, op: z.literal('merge'), slot: idx(SLOTS) }),
  z.object({ ...bgShape, op: z.literal('reclaim'), pages: pagesShape }),
  z.object({ ...bgShape, op: z.literal('migrate'), proc: idx(PROCS), slot: idx(SLOTS), page: pagesShape }),
  z.object({ ...bgShape, op: z.literal('writeback'), dropBuffers: z.boolean() }),
  z.object({ ...bgShape, op: z.literal('oom'), proc: idx(PROCS) }),
  z.object({ ...bgShape, op: z.literal('dmabuf-move') }),
  z.object({ ...bgShape, op: z.literal('numa'), periodUs: z.number().int().min(1).max(1_000_000) }),
  z.object({ ...bgShape, op: z.literal('pressure'), pages: pagesShape, holdUs: z.number().int().min(0).max(1_000_000) }),
]) as unknown as z.ZodType<Command>;

/** One line per command, for people (the JSON is for the replay). */
export function describeCommand(c: Command): string {
  const { op, node, at, ...rest } = c as Command & Record<string, unknown>;
  const who = isBackground(c) ? `node${node}` : `node${node}/p${(c as UserCommand).proc}/t${(c as UserCommand).thread}`;
  const args = Object.entries(rest).filter(([k]) => k !== 'proc' && k !== 'thread' || isBackground(c)).map(([k, v]) => `${k}=${v}`).join(' ');
  return `@${String(at).padStart(4)}µs ${who.padEnd(14)} ${op}${args ? ' ' + args : ''}`;
}
