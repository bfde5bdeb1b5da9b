/**
 * What every checker sees: the raw streams (the engine's trace, each kernel's notifier
 * stream, each NIC's access, fault, resume and command streams, the binding stream),
 * subscribed once, numbered in the order they happened, and re-published with the facts a
 * checker needs resolved: which kernel a NIC's frames belong to, which mm and virtual
 * address an MR key translates, which invalidation a callback belongs to and which syscall
 * started it, which frame (and which allocation of it) an installed translation names.
 *
 * The context only observes: it reads model state (page tables, frame flags, device page
 * tables) synchronously while an event is delivered, and it never calls anything that
 * could sleep, draw from the seed, or emit a trace record. A checker's exception is caught
 * and recorded here, never thrown into the simulation.
 */
import { Subject, type Observable, type Subscription } from 'rxjs';
import {
  PAGE_SIZE, PTE_PROTNONE, isMigrationEntry, pteFrame, pteHas, ptePresent, pteWrite,
  type Kernel, type MmStruct, type MmuNotifierRange, type NotifierStreamEvent, type Simulation, type TraceRecord,
} from '../kernel-model/index.ts';
import {
  PTE_READ_WRITE,
  type DeviceAccess, type DeviceCommand, type DeviceFault, type FaultResume, type MemoryRegion, type Nic,
} from '../device/index.ts';
import { bindingKind, DEFAULT_PINNED_STRATEGIES, type BindingKind, type MrBinding } from './binding.ts';
import type { RcacheEvent } from './rcache-event.ts';
import { formatNs, hex, type TrailEntry, type Violation } from './violation.ts';

export type TraceOf<T extends TraceRecord['type']> = Extract<TraceRecord, { type: T }>;

export interface SanitizerInputs {
  sim: Simulation;
  kernels: readonly Kernel[];
  nics?: readonly Nic[];
  /** Where MR keys come from: IbDevice `binding$` of each device (or a test's own). */
  bindings$?: Observable<MrBinding> | readonly Observable<MrBinding>[];
  /** Strategies that pin and ignore the CPU afterwards (default: `pinned`). */
  pinnedStrategies?: readonly string[];
  /** What processes' registration caches and allocators publish: IbDevice `rcache$` of each device. */
  rcache$?: Observable<RcacheEvent> | readonly Observable<RcacheEvent>[];
}

export interface SyscallInfo {
  task: number | null;
  pid: number;
  name: string;
  args: string;
  time: number;
  ordinal: number;
  ret?: number;
}

export interface SubInfo {
  kernel: Kernel;
  sub: string;
  mm: number;
  start: number;
  /** Inclusive. */
  last: number;
  lock: string | null;
  ordinal: number;
}

export interface CallbackInfo {
  inv: InvalidationInfo | null;
  sub: string;
  op: string;
  start: number;
  end: number;
  event: string;
  time: number;
  ordinal: number;
  task: number | null;
  ret?: string;
  returnTime?: number;
  returnOrdinal?: number;
}

export interface InvalidationInfo {
  id: number;
  kernel: Kernel;
  mm: MmStruct;
  start: number;
  end: number;
  event: string;
  blockable: boolean;
  curSeq: number;
  time: number;
  ordinal: number;
  task: number | null;
  syscall: SyscallInfo | null;
  /** Interval subscribers of the mm overlapping the range when it started. */
  subs: SubInfo[];
  callbacks: CallbackInfo[];
  phase: 'open' | 'end' | 'eagain';
  endTime?: number;
  endOrdinal?: number;
}

export interface LiveBinding extends MrBinding {
  kernel: Kernel | undefined;
  nicObj: Nic | undefined;
  kind: BindingKind;
  mm: MmStruct | undefined;
  regTime: number;
  regOrdinal: number;
  deregTime?: number;
}

export interface InstallInfo {
  nic: string;
  key: number;
  index: number;
  generation: number;
  frame: number;
  writable: boolean;
  /** The frame's allocation generation when the translation was installed. */
  frameGeneration: number;
  time: number;
  ordinal: number;
  task: number | null;
}

export interface AccessEvent {
  access: DeviceAccess;
  nic: Nic;
  kernel: Kernel | undefined;
  binding: LiveBinding | undefined;
  /** The CPU virtual address the access concerns (when the key is bound). */
  va: number | undefined;
  mr: MemoryRegion | undefined;
  ordinal: number;
}

export interface CommandEvent {
  cmd: DeviceCommand;
  nic: Nic;
  kernel: Kernel | undefined;
  binding: LiveBinding | undefined;
  mr: MemoryRegion | undefined;
  /** For an update: what each page now translates to. */
  installs: InstallInfo[];
  ordinal: number;
}

export interface FaultEvent { fault: DeviceFault; nic: Nic; kernel: Kernel | undefined; binding: LiveBinding | undefined; ordinal: number }
export interface ResumeEvent { resume: FaultResume; nic: Nic; ordinal: number }
export interface InvalidationPhase { phase: 'start' | 'end' | 'eagain'; inv: InvalidationInfo; ordinal: number }
export interface CallbackPhase { phase: 'start' | 'return'; cb: CallbackInfo; ordinal: number }
export interface BindingPhase { event: 'reg' | 'dereg'; binding: LiveBinding; ordinal: number }
export interface TaskInfo { id: number; name: string; kind: string; pid: number | null }
/** An interval subscriber's life, for trails: inserted, and removed when it was. */
export interface SubEvent { sub: string; start: number; last: number; inserted: number; insertTask: number | null; removed?: number; removeTask?: number | null }

/** Ended invalidations kept per mm for trails. */
const KEEP_ENDED_INVALIDATIONS = 8;
/** Subscriber lives kept per mm for trails. */
const KEEP_SUB_EVENTS = 64;

/** A checker: it subscribes to the context's streams when built and may check at the end. */
export interface Checker {
  readonly id: string;
  /** End-of-run checks (lost-write, pin-leak). */
  finish?(): void;
  /** Figures the checker keeps besides violations. */
  metrics?(): Record<string, number>;
}

/** A checker's handler of one stream; `types`: the trace record types it wants (null: all). */
interface Handler { who: string; fn: (value: never) => void; types: ReadonlySet<string> | null }
/** The handlers of one stream, and for the trace stream, those of each record type. */
interface Fanout { all: Handler[]; byType: Map<string, Handler[]>; filtered?: boolean; viaRx: boolean }

const ULONG_MAX = 2 ** 64 - 1;
const NONE_OPEN: readonly InvalidationInfo[] = [];
/** Names of exited tasks kept for trails. */
const KEEP_EXITED_TASK_NAMES = 10_000;

export class SanitizerContext {
  readonly sim: Simulation;
  readonly kernels: readonly Kernel[];
  readonly nics: readonly Nic[];
  readonly pinnedStrategies: readonly string[];
  /** Bumped for every event of every stream: the order things happened in. */
  ordinal = 0;
  readonly internalErrors: string[] = [];

  readonly trace$ = new Subject<TraceRecord>();
  readonly invalidation$ = new Subject<InvalidationPhase>();
  readonly callback$ = new Subject<CallbackPhase>();
  readonly access$ = new Subject<AccessEvent>();
  readonly command$ = new Subject<CommandEvent>();
  readonly fault$ = new Subject<FaultEvent>();
  readonly resume$ = new Subject<ResumeEvent>();
  readonly binding$ = new Subject<BindingPhase>();
  /** The userspace stream (sanitizer/rcache-event.ts), as published. */
  readonly rcache$ = new Subject<RcacheEvent>();

  private readonly subscriptions: Subscription[] = [];
  /** Checker handlers per stream (see `addHandler`). */
  private readonly fanouts = new Map<object, Fanout>();
  private stopped = false;
  private readonly bindingSources: Observable<MrBinding>[];
  private readonly rcacheSources: Observable<RcacheEvent>[];
  private readonly report: (v: Violation) => void;

  private readonly tasks = new Map<number, TaskInfo>();
  private readonly taskKernel = new Map<number, Kernel>();
  private readonly syscalls = new Map<number | null, SyscallInfo[]>();
  private readonly invStack = new Map<number | null, InvalidationInfo[]>();
  private readonly lastEnded = new Map<number | null, InvalidationInfo>();
  private readonly invByRange = new Map<MmuNotifierRange, InvalidationInfo>();
  /** Per kernel and mm: invalidations started and not yet ended. */
  private readonly openInv = new Map<Kernel, Map<number, InvalidationInfo[]>>();
  private readonly pendingStart = new Map<number | null, TraceOf<'invalidate-start'>>();
  private readonly cbStack = new Map<number | null, CallbackInfo[]>();
  private readonly intervalSubs = new Map<string, SubInfo[]>();
  /** Per "kernel:mm": every interval subscriber ever inserted, with its removal (for trails). */
  private readonly subHistory = new Map<string, SubEvent[]>();
  /** Per "kernel:mm": the last invalidations that ended (for trails: their callbacks' returns). */
  private readonly endedInv = new Map<string, InvalidationInfo[]>();
  /** Per NIC name: MR key -> live binding (two levels: no string built per access). */
  private readonly bindingsByKey = new Map<string, Map<number, LiveBinding>>();
  private readonly bindingsByMm = new Map<string, Set<LiveBinding>>();
  private readonly everBound = new Set<string>();
  /** Per NIC name: generation -> install. */
  private readonly installs = new Map<string, Map<number, InstallInfo>>();
  /** Per NIC and key: page index -> generation now installed (to retire what it replaces). */
  private readonly currentGen = new Map<string, Map<number, number>>();
  /** Per NIC: generations replaced or zapped, with when; dropped once a later sync completes. */
  private readonly retired = new Map<string, { generation: number; time: number }[]>();
  private readonly mrKeys = new Map<string, Set<number>>();
  private readonly mmCache = new Map<Kernel, Map<number, MmStruct>>();
  private readonly nicKernel = new Map<string, Kernel | undefined>();
  private nextInv = 1;
  private readonly exitedTasks: number[] = [];

  constructor(inputs: SanitizerInputs, report: (v: Violation) => void) {
    this.sim = inputs.sim;
    this.kernels = inputs.kernels;
    this.nics = inputs.nics ?? [];
    this.pinnedStrategies = inputs.pinnedStrategies ?? DEFAULT_PINNED_STRATEGIES;
    const b = inputs.bindings$;
    this.bindingSources = b === undefined ? [] : Array.isArray(b) ? [...(b as readonly Observable<MrBinding>[])] : [b as Observable<MrBinding>];
    const rc = inputs.rcache$;
    this.rcacheSources = rc === undefined ? [] : Array.isArray(rc) ? [...(rc as readonly Observable<RcacheEvent>[])] : [rc as Observable<RcacheEvent>];
    this.report = report;
    for (const nic of this.nics) {
      const bus = nic.dmaBus as unknown;
      this.nicKernel.set(nic.name, this.kernels.find((k) => (k.dmaBus as unknown) === bus));
    }
  }

  /** Subscribe a checker's handler to one of the context's streams; its errors stay here. */
  on<T>(stream: Subject<T>, who: string, handler: (value: T) => void): void {
    this.addHandler(stream, { who, fn: handler as (value: never) => void, types: null });
  }

  /**
   * `on(trace$, ...)` for a handler that acts on some record types only: it is called for
   * those (in the same order among the other trace handlers as with `on`), not for the
   * rest (most records are task switches, which no checker reads).
   */
  onRecords<K extends TraceRecord['type']>(types: readonly K[], who: string, handler: (r: TraceOf<K>) => void): void {
    this.addHandler(this.trace$, { who, fn: handler as (value: never) => void, types: new Set<string>(types) });
  }

  /**
   * The handlers of one stream are called in the order added, as one subscriber placed
   * where the first of them subscribed, without rxjs's per-subscriber layers or a closure
   * per event. When nothing else had subscribed to the stream by then (always, for the
   * checkers), `publish` calls them directly before the stream's other subscribers (which
   * came later); otherwise they share one subscription, at that place among the others.
   */
  private addHandler<T>(stream: Subject<T>, h: Handler): void {
    let fan = this.fanouts.get(stream);
    if (!fan) {
      const f: Fanout = (fan = { all: [], byType: new Map(), viaRx: stream.observed });
      this.fanouts.set(stream, f);
      if (f.viaRx) this.subscriptions.push(stream.subscribe((v) => this.deliver(f, v)));
    }
    // Copy on write, so that a delivery in progress keeps the list it started with.
    fan.all = [...fan.all, h];
    if (h.types) fan.filtered = true;
    fan.byType.clear();
  }

  /** One value to the handlers of a stream (a snapshot: handlers added meanwhile see the next one). */
  private deliver<T>(f: Fanout, v: T): void {
    const list = f.filtered ? this.handlersFor(f, (v as { type: string }).type) : f.all;
    for (let i = 0, n = list.length; i < n && !this.stopped; i++) {
      const x = list[i] as Handler;
      try {
        (x.fn as (value: T) => void)(v);
      } catch (err) {
        this.internalError(x.who, err);
      }
    }
  }

  /** Emit on one of the context's streams: its checker handlers, then its other subscribers. */
  private publish<T>(stream: Subject<T>, v: NoInfer<T>): void {
    const f = this.fanouts.get(stream);
    if (f && !f.viaRx) this.deliver(f, v);
    if (stream.observed) stream.next(v);
  }

  private handlersFor(f: Fanout, type: string): Handler[] {
    let list = f.byType.get(type);
    if (!list) f.byType.set(type, (list = f.all.filter((h) => h.types === null || h.types.has(type))));
    return list;
  }

  /**
   * Subscribe a checker to a model stream the context does not re-publish (a NIC's DMA
   * activity, say): errors stay here, and `stop` unsubscribes it with the rest.
   */
  watch<T>(source: Observable<T>, who: string, handler: (value: T) => void): void {
    this.subscriptions.push(source.subscribe((v) => {
      if (!this.stopped) this.guard(who, () => handler(v));
    }));
  }

  guard(who: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.internalError(who, err);
    }
  }

  private internalError(who: string, err: unknown): void {
    const text = err instanceof Error ? `${err.message}\n${err.stack ?? ''}` : String(err);
    if (this.internalErrors.length < 100) this.internalErrors.push(`${who}: ${text}`);
  }

  emitViolation(v: Violation): void {
    this.report(v);
  }

  /** Subscribe to the raw streams (after the checkers subscribed to the derived ones). */
  start(): void {
    const sub = (s: Subscription) => this.subscriptions.push(s);
    // The hot streams catch inline (no closure per event); the rare ones go through guard.
    sub(this.sim.trace$.subscribe((r) => {
      try {
        this.onTrace(r);
      } catch (err) {
        this.internalError('context', err);
      }
    }));
    for (const k of this.kernels) sub(k.notifier$.subscribe((e) => this.guard('context', () => this.onNotifier(k, e))));
    for (const nic of this.nics) {
      sub(nic.access$.subscribe((a) => {
        try {
          this.onAccess(nic, a);
        } catch (err) {
          this.internalError('context', err);
        }
      }));
      sub(nic.command$.subscribe((c) => this.guard('context', () => this.onCommand(nic, c))));
      sub(nic.fault$.subscribe((f) => this.guard('context', () => {
        const ordinal = ++this.ordinal;
        this.publish(this.fault$, { fault: f, nic, kernel: this.kernelOfNic(nic.name), binding: this.binding(nic.name, f.mrKey), ordinal });
      })));
      sub(nic.faultResume$.subscribe((r) => this.guard('context', () => this.publish(this.resume$, { resume: r, nic, ordinal: ++this.ordinal }))));
    }
    for (const src of this.bindingSources) sub(src.subscribe((b) => this.guard('context', () => this.onBinding(b))));
    for (const src of this.rcacheSources) sub(src.subscribe((e) => this.guard('context', () => this.publish(this.rcache$, e))));
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.subscriptions.splice(0)) s.unsubscribe();
  }

  // ---- lookups -------------------------------------------------------------------------

  kernelIndex(k: Kernel): number {
    return this.kernels.indexOf(k);
  }

  kernelOfNic(nic: string): Kernel | undefined {
    return this.nicKernel.get(nic);
  }

  nicByName(name: string): Nic | undefined {
    return this.nics.find((n) => n.name === name);
  }

  kernelByNode(node: string): Kernel | undefined {
    return this.kernels.find((k) => k.node === node);
  }

  /** The kernel whose process runs `task` as a user thread, if any. */
  kernelOfTask(task: number | null): Kernel | undefined {
    if (task === null) return undefined;
    const known = this.taskKernel.get(task);
    if (known) return known;
    for (const k of this.kernels) {
      for (const p of k.processes.values()) {
        if (p.threads.some((t) => t.id === task)) {
          this.taskKernel.set(task, k);
          return k;
        }
      }
    }
    return undefined;
  }

  /** The kernels a record about `pid` may concern: the task's own, else every kernel with that pid. */
  kernelsForPid(pid: number, task: number | null): Kernel[] {
    const k = this.kernelOfTask(task);
    if (k && k.processes.has(pid)) return [k];
    const all = this.kernels.filter((x) => x.processes.has(pid));
    if (all.length === 0 && this.kernels.length === 1) return [...this.kernels];
    return all;
  }

  /** The kernels a record naming only an mm id may concern (single kernel: that one). */
  kernelsForMm(mmId: number): Kernel[] {
    if (this.kernels.length === 1) return [...this.kernels];
    return this.kernels.filter((k) => this.mmOf(k, mmId) !== undefined);
  }

  /** An mm by id, kept once seen so that it stays reachable after its process exited. */
  mmOf(k: Kernel | undefined, id: number | null): MmStruct | undefined {
    if (!k || id === null) return undefined;
    let m = this.mmCache.get(k);
    if (!m) this.mmCache.set(k, (m = new Map()));
    const got = m.get(id);
    if (got) return got;
    for (const p of k.processes.values()) if (!m.has(p.mm.id)) m.set(p.mm.id, p.mm);
    return m.get(id);
  }

  private rememberMm(mm: MmStruct): void {
    let m = this.mmCache.get(mm.kernel);
    if (!m) this.mmCache.set(mm.kernel, (m = new Map()));
    if (!m.has(mm.id)) m.set(mm.id, mm);
  }

  taskName(id: number | null): string {
    if (id === null) return 'no task';
    const t = this.tasks.get(id);
    return t ? `task ${id} ${t.name}` : `task ${id}`;
  }

  taskInfo(id: number | null): TaskInfo | undefined {
    return id === null ? undefined : this.tasks.get(id);
  }

  /** The syscall `task` is in, innermost. */
  syscallOf(task: number | null): SyscallInfo | null {
    const s = this.syscalls.get(task);
    return s && s.length > 0 ? (s[s.length - 1] as SyscallInfo) : null;
  }

  /** The invalidations `task` is inside, outermost first. */
  invalidationsOf(task: number | null): readonly InvalidationInfo[] {
    return this.invStack.get(task) ?? [];
  }

  /** The callbacks `task` is running, outermost first. */
  callbacksOf(task: number | null): readonly CallbackInfo[] {
    return this.cbStack.get(task) ?? [];
  }

  /** Invalidations of (kernel, mm) started and not yet ended (nested ones counted). */
  openInvalidations(k: Kernel, mm: number): readonly InvalidationInfo[] {
    return this.openInv.get(k)?.get(mm) ?? NONE_OPEN;
  }

  /** Whether `va` of (kernel, mm) lies inside an open invalidation window. */
  inWindow(k: Kernel, mm: number, va: number, except?: InvalidationInfo): boolean {
    for (const inv of this.openInvalidations(k, mm)) if (inv !== except && inv.start <= va && va < inv.end) return true;
    return false;
  }

  /** Interval subscribers of (kernel, mm) currently inserted. */
  intervalSubscribers(k: Kernel, mm: number): readonly SubInfo[] {
    return this.intervalSubs.get(`${this.kernelIndex(k)}:${mm}`) ?? [];
  }

  /** The live binding of a key. */
  binding(nic: string, key: number): LiveBinding | undefined {
    return this.bindingsByKey.get(nic)?.get(key);
  }

  /** Live bindings of an mm. */
  bindingsOfMm(k: Kernel, mm: number): LiveBinding[] {
    const s = this.bindingsByMm.get(`${this.kernelIndex(k)}:${mm}`);
    return s ? [...s] : [];
  }

  /** Whether any MR was ever bound to this mm. */
  everBoundMm(k: Kernel, mm: number): boolean {
    return this.everBound.has(`${this.kernelIndex(k)}:${mm}`);
  }

  /** Every MR key a NIC ever installed translations for. */
  keysOfNic(nic: string): readonly number[] {
    return [...(this.mrKeys.get(nic) ?? [])];
  }

  install(nic: string, generation: number): InstallInfo | undefined {
    return this.installs.get(nic)?.get(generation);
  }

  /** CPU address of MR page `index` of a bound MR. */
  vaOfIndex(b: MrBinding, mr: MemoryRegion, index: number): number {
    return mr.pageIova(index) + (b.addr - b.iova);
  }

  /** MR page index of a CPU address of a bound MR. */
  indexOfVa(b: MrBinding, mr: MemoryRegion, va: number): number {
    return mr.pageIndexOf(va - (b.addr - b.iova));
  }

  /** The CPU PTE of `va` (0 when the mm is unknown). */
  cpuPte(k: Kernel, mm: number, va: number): number {
    const m = this.mmOf(k, mm);
    return m ? m.pageTable.get(Math.floor(va / PAGE_SIZE)) : 0;
  }

  /**
   * Whether a device translation (frame, writable) of `va` is allowed by the CPU's PTE:
   * absent or weaker is legal (rule 18), another frame or more rights is not. Returns why
   * not, or null.
   */
  compareWithCpu(k: Kernel, mm: number, va: number, frame: number, writable: boolean): string | null {
    const pte = this.cpuPte(k, mm, va);
    if (!ptePresent(pte)) return `the CPU maps nothing at ${hex(va)} (PTE ${pte === 0 ? 'none' : isMigrationEntry(pte) ? 'a migration entry' : 'swapped out'})`;
    if (pteHas(pte, PTE_PROTNONE)) return `the CPU PTE at ${hex(va)} is PROT_NONE (no access)`;
    if (pteFrame(pte) !== frame) return `the CPU maps frame ${pteFrame(pte)} at ${hex(va)}`;
    if (writable && !pteWrite(pte)) return `the device may write frame ${frame} while the CPU PTE at ${hex(va)} is read-only`;
    return null;
  }

  // ---- trail steps ---------------------------------------------------------------------

  trailSyscall(s: SyscallInfo | null): TrailEntry | null {
    if (!s) return null;
    return { time: s.time, kind: 'syscall', task: s.task, text: `${s.name}(${s.args}) by pid ${s.pid} [${this.taskName(s.task)}]` };
  }

  /** The syscall behind an invalidation, its start, the given callbacks' returns, its end (with `withEnd`). */
  trailInvalidation(inv: InvalidationInfo, withEnd = false, callbacks: readonly CallbackInfo[] = []): TrailEntry[] {
    const out: TrailEntry[] = [];
    const sc = this.trailSyscall(inv.syscall);
    if (sc) out.push(sc);
    const who = inv.syscall ? '' : ` [${this.taskName(inv.task)}]`;
    out.push({
      time: inv.time, kind: 'invalidate-start', task: inv.task,
      text: `${inv.event} [${hex(inv.start)}, ${hex(inv.end)}) of mm${inv.mm.id}${inv.blockable ? '' : ' (non-blockable)'}${who}`,
    });
    for (const cb of callbacks) out.push(this.trailCallback(cb));
    if (withEnd && inv.phase !== 'open' && inv.endTime !== undefined) {
      out.push({ time: inv.endTime, kind: `invalidate-${inv.phase}`, task: inv.task, text: `${inv.event} [${hex(inv.start)}, ${hex(inv.end)}) of mm${inv.mm.id} ${inv.phase === 'end' ? 'ended' : 'failed with -EAGAIN (no end)'}` });
    }
    return out;
  }

  trailCallback(cb: CallbackInfo): TrailEntry {
    if (cb.returnTime === undefined) {
      return { time: cb.time, kind: 'callback', task: cb.task, text: `${cb.op} of ${cb.sub} called (${cb.event} [${hex(cb.start)}, ${hex(cb.end)}))` };
    }
    return { time: cb.returnTime, kind: 'callback', task: cb.task, text: `${cb.op} of ${cb.sub} returned ${cb.ret} (${cb.event} [${hex(cb.start)}, ${hex(cb.end)}))` };
  }

  /**
   * The MR's story around `va` (issue 19: trails name the cause): its registration and
   * deregistration, revocation when the MR is revoked now, the insertion and removal of the
   * interval notifiers of its mm that cover `va` (an implicit MR's children created and
   * reaped among them), and the callbacks, with what they returned, of the last
   * invalidation of `va` that ended.
   */
  trailMr(b: LiveBinding | undefined, va: number | undefined, mr?: MemoryRegion): TrailEntry[] {
    if (!b) return [];
    const out: TrailEntry[] = [];
    const span = b.length >= ULONG_MAX ? 'the whole address space (implicit)' : `[${hex(b.addr)}, ${hex(b.addr + b.length)})`;
    out.push({ time: b.regTime, kind: 'mr-reg', text: `${b.nic} key ${hex(b.key)} registered over ${span} of mm${b.mmId} (${b.strategy})` });
    if (b.deregTime !== undefined) out.push({ time: b.deregTime, kind: 'mr-dereg', text: `${b.nic} key ${hex(b.key)} deregistered (ibv_dereg_mr returned)` });
    if (mr && mr.state === 'revoked') out.push({ time: this.sim.now(), kind: 'mr-revoked', text: `${b.nic} key ${hex(b.key)} is revoked (the device refuses it)` });
    if (!b.kernel || b.mmId === null || va === undefined) return out;
    const key = `${this.kernelIndex(b.kernel)}:${b.mmId}`;
    const subs = (this.subHistory.get(key) ?? []).filter((x) => x.start <= va && va <= x.last).slice(-3);
    for (const x of subs) {
      out.push({ time: x.inserted, kind: 'notifier-insert', task: x.insertTask, text: `${x.sub} inserted over [${hex(x.start)}, ${hex(x.last + 1)})${x.sub.includes('/child(') ? ' (implicit child created)' : ''} [${this.taskName(x.insertTask)}]` });
      if (x.removed !== undefined) out.push({ time: x.removed, kind: 'notifier-remove', task: x.removeTask ?? null, text: `${x.sub} removed${x.sub.includes('/child(') ? ' (implicit child reaped)' : ''} [${this.taskName(x.removeTask ?? null)}]` });
    }
    const ended = this.endedInv.get(key) ?? [];
    for (let i = ended.length - 1; i >= 0; i--) {
      const inv = ended[i] as InvalidationInfo;
      if (inv.start <= va && va < inv.end) {
        for (const cb of inv.callbacks) if (cb.returnTime !== undefined) out.push(this.trailCallback(cb));
        break;
      }
    }
    return out;
  }

  trailInstall(i: InstallInfo | undefined, b?: MrBinding, mr?: MemoryRegion): TrailEntry | null {
    if (!i) return null;
    const va = b && mr ? ` (va ${hex(this.vaOfIndex(b, mr, i.index))})` : '';
    return {
      time: i.time, kind: 'install', task: i.task,
      text: `${i.nic} key ${hex(i.key)} page ${i.index}${va} -> frame ${i.frame} ${i.writable ? 'read-write' : 'read-only'}, generation ${i.generation} [${this.taskName(i.task)}]`,
    };
  }

  trailAccess(e: AccessEvent): TrailEntry {
    const a = e.access;
    const va = e.va !== undefined ? ` (va ${hex(e.va)}${e.binding?.mmId != null ? ` of mm${e.binding.mmId}` : ''})` : '';
    const via = `${a.fromCache ? 'cached ' : ''}translation generation ${a.generation} installed at ${formatNs(a.installedAt)}${a.stale ? ', stale' : ''}${a.fenced ? ', fenced' : ''}`;
    return {
      time: a.time, kind: 'dma',
      text: `${a.nic} qp ${a.qpNum} ${a.side} ${a.write ? 'wrote' : 'read'} ${a.length} bytes at iova ${hex(a.iova)}${va} in frame ${a.frame} through ${via}`,
    };
  }

  // ---- raw stream handlers ---------------------------------------------------------------

  private onTrace(r: TraceRecord): void {
    this.ordinal++;
    switch (r.type) {
      case 'task-spawn':
        this.tasks.set(r.id, { id: r.id, name: r.name, kind: r.kind, pid: (r as { pid?: number | null }).pid ?? null });
        break;
      case 'task-exit': {
        // Forget per-task state; keep the names of the most recent exited tasks for trails.
        this.syscalls.delete(r.id);
        this.invStack.delete(r.id);
        this.cbStack.delete(r.id);
        this.lastEnded.delete(r.id);
        this.pendingStart.delete(r.id);
        this.taskKernel.delete(r.id);
        this.exitedTasks.push(r.id);
        if (this.exitedTasks.length > KEEP_EXITED_TASK_NAMES) this.tasks.delete(this.exitedTasks.shift() as number);
        break;
      }
      case 'syscall-begin': {
        const s: SyscallInfo = { task: r.task, pid: r.pid, name: r.name, args: r.args, time: r.t, ordinal: this.ordinal };
        let st = this.syscalls.get(r.task);
        if (!st) this.syscalls.set(r.task, (st = []));
        st.push(s);
        const byNode = this.kernelByNode(r.node);
        for (const k of byNode ? [byNode] : this.kernelsForPid(r.pid, r.task)) {
          const p = k.processes.get(r.pid);
          if (p) this.rememberMm(p.mm);
        }
        break;
      }
      case 'syscall-end': {
        const st = this.syscalls.get(r.task);
        const s = st?.pop();
        if (s) s.ret = r.ret;
        break;
      }
      case 'invalidate-start':
        this.pendingStart.set(r.task, r);
        break;
      case 'callback-start': {
        const inv = this.attribute(r.task, r.start, r.end, r.op);
        const cb: CallbackInfo = { inv, sub: r.sub, op: r.op, start: r.start, end: r.end, event: r.event, time: r.t, ordinal: this.ordinal, task: r.task };
        let st = this.cbStack.get(r.task);
        if (!st) this.cbStack.set(r.task, (st = []));
        st.push(cb);
        inv?.callbacks.push(cb);
        this.publish(this.trace$, r);
        this.publish(this.callback$, { phase: 'start', cb, ordinal: this.ordinal });
        return;
      }
      case 'callback-return': {
        const cb = this.cbStack.get(r.task)?.pop();
        this.publish(this.trace$, r);
        if (cb) {
          cb.ret = r.ret;
          cb.returnTime = r.t;
          cb.returnOrdinal = this.ordinal;
          this.publish(this.callback$, { phase: 'return', cb, ordinal: this.ordinal });
        }
        return;
      }
      case 'interval-insert': {
        const k = this.kernelByNode(r.node);
        if (k) {
          const key = `${this.kernelIndex(k)}:${r.mm}`;
          let list = this.intervalSubs.get(key);
          if (!list) this.intervalSubs.set(key, (list = []));
          list.push({ kernel: k, sub: r.sub, mm: r.mm, start: r.start, last: r.last, lock: r.lock, ordinal: this.ordinal });
          let h = this.subHistory.get(key);
          if (!h) this.subHistory.set(key, (h = []));
          h.push({ sub: r.sub, start: r.start, last: r.last, inserted: r.t, insertTask: r.task });
          if (h.length > KEEP_SUB_EVENTS) h.shift();
        }
        break;
      }
      case 'interval-remove': {
        const k = this.kernelByNode(r.node);
        if (k) {
          const list = this.intervalSubs.get(`${this.kernelIndex(k)}:${r.mm}`);
          const i = list ? list.findIndex((s) => s.sub === r.sub && s.start === r.start && s.last === r.last) : -1;
          if (list && i >= 0) list.splice(i, 1);
          const h = this.subHistory.get(`${this.kernelIndex(k)}:${r.mm}`);
          const ev = h?.find((x) => x.sub === r.sub && x.start === r.start && x.last === r.last && x.removed === undefined);
          if (ev) {
            ev.removed = r.t;
            ev.removeTask = r.task;
          }
        }
        break;
      }
      default:
        break;
    }
    this.publish(this.trace$, r);
  }

  /** The invalidation a callback belongs to: the task's innermost open one with that range. */
  private attribute(task: number | null, start: number, end: number, op: string): InvalidationInfo | null {
    const st = this.invStack.get(task) ?? [];
    for (let i = st.length - 1; i >= 0; i--) {
      const inv = st[i] as InvalidationInfo;
      if (inv.start === start && inv.end === end) return inv;
    }
    const le = this.lastEnded.get(task);
    if (le && op === 'invalidate_range_end' && le.start === start && le.end === end) return le;
    return null;
  }

  private onNotifier(k: Kernel, e: NotifierStreamEvent): void {
    const ordinal = ++this.ordinal;
    const task = this.sim.current?.id ?? null;
    if (e.phase === 'start') {
      this.rememberMm(e.range.mm);
      const rec = this.pendingStart.get(task);
      this.pendingStart.delete(task);
      const subs = this.intervalSubscribers(k, e.mm).filter((s) => s.start <= e.range.end - 1 && s.last >= e.range.start);
      const inv: InvalidationInfo = {
        id: this.nextInv++, kernel: k, mm: e.range.mm, start: e.range.start, end: e.range.end,
        event: rec && rec.start === e.range.start && rec.end === e.range.end ? rec.event : '?',
        blockable: e.blockable, curSeq: e.curSeq, time: e.time, ordinal, task,
        syscall: this.syscallOf(task), subs, callbacks: [], phase: 'open',
      };
      this.invByRange.set(e.range, inv);
      let st = this.invStack.get(task);
      if (!st) this.invStack.set(task, (st = []));
      st.push(inv);
      let byMm = this.openInv.get(k);
      if (!byMm) this.openInv.set(k, (byMm = new Map()));
      let open = byMm.get(e.mm);
      if (!open) byMm.set(e.mm, (open = []));
      open.push(inv);
      this.publish(this.invalidation$, { phase: 'start', inv, ordinal });
      return;
    }
    const inv = this.invByRange.get(e.range);
    if (!inv) return;
    this.invByRange.delete(e.range);
    inv.phase = e.phase;
    inv.endTime = e.time;
    inv.endOrdinal = ordinal;
    const st = this.invStack.get(inv.task);
    const i = st ? st.lastIndexOf(inv) : -1;
    if (st && i >= 0) st.splice(i, 1);
    this.lastEnded.set(inv.task, inv);
    const open = this.openInv.get(k)?.get(e.mm);
    const j = open ? open.indexOf(inv) : -1;
    if (open && j >= 0) open.splice(j, 1);
    const ek = `${this.kernelIndex(k)}:${e.mm}`;
    let ended = this.endedInv.get(ek);
    if (!ended) this.endedInv.set(ek, (ended = []));
    ended.push(inv);
    if (ended.length > KEEP_ENDED_INVALIDATIONS) ended.shift();
    this.publish(this.invalidation$, { phase: e.phase, inv, ordinal });
  }

  private onAccess(nic: Nic, a: DeviceAccess): void {
    const ordinal = ++this.ordinal;
    const b = this.binding(nic.name, a.mrKey);
    const va = b ? b.addr + (a.iova - b.iova) : undefined;
    this.publish(this.access$, { access: a, nic, kernel: this.kernelOfNic(nic.name), binding: b, va, mr: nic.mrByKey(a.mrKey), ordinal });
  }

  private retire(nic: string, generation: number): void {
    let list = this.retired.get(nic);
    if (!list) this.retired.set(nic, (list = []));
    list.push({ generation, time: this.sim.now() });
  }

  /**
   * A generation replaced or zapped can still be served by the translation cache until a
   * sync completes; after a sync that began later, no access can name it: forget it.
   */
  private afterSync(nic: string, begin: number): void {
    const list = this.retired.get(nic);
    if (!list) return;
    let keep = 0;
    for (const r of list) {
      if (r.time < begin) this.installs.get(nic)?.delete(r.generation);
      else list[keep++] = r;
    }
    list.length = keep;
  }

  private onCommand(nic: Nic, c: DeviceCommand): void {
    const ordinal = ++this.ordinal;
    const k = this.kernelOfNic(nic.name);
    const mr = c.kind === 'sync' ? undefined : nic.mrByKey(c.mrKey);
    const installs: InstallInfo[] = [];
    const genKey = `${nic.name}:${c.mrKey}`;
    if (c.kind === 'sync') this.afterSync(nic.name, c.begin);
    if (c.kind === 'zap') {
      const cur = this.currentGen.get(genKey);
      if (cur) {
        const end = c.firstPage + c.count;
        if (c.count > cur.size) {
          for (const [i, g] of [...cur]) if (i >= c.firstPage && i < end) { cur.delete(i); this.retire(nic.name, g); }
        } else {
          for (let i = c.firstPage; i < end; i++) {
            const g = cur.get(i);
            if (g !== undefined) { cur.delete(i); this.retire(nic.name, g); }
          }
        }
      }
    }
    if (c.kind === 'update' && mr) {
      let keys = this.mrKeys.get(nic.name);
      if (!keys) this.mrKeys.set(nic.name, (keys = new Set()));
      keys.add(c.mrKey);
      let cur = this.currentGen.get(genKey);
      if (!cur) this.currentGen.set(genKey, (cur = new Map()));
      for (let i = c.firstPage; i < c.firstPage + c.count; i++) {
        const generation = mr.pageTable.generationOf(i);
        if (generation < 0) continue;
        const prev = cur.get(i);
        if (prev !== undefined && prev !== generation) this.retire(nic.name, prev);
        cur.set(i, generation);
        const frame = mr.pageTable.frameOf(i);
        const info: InstallInfo = {
          nic: nic.name, key: c.mrKey, index: i, generation, frame,
          writable: mr.pageTable.perm(i) === PTE_READ_WRITE,
          frameGeneration: k?.phys.generation[frame] ?? 0,
          time: c.end, ordinal, task: c.task,
        };
        let byGen = this.installs.get(nic.name);
        if (!byGen) this.installs.set(nic.name, (byGen = new Map()));
        byGen.set(generation, info);
        installs.push(info);
      }
    }
    this.publish(this.command$, { cmd: c, nic, kernel: k, binding: c.kind === 'sync' ? undefined : this.binding(nic.name, c.mrKey), mr, installs, ordinal });
  }

  private onBinding(b: MrBinding): void {
    const ordinal = ++this.ordinal;
    const key = `${b.nic}:${b.key}`;
    if (b.event === 'reg') {
      const k = this.kernelOfNic(b.nic);
      const live: LiveBinding = {
        ...b, kernel: k, nicObj: this.nicByName(b.nic), kind: bindingKind(b, this.pinnedStrategies),
        mm: this.mmOf(k, b.mmId), regTime: this.sim.now(), regOrdinal: ordinal,
      };
      let byKey = this.bindingsByKey.get(b.nic);
      if (!byKey) this.bindingsByKey.set(b.nic, (byKey = new Map()));
      byKey.set(b.key, live);
      if (k && b.mmId !== null) {
        const mk = `${this.kernelIndex(k)}:${b.mmId}`;
        let set = this.bindingsByMm.get(mk);
        if (!set) this.bindingsByMm.set(mk, (set = new Set()));
        set.add(live);
        this.everBound.add(mk);
      }
      this.publish(this.binding$, { event: 'reg', binding: live, ordinal });
      return;
    }
    const cur = this.currentGen.get(key);
    if (cur) {
      for (const g of cur.values()) this.retire(b.nic, g);
      this.currentGen.delete(key);
    }
    const live = this.bindingsByKey.get(b.nic)?.get(b.key);
    if (!live) return;
    this.bindingsByKey.get(b.nic)?.delete(b.key);
    live.deregTime = this.sim.now();
    if (live.kernel && live.mmId !== null) this.bindingsByMm.get(`${this.kernelIndex(live.kernel)}:${live.mmId}`)?.delete(live);
    this.publish(this.binding$, { event: 'dereg', binding: live, ordinal });
  }
}

export { ULONG_MAX };
