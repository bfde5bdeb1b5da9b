/**
 * What the fuzzer can run against: the three reference strategies, and every broken
 * variant of driver/broken. A reference must produce no violation except those its
 * design makes legal; a broken variant must be caught by its named checker.
 */
import type { ProfileName, Simulation } from '../../kernel-model/index.ts';
import { holdoffStrategy, odpStrategy, pinnedStrategy, type UmemStrategy } from '../../driver/index.ts';
import { BROKEN_DRIVERS, DEFAULT_BROKEN_PARAMS, type BrokenParams } from '../../driver/broken/index.ts';
import { VIOLATION_IDS, type Violation, type ViolationId } from '../../sanitizer/index.ts';
import { fuzzKnobs } from './knobs.ts';

/**
 * The holdoff timeout of a run without a simulation (a strategy built outside a fuzz run):
 * short enough that ordinary transfers outlive it (a 4-page RDMA WRITE with its ACK takes
 * about 4 µs). Fuzz runs draw theirs from the seed (knobs.ts), on both sides of a transfer.
 */
export const FUZZ_HOLDOFF_TIMEOUT_NS = 2_000;

export const FUZZ_PARAMS: BrokenParams = { ...DEFAULT_BROKEN_PARAMS, holdoffTimeoutNs: FUZZ_HOLDOFF_TIMEOUT_NS };

/** The broken drivers' parameters in a run: its holdoff timeout (knobs.ts). */
function paramsFor(sim?: Simulation): BrokenParams {
  return sim ? { ...FUZZ_PARAMS, holdoffTimeoutNs: fuzzKnobs(sim.seed).holdoffTimeoutNs } : FUZZ_PARAMS;
}

export interface FuzzTarget {
  name: string;
  kind: 'reference' | 'broken';
  /** The reference strategy it is (or is a change of, or stands in for): what its steps are called. */
  role?: 'odp' | 'holdoff' | 'pinned';
  nic: 'faultable' | 'non-faultable';
  /** The profile it runs on unless --profile says otherwise. */
  profile: ProfileName;
  /** A fresh strategy for one run (`sim` is that run's simulation). */
  strategy(sim?: Simulation): UmemStrategy;
  /** A user strategy: its module, as the command line named it (`--driver ./file.ts#name`). */
  module?: { ref: string; file: string; exportName: string; sha256: string };
  /** The `--set key=value`s the target was built with (kept by reproducers). */
  sets?: readonly string[];
  /** Violation ids this target may legitimately produce (warnings its design implies). */
  allowed: readonly ViolationId[];
  /** Broken variants: the checker expected to catch it, and the evidence it must show. */
  expectedChecker?: ViolationId;
  evidence?: RegExp;
  detection?: 'fuzz' | 'directed';
  whyDirected?: string;
  bug?: string;
  realWorld?: string;
  file: string;
}

function asViolationId(id: string, who: string): ViolationId {
  if (!(VIOLATION_IDS as readonly string[]).includes(id)) throw new Error(`broken driver ${who}: unknown checker '${id}'`);
  return id as ViolationId;
}

export const REFERENCE_TARGETS: readonly FuzzTarget[] = [
  {
    name: 'pinned', kind: 'reference', role: 'pinned', nic: 'non-faultable', profile: 'linux-6.x', strategy: () => pinnedStrategy(),
    // Pinning's documented hazards, reported as warnings: the MR stops following the process
    // (rdma H1, H3/H8), and the pinned pages cannot move (rules 71-73, H11/H12).
    allowed: ['pinned-incoherence', 'blocked-migration'],
    file: 'driver/umem-pinned.ts',
  },
  {
    name: 'odp', kind: 'reference', role: 'odp', nic: 'faultable', profile: 'linux-6.x',
    // Every batching policy, drawn from the run's seed (knobs.ts).
    strategy: (sim) => {
      if (!sim) return odpStrategy();
      const k = fuzzKnobs(sim.seed);
      return odpStrategy({ batching: k.batching(sim.scheduler), batchingName: k.batchingName });
    },
    allowed: [],
    file: 'driver/umem-odp.ts',
  },
  {
    name: 'holdoff', kind: 'reference', role: 'holdoff', nic: 'non-faultable', profile: 'linux-6.x',
    strategy: (sim) => {
      if (!sim) return holdoffStrategy({ holdoffTimeoutNs: FUZZ_HOLDOFF_TIMEOUT_NS });
      const k = fuzzKnobs(sim.seed);
      return holdoffStrategy({ holdoffTimeoutNs: k.holdoffTimeoutNs, batching: k.batching(sim.scheduler), batchingName: k.batchingName });
    },
    allowed: [],
    file: 'driver/umem-holdoff.ts',
  },
];

/**
 * The evidence of driver/broken's registry as predicates over a violation's text and trail.
 * foll-get-fork: the process's own COW break after fork replaced the page the MR translates:
 * pinned-incoherence names it when a write fault's do_wp_page (mm/memory.c; not a
 * FAULT_FLAG_UNSHARE fault, which mm/gup.c asks for when a FOLL_PIN read finds a page that is
 * not exclusive, nor do_numa_page's migration or reclaim from the fault's allocation) copied
 * the MR's own frame, an anonymous page fork had left not exclusive. The reference pinned
 * strategy's incoherence comes from munmap, mmap, MADV_DONTNEED, and from the faults that
 * follow them (a zero page, its unshare or its COW), never from that.
 */
const EVIDENCE: Record<string, RegExp> = {
  'foll-get-fork': /the MR's, replaced by a COW break: the write copied an anonymous page not exclusive to the process/,
};

export const BROKEN_TARGETS: readonly FuzzTarget[] = BROKEN_DRIVERS.map((b) => {
  const t: FuzzTarget = {
    name: b.name, kind: 'broken', role: b.base, nic: b.nic, profile: b.profile, strategy: (sim) => b.strategy(paramsFor(sim)),
    allowed: [], expectedChecker: asViolationId(b.expectedChecker, b.name), detection: b.detection,
    bug: b.bug, realWorld: b.realWorld, file: b.file,
  };
  if (b.evidence) {
    const ev = EVIDENCE[b.name];
    if (!ev) throw new Error(`broken driver ${b.name}: evidence '${b.evidence}' has no predicate in scenarios/fuzz/targets.ts`);
    t.evidence = ev;
  }
  if (b.whyDirected) t.whyDirected = b.whyDirected;
  return t;
});

export const FUZZ_TARGETS: readonly FuzzTarget[] = [...REFERENCE_TARGETS, ...BROKEN_TARGETS];

export function fuzzTarget(name: string): FuzzTarget | undefined {
  return FUZZ_TARGETS.find((t) => t.name === name);
}

/** Violations that make a run fail for this target (for a reference: everything not allowed). */
export function unexpectedViolations(t: FuzzTarget, violations: readonly Violation[]): Violation[] {
  return violations.filter((v) => !t.allowed.includes(v.id));
}

/** Whether a violation is the one a broken target is expected to produce. */
export function isExpectedCatch(t: FuzzTarget, v: Violation): boolean {
  if (v.id !== t.expectedChecker) return false;
  if (!t.evidence) return true;
  const ev = t.evidence;
  return ev.test(v.message) || v.trail.some((e) => ev.test(e.text));
}
