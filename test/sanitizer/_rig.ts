/**
 * Test rig for the sanitizer: a kernel, a NIC on its DmaBus, a process, a binding stream,
 * and two tiny drivers written here (the sanitizer may not import the real ones, and the
 * tests need bugs on demand):
 * - `MiniOdp`: one ODP MR with an interval subscriber, the rule-31 fault loop and an
 *   mlx5-style invalidate (lock, set_seq, zap, sync, return true; false when
 *   non-blockable, rdma C2), each step of which a test can break;
 * - `MiniPinned`: pin_user_pages at registration, entries programmed once, no notifier.
 * Device accesses go through the NIC's DMA engine directly (`devWrite`, `devRead`), which
 * publishes the same access events as QP traffic; a translation fault calls the driver's
 * fault path and retries, as a resumed NIC fault would.
 */
import type { ExecutionContext } from 'ava';
import { Subject } from 'rxjs';
import {
  EBUSY, FOLL_LONGTERM, FOLL_WRITE, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_WRITE, HMM_RANGE_DEFAULT_TIMEOUT_NS,
  Kernel, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, MmuIntervalNotifier, Mutex, PAGE_SIZE, PROT_READ, PROT_WRITE,
  eventName, hmmRangeFault, hmmRangeInit, mmuIntervalNotifierInsert, mmuIntervalNotifierRemove, mmuIntervalReadBegin,
  mmuIntervalReadRetry, mmuIntervalSetSeq, mmuNotifierRangeBlockable, pinUserPagesFast, serializeTrace, unpinUserPagesDirtyLock,
  type Co, type File, type KernelOptions, type MmStruct, type MmuNotifierRange, type Process, type TraceRecord,
} from '../../kernel-model/index.ts';
import {
  IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_REMOTE_ATOMIC, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE, IBV_WR_RDMA_WRITE,
  Nic, newTranslation, type CostModel, type DeviceFault, type MemoryRegion,
} from '../../device/index.ts';
import { attachSanitizer, renderText, type MrBinding, type Sanitizer, type ViolationId } from '../../sanitizer/index.ts';

export const P = PAGE_SIZE;
export const ALL_ACCESS = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

export interface Rig {
  k: Kernel;
  nic: Nic;
  p: Process;
  pd: number;
  bindings: Subject<MrBinding>;
  san: Sanitizer | null;
  records: TraceRecord[];
}

export interface RigOptions extends KernelOptions {
  sanitizer?: boolean;
  costs?: Partial<CostModel>;
  translationCacheEntries?: number;
}

export function rig(opts: RigOptions = {}): Rig {
  const { sanitizer = true, costs, translationCacheEntries, ...kopts } = opts;
  const k = new Kernel({ seed: 1, frames: 4096, ...kopts });
  const nic = new Nic(k.sim, k.dmaBus, { name: 'nic0', ...(costs ? { costs } : {}), ...(translationCacheEntries !== undefined ? { translationCacheEntries } : {}) });
  const p = k.createProcess('app');
  const bindings = new Subject<MrBinding>();
  const records: TraceRecord[] = [];
  k.sim.trace$.subscribe((r) => records.push(r));
  const san = sanitizer ? attachSanitizer({ sim: k.sim, kernels: [k], nics: [nic], bindings$: bindings }) : null;
  return { k, nic, p, pd: nic.allocPd(), bindings, san, records };
}

/** Run `body` as the process's main thread until idle (or `untilNs`), then the end-of-run checks. */
export function run(t: ExecutionContext, r: Rig, body: () => Co<void>, opts: { untilNs?: number } = {}): void {
  const task = r.p.spawnThread('main', body);
  const out = r.k.sim.run({ untilNs: opts.untilNs ?? 60_000_000_000 });
  if (out.reason === 'failed') t.fail(`run failed (seed ${out.seed}): ${out.failure ?? ''}`);
  t.true(task.done, `main thread did not finish (run ended: ${out.reason} at ${out.now})`);
  r.san?.finish();
  t.deepEqual(r.san?.internalErrors ?? [], [], 'the sanitizer itself threw');
}

/** Assert exactly which ids were reported (each at least once), printing the violations otherwise. */
export function expectIds(t: ExecutionContext, r: Rig, ids: readonly ViolationId[]): void {
  const san = r.san as Sanitizer;
  const seen = [...new Set(san.violations.map((v) => v.id))].sort();
  t.deepEqual(seen, [...ids].sort(), renderText(san.violations));
}

export function ok(ret: number, what: string): number {
  if (ret < 0) throw new Error(`${what} failed with ${ret}`);
  return ret;
}

export function fill(byte: number, n = P): Uint8Array {
  return new Uint8Array(n).fill(byte);
}

export function* anon(p: Process, pages: number): Co<number> {
  return ok(yield* p.mmap(0, pages * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS), 'mmap');
}

export function* sharedFile(p: Process, file: File, pages: number): Co<number> {
  return ok(yield* p.mmap(0, pages * P, PROT_READ | PROT_WRITE, MAP_SHARED, file, 0), 'mmap file');
}

// ---- device accesses through the DMA engine -----------------------------------------------

export interface Mapper {
  readonly mr: MemoryRegion;
  readonly r: Rig;
  /** Resolve a translation fault at `va` (ODP); pinned MRs cannot fault. */
  fault?(start: number, end: number, write: boolean): Co<number>;
}

function* access(m: Mapper, va: number, write: boolean, data: Uint8Array | null, length: number): Co<Uint8Array | number> {
  const { nic } = m.r;
  const out = new Uint8Array(length);
  for (let pos = 0; pos < length;) {
    const a = va + pos;
    const n = Math.min(length - pos, P - (a % P));
    const ctx = { qpNum: 1, side: 'requester' as const, opcode: IBV_WR_RDMA_WRITE, xlate: newTranslation() };
    for (let tries = 0; ; tries++) {
      if (tries > 8) return -14;
      const res = write
        ? yield* nic.engine.writePage(ctx, m.mr, m.mr.lkey, a, (data as Uint8Array).subarray(pos, pos + n), m.mr.onDemand, 0)
        : yield* nic.engine.readPage(ctx, m.mr, m.mr.lkey, a, n, m.mr.onDemand, 0);
      if (res instanceof Uint8Array) {
        out.set(res, pos);
        break;
      }
      if (res === 0) break;
      if (res === 3 || !m.fault) return -13; // XLATE_PROT
      const page = Math.floor(a / P) * P;
      const r = yield* m.fault(page, page + P, write);
      if (r < 0) return r;
    }
    pos += n;
  }
  return out;
}

export function* devWrite(m: Mapper, va: number, data: Uint8Array): Co<number> {
  const r = yield* access(m, va, true, data, data.length);
  return typeof r === 'number' ? r : 0;
}

export function* devRead(m: Mapper, va: number, length: number): Co<Uint8Array | number> {
  return yield* access(m, va, false, null, length);
}

// ---- a tiny ODP driver -------------------------------------------------------------------

export interface OdpBugs {
  /** invalidate returns true without zapping. */
  noZap?: boolean;
  /** zaps but never syncs: the translation cache keeps the old translation. */
  noSync?: boolean;
  /** invalidate forgets mmu_interval_set_seq. */
  noSetSeq?: boolean;
  /** events the callback ignores (returns true, touches nothing). */
  ignoreEvents?: string[];
  /** takes the mutex (sleeps) in a non-blockable range instead of returning false. */
  lockWhenNonBlockable?: boolean;
  /** installs entries after dropping the mutex. */
  installAfterUnlock?: boolean;
  /** skips read_retry (installs whatever the snapshot said). */
  skipReadRetry?: boolean;
  /** the 2011 design: take a page reference, zap and sync from a worker `delayNs` later. */
  deferZapNs?: number;
  /** calls mmu_interval_read_retry without the mutex. */
  readRetryUnlocked?: boolean;
}

export interface OdpOptions {
  bugs?: OdpBugs;
  /** Virtual time spent between hmm_range_fault and taking the mutex (DMA mapping, say). */
  faultWorkNs?: number;
  /** Runs between the snapshot and the mutex (a test's hook to race an invalidation). */
  afterSnapshot?: () => Co<void>;
  /** Time the callback waits before zapping (a holdoff driver draining DMA). */
  holdoffNs?: number;
  name?: string;
  strategy?: string;
}

export class MiniOdp implements Mapper {
  readonly mutex: Mutex;
  readonly sub: MmuIntervalNotifier;
  mr!: MemoryRegion;
  invalidations = 0;
  readonly bugs: OdpBugs;

  constructor(readonly r: Rig, readonly mm: MmStruct, readonly addr: number, readonly length: number, readonly opts: OdpOptions = {}) {
    const name = opts.name ?? 'mini-odp';
    this.mutex = new Mutex(r.k.sim, `${name}.umem_mutex`, 'umem_mutex');
    this.sub = new MmuIntervalNotifier(name);
    this.bugs = opts.bugs ?? {};
  }

  *register(): Co<void> {
    const { nic, pd } = this.r;
    ok(yield* mmuIntervalNotifierInsert(this.sub, this.mm, this.addr, this.length, {
      invalidate: (sub, range, seq) => this.invalidate(sub, range, seq),
    }, { lock: this.mutex }), 'insert');
    const mr = nic.createMr({ pd, iova: this.addr, length: this.length, access: ALL_ACCESS, onDemand: true });
    if (typeof mr === 'number') throw new Error(`createMr ${mr}`);
    this.mr = mr;
    this.r.bindings.next({ nic: nic.name, key: mr.lkey, mmId: this.mm.id, addr: this.addr, length: this.length, iova: this.addr, strategy: this.opts.strategy ?? 'odp', event: 'reg' });
  }

  *dereg(): Co<void> {
    const { nic } = this.r;
    nic.destroyMr(this.mr);
    yield* nic.sync();
    yield* mmuIntervalNotifierRemove(this.sub);
    this.r.bindings.next({ nic: nic.name, key: this.mr.lkey, mmId: this.mm.id, addr: this.addr, length: this.length, iova: this.addr, strategy: this.opts.strategy ?? 'odp', event: 'dereg' });
  }

  /** MR pages [first, first + count) overlapping [start, end). */
  pagesIn(start: number, end: number): [number, number] {
    const s = Math.max(start, this.addr);
    const e = Math.min(end, this.addr + this.length);
    if (s >= e) return [0, 0];
    const first = this.mr.pageIndexOf(s);
    return [first, this.mr.pageIndexOf(e - 1) - first + 1];
  }

  private *invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): Co<boolean> {
    const { nic, k } = this.r;
    const bugs = this.bugs;
    const blockable = mmuNotifierRangeBlockable(range);
    if (!blockable && !bugs.lockWhenNonBlockable) return false; // rdma C2
    yield* this.mutex.lock();
    if (!bugs.noSetSeq) mmuIntervalSetSeq(sub, curSeq);
    this.invalidations++;
    const ignored = bugs.noZap || (bugs.ignoreEvents ?? []).includes(eventName(range.event));
    const [first, count] = this.pagesIn(range.start, range.end);
    if (!ignored && count > 0) {
      if (this.opts.holdoffNs) yield* k.sim.sleep(this.opts.holdoffNs);
      if (bugs.deferZapNs !== undefined) {
        const frames: number[] = [];
        for (let i = first; i < first + count; i++) {
          const f = this.mr.pageTable.frameOf(i);
          if (f > 0) {
            k.phys.get(f);
            frames.push(f);
          }
        }
        const self = this;
        k.sim.spawn('mini-odp/deferred-zap', function* () {
          yield* k.sim.sleep(bugs.deferZapNs as number);
          yield* self.mutex.lock();
          yield* nic.zapEntries(self.mr, first, count);
          yield* nic.sync();
          self.mutex.unlock();
          for (const f of frames) k.phys.put(f);
        }, { kind: 'worker' });
      } else {
        yield* nic.zapEntries(this.mr, first, count);
        if (!bugs.noSync) yield* nic.sync();
      }
    }
    this.mutex.unlock();
    return true;
  }

  /** The rule-31 loop over [start, end), bounded by HMM_RANGE_DEFAULT_TIMEOUT; installs what it mapped. */
  *fault(start: number, end: number, write: boolean, opts: { readOnly?: boolean } = {}): Co<number> {
    const { nic, k } = this.r;
    const bugs = this.bugs;
    const deadline = k.sim.now() + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    if (!this.mm.mmgetNotZero()) return -22;
    try {
      for (;;) {
        if (k.sim.now() > deadline) return -EBUSY;
        const seq = yield* mmuIntervalReadBegin(this.sub);
        const range = hmmRangeInit(this.sub, start, end, seq, HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0));
        yield* this.mm.mmapLock.downRead();
        const ret = yield* hmmRangeFault(range);
        this.mm.mmapLock.upRead();
        if (ret === -EBUSY) continue;
        if (ret < 0) return ret;
        if (this.opts.faultWorkNs) yield* k.sim.sleep(this.opts.faultWorkNs);
        if (this.opts.afterSnapshot) yield* this.opts.afterSnapshot();
        if (bugs.readRetryUnlocked && mmuIntervalReadRetry(this.sub, seq)) continue;
        yield* this.mutex.lock();
        if (!bugs.skipReadRetry && !bugs.readRetryUnlocked && mmuIntervalReadRetry(this.sub, seq)) {
          this.mutex.unlock();
          continue;
        }
        if (bugs.installAfterUnlock) this.mutex.unlock();
        const frames = [...range.pfns];
        const writable = [...range.flags].map((f) => !opts.readOnly && (f & HMM_PFN_WRITE) !== 0);
        const [first] = this.pagesIn(start, end);
        ok(yield* nic.updateEntries(this.mr, first, frames, writable), 'updateEntries');
        if (!bugs.installAfterUnlock) this.mutex.unlock();
        return 0;
      }
    } finally {
      this.mm.users--; // mmput without the exit path (the test's process outlives its faults)
    }
  }

  /** Handle the NIC's fault stream: fault what the fault names, resume (with error on failure). */
  attachFaultHandler(): void {
    const { nic, k } = this.r;
    nic.fault$.subscribe((f: DeviceFault) => {
      if (f.mrKey !== this.mr.lkey) return;
      const self = this;
      k.sim.spawn('mini-odp/page-fault', function* () {
        const va = f.iova;
        const start = Math.floor(va / P) * P;
        const end = Math.ceil((va + Math.max(1, f.length)) / P) * P;
        const r = yield* self.fault(start, end, f.write);
        nic.resumeFault(f.id, { error: r < 0 });
      }, { kind: 'worker' });
    });
  }
}

// ---- a tiny pinned driver ----------------------------------------------------------------

export class MiniPinned implements Mapper {
  mr!: MemoryRegion;
  frames: number[] = [];

  constructor(readonly r: Rig, readonly mm: MmStruct, readonly addr: number, readonly length: number) {}

  *register(gupFlags = FOLL_WRITE | FOLL_LONGTERM): Co<void> {
    const { nic, pd } = this.r;
    const n = this.length / P;
    ok(yield* pinUserPagesFast(this.mm, this.addr, n, gupFlags, this.frames), 'pin_user_pages');
    const mr = nic.createMr({ pd, iova: this.addr, length: this.length, access: ALL_ACCESS, onDemand: false });
    if (typeof mr === 'number') throw new Error(`createMr ${mr}`);
    this.mr = mr;
    ok(yield* nic.updateEntries(mr, 0, this.frames, true), 'updateEntries');
    this.r.bindings.next({ nic: nic.name, key: mr.lkey, mmId: this.mm.id, addr: this.addr, length: this.length, iova: this.addr, strategy: 'pinned', event: 'reg' });
  }

  /** ib_umem_release: destroy, fence, unpin (dirtying) unless the test asks for the bug. */
  *dereg(opts: { unpin?: boolean; dirty?: boolean } = {}): Co<void> {
    const { nic, k } = this.r;
    nic.destroyMr(this.mr);
    yield* nic.sync();
    if (opts.unpin !== false) unpinUserPagesDirtyLock(k, this.frames, opts.dirty ?? true);
    this.r.bindings.next({ nic: nic.name, key: this.mr.lkey, mmId: this.mm.id, addr: this.addr, length: this.length, iova: this.addr, strategy: 'pinned', event: 'dereg' });
  }
}

export { serializeTrace };
