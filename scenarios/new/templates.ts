/**
 * The files `lab new strategy NAME --from BASE` writes: a commented strategy module that
 * starts as the reference BASE (so it compiles and passes `lab check` as written), and an
 * ava test for it that uses notifier-lab/testing. Each template names the steps a driver
 * author changes (the seams of driver/umem-odp.ts, umem-holdoff.ts, umem-pinned.ts), with
 * the rule each step answers to.
 */

export const TEMPLATE_BASES = ['odp', 'holdoff', 'pinned', 'snapshot-mirror'] as const;
export type TemplateBase = (typeof TEMPLATE_BASES)[number];

/** Where the generated files import notifier-lab from: package sub-paths, or relative paths inside the repository. */
export interface TemplateImports {
  driver: string;
  kernel: string;
  device: string;
  testing: string;
}

export const PACKAGE_IMPORTS: TemplateImports = {
  driver: 'notifier-lab/driver', kernel: 'notifier-lab/kernel', device: 'notifier-lab/device', testing: 'notifier-lab/testing',
};

/** `my-driver` -> `MyDriver` (for class names). */
export function pascal(name: string): string {
  return name.split(/[^A-Za-z0-9]+/).filter(Boolean).map((w) => w[0]!.toUpperCase() + w.slice(1)).join('').replace(/^(\d)/, 'S$1');
}

function odp(name: string, im: TemplateImports): string {
  const cls = `${pascal(name)}UmemOdp`;
  return `/**
 * ${name}: an ODP registration strategy (a NIC that takes page faults), made by
 * \`lab new strategy ${name} --from odp\`. As written it is the reference
 * (driver/umem-odp.ts, mlx5's ODP): change ONE step of ${cls} below, then
 *
 *   npx lab check ./${name}.ts                    # stories, fuzzing, teardown races: a verdict
 *   npx lab run odp-swap-storm --driver ./${name}.ts
 *
 * The steps of a NIC fault (UmemOdp.map runs them in its retry loop, kernel rule 31):
 *   buildRange(a)   the hmm_range to fill: which pages, with REQ_FAULT / REQ_WRITE
 *   fault(a)        hmm_range_fault under the mmap read lock (-EBUSY: start over)
 *   commit(a)       under the umem mutex: mmu_interval_read_retry, then program (rule 28)
 *   program(r, m)   the device page-table update itself
 *   putMm(a)        drop the mm reference, never under the umem mutex (rdma C10)
 * The steps of an invalidation (UmemOdp.invalidate, rdma C2 to C8):
 *   mayBlock(r)     false for the OOM reaper's non-blockable range (C2)
 *   setSeq(seq)     mmu_interval_set_seq, always (kernel rule 26)
 *   affects(r)      does this event concern the device? (rule 22: almost always yes)
 *   clamp(r)        intersect the range with the umem (rule 13: it is not clipped for you)
 *   zap(p, last)    clear the device entries (C4 runs)
 *   fence(event)    wait for a device sync covering the zaps (C5, rule 11)
 *   unmapPages(i)   forget the pages, dirtying those the device could write (C8)
 */
import { UmemOdp, defineStrategy, odpStrategy, type OdpMapAttempt } from '${im.driver}';
import type { Co, HmmRange } from '${im.kernel}';

export class ${cls} extends UmemOdp {
  /**
   * Example of a one-step change, left as the reference: fault in exactly the pages asked
   * for. A fault-around variant would widen [a.start, a.end) here (clipped to
   * [this.start, this.end)) before calling super.
   */
  protected override buildRange(a: OdpMapAttempt): HmmRange {
    return super.buildRange(a);
  }

  /** The invalidation's fence, left as the reference: without it the NIC may keep using freed pages. */
  protected override *fence(event: number): Co {
    yield* super.fence(event);
  }
}

export default defineStrategy({
  name: '${name}',
  nic: 'faultable',
  description: 'ODP, made from the reference by lab new strategy',
  // env.batching is the policy --set batching.policy=... (or a sweep point) chose.
  strategy: (_params, env) => odpStrategy({ name: '${name}', batching: env.batching, batchingName: env.batchingName }, ${cls}),
});
`;
}

function holdoff(name: string, im: TemplateImports): string {
  const cls = `${pascal(name)}Umem`;
  return `/**
 * ${name}: a holdoff registration strategy (a NIC that cannot fault; nothing pinned), made
 * by \`lab new strategy ${name} --from holdoff\`. As written it is the reference
 * (driver/umem-holdoff.ts, a design under study, rdma H3): change ONE step of ${cls}, then
 *
 *   npx lab check ./${name}.ts
 *   npx lab run holdoff-non-faultable --driver ./${name}.ts
 *
 * The steps of an invalidation (HoldoffUmem.invalidate):
 *   clamp(r)               the MR's pages the range touches (kernel rule 13)
 *   holdOff(first, last)   wait for DMA on them to drain, bounded by the timeout
 *   zap(first, last, sync) clear the entries, run the sync, dirty written pages (C4, C5, C8)
 *   fence(event)           the sync, through the batching policy (rule 11)
 *   revoke()               on timeout: QPs to ERROR, revoke, zap, sync: fenced before return
 * The steps of mapping (registration and the provider's remap, kernel rule 31):
 *   buildRange(first, last, seq), fault(range), commit(range, first, last)
 */
import { HoldoffUmem, defineStrategy, holdoffStrategy } from '${im.driver}';
import type { Co } from '${im.kernel}';

/** How long an invalidation waits for DMA before it revokes the MR (virtual ns). */
const HOLDOFF_TIMEOUT_NS = 1_000_000;

export class ${cls} extends HoldoffUmem {
  /** Left as the reference: a one-step change goes here (for example a shorter wait). */
  protected override *holdOff(first: number, last: number): Co<boolean> {
    return yield* super.holdOff(first, last);
  }
}

export default defineStrategy({
  name: '${name}',
  nic: 'non-faultable',
  like: 'holdoff',
  description: 'holdoff, made from the reference by lab new strategy',
  strategy: (_params, env) => holdoffStrategy({
    name: '${name}', holdoffTimeoutNs: HOLDOFF_TIMEOUT_NS, batching: env.batching, batchingName: env.batchingName,
  }, ${cls}),
});
`;
}

function pinned(name: string, im: TemplateImports): string {
  return `/**
 * ${name}: a pinning registration strategy (ib_umem_get: FOLL_PIN | FOLL_LONGTERM, no
 * notifier), made by \`lab new strategy ${name} --from pinned\`. As written it is the
 * reference (driver/umem-pinned.ts). Its seam is how pages are taken and given back
 * (UmemGup): change ONE of how / flags / release, then
 *
 *   npx lab check ./${name}.ts
 *   npx lab run migration-meets-pin --driver ./${name}.ts
 *
 * Pinning's own hazards are warnings (pinned-incoherence, blocked-migration): the MR stops
 * following the process (rdma H1) and its pages cannot move (rules 71-73).
 */
import { IB_UMEM_GUP, defineStrategy, pinnedStrategy, type UmemGup } from '${im.driver}';

const gup: UmemGup = {
  ...IB_UMEM_GUP,
  // Left as the reference: release dirties the pages the device could write (rule 63).
  release: (kernel, how, frames, dirty) => IB_UMEM_GUP.release(kernel, how, frames, dirty),
};

export default defineStrategy({
  name: '${name}',
  nic: 'non-faultable',
  like: 'pinned',
  description: 'pinned, made from the reference by lab new strategy',
  strategy: () => pinnedStrategy(gup, { name: '${name}' }),
});
`;
}

function snapshotMirror(name: string, im: TemplateImports): string {
  const cls = `${pascal(name)}Umem`;
  return `/**
 * ${name}: a whole strategy in one file, for a NIC that cannot fault, made by
 * \`lab new strategy ${name} --from snapshot-mirror\`. Registration faults the range in
 * through hmm_range_fault (the rule-31 loop, no pins) and programs the device; an interval
 * notifier zaps and fences the device before the kernel may reuse a page. After an
 * invalidation the device fails accesses to the zapped pages (no remap: that is the
 * holdoff design's addition). Check it:
 *
 *   npx lab check ./${name}.ts
 */
import {
  EBUSY, EINVAL, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_WRITE, HMM_RANGE_DEFAULT_TIMEOUT_NS, MmuIntervalNotifier,
  Mutex, PAGE_SIZE, PG_DIRTY, ZERO_PFN, folioMarkDirty, hmmRangeFault, hmmRangeInit, mmput, mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove, mmuIntervalReadBegin, mmuIntervalReadRetry, mmuIntervalSetSeq, mmuNotifierRangeBlockable,
  type Co, type MmuNotifierRange,
} from '${im.kernel}';
import { accessWritable, type MemoryRegion } from '${im.device}';
import { defineStrategy, newUmemCounters, type IbUcontext, type IbUmem, type RegMrRequest, type UmemStrategy } from '${im.driver}';

class ${cls} implements IbUmem {
  readonly counters = newUmemCounters();
  readonly addr: number;
  readonly length: number;
  readonly access: number;
  private readonly start: number;
  private readonly pages: number;
  /** Page index -> frame * 2 + (mapped writable): what the device was given. */
  private readonly mirror = new Map<number, number>();
  private readonly mutex: Mutex;
  private readonly notifier: MmuIntervalNotifier;
  private dead = false;

  constructor(readonly ctx: IbUcontext, readonly mr: MemoryRegion, req: RegMrRequest, readonly strategy: string) {
    this.addr = req.addr;
    this.length = req.length;
    this.access = req.access;
    this.start = Math.floor(req.addr / PAGE_SIZE) * PAGE_SIZE;
    this.pages = Math.ceil((req.addr + req.length) / PAGE_SIZE) - this.start / PAGE_SIZE;
    this.mutex = new Mutex(ctx.device.kernel.sim, \`${name} \${mr.lkey}.mutex\`);
    this.notifier = new MmuIntervalNotifier(\`${name} \${mr.lkey}\`);
  }

  /** Subscribe with the mutex as the declared lock (kernel rule 28), then map everything. */
  *register(): Co<number> {
    const r = yield* mmuIntervalNotifierInsert(this.notifier, this.ctx.mm, this.start, this.pages * PAGE_SIZE, {
      invalidate: (_sub, range, curSeq) => this.invalidate(range, curSeq),
    }, { lock: this.mutex });
    if (r < 0) return r;
    const m = yield* this.mapAll();
    if (m < 0) yield* mmuIntervalNotifierRemove(this.notifier);
    return m;
  }

  /** The rule-31 loop: snapshot and fault, then install only if no invalidation raced (under the lock). */
  private *mapAll(): Co<number> {
    const { sim } = this.ctx.device.kernel;
    const mm = this.ctx.mm;
    const nic = this.ctx.device.nic;
    const write = accessWritable(this.access);
    if (!mm.mmgetNotZero()) return -EINVAL;
    const deadline = sim.now() + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    let ret: number;
    for (;;) {
      const seq = yield* mmuIntervalReadBegin(this.notifier);
      const range = hmmRangeInit(this.notifier, this.start, this.start + this.pages * PAGE_SIZE, seq, HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0));
      yield* mm.mmapLock.downRead();
      ret = yield* hmmRangeFault(range);
      mm.mmapLock.upRead();
      if (ret === -EBUSY && sim.now() <= deadline) continue;
      if (ret < 0) break;
      yield* this.mutex.lock();
      if (mmuIntervalReadRetry(this.notifier, seq)) {
        this.mutex.unlock();
        continue;
      }
      const writable = Array.from(range.flags, (f) => write && (f & HMM_PFN_WRITE) !== 0);
      ret = yield* nic.updateEntries(this.mr, 0, range.pfns, writable);
      if (ret === 0) for (let i = 0; i < this.pages; i++) this.mirror.set(i, (range.pfns[i] as number) * 2 + (writable[i] ? 1 : 0));
      this.mutex.unlock();
      break;
    }
    yield* mmput(mm); // after the unlock: the last reference may run exit_mmap and our invalidate (rdma C10)
    return ret;
  }

  /** The callback: clamp, zap, fence, dirty; it returns only once the device cannot use the pages (rule 11). */
  private *invalidate(range: MmuNotifierRange, curSeq: number): Co<boolean> {
    if (!mmuNotifierRangeBlockable(range)) return false; // everything below sleeps (rdma C2)
    yield* this.mutex.lock();
    try {
      mmuIntervalSetSeq(this.notifier, curSeq); // always (kernel rule 26)
      const s = Math.max(range.start, this.start);
      const e = Math.min(range.end, this.start + this.pages * PAGE_SIZE); // not clipped for us (rule 13)
      if (this.dead || s >= e) return true;
      const first = (s - this.start) / PAGE_SIZE;
      const last = Math.ceil((e - this.start) / PAGE_SIZE) - 1;
      const n = yield* this.zapAndFence(first, last);
      if (n > 0) {
        this.counters.invalidations++;
        this.counters.invalidationPages += n;
      }
      return true;
    } finally {
      this.mutex.unlock();
    }
  }

  /** Under the mutex: zap [first, last], sync (C5), then dirty what the device could write (C8). */
  private *zapAndFence(first: number, last: number): Co<number> {
    const nic = this.ctx.device.nic;
    const gone: number[] = [];
    for (let i = first; i <= last; i++) if (this.mirror.has(i)) gone.push(i);
    if (gone.length === 0) return 0;
    yield* nic.zapEntries(this.mr, first, last - first + 1);
    yield* nic.sync();
    const { kernel } = this.ctx.device;
    for (const i of gone) {
      const v = this.mirror.get(i) as number;
      this.mirror.delete(i);
      const frame = Math.floor(v / 2);
      if (!(v & 1) || frame === ZERO_PFN || !kernel.phys.isAllocated(frame)) continue;
      if (kernel.phys.mappingFile[frame]! >= 0) folioMarkDirty(kernel, frame, '${name}');
      else kernel.phys.set(frame, PG_DIRTY);
    }
    return gone.length;
  }

  /** ib_dereg_mr (rdma C9): stop the device first (revoke, zap, sync), then let go of everything. */
  *dereg(): Co<number> {
    if (this.dead) return -EINVAL;
    const nic = this.ctx.device.nic;
    yield* this.mutex.lock();
    this.dead = true;
    nic.revokeMr(this.mr);
    yield* this.zapAndFence(0, this.pages - 1);
    yield* nic.sync();
    this.mutex.unlock();
    nic.destroyMr(this.mr);
    yield* mmuIntervalNotifierRemove(this.notifier);
    return 0;
  }
}

export function ${pascal(name).replace(/^./, (c) => c.toLowerCase())}Strategy(): UmemStrategy {
  return {
    name: '${name}',
    *regMr(ctx, req): Co<IbUmem | number> {
      const { nic } = ctx.device;
      if (req.addr % PAGE_SIZE !== req.iova % PAGE_SIZE) return -EINVAL; // device page i is CPU page i
      const mr = nic.createMr({ pd: req.pd, iova: req.iova, length: req.length, access: req.access, onDemand: false });
      if (typeof mr === 'number') return mr;
      const umem = new ${cls}(ctx, mr, req, '${name}');
      const r = yield* umem.register();
      if (r < 0) {
        nic.destroyMr(mr);
        return r;
      }
      return umem;
    },
  };
}

export default defineStrategy({
  name: '${name}',
  nic: 'non-faultable',
  like: 'holdoff',
  description: 'a snapshot mirror: fault in at registration, zap and fence on invalidation',
  strategy: () => ${pascal(name).replace(/^./, (c) => c.toLowerCase())}Strategy(),
});
`;
}

/** The story the generated test runs, per base: one the reference passes cleanly (or with warnings only). */
export const TEMPLATE_STORY: Record<TemplateBase, string> = {
  odp: 'odp-swap-storm',
  holdoff: 'holdoff-non-faultable',
  pinned: 'migration-meets-pin',
  'snapshot-mirror': 'holdoff-non-faultable',
};

export function strategyTemplate(base: TemplateBase, name: string, im: TemplateImports): string {
  switch (base) {
    case 'odp': return odp(name, im);
    case 'holdoff': return holdoff(name, im);
    case 'pinned': return pinned(name, im);
    case 'snapshot-mirror': return snapshotMirror(name, im);
  }
}

/** The ava test of a generated strategy: one story, a short fuzz campaign, no error-severity violation. */
export function testTemplate(base: TemplateBase, name: string, im: TemplateImports): string {
  const story = TEMPLATE_STORY[base];
  return `// Tests of ${name} (made by lab new strategy). Run: npx ava ${name}.test.ts
// The helpers are the ones notifier-lab's own tests use (notifier-lab/testing).
import test from 'ava';
import { assertNoViolations, fuzzStrategy, runStory } from '${im.testing}';
import strategy from './${name}.ts';

test('${name}: the ${story} story shows no error-severity violation', (t) => {
  const report = runStory('${story}', strategy);
  assertNoViolations(t, report, { severity: 'error' });
});

test('${name}: 30 fuzz runs find no error-severity violation', (t) => {
  const report = fuzzStrategy(strategy, { runs: 30, seed: 1 });
  assertNoViolations(t, report, { severity: 'error' });
});
`;
}
