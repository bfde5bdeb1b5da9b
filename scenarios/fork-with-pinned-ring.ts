import {
  EINVAL, FOLL_LONGTERM, PAGE_SIZE, ZERO_PFN, getUserPagesFast, pinUserPagesFast, putUserPages, pteFrame, unpinUserPages, vpn,
  PROFILES, errnoName, type Co, type Process, type ProfileName,
} from '../kernel-model/index.ts';
import {
  IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_REMOTE_READ, IBV_SEND_SIGNALED, IBV_WR_RDMA_READ, NO_ODP_CAPS, wcStatusName,
  type MemoryRegion,
} from '../device/index.ts';
import {
  IBV_FORK_ENABLED, IBV_FORK_UNNEEDED, newUmemCounters, pinnedStrategy,
  type IbUcontext, type IbUmem, type RegMrRequest, type UmemCounters, type UmemStrategy,
} from '../driver/index.ts';
import { P, completions, connectRc, equalBytes, load, mapAnon, must, openApp, regOk, store, type App } from './app.ts';
import type { ScenarioContext, ScenarioDefinition } from './scenario.ts';
import type { AppliedVariant, VariantExpectation } from '../kernel-model/index.ts';

/**
 * Seed 001's read-pin semantics as rows (`lab compare`): under `read-pin-shared` a pin is
 * what the page table mapped at lookup, so a never-written ring pins the zero page and a
 * fork leaves the pin behind the parent's COW; under `read-pin-exclusive` the pin never
 * breaks (unshared at pin time, copied early at fork, reused in place on write).
 * `fork-seqcount` alone closes a race this story does not run (a gup_fast during fork's
 * copy; test/kernel-model/variants.test.ts runs it), so it changes nothing here.
 */
function ringRow(variant: AppliedVariant | null, plainIncoherent: boolean, story: 'zero-page' | 'fork'): VariantExpectation | null {
  const incoherent = { violations: ['pinned-incoherence'], outcome: ['incoherence'] as const };
  const coherent = { violations: [], outcome: ['ok'] as const };
  const name = variant?.name ?? 'none';
  const sw = variant?.switches;
  if (name === 'none' || name === 'fork-seqcount') {
    return { ...(plainIncoherent ? incoherent : coherent), reading: name === 'none' ? 'the kernel as it was' : 'seed 001: the seqcount closes the gup_fast/fork race; this story has no such race, so nothing changes' };
  }
  if (sw?.readPin === 'exclusive') {
    return { ...coherent, reading: 'seed 001, Linus\'s option 2: "an exclusive pin, and it _will_ follow the source VM changes, and never break": the device sees every write' };
  }
  if (sw?.readPin === 'shared') {
    // A write pin (ib_umem's FOLL_WRITE) is not a read pin: only the profile's fork decides.
    const shared = story === 'zero-page' ? true : plainIncoherent;
    return {
      ...(shared ? incoherent : coherent),
      reading: story === 'zero-page'
        ? 'seed 001, Linus\'s option 1: "a reference to a page that is valid at the time of the page lookup, and absolutely nothing more": the zero page, never written (Gunthorpe: "We must do #2")'
        : 'seed 001, option 1 for read pins; this ring is pinned for write (ib_umem), so the profile\'s fork decides',
    };
  }
  return null;
}

/** One ring entry: what the producer writes and the device must see. */
const ENTRY = 64;

function entry(n: number): Uint8Array {
  const out = new Uint8Array(ENTRY);
  out.set(new TextEncoder().encode(`ring entry ${n}`));
  return out;
}

/**
 * A generic driver's ring registration, the one Jason Gunthorpe sketches in seed 001
 * ("ring = mmap(); pin_user_pages(FOLL_LONGTERM); ring[0] = [..]; trigger_kernel()"): a
 * read-only long-term pin, since the device only reads the ring, with the frames handed
 * to the NIC in a plain (non-faultable) MR so the peer's RDMA READ stands in for
 * trigger_kernel(). Before 5.6 there is no pin_user_pages: get_user_pages(FOLL_LONGTERM),
 * i.e. get_user_pages_longterm. No FOLL_WRITE, no FOLL_FORCE: that is the difference with
 * ib_umem_get before 6.2 (see umemGupFlags).
 *
 * Its umem reports the strategy name `pinned` because that is what the sanitizer judges it
 * as: a registration that keeps the frames it was given and follows no notifier.
 */
export function genericRingPinStrategy(): UmemStrategy {
  return {
    name: 'generic',
    *regMr(ctx: IbUcontext, req: RegMrRequest): Co<IbUmem | number> {
      const { kernel, nic } = ctx.device;
      const start = Math.floor(req.addr / PAGE_SIZE) * PAGE_SIZE;
      const npages = Math.ceil((req.addr + req.length) / PAGE_SIZE) - start / PAGE_SIZE;
      if (npages <= 0 || req.addr !== req.iova) return -EINVAL;
      const frames: number[] = [];
      const pin = kernel.profile.follPin;
      const n = pin
        ? yield* pinUserPagesFast(ctx.mm, start, npages, FOLL_LONGTERM, frames)
        : yield* getUserPagesFast(ctx.mm, start, npages, FOLL_LONGTERM, frames);
      const release = () => (pin ? unpinUserPages(kernel, frames) : putUserPages(kernel, frames));
      if (n !== npages) {
        release();
        return n < 0 ? n : -EINVAL;
      }
      const mr = nic.createMr({ pd: req.pd, iova: req.iova, length: req.length, access: req.access, onDemand: false });
      if (typeof mr === 'number') {
        release();
        return mr;
      }
      yield* nic.updateEntries(mr, 0, frames, false);
      return new GenericRingUmem(ctx, mr, req, frames, release);
    },
  };
}

class GenericRingUmem implements IbUmem {
  readonly strategy = 'pinned';
  readonly counters: UmemCounters = newUmemCounters();
  readonly addr: number;
  readonly length: number;
  readonly access: number;
  private released = false;

  constructor(readonly ctx: IbUcontext, readonly mr: MemoryRegion, req: RegMrRequest, readonly frames: readonly number[], private readonly release: () => void) {
    this.addr = req.addr;
    this.length = req.length;
    this.access = req.access;
  }

  *dereg(): Co<number> {
    if (this.released) return -EINVAL;
    this.released = true;
    const { nic } = this.ctx.device;
    nic.destroyMr(this.mr);
    yield* nic.sync();
    this.release();
    return 0;
  }
}

type Variant = 'default' | 'zero-page' | 'dontfork';

/** The peer's view: RDMA READ the first ring entry into its buffer, return the bytes. */
function* peerRead(peer: App, qp: Parameters<App['ctx']['postSend']>[0], dst: number, dstLkey: number, ring: number, rkey: number, wrId: number): Co<{ ok: boolean; bytes: Uint8Array; status: string }> {
  must(yield* peer.ctx.postSend(qp, {
    wrId, opcode: IBV_WR_RDMA_READ, sendFlags: IBV_SEND_SIGNALED,
    sgList: [{ addr: dst, length: ENTRY, lkey: dstLkey }],
    rdma: { remoteAddr: ring, rkey },
  }), 'post RDMA READ');
  const [wc] = yield* completions(peer, 1);
  const bytes = yield* load(peer, dst, ENTRY);
  return { ok: wc?.status === 0, bytes, status: wc ? wcStatusName(wc.status) : 'no completion' };
}

/** What a ring entry says, for the narrative: its text, or "zeros". */
function text(bytes: Uint8Array): string {
  let end = 0;
  while (end < bytes.length && (bytes[end] as number) >= 0x20 && (bytes[end] as number) < 0x7f) end++;
  return end === 0 ? 'zeros' : `'${new TextDecoder().decode(bytes.subarray(0, end))}'`;
}

function setupRing(ctx: ScenarioContext, variant: Variant): () => Co<void> {
  const generic = ctx.driver === 'generic';
  const host = ctx.node('host', { device: { nonOdp: generic ? genericRingPinStrategy() : pinnedStrategy() }, caps: { odp: NO_ODP_CAPS } });
  const peerNode = ctx.node('peer', { device: { nonOdp: pinnedStrategy() } });
  const k = host.kernel;
  const app = openApp(host, k.createProcess('producer'));
  const peer = openApp(peerNode, peerNode.kernel.createProcess('consumer'));
  const profile = ctx.profile;

  return function* (): Co<void> {
    const ring = yield* mapAnon(app, 1);
    const frameAt = () => pteFrame(app.p.mm.pageTable.get(vpn(ring)));
    if (variant === 'dontfork') {
      const r = app.ctx.forkInit();
      const state = app.ctx.isForkInitialized();
      ctx.say(`ibv_fork_init() = ${r}: ${state === IBV_FORK_UNNEEDED
        ? `${profile.name} copies pinned pages at fork, so rdma-core enables nothing (IBV_FORK_UNNEEDED)`
        : state === IBV_FORK_ENABLED ? 'every registration will be marked MADV_DONTFORK' : 'not enabled'}`);
    }
    if (variant !== 'zero-page') {
      yield* store(app, ring, entry(1));
      ctx.say(`the producer mmaps a one-page ring and writes entry 1 (frame ${frameAt()})`);
    } else {
      ctx.say('the producer mmaps a one-page ring and registers it before writing anything: a read of it would map the shared zero page');
    }

    // Registration: the device will only read the ring.
    const access = IBV_ACCESS_REMOTE_READ;
    const mr = yield* regOk(app, ring, P, access);
    const pinnedFrame = (mr.umem as IbUmem & { frames?: readonly number[] }).frames?.[0] ?? -1;
    const forced = !generic && (profile.umemForceWrite || !profile.follPin);
    const gup = profile.follPin ? 'pin_user_pages' : 'get_user_pages';
    const how = generic
      ? `the generic driver's ${gup}(FOLL_LONGTERM), read-only`
      : forced
        ? `ib_umem_get's ${gup}(FOLL_LONGTERM | FOLL_WRITE | FOLL_FORCE), RDMA's historical flags even for a read-only MR`
        : `ib_umem_get's ${gup}(FOLL_LONGTERM), read-only`;
    const zeroPinned = pinnedFrame === ZERO_PFN;
    ctx.say(`registered the ring for REMOTE_READ through ${how}: the device holds frame ${pinnedFrame}` +
      (zeroPinned ? ' - THE ZERO PAGE: this pin will never see a write by the process'
        : variant !== 'zero-page' ? ''
          : forced ? ' - the forced write fault gave the process a private page before it was pinned'
            : profile.gupForceCowBreak
              ? ' - 5.8\'s GUP broke COW for the read pin (should_force_cow_break, 17839856fd58; gone in 5.9): a private page the process will write'
              : ' - GUP unshared the zero page first (FAULT_FLAG_UNSHARE, kernel rule 61, 6.2+): a private page the process will write'));
    ctx.figure('pinned frame is the zero page', zeroPinned ? 'yes' : 'no');

    const [qp] = connectRc(peer, app);
    const dst = yield* mapAnon(peer, 1);
    const dstMr = yield* regOk(peer, dst, P, IBV_ACCESS_LOCAL_WRITE);

    let child: Process | null = null;
    if (variant !== 'zero-page') {
      const first = yield* peerRead(peer, qp, dst, dstMr.lkey, ring, mr.rkey, 1);
      ctx.say(`the consumer RDMA READs the ring: ${first.status}, ${text(first.bytes)}`);
      const forked = must(yield* app.p.fork('helper'), 'fork');
      child = typeof forked === 'number' ? null : forked;
      const childFrame = child ? pteFrame(child.mm.pageTable.get(vpn(ring))) : -1;
      if (!child?.mm.findVma(ring)) ctx.say('fork(): the ring VMA is VM_DONTCOPY, so the helper has no ring at all; the parent\'s PTE stays writable (rule 69)');
      else if (childFrame !== frameAt()) ctx.say(`fork(): MMF_HAS_PINNED and a maybe-pinned page: the helper gets its own copy at once (frame ${childFrame}); the parent keeps the pinned page, writable (rule 67, 5.9+)`);
      else ctx.say(`fork(): the ring page is now COW-shared: parent and helper map frame ${childFrame} read-only (${profile.follPin ? 'no early copy before 5.9' : 'FOLL_GET sets no MMF_HAS_PINNED'}, rule 70)`);
      ctx.figure('child got an early copy', child && child.mm.findVma(ring) && childFrame !== frameAt() ? 'yes' : 'no');
    }

    // The producer writes; the device must see it.
    const n = variant === 'zero-page' ? 1 : 2;
    const before = frameAt();
    yield* store(app, ring, entry(n));
    const after = frameAt();
    ctx.say(`the producer writes entry ${n} into the ring: ` + (after === before
      ? `in place, frame ${after}`
      : before === ZERO_PFN || before <= 0 ? `its first write fault gives it a fresh page, frame ${after}` : `a COW fault moves the producer to frame ${after}; the device still reads frame ${before}`));
    const seen = yield* peerRead(peer, qp, dst, dstMr.lkey, ring, mr.rkey, 2);
    const coherent = seen.ok && equalBytes(seen.bytes, entry(n));
    ctx.say(`the consumer RDMA READs the ring: ${seen.status}, ${text(seen.bytes)} - ${coherent
      ? 'the device sees what the process wrote'
      : 'STALE: the device reads a page the process no longer writes (pinned-incoherence)'}`);
    ctx.figure('device saw the write', coherent ? 'yes' : 'no');
    ctx.figure('device frame', pinnedFrame);
    ctx.figure('process frame', after);

    if (child) {
      const childView = yield* child.load(ring, ENTRY);
      ctx.say(typeof childView === 'number'
        ? `the helper touches the ring: ${errnoName(childView)} (a SIGSEGV: it has no mapping there)`
        : `the helper still sees ${text(childView)}: its snapshot of the ring at fork`);
      must(yield* child.exit(), 'exit(helper)');
    }
    must(yield* app.ctx.deregMr(mr), 'dereg_mr');
    yield* app.ctx.close();
    yield* peer.ctx.close();
  };
}

const HISTORY = 'linux-5.8';

/**
 * The kernels on which a read-only long-term pin of a never-written ring pins the zero
 * page: all but 5.8 (GUP's forced COW break, should_force_cow_break, 17839856fd58,
 * removed in 5.9 by a308c71bf1e6) and 6.2+ (unshare, rule 61). Seed 001's Jason
 * Gunthorpe (September 2020) describes the 5.9-to-6.1 kernel, so the story's default is
 * linux-5.15.
 */
function pinsZeroPage(profile: ProfileName): boolean {
  const p = PROFILES[profile];
  return !p.gupForceCowBreak && !p.unshareAnyCow;
}

/**
 * Seed 001 (Jason Gunthorpe, Linus Torvalds, Peter Xu, September 2020, "mm: Introduce
 * mm_struct.has_pinned"): during the 5.9 cycle COW became "copy unless we are the only
 * reference", and RDMA broke: after fork() a parent's pinned ring page was COW-shared, and
 * the parent's next write moved the parent to a fresh page while the NIC kept reading the
 * old one (kernel rule 70, hazard H8, rdma H2).
 *
 * The story: a producer writes entry 1 into a one-page ring, registers it with a pinned
 * MR for a consumer's RDMA READs, forks a helper (any system(3) will do) and writes entry 2.
 * On linux-5.8 (and before) the page is COW-shared at fork, the write faults, the
 * producer moves to a copy, and the consumer reads entry 1 again: `pinned-incoherence`
 * (a warning: nothing is corrupted, the device and the process just stopped sharing). On
 * linux-5.15 and linux-6.x the mm has MMF_HAS_PINNED and the page looks pinned, so fork
 * gives the helper the copy at once and the producer keeps writing the page the NIC reads
 * (rules 66 to 68; the fix that shipped in 5.9, 70e806e4e645): expect nothing. (On 5.8
 * and before, COW reuse went by mapcount: had the helper exited before the producer's
 * write, the producer would have kept the pinned page; this story's helper is still alive.)
 *
 * Default profile linux-5.8, the kernel of the thread. The two other halves of the story
 * are their own scenarios (their expectations differ): `pinned-ring-zero-page` (the read
 * pin of a never-written ring) and `fork-with-pinned-ring-dontfork` (the historical
 * workaround).
 */
export const forkWithPinnedRing: ScenarioDefinition = {
  name: 'fork-with-pinned-ring',
  summary: 'seed 001: pin a ring, fork, the parent writes, the NIC reads: stale before 5.9 (COW moved the parent), coherent on 6.x (the child gets the copy)',
  seeds: ['001'],
  defaultProfile: HISTORY,
  drivers: ['pinned'],
  defaultDriver: 'pinned',
  untilNs: 1_000_000_000,
  expect: (profile: ProfileName) => (PROFILES[profile].forkCopiesPinned ? [] : ['pinned-incoherence']),
  expectVariant: (profile, _driver, variant) => ringRow(variant, !PROFILES[profile].forkCopiesPinned, 'fork'),
  setup: (ctx) => setupRing(ctx, 'default'),
};

/**
 * Seed 001, Jason Gunthorpe's ring-to-device example: "ring = mmap();
 * pin_user_pages(FOLL_LONGTERM); ring[0] = [..]; trigger_kernel(). [...] Here the kernel
 * will pin the zero page and will never see any user modifications to the buffer."
 *
 * Driver `generic` is that generic driver: a read-only FOLL_LONGTERM pin of a ring nobody
 * wrote yet. On linux-5.15 (the 5.9-to-6.1 kernel Jason describes) and before 5.8, GUP
 * pins the shared zero page; the producer's first write faults in a fresh page and the
 * device keeps reading zeros (`pinned-incoherence`). On linux-5.8 it does not: 5.8's GUP
 * broke COW for every pinning or GET lookup in a private mapping (should_force_cow_break,
 * mm/gup.c, 17839856fd58), so the read pin write-faulted a private page first; 5.9 removed
 * that (a308c71bf1e6) when fork learned to copy pinned pages, and the zero-page pin came
 * back. From 6.2 (linux-6.x) a read-only long-term pin of a page the process cannot yet
 * write unshares it first (FAULT_FLAG_UNSHARE, kernel rule 61): the pin follows the
 * process's writes.
 *
 * Driver `pinned` is RDMA's historical answer, the flags Jason calls "uglier still":
 * ib_umem_get before 6.2 pins even a read-only MR with FOLL_WRITE | FOLL_FORCE, so the
 * forced write fault gives the process a private page before it is pinned: coherent on
 * every profile, at the price of dirtying the page and refusing read-only shared mappings.
 * No fork here: the point is what a read pin means, Linus's option 1 ("a shared copy from
 * the page tables") against option 2 ("an exclusive pin that will follow the source VM").
 *
 * Default: linux-5.15 with the generic driver, the failure the thread discusses.
 */
export const pinnedRingZeroPage: ScenarioDefinition = {
  name: 'pinned-ring-zero-page',
  summary: 'seed 001: a read-only long-term pin of a never-written ring pins the zero page (generic driver; not on 5.8, which broke COW in GUP, nor 6.2+); RDMA\'s FOLL_WRITE|FOLL_FORCE pin never does',
  seeds: ['001'],
  defaultProfile: 'linux-5.15',
  drivers: ['generic', 'pinned'],
  defaultDriver: 'generic',
  untilNs: 1_000_000_000,
  expect: (profile: ProfileName, driver: string) => (driver === 'generic' && pinsZeroPage(profile) ? ['pinned-incoherence'] : []),
  // ib_umem's FOLL_WRITE|FOLL_FORCE pin is no read pin: the read-pin variants change nothing for driver 'pinned'.
  expectVariant: (profile, driver, variant) => (driver === 'generic'
    ? ringRow(variant, pinsZeroPage(profile), 'zero-page')
    : variant === null || ['read-pin-shared', 'read-pin-exclusive', 'fork-seqcount'].includes(variant.name) ? { violations: [], outcome: ['ok'], reading: 'a write pin (FOLL_WRITE | FOLL_FORCE) is no read pin: coherent under every read-pin semantics' } : null),
  setup: (ctx) => setupRing(ctx, 'zero-page'),
};

/**
 * Seed 001's workaround of record: before 5.9, rdma-core's ibv_fork_init() marks every
 * registered range MADV_DONTFORK (rdma A8, H2), so fork() skips the ring VMA entirely
 * (kernel rule 69): the helper has no ring, the parent's PTE is never write-protected,
 * and the producer keeps writing the pinned page. On a kernel that copies pinned pages at
 * fork (linux-6.x), ibv_fork_init() enables nothing (IBV_FORK_UNNEEDED) and the early
 * copy does the job. Coherent everywhere; expect nothing.
 */
export const forkWithPinnedRingDontfork: ScenarioDefinition = {
  name: 'fork-with-pinned-ring-dontfork',
  summary: 'seed 001: the same fork with ibv_fork_init (MADV_DONTFORK): the child has no ring, the NIC sees every write on every kernel',
  seeds: ['001'],
  defaultProfile: HISTORY,
  drivers: ['pinned'],
  defaultDriver: 'pinned',
  untilNs: 1_000_000_000,
  expect: () => [],
  setup: (ctx) => setupRing(ctx, 'dontfork'),
};
