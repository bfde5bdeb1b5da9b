import type { Co } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { KernelProfile } from './profile.ts';
import { ZERO_PFN } from './page-frames.ts';

/**
 * Kernel variants under study: the designs the seed threads (../shared/seeds/) proposed
 * and mostly never merged, as data layered on a profile (`--profile linux-4.18 --variant
 * hubbard-flag`), so a story can be run under each and compared side by side (`lab
 * compare`). Each is labelled as a proposal with its thread, speaker and date: none of
 * them is mainline behaviour, and where the thread left a detail open the variant says
 * what it assumed.
 *
 * A variant is a set of behaviour switches (the hooks in gup.ts, filemap.ts, vmscan.ts,
 * writeback.ts read them through `proposal()`) plus, where the proposal is a switch a
 * profile already has (fork's early copy, write_protect_seq), a patch of the profile.
 */
export interface ProposalSwitches {
  /**
   * hubbard-flag: a page flag set when GUP takes a reference; try_to_unmap and the
   * filesystem's buffer release leave flagged pages alone; the flag clears only when the
   * page is freed.
   */
  dmaPinnedFlag: boolean;
  /**
   * wait-for-dma-idle: the buffer release and truncate take their own reference and wait
   * until the page holds no reference but the page cache's and its mappings' (DMA-idle).
   */
  waitForDmaIdle: boolean;
  /** gup-dirty-forever: writeback skips pages with GUP references; they stay dirty. */
  gupDirtyForever: boolean;
  /** dirty-at-gup: a writable GUP dirties the page; the release does not dirty it again. */
  dirtyAtGup: boolean;
  /**
   * The read-pin semantics of seed 001: `shared` (Linus Torvalds' first option, Jason
   * Gunthorpe's #1): a read pin takes whatever the page table maps at lookup time, no
   * unsharing; `exclusive` (#2): a read pin unshares any page the process could later
   * COW away from (the zero page included) and fork never breaks a pin (early copy).
   */
  readPin: 'shared' | 'exclusive' | null;
}

export const NO_PROPOSAL: ProposalSwitches = {
  dmaPinnedFlag: false, waitForDmaIdle: false, gupDirtyForever: false, dirtyAtGup: false, readPin: null,
};

/** The profile switches a variant may patch (the ones a proposal became, or needs). */
export type ProfilePatch = Partial<Pick<KernelProfile, 'writeProtectSeq' | 'forkCopiesPinned' | 'gupForceCowBreak' | 'unshareAnyCow' | 'anonExclusive' | 'cowReuse'>>;

/** A row's outcome, worst first: what `lab compare` and the stories' expectations speak in. */
export type OutcomeLabel = 'crash' | 'stuck' | 'data lost' | 'incoherence' | 'ok';
export const OUTCOME_LABELS: readonly OutcomeLabel[] = ['crash', 'stuck', 'data lost', 'incoherence', 'ok'];

/** What a story expects of one (profile, driver, variant) row. */
export interface VariantExpectation {
  /** Violation ids expected, exactly. */
  violations: readonly string[];
  /** The outcome labels expected, exactly (`['ok']` when nothing goes wrong). */
  outcome: readonly OutcomeLabel[];
  /** One line: the thread's claim this row tests, quoted, and what the row shows. */
  reading: string;
  /** Cost figures (scenarios/compare/costs.ts names them) that must be non-zero (`>0`) or zero (`0`). */
  costs?: Readonly<Record<string, '>0' | '0'>>;
}

export interface KernelVariant {
  readonly kind: 'notifier-lab/variant';
  /** `--variant NAME`. */
  readonly name: string;
  /** Always a proposal: no variant is mainline. */
  readonly status: 'proposal';
  /** The seed thread file (../shared/seeds/), or where a user's proposal comes from. */
  readonly seedFile: string;
  readonly speaker: string;
  readonly date: string;
  /** One line: what the proposal changes. */
  readonly summary: string;
  /** The proposal's own words, quoted from its thread. */
  readonly claim: string;
  /** The objection raised in the same thread, if any. */
  readonly objection: { speaker: string; seedFile: string; quote: string } | null;
  readonly switches: Partial<ProposalSwitches>;
  readonly profile: ProfilePatch;
  /** Why the variant cannot run on a profile (null: it can). */
  refuse(profile: KernelProfile): string | null;
  /** A user variant's own expectation for a story (the built-in ones live in the stories). */
  expect?(story: string, profile: string, driver: string): VariantExpectation | null;
}

/** What a profile carries once variants are applied. */
export interface AppliedVariant {
  /** The variant names as given, joined with `+` (`read-pin-exclusive+fork-seqcount`). */
  name: string;
  variants: readonly KernelVariant[];
  switches: ProposalSwitches;
}

/**
 * A proposal of your own, loadable by `--variant ./file.ts#name` like a strategy.
 *
 * @example
 *   export const flagAndWait = defineVariant({
 *     name: 'flag-and-wait', seedFile: 'my-notes.md', speaker: 'me', date: '2026-12',
 *     summary: 'flag pinned pages and wait for DMA-idle in truncate',
 *     claim: 'both halves of seed 000 and 003', switches: { dmaPinnedFlag: true, waitForDmaIdle: true },
 *   });
 */
export function defineVariant(def: {
  name: string; seedFile: string; speaker: string; date: string; summary: string; claim: string;
  objection?: { speaker: string; seedFile: string; quote: string } | null;
  switches?: Partial<ProposalSwitches>; profile?: ProfilePatch;
  refuse?: (profile: KernelProfile) => string | null;
  expect?: (story: string, profile: string, driver: string) => VariantExpectation | null;
}): KernelVariant {
  if (typeof def.name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(def.name) || def.name === 'none') {
    throw new TypeError(`defineVariant: name must be 1 to 64 letters, digits, dot, dash or underscore (not 'none'), got ${JSON.stringify(def.name)}`);
  }
  const known = new Set(Object.keys(NO_PROPOSAL));
  for (const k of Object.keys(def.switches ?? {})) {
    if (!known.has(k)) throw new TypeError(`defineVariant ${def.name}: unknown switch '${k}'; switches: ${[...known].join(', ')}`);
  }
  return {
    kind: 'notifier-lab/variant', status: 'proposal', name: def.name, seedFile: def.seedFile, speaker: def.speaker, date: def.date,
    summary: def.summary, claim: def.claim, objection: def.objection ?? null, switches: def.switches ?? {}, profile: def.profile ?? {},
    refuse: def.refuse ?? (() => null), ...(def.expect ? { expect: def.expect } : {}),
  };
}

export function isVariantDefinition(v: unknown): v is KernelVariant {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'notifier-lab/variant';
}

const needsFollPin = (name: string) => (p: KernelProfile) =>
  p.follPin ? null : `${name} is about FOLL_PIN read pins, which ${p.name} lacks (pin_user_pages came in 5.6): use linux-5.8 or later`;

/** The proposals of the seed threads. */
export const VARIANTS: Readonly<Record<string, KernelVariant>> = {
  'hubbard-flag': defineVariant({
    name: 'hubbard-flag', seedFile: '000_d0573d00011ea04d.txt', speaker: 'John Hubbard', date: '2018-06-17',
    summary: 'a page flag set when GUP takes a reference; try_to_unmap and the buffer release leave flagged pages alone; cleared only when the page is freed',
    claim: 'Leaving the new page flag set "nearly forever" is not great, but on the other hand, once the page is actually freed, the flag does get cleared.',
    objection: {
      speaker: 'Christopher Lameter', seedFile: '000_d0573d00011ea04d.txt',
      quote: 'Multiple processes may register a page with the RDMA subsystem. How do you decide when to clear the flag? I think you would need an additional refcount for the number of times the page was registered.',
    },
    switches: { dmaPinnedFlag: true },
  }),
  'wait-for-dma-idle': defineVariant({
    name: 'wait-for-dma-idle', seedFile: '003_41b64ade4f32c8cf.txt', speaker: 'Dan Williams', date: '2018-06-18',
    summary: 'the buffer release and truncate take their own reference and wait until the page is DMA-idle (no reference but the page cache\'s and the mappings\')',
    claim: 'have try_to_unmap() take it\'s own reference and wait for the page reference count to drop to one so that the truncate path knows the page is dma-idle',
    // Seed 003 raises no objection to the wait itself; the nearest is Hubbard's, on waiting
    // for a device at all (seed 000). Under a long-term pin the wait never ends.
    objection: {
      speaker: 'John Hubbard', seedFile: '000_d0573d00011ea04d.txt',
      quote: 'On one hand, it\'s wild to hold off the invalidation perhaps for a long time',
    },
    switches: { waitForDmaIdle: true },
  }),
  'gup-dirty-forever': defineVariant({
    name: 'gup-dirty-forever', seedFile: '002_c720179251b970bc.txt', speaker: 'Jérôme Glisse', date: '2019-03-19',
    summary: 'writeback skips pages with GUP references (step [2]\'s bias count, modelled exactly): they stay dirty and are never cleaned while pinned',
    claim: 'keep the page always dirty and never allow page write back to restore the page in a clean state. This does disable thing like COW and other fs feature',
    objection: {
      speaker: 'Jérôme Glisse', seedFile: '002_c720179251b970bc.txt',
      quote: 'This does disable thing like COW and other fs feature but at least it seems to be the best thing we can do.',
    },
    switches: { gupDirtyForever: true },
  }),
  'dirty-at-gup': defineVariant({
    name: 'dirty-at-gup', seedFile: '002_c720179251b970bc.txt', speaker: 'Andrea Arcangeli (relayed by Jérôme Glisse)', date: '2019-03-19',
    summary: 'a writable GUP dirties the page (set_page_dirty at GUP time); the release dirties nothing',
    claim: 'maybe doing the set_page_dirty() at GUP time (when GUP with write) not when the GUP user calls put_page() [...] it is always safe to do so at GUP time',
    objection: {
      speaker: 'Dave Chinner', seedFile: '002_c720179251b970bc.txt',
      quote: 'if it\'s a file backed page, what prevents background writeback from cleaning the dirty page ~30s into a long term pin?',
    },
    switches: { dirtyAtGup: true },
  }),
  'read-pin-shared': defineVariant({
    name: 'read-pin-shared', seedFile: '001_0d3a537837c8270b.txt', speaker: 'Linus Torvalds (option 1; Jason Gunthorpe\'s #1)', date: '2020-09-28',
    summary: 'a read pin is a read GUP: it pins what the page table maps at lookup time (the zero page included); nothing unshares, fork copies nothing early for it',
    claim: 'a read pin isn\'t really any different from a read GUP. You get a reference to a page that is valid at the time of the page lookup, and absolutely nothing more.',
    objection: {
      speaker: 'Jason Gunthorpe', seedFile: '001_0d3a537837c8270b.txt',
      quote: 'Here the kernel will pin the zero page and will never see any user modifications to the buffer. We must do #2.',
    },
    switches: { readPin: 'shared' },
    profile: { gupForceCowBreak: false, unshareAnyCow: false },
    refuse: needsFollPin('read-pin-shared'),
  }),
  'read-pin-exclusive': defineVariant({
    name: 'read-pin-exclusive', seedFile: '001_0d3a537837c8270b.txt', speaker: 'Linus Torvalds (option 2; Jason Gunthorpe\'s #2)', date: '2020-09-28',
    summary: 'a read pin is exclusive: it unshares what the process could COW away from (the zero page included), and fork copies pinned pages early so the pin never breaks',
    claim: 'the "this is an exclusive pin, and it _will_ follow the source VM changes, and never break"',
    objection: {
      speaker: 'Linus Torvalds', seedFile: '001_0d3a537837c8270b.txt',
      quote: 'it absolutely needs to do a page COW at the time of the pinning to get that initial exclusive guarantee in the first place',
    },
    switches: { readPin: 'exclusive' },
    // "Never break" needs three things: unsharing at pin time (the switch), fork copying the
    // pinned page early (5.9's has_pinned), and a write fault reusing the exclusive pinned
    // page instead of copying it: the model borrows PageAnonExclusive (5.19), the mechanism
    // that eventually delivered this option, since refcount-based reuse (5.9) copies a pinned page.
    profile: { forkCopiesPinned: true, anonExclusive: true, cowReuse: 'anon-exclusive' },
    refuse: needsFollPin('read-pin-exclusive'),
  }),
  'fork-seqcount': defineVariant({
    name: 'fork-seqcount', seedFile: '001_0d3a537837c8270b.txt', speaker: 'Linus Torvalds, Jason Gunthorpe', date: '2020-09-28',
    summary: 'a write seqcount around copy_page_range: FOLL_PIN gup_fast backs off to the slow path while fork copies (landed in 5.11 as mm->write_protect_seq, 57efa1fe5957)',
    claim: 'All of gup_fast and copy_mm could be wrappered in a seq count so that gup_fast always goes to the slow path if fork is concurrent.',
    objection: {
      speaker: 'Jason Gunthorpe', seedFile: '001_0d3a537837c8270b.txt',
      quote: 'As you say fork & pin & threads is already questionable, so an unconditional slow path on race should be OK.',
    },
    profile: { writeProtectSeq: true },
    refuse: (p) => (p.writeProtectSeq ? `fork-seqcount is part of ${p.name} already (mm->write_protect_seq, 5.11, 57efa1fe5957): use it on linux-5.8 or older`
      : p.follPin ? null : `fork-seqcount makes FOLL_PIN gup_fast back off, and ${p.name} has no FOLL_PIN (5.6): use linux-5.8`),
  }),
};

export const VARIANT_NAMES = Object.keys(VARIANTS);

/**
 * Designs under study that are drivers, not kernels: listed beside the variants (`lab
 * variants`), run with `--driver`.
 */
export const DRIVER_PROPOSALS: readonly { name: string; seedFile: string; speaker: string; date: string; summary: string; run: string }[] = [
  {
    name: 'holdoff', seedFile: '000_d0573d00011ea04d.txt', speaker: 'Christopher Lameter', date: '2018-06-17',
    summary: 'no pins: the notifier callback holds off the invalidation until in-flight DMA completes, then zaps so later work refaults or remaps',
    run: 'lab run holdoff-non-faultable --driver holdoff (and the revoke-* stories)',
  },
];

/** A built-in variant by name, or an error naming the valid ones. */
export function variantByName(name: string): KernelVariant | { error: string } {
  const v = Object.hasOwn(VARIANTS, name) ? VARIANTS[name] : undefined;
  return v ?? { error: `unknown variant '${name}'; valid variants: none, ${VARIANT_NAMES.join(', ')}, a+b to combine, or ./file.ts#export (defineVariant)` };
}

/**
 * Layer variants on a profile: the profile patches in order, the switches OR-ed (a later
 * read-pin choice wins). An error names a variant that cannot run on the profile.
 */
export function applyVariants(profile: KernelProfile, variants: readonly KernelVariant[]): KernelProfile | { error: string } {
  if (variants.length === 0) return profile;
  let p: KernelProfile = { ...profile };
  const switches: ProposalSwitches = { ...NO_PROPOSAL };
  for (const v of variants) {
    const why = v.refuse(profile);
    if (why) return { error: why };
    p = { ...p, ...v.profile };
    for (const [k, val] of Object.entries(v.switches) as [keyof ProposalSwitches, ProposalSwitches[keyof ProposalSwitches]][]) {
      if (k === 'readPin') switches.readPin = val as ProposalSwitches['readPin'];
      else if (val) (switches as unknown as Record<string, boolean>)[k] = true;
    }
  }
  p.variant = { name: variants.map((v) => v.name).join('+'), variants, switches };
  return p;
}

/** The proposal switches a kernel runs under (all off without a variant). */
export function proposal(kernel: Kernel): ProposalSwitches {
  return kernel.profile.variant?.switches ?? NO_PROPOSAL;
}

// ---- GUP references, counted exactly --------------------------------------------------

/**
 * Outstanding GUP references per frame, kept only under a variant. Glisse's step [2]
 * (seed 002) counts them with a bias in the refcount, whose false positives are the
 * gup-bias-false-positive story; here the count is exact (assumed), so gup-dirty-forever
 * is judged on its own merits, and wait-for-dma-idle can name what it waits for.
 */
const gupRefs = new WeakMap<Kernel, Map<number, number>>();

export function proposalGupGrab(kernel: Kernel, frame: number): void {
  if (!kernel.profile.variant || frame === ZERO_PFN) return;
  let m = gupRefs.get(kernel);
  if (!m) gupRefs.set(kernel, (m = new Map()));
  m.set(frame, (m.get(frame) ?? 0) + 1);
  if (proposal(kernel).dmaPinnedFlag && !kernel.phys.has(frame, PG_DMA_PINNED)) {
    kernel.phys.set(frame, PG_DMA_PINNED);
    kernel.sim.emit({ type: 'proposal', node: kernel.node, what: 'flag-set', frame, caller: 'get_user_pages' });
  }
}

export function proposalGupRelease(kernel: Kernel, frame: number): void {
  const m = gupRefs.get(kernel);
  if (!m || frame === ZERO_PFN) return;
  const n = (m.get(frame) ?? 0) - 1;
  if (n > 0) m.set(frame, n);
  else m.delete(frame);
}

/** GUP references the frame holds now (0 without a variant). */
export function gupReferences(kernel: Kernel, frame: number): number {
  return gupRefs.get(kernel)?.get(frame) ?? 0;
}

/**
 * hubbard-flag's PG_dma_pinned. The bit is the model's (the 2018 patch burned a page flag,
 * 64-bit only); PhysicalMemory clears every flag when a frame is freed, which is the only
 * place the proposal clears it.
 */
export const PG_DMA_PINNED = 1 << 28;

// ---- wait-for-dma-idle ----------------------------------------------------------------

/**
 * How often a task waiting for DMA-idle looks at the refcount again (virtual ns). Assumed:
 * the thread names no mechanism (a wait_var_event on the refcount would do); 10 ms keeps a
 * wait of minutes within a run's event bound.
 */
export const DMA_IDLE_POLL_NS = 10_000_000;

/**
 * Dan Williams' wait (seed 003): sleep until the page holds no more than `expected`
 * references (the page cache's and its mappings': no DMA), or until the frame is gone.
 * Traced as `dma-idle-wait` and `dma-idle-done`; a wait that never ends is what `lab
 * compare` reports as stuck, naming the GUP holder. Returns the virtual ns waited.
 */
export function* waitForDmaIdle(kernel: Kernel, frame: number, expected: () => number, caller: string): Co<number> {
  const { phys, sim } = kernel;
  if (phys.refcount[frame]! <= expected()) return 0;
  const generation = phys.generation[frame];
  const t0 = sim.now();
  sim.emit({ type: 'proposal', node: kernel.node, what: 'dma-idle-wait', frame, caller });
  while (phys.isAllocated(frame) && phys.generation[frame] === generation && phys.refcount[frame]! > expected()) {
    yield* sim.sleep(DMA_IDLE_POLL_NS);
  }
  sim.emit({ type: 'proposal', node: kernel.node, what: 'dma-idle-done', frame, caller });
  return sim.now() - t0;
}
