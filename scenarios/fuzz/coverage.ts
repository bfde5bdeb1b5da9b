/**
 * What the fuzzer reaches (`lab fuzz --coverage`): an explicit, committed list of the
 * places a default campaign must exercise, and the runs of a campaign that reached each.
 *
 * The list (`COVERAGE_ITEMS`) has three parts:
 * - every trace-record kind a correct run emits, with the function that emits it (kinds
 *   that only a bug or another profile emits are listed apart, in `NOT_EXPECTED_TRACE`);
 * - every spec rule a test cites (kernel rule N, rdma XN), each with the fact that shows a
 *   run went through the situation the rule governs; rules the fuzz world cannot reach
 *   (bad verbs input, old kernels) are listed apart, in `OUTSIDE_FUZZ_WORLD`, with why;
 * - every step of the reference ODP and holdoff strategies (the seams of driver/umem-odp.ts
 *   and driver/umem-holdoff.ts), and the outcomes that choose a path (a collision, a
 *   holdoff that drained or timed out).
 *
 * A campaign of `runs` runs splits them evenly among the reference strategies (pinned,
 * odp, holdoff; the default 200 runs are 67 of each), all from one fast-check seed, with the fuzzer's own command lists and knobs. Steps are seen through a
 * subclass of the reference that records each step and calls the reference's code, so the
 * runs are the reference's runs.
 *
 * @example
 *   const c = runCoverage({ runs: 200, seed: 1 });
 *   for (const l of formatCoverage(c)) console.log(l);
 *   if (c.unreached.length > 0) process.exitCode = 1;
 */
import type { Observable } from 'rxjs';
import { EBUSY, MmuIntervalNotifier, type Co, type HmmRange, type MmuNotifierRange, type Simulation, type TraceRecord } from '../../kernel-model/index.ts';
import {
  HoldoffUmem, UmemOdp, holdoffStrategy, odpStrategy, type MrBindingEvent, type OdpMapAttempt, type OdpMapMode, type RdmaNode, type UmemStrategy,
} from '../../driver/index.ts';
import { fuzz } from './fuzz.ts';
import { fuzzKnobs } from './knobs.ts';
import { REFERENCE_TARGETS, type FuzzTarget } from './targets.ts';

export type CoverageKind = 'trace' | 'rule' | 'step';

export interface CoverageItem {
  id: string;
  kind: CoverageKind;
  /** For a trace kind, the function that emits it; for a rule, its title; for a step, what it does. */
  what: string;
  /** The fact (recorded during a run) that reaches the item. */
  fact: string;
}

const trace = (type: string, emitter: string): CoverageItem => ({ id: `trace ${type}`, kind: 'trace', what: emitter, fact: `record:${type}` });
const rule = (id: string, title: string, fact: string): CoverageItem => ({ id, kind: 'rule', what: title, fact });
const step = (id: string, what: string): CoverageItem => ({ id: `step ${id}`, kind: 'step', what, fact: `step:${id}` });

/** Trace-record kinds a correct fuzz run emits, with their emitter (kernel-model/sim/trace.ts). */
const TRACE_ITEMS: CoverageItem[] = [
  trace('task-spawn', 'Simulation.spawn (kernel-model/sim/simulation.ts)'),
  trace('task-exit', 'the engine when a task returns (kernel-model/sim/simulation.ts)'),
  trace('task-switch', 'the scheduler (kernel-model/sim/simulation.ts)'),
  trace('preempt', 'Simulation.preemptPoint'),
  trace('syscall-begin', 'Process.syscall (kernel-model/process.ts)'),
  trace('syscall-end', 'Process.syscall'),
  trace('fault', 'handle_mm_fault (kernel-model/memory.ts handleMmFault)'),
  trace('page-alloc', 'alloc_pages (kernel-model/page-alloc.ts)'),
  trace('page-free', 'free_pages / folio_put (kernel-model/page-frames.ts)'),
  trace('lock-acquire', 'Mutex.lock, RwSemaphore.down* (kernel-model/sim)'),
  trace('lock-release', 'Mutex.unlock, RwSemaphore.up*'),
  trace('lock-contend', 'Mutex.lock when owned'),
  trace('invalidate-start', 'mmu_notifier_invalidate_range_start (kernel-model/mmu-notifier.ts)'),
  trace('invalidate-end', 'mmu_notifier_invalidate_range_end'),
  trace('invalidate-eagain', 'mmu_notifier_invalidate_range_start_nonblock failing (the OOM reaper)'),
  trace('callback-start', 'the notifier core calling a subscriber (mn_itree_invalidate)'),
  trace('callback-return', 'the notifier core after a subscriber returned'),
  trace('note', 'Simulation.emit note (model remarks)'),
  trace('writeback', 'writeback_page (kernel-model/filemap.ts writebackPage)'),
  trace('migrate', 'migrate_pages (kernel-model/migrate.ts migratePage)'),
  trace('reclaim', 'shrink_folio_list (kernel-model/vmscan.ts)'),
  trace('oom-reap', 'oom_reap_task_mm (kernel-model/oom.ts)'),
  trace('sync-batch', 'SyncBatcher flushing a batch (driver/batching/sync-batcher.ts)'),
  trace('cpu-store', 'Process.store (kernel-model/process.ts)'),
  trace('file-write', 'Process.pwrite (generic_perform_write)'),
  trace('gup', 'pin_user_pages / get_user_pages (kernel-model/gup.ts)'),
  trace('gup-release', 'unpin_user_pages / put_page of GUP references'),
  trace('interval-insert', 'mmu_interval_notifier_insert (kernel-model/mmu-interval-notifier.ts)'),
  trace('interval-remove', 'mmu_interval_notifier_remove'),
  trace('read-retry', 'mmu_interval_read_retry'),
  trace('check-retry', 'mmu_interval_check_retry (hmm_range_fault calls it)'),
  trace('race-guard', "a model check against a race taking its racy branch (free_swap_and_cache's trylock, do_swap_page, folio_lock waits, ...)"),
];

/** Trace kinds a clean reference run on linux-6.x does not emit, and why. */
export const NOT_EXPECTED_TRACE: Readonly<Record<string, string>> = {
  deadlock: 'a deadlock: only a broken driver (mmput-under-mutex)',
  'might-sleep': 'sleeping in atomic context: only a broken driver (sleep-in-nonblockable)',
  'lock-order': 'lockdep inversion: only a broken driver (alloc-under-umem-mutex)',
  'notifier-warn': 'a kernel WARN about a caller: only a broken driver',
  'notifier-contract': 'a driver obligation not met: only a broken driver',
  'dirty-without-buffers': 'set_page_dirty on a page without buffers: only a broken or pinning driver on an old profile',
  'interface-refused': 'a call the profile lacks: other profiles than linux-6.x',
  'real-timer': 'wall-clock timers: not used by fuzz runs',
  limit: 'a run hit its event or time bound: not in a sound run',
  proposal: 'a step of a kernel variant under study (kernel-model/variant.ts): fuzz runs use the stock profiles',
  thp: 'a large-folio step (huge-memory.ts, hugetlb.ts): the fuzz world maps 4 KiB pages only (no THP or hugetlb mapping among its commands)',
};

/** Spec rules cited by tests, each with the fact that reaches it. */
const RULE_ITEMS: CoverageItem[] = [
  rule('kernel rule 1', 'Lazy per-mm container', 'record:interval-insert'),
  rule('kernel rule 8', 'Lock context of callbacks', 'record:callback-start'),
  rule('kernel rule 10', 'Pairing (start/end)', 'record:invalidate-end'),
  rule('kernel rule 11', 'Ordering relative to the primary MMU (fenced before return)', 'sync-in-callback'),
  rule('kernel rule 13', 'Interval subscribers get the whole operation\'s range (the driver clamps)', 'step:odp.clamp'),
  rule('kernel rule 14', 'Classic start return codes (-EAGAIN)', 'record:invalidate-eagain'),
  rule('kernel rule 15', 'Blockable vs non-blockable', 'nonblockable-invalidation'),
  rule('kernel rule 18', 'Fault-in/upgrade does not notify', 'fault:wp'),
  rule('kernel rule 21a', 'Region unmap (munmap, brk shrinking: UNMAP)', 'event:UNMAP'),
  rule('kernel rule 21e', 'rmap unmap and migration', 'record:migrate'),
  rule('kernel rule 21g', 'KSM', 'ksm-invalidation'),
  rule('kernel rule 21h', 'NUMA balancing (change_prot_numa, the hinting fault)', 'fault:numa-hint'),
  rule('kernel rule 24', 'Invalidate start', 'record:invalidate-start'),
  rule('kernel rule 26', 'mmu_interval_set_seq from invalidate, under the driver lock', 'step:odp.setSeq'),
  rule('kernel rule 29', 'mmu_interval_check_retry is a lockless hint', 'record:check-retry'),
  rule('kernel rule 31', 'Canonical collision-retry loop', 'step:odp.commit:collision'),
  rule('kernel rule 33', 'Exit order', 'exit-invalidation'),
  rule('kernel rule 34', 'What release does (exit_mmap tears the mm down)', 'exit-invalidation'),
  rule('kernel rule 37', 'Young callbacks are classic-only (reclaim\'s referenced check)', 'reclaim:young'),
  rule('kernel rule 54', 'GUP flag validity', 'record:gup'),
  rule('kernel rule 55', 'Reference accounting', 'record:gup-release'),
  rule('kernel rule 57', 'MMF_HAS_PINNED (set by the first FOLL_PIN; fork then copies maybe-pinned pages)', 'gup:longterm-pin'),
  rule('kernel rule 58', 'VMA checks (check_vma_flags)', 'record:gup'),
  rule('kernel rule 61', 'Anon-exclusive rule for pins', 'gup:longterm-pin'),
  rule('kernel rule 66', 'Parent invalidation at fork', 'fork-invalidation'),
  rule('kernel rule 71', 'Marking an exclusive anonymous page shared (fork)', 'fork-invalidation'),
  rule('kernel rule 76', 'Writeback (folio_mkclean)', 'record:writeback'),
  rule('rdma A4', 'Explicit ODP registration neither pins nor faults', 'odp-registration'),
  rule('rdma A5', 'Range arithmetic', 'odp-registration'),
  rule('rdma A6', 'Writability', 'device-fault'),
  rule('rdma A7', 'Implicit ODP', 'implicit-registration'),
  rule('rdma A8', 'Userspace fork bookkeeping (MADV_DONTFORK)', 'madvise-dontfork'),
  rule('rdma B1', 'Per-page device state', 'nic-update'),
  rule('rdma B2', 'Fault resolution follows the HMM retry protocol', 'device-fault'),
  rule('rdma B3', 'Retry budget (-EBUSY restarts)', 'step:odp.fault:ebusy'),
  rule('rdma B4', 'Fault errors', 'fault-resume-error'),
  rule('rdma B5', 'WQE faults parse the whole SGL', 'device-fault:requester'),
  rule('rdma B6', 'Resume semantics', 'fault-resume'),
  rule('rdma B7', 'Fault delivery pipeline', 'device-fault'),
  rule('rdma B8', 'A responder fault looks like RNR to the peer', 'device-fault:responder'),
  rule('rdma C1', 'One notifier per umem', 'record:interval-insert'),
  rule('rdma C2', 'Non-blockable ranges are refused', 'callback-false'),
  rule('rdma C3', 'Blockable invalidation sequence under the umem mutex', 'zap-in-callback'),
  rule('rdma C4', 'Batching rule (MTT alignment)', 'nic-zap'),
  rule('rdma C5', 'Invalidation is synchronous', 'sync-in-callback'),
  rule('rdma C6', 'The event type is ignored', 'step:odp.affects'),
  rule('rdma C7', 'Sequence interlock', 'record:read-retry'),
  rule('rdma C8', 'Dirty tracking', 'step:odp.unmapPages'),
  rule('rdma C9', 'Deregistration', 'deregistration'),
  rule('rdma C10', 'Lock-order hazard (the last mmput after the umem mutex)', 'step:odp.putMm:last'),
  rule('rdma D1', 'ibv_advise_mr interface', 'prefetch'),
  rule('rdma D2', 'Semantics per advice', 'prefetch'),
  rule('rdma D3', 'Synchronous versus asynchronous (FLUSH)', 'prefetch'),
  rule('rdma E1', 'Implicit layout', 'implicit-child'),
  rule('rdma E2', 'Children are created lazily', 'implicit-child'),
  rule('rdma E3', 'Children are reaped', 'implicit-child-reaped'),
  rule('rdma F1', 'Local failure', 'qp-error'),
  rule('rdma F2', 'Remote failure on RC', 'qp-error'),
  rule('rdma F3', 'After the error state', 'qp-error'),
  rule('rdma G1', 'dma-buf userspace API', 'dmabuf-registration'),
  rule('rdma G2', 'Dynamic importer contract', 'dmabuf-move'),
  rule('rdma G3', 'mlx5 dynamic dma-buf MR', 'dmabuf-registration'),
  rule('rdma G4', 'Callbacks fire even when nothing is mapped', 'dmabuf-move'),
  rule('rdma G6', 'Revoke (RDMA side)', 'dmabuf-move'),
  rule('rdma G7', 'Revocation timing contract', 'dmabuf-move'),
  rule('rdma H1', 'Pinned MRs ignore the CPU view after registration', 'gup:longterm-pin'),
  rule('rdma H2', 'Fork with pinned MRs', 'fork-with-pinned-mr'),
  rule('rdma H3', 'Holdoff model', 'step:holdoff.holdOff'),
];

/** Rules tests cite that the fuzz world does not exercise, and why. */
export const OUTSIDE_FUZZ_WORLD: Readonly<Record<string, string>> = {
  'rdma A1': 'access-flag validation: the fuzz world registers only valid access flags',
  'rdma A2': 'ODP on a device without it: each fuzz NIC registers only what it supports',
  'rdma A3': 'capability reports: the fuzz world does not query the device',
  'rdma F4': 'no MR-level event: a statement that nothing is reported (nothing to reach)',
  'rdma G5': 'pinned dma-buf MR: both fuzz NICs register dynamic importers',
  'kernel rule 62': 'long-term pin placement migrates unpinnable folios (device-coherent, CMA, ZONE_MOVABLE) out first: the fuzz world has none of them; test/driver/pinned-coherent.test.ts covers it',
  'kernel rule 22': 'a MIGRATE invalidation with an owner comes from migrate_vma (device memory): no fuzz command migrates to a device; test/driver/odp-migrate.test.ts covers it',
};

const STEP_ITEMS: CoverageItem[] = [
  step('odp.insert', 'UmemOdp.insert: mmu_interval_notifier_insert with the umem mutex (A5, C1)'),
  step('odp.buildRange', 'UmemOdp.buildRange: the hmm_range of one pass'),
  step('odp.fault', 'UmemOdp.fault: hmm_range_fault under the mmap lock'),
  step('odp.fault:ebusy', 'UmemOdp.fault returned -EBUSY (an invalidation ran): the pass starts over'),
  step('odp.commit', 'UmemOdp.commit: read_retry and the device update under the umem mutex'),
  step('odp.commit:collision', 'UmemOdp.commit found the sequence moved: the pass starts over (rule 31)'),
  step('odp.program', 'UmemOdp.program: install the snapshot in the device page table'),
  step('odp.putMm', 'UmemOdp.putMm: drop the mm reference after the mutex'),
  step('odp.putMm:last', 'UmemOdp.putMm dropped the last mm reference (the process exited during the fault, C10)'),
  step('odp.invalidate', 'UmemOdp.invalidate: the interval notifier callback'),
  step('odp.mayBlock', 'UmemOdp.mayBlock: a blockable range may sleep'),
  step('odp.mayBlock:refused', 'UmemOdp.mayBlock said no: a non-blockable range refused (C2)'),
  step('odp.setSeq', 'UmemOdp.setSeq: mmu_interval_set_seq under the mutex'),
  step('odp.affects', 'UmemOdp.affects: the event concerns the device (C6)'),
  step('odp.clamp', 'UmemOdp.clamp: the range clamped to the umem'),
  step('odp.zap', 'UmemOdp.zap: clear the device entries in C4 runs'),
  step('odp.fence', 'UmemOdp.fence: wait for the sync covering the zaps (C5)'),
  step('odp.unmapPages', 'UmemOdp.unmapPages: forget pages, dirty the writable ones (C8)'),
  step('odp.release', 'UmemOdp.release: drop the mirror and remove the notifier (C9)'),
  step('holdoff.register', 'HoldoffUmem.register: insert the notifier and fault everything in'),
  step('holdoff.invalidate', 'HoldoffUmem.invalidate: the interval notifier callback'),
  step('holdoff.invalidate:refused', 'HoldoffUmem.invalidate refused a non-blockable range (C2)'),
  step('holdoff.clamp', 'HoldoffUmem.clamp: the range clamped to the MR'),
  step('holdoff.holdOff', 'HoldoffUmem.holdOff: wait for DMA on the range, bounded'),
  step('holdoff.holdOff:drained', 'HoldoffUmem.holdOff waited and the DMA drained'),
  step('holdoff.holdOff:timeout', 'HoldoffUmem.holdOff timed out: the MR is revoked'),
  step('holdoff.zap', 'HoldoffUmem.zap: zap, sync, dirty'),
  step('holdoff.fence', 'HoldoffUmem.fence: the sync through the batcher'),
  step('holdoff.revoke', 'HoldoffUmem.revoke: QPs to error, revoke, zap, sync (the timeout path)'),
  step('holdoff.buildRange', 'HoldoffUmem.buildRange: the hmm_range with REQ_FAULT'),
  step('holdoff.fault', 'HoldoffUmem.fault: hmm_range_fault under the mmap lock'),
  step('holdoff.commit', 'HoldoffUmem.commit: read_retry and the device update under the mutex'),
  // The holdoff fault path holds no lock between hmm_range_fault's last check_retry and
  // commit's read_retry, so nearly every collision shows as -EBUSY from the walk: the
  // item is the loop starting over, by either.
  step('holdoff.map:retry', 'HoldoffUmem\'s rule-31 loop started over: fault returned -EBUSY or commit found the sequence moved'),
  step('holdoff.prepareLocalAccess:remap', 'HoldoffUmem.prepareLocalAccess made the remap system call'),
  step('holdoff.dereg', 'HoldoffUmem.dereg: revoke, zap, sync, destroy, remove'),
];

export const COVERAGE_ITEMS: readonly CoverageItem[] = [...TRACE_ITEMS, ...RULE_ITEMS, ...STEP_ITEMS];

// ---- recording --------------------------------------------------------------------------

/** Per simulation: the facts its run reached. */
const facts = new WeakMap<Simulation, Set<string>>();

function note(sim: Simulation, fact: string): void {
  facts.get(sim)?.add(fact);
}

class CoverageUmemOdp extends UmemOdp {
  private get sim(): Simulation {
    return this.owner.ctx.device.kernel.sim;
  }
  override *insert(): Co<number> {
    note(this.sim, 'step:odp.insert');
    return yield* super.insert();
  }
  override *map(va: number, end: number, mode: OdpMapMode): Co<number> {
    if (!mode.fault) note(this.sim, 'odp-registration');
    else if (this.sim.current?.kind === 'user') note(this.sim, 'prefetch');
    return yield* super.map(va, end, mode);
  }
  protected override buildRange(a: OdpMapAttempt): HmmRange {
    note(this.sim, 'step:odp.buildRange');
    return super.buildRange(a);
  }
  protected override *fault(a: OdpMapAttempt): Co<number> {
    note(this.sim, 'step:odp.fault');
    const r = yield* super.fault(a);
    if (r === -EBUSY) note(this.sim, 'step:odp.fault:ebusy');
    return r;
  }
  protected override *commit(a: OdpMapAttempt): Co<number | null> {
    note(this.sim, 'step:odp.commit');
    const r = yield* super.commit(a);
    if (r === null) note(this.sim, 'step:odp.commit:collision');
    return r;
  }
  protected override *program(range: HmmRange, mode: OdpMapMode): Co<number> {
    note(this.sim, 'step:odp.program');
    return yield* super.program(range, mode);
  }
  protected override *putMm(a: OdpMapAttempt): Co {
    note(this.sim, 'step:odp.putMm');
    if (a.mmHeld && a.mm.users === 1) note(this.sim, 'step:odp.putMm:last');
    yield* super.putMm(a);
  }
  override *invalidate(range: MmuNotifierRange, curSeq: number): Co<boolean> {
    note(this.sim, 'step:odp.invalidate');
    return yield* super.invalidate(range, curSeq);
  }
  protected override mayBlock(range: MmuNotifierRange): boolean {
    note(this.sim, 'step:odp.mayBlock');
    const r = super.mayBlock(range);
    if (!r) note(this.sim, 'step:odp.mayBlock:refused');
    return r;
  }
  protected override setSeq(curSeq: number): void {
    note(this.sim, 'step:odp.setSeq');
    super.setSeq(curSeq);
  }
  protected override affects(range: MmuNotifierRange): boolean {
    note(this.sim, 'step:odp.affects');
    return super.affects(range);
  }
  protected override clamp(range: MmuNotifierRange) {
    note(this.sim, 'step:odp.clamp');
    return super.clamp(range);
  }
  protected override *zap(present: readonly number[], last: number): Co {
    note(this.sim, 'step:odp.zap');
    yield* super.zap(present, last);
  }
  protected override *fence(event: number): Co {
    note(this.sim, 'step:odp.fence');
    yield* super.fence(event);
  }
  protected override unmapPages(indices: Iterable<number>): void {
    note(this.sim, 'step:odp.unmapPages');
    super.unmapPages(indices);
  }
  override *release(zap: boolean): Co {
    note(this.sim, 'step:odp.release');
    yield* super.release(zap);
  }
}

class CoverageHoldoffUmem extends HoldoffUmem {
  private get s(): Simulation {
    return this.ctx.device.kernel.sim;
  }
  override *register(): Co<number> {
    note(this.s, 'step:holdoff.register');
    return yield* super.register();
  }
  protected override *invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): Co<boolean> {
    note(this.s, 'step:holdoff.invalidate');
    const r = yield* super.invalidate(sub, range, curSeq);
    if (!r) note(this.s, 'step:holdoff.invalidate:refused');
    return r;
  }
  protected override clamp(range: MmuNotifierRange): [number, number] | null {
    note(this.s, 'step:holdoff.clamp');
    return super.clamp(range);
  }
  protected override *holdOff(first: number, last: number): Co<boolean> {
    note(this.s, 'step:holdoff.holdOff');
    const t0 = this.s.now();
    const r = yield* super.holdOff(first, last);
    if (!r) note(this.s, 'step:holdoff.holdOff:timeout');
    else if (this.s.now() > t0) note(this.s, 'step:holdoff.holdOff:drained');
    return r;
  }
  protected override *zap(first: number, last: number, sync: () => Co): Co<number> {
    note(this.s, 'step:holdoff.zap');
    return yield* super.zap(first, last, sync);
  }
  protected override *fence(event: number): Co {
    note(this.s, 'step:holdoff.fence');
    yield* super.fence(event);
  }
  protected override *revoke(): Co {
    note(this.s, 'step:holdoff.revoke');
    yield* super.revoke();
  }
  protected override buildRange(first: number, last: number, seq: number): HmmRange {
    note(this.s, 'step:holdoff.buildRange');
    return super.buildRange(first, last, seq);
  }
  protected override *fault(range: HmmRange): Co<number> {
    note(this.s, 'step:holdoff.fault');
    const r = yield* super.fault(range);
    if (r === -EBUSY) note(this.s, 'step:holdoff.map:retry');
    return r;
  }
  protected override *commit(range: HmmRange, first: number, last: number): Co<number | null> {
    note(this.s, 'step:holdoff.commit');
    const r = yield* super.commit(range, first, last);
    if (r === null) note(this.s, 'step:holdoff.map:retry');
    return r;
  }
  override *prepareLocalAccess(addr: number, length: number, write: boolean): Co<number> {
    const before = this.stats.remaps;
    const r = yield* super.prepareLocalAccess(addr, length, write);
    if (this.stats.remaps > before) note(this.s, 'step:holdoff.prepareLocalAccess:remap');
    return r;
  }
  override *dereg(): Co<number> {
    note(this.s, 'step:holdoff.dereg');
    return yield* super.dereg();
  }
}

/** The reference target with the recording subclass (same code, same parameters). */
function instrumented(t: FuzzTarget): FuzzTarget {
  if (t.name === 'odp') {
    return {
      ...t, strategy: (sim?: Simulation): UmemStrategy => {
        if (!sim) return odpStrategy({}, CoverageUmemOdp);
        const k = fuzzKnobs(sim.seed);
        return odpStrategy({ batching: k.batching(sim.scheduler), batchingName: k.batchingName }, CoverageUmemOdp);
      },
    };
  }
  if (t.name === 'holdoff') {
    return {
      ...t, strategy: (sim?: Simulation): UmemStrategy => {
        const k = fuzzKnobs(sim?.seed ?? 1);
        return sim
          ? holdoffStrategy({ holdoffTimeoutNs: k.holdoffTimeoutNs, batching: k.batching(sim.scheduler), batchingName: k.batchingName }, CoverageHoldoffUmem)
          : holdoffStrategy({ holdoffTimeoutNs: k.holdoffTimeoutNs }, CoverageHoldoffUmem);
      },
    };
  }
  return t;
}

const MADV_DONTFORK = 10;

/** Watch one run's streams and turn what happens into facts. */
function observe(sim: Simulation, nodes: readonly RdmaNode[]): void {
  const got = new Set<string>();
  facts.set(sim, got);
  const taskName = new Map<number, string>();
  const syscall = new Map<number | null, string[]>();
  const pinnedLive = new Set<string>();
  /** Callbacks in progress per task (a zap or sync issued from inside one). */
  const callbackDepth = new Map<number | null, number>();
  sim.trace$.subscribe((r: TraceRecord) => {
    got.add(`record:${r.type}`);
    switch (r.type) {
      case 'task-spawn':
        taskName.set(r.id, r.name);
        break;
      case 'syscall-begin': {
        let st = syscall.get(r.task);
        if (!st) syscall.set(r.task, (st = []));
        st.push(r.name);
        if (r.name === 'madvise' && r.args.split(', ')[2] === String(MADV_DONTFORK)) got.add('madvise-dontfork');
        if (r.name === 'fork' && pinnedLive.size > 0) got.add('fork-with-pinned-mr');
        break;
      }
      case 'syscall-end':
        syscall.get(r.task)?.pop();
        break;
      case 'invalidate-start': {
        if (!r.blockable) got.add('nonblockable-invalidation');
        got.add(`event:${r.event}`);
        const st = syscall.get(r.task);
        const sc = st?.[st.length - 1];
        if (sc === 'fork') got.add('fork-invalidation');
        if (sc === 'exit' || sc === 'exit_group') got.add('exit-invalidation');
        if (r.task !== null && (taskName.get(r.task) ?? '').includes('ksmd')) got.add('ksm-invalidation');
        break;
      }
      case 'callback-return':
        if (r.ret === 'false') got.add('callback-false');
        break;
      case 'fault':
        got.add(`fault:${r.kind}`);
        break;
      case 'reclaim':
        got.add(`reclaim:${r.outcome}`);
        break;
      case 'gup':
        if (r.pin && r.longterm) got.add('gup:longterm-pin');
        break;
      case 'interval-insert':
        if (r.sub.includes('/child(')) got.add('implicit-child');
        break;
      case 'interval-remove':
        if (r.sub.includes('/child(')) got.add('implicit-child-reaped');
        break;
      case 'lock-acquire':
        // dma-buf MRs publish no binding: the reservation lock shows the importer at work,
        // taken by the move (the exporter) or by the registration and its mapping.
        if (r.lock.startsWith('dma_resv(') && r.task !== null) got.add((taskName.get(r.task) ?? '') === 'fuzz/dmabuf-move' ? 'dmabuf-move' : 'dmabuf-registration');
        break;
      default:
        break;
    }
  });
  for (const n of nodes) {
    const nic = n.nic;
    nic.command$.subscribe((c) => {
      if (c.kind === 'update') got.add('nic-update');
      if (c.kind === 'zap') {
        got.add('nic-zap');
        if ((callbackDepth.get(c.task) ?? 0) > 0) got.add('zap-in-callback');
      }
      if (c.kind === 'sync') {
        got.add('nic-sync');
        for (const d of callbackDepth.values()) if (d > 0) got.add('sync-in-callback');
      }
    });
    nic.fault$.subscribe((f) => {
      got.add('device-fault');
      got.add(`device-fault:${f.side}`);
    });
    nic.faultResume$.subscribe((r) => {
      got.add('fault-resume');
      if (r.error) got.add('fault-resume-error');
    });
    nic.asyncEvent$.subscribe((e) => {
      if (e.type !== 'IBV_EVENT_SRQ_LIMIT_REACHED') got.add('qp-error');
    });
    (n.device.binding$ as Observable<MrBindingEvent>).subscribe((b) => {
      const key = `${b.nic}:${b.key}`;
      if (b.event === 'dereg') {
        got.add('deregistration');
        pinnedLive.delete(key);
        return;
      }
      if (b.length >= 2 ** 64 - 1) got.add('implicit-registration');
      if (b.strategy === 'pinned' && b.mmId !== null) pinnedLive.add(key);
    });
  }
  sim.trace$.subscribe((r: TraceRecord) => {
    if (r.type === 'callback-start') callbackDepth.set(r.task, (callbackDepth.get(r.task) ?? 0) + 1);
    else if (r.type === 'callback-return') callbackDepth.set(r.task, Math.max(0, (callbackDepth.get(r.task) ?? 1) - 1));
  });
}

// ---- campaigns ----------------------------------------------------------------------------

export interface CoverageReport {
  runs: number;
  seed: number;
  /** Runs per strategy and in all. */
  perStrategy: Record<string, number>;
  /** Per item id: runs (over all strategies) that reached it. */
  reached: Record<string, number>;
  unreached: CoverageItem[];
  /** Reference runs that failed (a violation): coverage is measured on sound runs too, but these are bugs. */
  failures: string[];
}

/** The default campaign's size (`lab fuzz --coverage`). */
export const DEFAULT_COVERAGE_RUNS = 200;

/**
 * `runs` runs split evenly among the reference strategies, from fast-check seed `seed`, and
 * what they reached. `targets` runs only those strategies' shares (a test of one part).
 */
export function runCoverage(opts: { runs: number; seed: number; targets?: readonly string[]; onRun?: (strategy: string, index: number) => void }): CoverageReport {
  const per = Math.ceil(opts.runs / REFERENCE_TARGETS.length);
  const reached: Record<string, number> = Object.fromEntries(COVERAGE_ITEMS.map((i) => [i.id, 0]));
  const perStrategy: Record<string, number> = {};
  const failures: string[] = [];
  for (const base of REFERENCE_TARGETS) {
    if (opts.targets && !opts.targets.includes(base.name)) continue;
    const t = instrumented(base);
    let n = 0;
    const sims: Simulation[] = [];
    const r = fuzz(t, {
      runs: per, seed: opts.seed, shrinkBudget: 0,
      config: { observe: (sim, nodes) => { sims.push(sim); observe(sim, nodes); } },
      onRun: () => {
        const sim = sims[sims.length - 1];
        const got = sim ? facts.get(sim) : undefined;
        if (got) for (const item of COVERAGE_ITEMS) if (got.has(item.fact)) reached[item.id]!++;
        n++;
        opts.onRun?.(base.name, n);
      },
    });
    perStrategy[base.name] = n;
    if (r.found) failures.push(`${base.name}: a violation in run ${r.runsToDetection} (lab fuzz --driver ${base.name} --runs ${per} --seed ${opts.seed})`);
  }
  return { runs: opts.runs, seed: opts.seed, perStrategy, reached, unreached: COVERAGE_ITEMS.filter((i) => reached[i.id] === 0), failures };
}

/** The report for people: per item the runs that reached it, then the unreached. */
export function formatCoverage(c: CoverageReport): string[] {
  const total = Object.values(c.perStrategy).reduce((a, b) => a + b, 0);
  const out = [`coverage: ${Object.entries(c.perStrategy).map(([s, n]) => `${n} runs of ${s}`).join(', ')} (fast-check seed ${c.seed})`];
  const width = Math.max(...COVERAGE_ITEMS.map((i) => i.id.length));
  for (const kind of ['trace', 'rule', 'step'] as const) {
    out.push('', kind === 'trace' ? 'trace-record kinds (emitted by):' : kind === 'rule' ? 'spec rules cited by tests:' : 'reference strategy steps:');
    for (const i of COVERAGE_ITEMS.filter((x) => x.kind === kind)) {
      out.push(`  ${i.id.padEnd(width)}  ${String(c.reached[i.id]).padStart(5)}/${total}  ${i.what}`);
    }
  }
  out.push('', 'not expected of a clean reference run: ' + Object.keys(NOT_EXPECTED_TRACE).map((k) => `trace ${k}`).join(', '));
  out.push('outside the fuzz world: ' + Object.keys(OUTSIDE_FUZZ_WORLD).join(', '));
  out.push('');
  if (c.unreached.length === 0) out.push(`every item reached (${COVERAGE_ITEMS.length} items)`);
  else {
    out.push(`unreached (${c.unreached.length} of ${COVERAGE_ITEMS.length}):`);
    for (const i of c.unreached) out.push(`  ${i.id}: ${i.what}`);
  }
  for (const f of c.failures) out.push(`failure: ${f}`);
  return out;
}
