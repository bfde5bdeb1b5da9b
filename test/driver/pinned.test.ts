/**
 * The pinned registration strategy (driver/umem-pinned.ts: ib_umem_get plus a plain mlx5
 * MR) through the verbs API: what it pins and charges (kernel rules 54-65), how its GUP
 * flags changed across releases, what it does not see (rdma H1) and what fork does to it
 * (H2, kernel rules 66-70), the dirtying at release (rule 63) and teardown at exit.
 */
import test from 'ava';
import {
  EFAULT, ENOMEM, EPERM, FOLL_FORCE, FOLL_LONGTERM, FOLL_WRITE, GUP_PIN_COUNTING_BIAS, MADV_DONTNEED, MAP_SHARED,
  PG_ANON_EXCLUSIVE, PG_DIRTY, PROT_READ, PTE_DIRTY, PTE_WRITE, ZERO_PFN, pteFrame, pteHas, ptePresent, vpn,
  writebackFile, type Co, type MmStruct, type ProfileName, type TraceRecord,
} from '../../kernel-model/index.ts';
import {
  IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_REMOTE_READ, IBV_QPS_ERR, IBV_QPS_RESET, IBV_SEND_SIGNALED, IBV_WC_SUCCESS, IBV_WR_RDMA_READ,
  IBV_WR_RDMA_WRITE, PTE_READ, PTE_READ_WRITE, type DeviceAccess, type QueuePair,
} from '../../device/index.ts';
import { IBV_FORK_ENABLED, IBV_FORK_UNNEEDED, type IbvMr, type PinnedUmem } from '../../driver/index.ts';
import {
  ALL_ACCESS, P, RW, completions, connectRc, load, mapAnon, must, pattern, regOk, run, store, twoApps, type App,
} from './_verbs-rig.ts';

const S = IBV_SEND_SIGNALED;

function pinned(mr: IbvMr): PinnedUmem {
  if (mr.umem.strategy !== 'pinned') throw new Error(`not a pinned MR: ${mr.umem.strategy}`);
  return mr.umem as PinnedUmem;
}

function frameAt(mm: MmStruct, addr: number): number {
  const pte = mm.pageTable.get(vpn(addr));
  return ptePresent(pte) ? pteFrame(pte) : -1;
}

/** Post an RDMA WRITE (local -> remote) or READ (remote -> local) and wait for its success. */
function* rdma(app: App, qp: QueuePair, op: 'write' | 'read', local: { addr: number; lkey: number }, remote: { addr: number; rkey: number }, length: number, wrId = 1): Co {
  must(yield* app.ctx.postSend(qp, {
    wrId, opcode: op === 'write' ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ, sendFlags: S,
    sgList: [{ addr: local.addr, length, lkey: local.lkey }], rdma: { remoteAddr: remote.addr, rkey: remote.rkey },
  }), `post ${op}`);
  const [wc] = yield* completions(app, 1);
  if (wc?.status !== IBV_WC_SUCCESS) throw new Error(`${op} completed with status ${wc?.status}`);
}

// ---- registration and release ------------------------------------------------------------------

test('ib_umem_release charges unpinPerPageNs per page it unpins (drivers/infiniband/core/umem.c __ib_umem_release -> unpin_user_pages_dirty_lock; cpu-costs.ts)', (t) => {
  // The same dereg twice, with the unpin charge at 0 and at 1 ms: the difference is the pages times 1 ms.
  const deregNs = (unpinPerPageNs: number): number => {
    const { sim, a } = twoApps();
    a.k.cpuCosts.unpinPerPageNs = unpinPerPageNs;
    let took = -1;
    run(t, sim, function* () {
      const buf = yield* mapAnon(a, 4);
      yield* store(a, buf, pattern(1, 4 * P));
      const mr = yield* regOk(a, buf, 3 * P);
      const t0 = sim.now();
      must(yield* a.ctx.deregMr(mr), 'dereg');
      took = sim.now() - t0;
    });
    return took;
  };
  t.is(deregNs(1_000_000) - deregNs(0), 3 * 1_000_000);
});

test('kernel rules 55, 57, 63 (linux-6.x): reg_mr pins every page of the span with the bias, sets MMF_HAS_PINNED, charges pinned_vm and programs each frame read-write; dereg reverses all of it', (t) => {
  const { sim, a } = twoApps();
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 4);
    yield* store(a, buf, pattern(1, 4 * P));
    const { phys } = a.k;
    const before = [0, 1, 2, 3].map((i) => phys.refcount[frameAt(a.p.mm, buf + i * P)]!);
    // An unaligned range: pages 0..2 of the buffer.
    const mr = yield* regOk(a, buf + 100, 2 * P + 100);
    const u = pinned(mr);
    t.is(u.npages, 3);
    t.is(u.start, buf);
    t.is(u.how, 'pin');
    t.is(u.gupFlags, FOLL_LONGTERM | FOLL_WRITE);
    t.true(u.writable);
    t.true(a.p.mm.hasPinned);
    t.is(a.p.mm.pinnedVm, 3);
    t.deepEqual(u.frames, [0, 1, 2].map((i) => frameAt(a.p.mm, buf + i * P)), 'the frames the process maps');
    t.deepEqual([0, 1, 2, 3].map((i) => phys.refcount[frameAt(a.p.mm, buf + i * P)]! - before[i]!), [GUP_PIN_COUNTING_BIAS, GUP_PIN_COUNTING_BIAS, GUP_PIN_COUNTING_BIAS, 0]);
    t.true(u.frames.every((f) => phys.maybeDmaPinned(f)));
    const mrDev = u.mr;
    t.false(mrDev.onDemand, 'a plain MR: it cannot fault');
    t.is(mrDev.pages, 3);
    t.deepEqual([0, 1, 2].map((i) => [mrDev.pageTable.frameOf(i), mrDev.pageTable.perm(i)]), u.frames.map((f) => [f, PTE_READ_WRITE]));
    t.is(mrDev.counters.updatedPages, 3, 'each page programmed once');
    t.is(a.node.nic.mrByKey(mr.lkey), mrDev);
    must(yield* a.ctx.deregMr(mr), 'dereg');
    t.is(a.node.nic.mrByKey(mr.lkey), undefined, 'the key no longer resolves');
    t.is(mrDev.state, 'destroyed');
    t.true(u.released);
    t.is(a.p.mm.pinnedVm, 0);
    t.deepEqual([0, 1, 2, 3].map((i) => phys.refcount[frameAt(a.p.mm, buf + i * P)]!), before, 'every refcount back');
    t.true(a.p.mm.hasPinned, 'MMF_HAS_PINNED is never cleared (rule 57)');
    t.is(yield* a.ctx.deregMr(mr), -22, 'a second dereg is EINVAL');
  });
});

interface FlagCase {
  profile: ProfileName;
  how: 'pin' | 'get';
  rw: number;
  ro: number;
}

const flagCases: FlagCase[] = [
  { profile: 'linux-6.x', how: 'pin', rw: FOLL_LONGTERM | FOLL_WRITE, ro: FOLL_LONGTERM },
  { profile: 'linux-5.8', how: 'pin', rw: FOLL_LONGTERM | FOLL_WRITE, ro: FOLL_LONGTERM | FOLL_WRITE | FOLL_FORCE },
  { profile: 'linux-4.18', how: 'get', rw: FOLL_LONGTERM | FOLL_WRITE, ro: FOLL_LONGTERM | FOLL_WRITE | FOLL_FORCE },
  { profile: 'linux-3.0', how: 'get', rw: FOLL_LONGTERM | FOLL_WRITE, ro: FOLL_LONGTERM | FOLL_WRITE | FOLL_FORCE },
];

for (const c of flagCases) {
  test(`ib_umem_get GUP flags (${c.profile}): writable MR 0x${c.rw.toString(16)}, read-only MR 0x${c.ro.toString(16)}, ${c.how === 'pin' ? 'pin_user_pages (refcount + 1024)' : 'get_user_pages (refcount + 1, no MMF_HAS_PINNED)'}; dereg gives every reference back`, (t) => {
    const { sim, a } = twoApps({ profile: c.profile });
    run(t, sim, function* () {
      const buf = yield* mapAnon(a, 2);
      yield* store(a, buf, pattern(1, 2 * P));
      const f0 = frameAt(a.p.mm, buf);
      const ref0 = a.k.phys.refcount[f0]!;
      const rw = yield* regOk(a, buf, P, ALL_ACCESS);
      const ro = yield* regOk(a, buf + P, P, IBV_ACCESS_REMOTE_READ);
      t.is(pinned(rw).gupFlags, c.rw);
      t.is(pinned(ro).gupFlags, c.ro);
      t.is(pinned(rw).how, c.how);
      t.false(pinned(ro).writable);
      t.is(pinned(ro).mr.pageTable.perm(0), PTE_READ, 'a read-only MR is programmed read-only');
      t.is(a.k.phys.refcount[f0]! - ref0, c.how === 'pin' ? GUP_PIN_COUNTING_BIAS : 1);
      t.is(a.p.mm.hasPinned, c.how === 'pin');
      t.is(a.p.mm.pinnedVm, 2, 'charged either way');
      must(yield* a.ctx.deregMr(rw), 'dereg');
      must(yield* a.ctx.deregMr(ro), 'dereg');
      t.is(a.k.phys.refcount[f0], ref0);
      t.is(a.p.mm.pinnedVm, 0);
    });
  });
}

for (const profile of ['linux-4.18', 'linux-5.8', 'linux-6.x'] as const) {
  const forced = profile !== 'linux-6.x';
  test(`rule 61, historical pin flags (${profile}): a read-only MR of a never-written anonymous buffer pins a private page, not the zero page (${forced ? 'FOLL_WRITE|FOLL_FORCE breaks COW: the PTE becomes writable and dirty' : 'FOLL_LONGTERM only: GUP unshares, the PTE stays read-only and clean'}); the process\'s later store reaches the NIC`, (t) => {
    const { sim, a, b } = twoApps({ profile });
    const [, qb] = connectRc(a, b);
    run(t, sim, function* () {
      const buf = yield* mapAnon(a, 1);
      const mr = yield* regOk(a, buf, P, IBV_ACCESS_REMOTE_READ);
      const u = pinned(mr);
      const f = u.frames[0]!;
      t.not(f, ZERO_PFN, 'not the zero page');
      t.is(frameAt(a.p.mm, buf), f, 'the page the process now maps');
      const pte = a.p.mm.pageTable.get(vpn(buf));
      t.is(pteHas(pte, PTE_WRITE), forced, forced ? 'write fault: PTE writable' : 'unshare: PTE still read-only');
      t.is(pteHas(pte, PTE_DIRTY), forced);
      if (profile !== 'linux-4.18') t.true(a.k.phys.has(f, PG_ANON_EXCLUSIVE));
      yield* store(a, buf + 8, pattern(7, 32));
      t.is(frameAt(a.p.mm, buf), f, 'the store landed in the pinned page (no COW away from it)');
      const bbuf = yield* mapAnon(b, 1);
      const bmr = yield* regOk(b, bbuf, P);
      yield* rdma(b, qb, 'read', { addr: bbuf, lkey: bmr.lkey }, { addr: buf, rkey: mr.rkey }, 64);
      const seen = yield* load(b, bbuf, 64);
      t.deepEqual(seen.subarray(8, 40), pattern(7, 32), 'the peer reads what the process wrote');
    });
  });
}

for (const profile of ['linux-5.8', 'linux-6.x'] as const) {
  const refused = profile === 'linux-5.8';
  test(`rule 58 (${profile}): a read-only MR of a read-only MAP_SHARED file mapping ${refused ? 'fails with EFAULT (FOLL_FORCE write pins refuse shared mappings), leaving nothing pinned' : 'registers (FOLL_LONGTERM alone pins the page-cache page)'}`, (t) => {
    const { sim, a } = twoApps({ profile });
    const file = a.k.createFile('ro', P, pattern(3, P));
    run(t, sim, function* () {
      const m = must(yield* a.p.mmap(0, P, PROT_READ, MAP_SHARED, file), 'mmap');
      must((yield* a.p.load(m, 1)) instanceof Uint8Array ? 0 : -1, 'load');
      const f = file.pageCache.get(0)!;
      const ref = a.k.phys.refcount[f]!;
      const r = yield* a.ctx.regMr(a.pd, m, P, IBV_ACCESS_REMOTE_READ);
      if (refused) {
        t.is(r, -EFAULT);
        t.is(a.k.phys.refcount[f], ref);
        t.is(a.p.mm.pinnedVm, 0);
      } else {
        if (typeof r === 'number') throw new Error(`regMr: ${r}`);
        t.deepEqual(pinned(r).frames, [f]);
      }
    });
  });
}

test('rule 58 (linux-6.x): a writable MR of a MAP_SHARED file mapping fails with EFAULT (writable long-term pins of dirty-tracked mappings are refused), nothing stays pinned', (t) => {
  const { sim, a } = twoApps({ profile: 'linux-6.x' });
  const file = a.k.createFile('rw', 2 * P, pattern(3, 2 * P));
  run(t, sim, function* () {
    const m = must(yield* a.p.mmap(0, 2 * P, RW, MAP_SHARED, file), 'mmap');
    t.is(yield* a.ctx.regMr(a.pd, m, 2 * P, ALL_ACCESS), -EFAULT);
    t.is(a.p.mm.pinnedVm, 0);
    t.true([...file.pageCache.values()].every((f) => !a.k.phys.maybeDmaPinned(f)));
  });
});

// ---- failures and limits ------------------------------------------------------------------------

test('rule 64: a short pin (the range runs into unmapped memory) is unpinned and uncharged, and reg_mr fails with EFAULT', (t) => {
  const { sim, a } = twoApps();
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 3);
    yield* store(a, buf, pattern(1, 3 * P));
    must(yield* a.p.munmap(buf + 2 * P, P), 'munmap');
    const frames = [frameAt(a.p.mm, buf), frameAt(a.p.mm, buf + P)];
    const refs = frames.map((f) => a.k.phys.refcount[f]);
    t.is(yield* a.ctx.regMr(a.pd, buf, 3 * P, ALL_ACCESS), -EFAULT);
    t.deepEqual(frames.map((f) => a.k.phys.refcount[f]), refs, 'the two pinned pages were unpinned');
    t.is(a.p.mm.pinnedVm, 0);
    t.is(a.ctx.ucontext.umems.size, 0);
    t.is(yield* a.ctx.regMr(a.pd, buf + 3 * P, P, ALL_ACCESS), -EFAULT, 'nothing mapped at all');
  });
});

test('RLIMIT_MEMLOCK (ib_umem_get): a registration past mm.memlockLimitPages fails with ENOMEM and charges nothing; deregistering frees the budget; a limit of 0 refuses pinning with EPERM (can_do_mlock)', (t) => {
  const { sim, a } = twoApps();
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 8);
    a.p.mm.memlockLimitPages = 4;
    t.is(yield* a.ctx.regMr(a.pd, buf, 5 * P, ALL_ACCESS), -ENOMEM);
    t.is(a.p.mm.pinnedVm, 0);
    t.false(a.p.mm.hasPinned, 'refused before any page was pinned');
    const m1 = yield* regOk(a, buf, 3 * P);
    t.is(yield* a.ctx.regMr(a.pd, buf + 3 * P, 2 * P, ALL_ACCESS), -ENOMEM, 'cumulative: 3 + 2 > 4');
    const m2 = yield* regOk(a, buf + 3 * P, P);
    t.is(a.p.mm.pinnedVm, 4);
    must(yield* a.ctx.deregMr(m1), 'dereg');
    t.is(a.p.mm.pinnedVm, 1);
    yield* regOk(a, buf + 4 * P, 3 * P);
    t.is(a.p.mm.pinnedVm, 4);
    must(yield* a.ctx.deregMr(m2), 'dereg');
    a.p.mm.memlockLimitPages = 0;
    t.is(yield* a.ctx.regMr(a.pd, buf, P, ALL_ACCESS), -EPERM);
  });
});

// ---- rdma H1: the NIC keeps the old pages ---------------------------------------------------------

test('rdma H1: 100 iterations of MADV_DONTNEED, a fresh CPU pattern, then RDMA WRITE and READ over a pinned MR: the receiver\'s check fails every time (the NIC moves the old pinned page\'s bytes); without the madvise it passes', (t) => {
  const { sim, a, b } = twoApps();
  const [qa] = connectRc(a, b);
  const ITER = 100;
  let writeDiverged = 0;
  let readDiverged = 0;
  let nicMovedPinnedBytes = 0;
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 1);
    const bbuf = yield* mapAnon(b, 1);
    yield* store(a, buf, pattern(999, P));
    const amr = yield* regOk(a, buf, P);
    const bmr = yield* regOk(b, bbuf, P);
    const pinnedFrame = pinned(amr).frames[0]!;
    const local = { addr: buf, lkey: amr.lkey };
    const remote = { addr: bbuf, rkey: bmr.rkey };
    // Control: the CPU and the NIC agree while the mapping does not change.
    for (let i = 0; i < 5; i++) {
      yield* store(a, buf, pattern(i, P));
      yield* rdma(a, qa, 'write', local, remote, P);
      t.deepEqual(yield* load(b, bbuf, P), pattern(i, P), `control ${i}: WRITE validates`);
      yield* store(b, bbuf, pattern(500 + i, P));
      yield* rdma(a, qa, 'read', local, remote, P);
      t.deepEqual(yield* load(a, buf, P), pattern(500 + i, P), `control ${i}: READ validates`);
    }
    for (let i = 0; i < ITER; i++) {
      // tests/utils.py traffic(force_page_faults): drop the pages, then write a fresh pattern.
      must(yield* a.p.madvise(buf, P, MADV_DONTNEED), 'madvise');
      yield* store(a, buf, pattern(1000 + i, P));
      t.not(frameAt(a.p.mm, buf), pinnedFrame, 'the process now maps a new page');
      const nicView = a.k.dmaBus.read(pinnedFrame, 0, P);
      yield* rdma(a, qa, 'write', local, remote, P, 2 * i);
      const got = yield* load(b, bbuf, P);
      if (!equal(got, pattern(1000 + i, P))) writeDiverged++;
      if (equal(got, nicView)) nicMovedPinnedBytes++;
      yield* store(b, bbuf, pattern(2000 + i, P));
      yield* rdma(a, qa, 'read', local, remote, P, 2 * i + 1);
      if (!equal(yield* load(a, buf, P), pattern(2000 + i, P))) readDiverged++;
    }
    t.deepEqual(a.k.dmaBus.read(pinnedFrame, 0, P), pattern(2000 + ITER - 1, P), 'the last READ landed in the pinned page');
    t.true(a.k.phys.maybeDmaPinned(pinnedFrame), 'still pinned, never freed (rule 65)');
    t.is(a.p.mm.pinnedVm, 1);
  });
  t.is(writeDiverged, ITER, 'every RDMA WRITE sent the old page\'s bytes, not the process\'s pattern');
  t.is(nicMovedPinnedBytes, ITER, 'what arrived is exactly the pinned page\'s contents');
  t.is(readDiverged, ITER, 'every RDMA READ landed where the process no longer looks');
});

function equal(x: Uint8Array, y: Uint8Array): boolean {
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

// ---- rdma H2: fork --------------------------------------------------------------------------------

interface ForkCase {
  profile: ProfileName;
  forkInit: boolean;
  coherent: boolean;
  why: string;
}

const forkCases: ForkCase[] = [
  { profile: 'linux-6.x', forkInit: false, coherent: true, why: 'the child gets the copy of the maybe-pinned page (rule 67)' },
  { profile: 'linux-5.8', forkInit: false, coherent: false, why: 'the page is COW-shared and the parent\'s store moves it to a new page (rule 70)' },
  { profile: 'linux-5.8', forkInit: true, coherent: true, why: 'MADV_DONTFORK: the child has no mapping there (rule 69)' },
  { profile: 'linux-4.18', forkInit: false, coherent: false, why: 'FOLL_GET sets no MMF_HAS_PINNED: COW-shared (rule 70)' },
  { profile: 'linux-4.18', forkInit: true, coherent: true, why: 'MADV_DONTFORK (rule 69)' },
];

for (const c of forkCases) {
  test(`rdma H2, kernel rules 66-70 (${c.profile}${c.forkInit ? ', ibv_fork_init' : ''}): pin, fork, the parent writes, the NIC reads ${c.coherent ? 'the parent\'s bytes' : 'stale bytes'}: ${c.why}`, (t) => {
    const { sim, a, b } = twoApps({ profile: c.profile });
    const [, qb] = connectRc(a, b);
    run(t, sim, function* () {
      if (c.forkInit) {
        t.is(a.ctx.forkInit(), 0);
        t.is(a.ctx.isForkInitialized(), IBV_FORK_ENABLED);
      } else if (c.profile === 'linux-6.x') t.is(a.ctx.isForkInitialized(), IBV_FORK_UNNEEDED);
      const buf = yield* mapAnon(a, 1);
      yield* store(a, buf, pattern(0xaa, 64));
      const amr = yield* regOk(a, buf, P);
      const f = pinned(amr).frames[0]!;
      const child = yield* a.p.fork();
      if (typeof child === 'number') throw new Error(`fork: ${child}`);
      yield* store(a, buf, pattern(0xbb, 64));
      t.is(frameAt(a.p.mm, buf) === f, c.coherent, c.coherent ? 'the parent still maps the pinned page' : 'the parent moved off the pinned page');
      const bbuf = yield* mapAnon(b, 1);
      const bmr = yield* regOk(b, bbuf, P);
      const bl = { addr: bbuf, lkey: bmr.lkey };
      const ar = { addr: buf, rkey: amr.rkey };
      yield* rdma(b, qb, 'read', bl, ar, 64);
      t.deepEqual(yield* load(b, bbuf, 64), pattern(c.coherent ? 0xbb : 0xaa, 64), 'what the NIC reads');
      // The other direction: a peer's WRITE reaches the parent only when coherent; when not,
      // it lands in the page the child inherited.
      yield* store(b, bbuf, pattern(0xcc, 64));
      yield* rdma(b, qb, 'write', bl, ar, 64, 2);
      t.deepEqual(yield* load(a, buf, 64), pattern(c.coherent ? 0xcc : 0xbb, 64), 'what the parent sees of the peer\'s write');
      const childView = yield* child.load(buf, 64);
      if (c.forkInit) t.is(childView, -EFAULT, 'DONTFORK: the child has nothing there');
      else t.deepEqual(childView, pattern(c.coherent ? 0xaa : 0xcc, 64), c.coherent ? 'the child keeps its snapshot' : 'the NIC wrote into the child\'s memory');
    });
  });
}

// ---- dirtying at release (rule 63) ----------------------------------------------------------------

for (const profile of ['linux-4.18', 'linux-5.8'] as const) {
  test(`rule 63 (${profile}): dereg dirties the pages of a writable MR, so the NIC's writes into a file page that writeback cleaned reach the disk; a read-only MR is not dirtied`, (t) => {
    const { sim, a, b } = twoApps({ profile });
    const [, qb] = connectRc(a, b);
    const file = a.k.createFile('data', 2 * P, pattern(0x10, 2 * P));
    run(t, sim, function* () {
      const m = must(yield* a.p.mmap(0, 2 * P, RW, MAP_SHARED, file), 'mmap');
      yield* store(a, m, pattern(0x20, 2 * P));
      const rw = yield* regOk(a, m, P, ALL_ACCESS);
      const ro = yield* regOk(a, m + P, P, IBV_ACCESS_REMOTE_READ);
      t.is(yield* a.p.fsync(file), 0);
      const f0 = file.pageCache.get(0)!;
      const f1 = file.pageCache.get(1)!;
      t.false(a.k.phys.has(f0, PG_DIRTY), 'writeback cleaned the pinned page (rule 76)');
      const bbuf = yield* mapAnon(b, 1);
      yield* store(b, bbuf, pattern(0xee, 64));
      const bmr = yield* regOk(b, bbuf, P);
      yield* rdma(b, qb, 'write', { addr: bbuf, lkey: bmr.lkey }, { addr: m, rkey: rw.rkey }, 64);
      t.false(a.k.phys.has(f0, PG_DIRTY), 'DMA sets no dirty bit');
      t.is(yield* a.p.fsync(file), 0);
      t.deepEqual(file.diskPage(0).slice(0, 64), pattern(0x20, 64), 'so writeback does not see the NIC\'s bytes');
      must(yield* a.ctx.deregMr(rw), 'dereg rw');
      t.true(a.k.phys.has(f0, PG_DIRTY), `${profile === 'linux-4.18' ? 'set_page_dirty_lock + put_page' : 'unpin_user_pages_dirty_lock'} dirtied it`);
      must(yield* a.ctx.deregMr(ro), 'dereg ro');
      t.false(a.k.phys.has(f1, PG_DIRTY), 'a read-only MR is released without dirtying');
      t.is(yield* a.p.fsync(file), 0);
      t.deepEqual(file.diskPage(0).slice(0, 64), pattern(0xee, 64), 'the NIC\'s bytes reach the disk');
    });
  });
}

test('rule 63, seed 2018 (linux-4.18): if the filesystem dropped the page\'s buffers after writeback, the dirtying at dereg hits a page without buffers (the crash of the 2018 thread)', (t) => {
  const { sim, a } = twoApps({ profile: 'linux-4.18' });
  const file = a.k.createFile('data', P, pattern(0x10, P));
  const records: TraceRecord[] = [];
  sim.trace$.subscribe((r) => records.push(r));
  run(t, sim, function* () {
    const m = must(yield* a.p.mmap(0, P, RW, MAP_SHARED, file), 'mmap');
    yield* store(a, m, pattern(0x20, P));
    const mr = yield* regOk(a, m, P, ALL_ACCESS);
    yield* writebackFile(a.k, file, true);
    must(yield* a.ctx.deregMr(mr), 'dereg');
  });
  const hits = records.filter((r) => r.type === 'dirty-without-buffers');
  t.is(hits.length, 1);
  t.like(hits[0], { type: 'dirty-without-buffers', caller: 'set_page_dirty_lock' });
});

// ---- teardown ---------------------------------------------------------------------------------------

test('teardown: the process exits with QPs active (traffic in flight, receives posted) and MRs registered, then ibv_close_device: nothing stays pinned (every pinned frame freed, pinned_vm 0) and no DMA touched a frame after its release', (t) => {
  const { sim, a, b } = twoApps();
  const [qa, qb] = connectRc(a, b);
  const [qa2, qb2] = connectRc(a, b);
  const lateAccesses: DeviceAccess[] = [];
  const generations = new Map<number, number>();
  a.node.nic.access$.subscribe((x) => {
    if (generations.has(x.frame) && (!a.k.dmaBus.allocated(x.frame) || a.k.dmaBus.generation(x.frame) !== generations.get(x.frame))) lateAccesses.push(x);
  });
  let frames: number[] = [];
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 8);
    yield* store(a, buf, pattern(1, 8 * P));
    const m1 = yield* regOk(a, buf, 4 * P);
    const m2 = yield* regOk(a, buf + 4 * P, 4 * P, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
    frames = [...pinned(m1).frames, ...pinned(m2).frames];
    for (const f of frames) generations.set(f, a.k.dmaBus.generation(f));
    const bbuf = yield* mapAnon(b, 8);
    const bmr = yield* regOk(b, bbuf, 8 * P);
    for (let i = 0; i < 4; i++) must(yield* a.ctx.postRecv(qa, { wrId: 100 + i, sgList: [{ addr: buf + i * P, length: P, lkey: m1.lkey }] }), 'post_recv');
    // Traffic in flight both ways: a's READs into m1 and WRITEs from m2, b's WRITEs into m1.
    for (let i = 0; i < 8; i++) {
      must(yield* a.ctx.postSend(qa2, { wrId: i, opcode: i % 2 ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE, sendFlags: S,
        sgList: [{ addr: i % 2 ? buf : buf + 4 * P, length: 4 * P, lkey: i % 2 ? m1.lkey : m2.lkey }], rdma: { remoteAddr: bbuf, rkey: bmr.rkey } }), 'post');
      must(yield* b.ctx.postSend(qb2, { wrId: i, opcode: IBV_WR_RDMA_WRITE, sendFlags: S,
        sgList: [{ addr: bbuf, length: 4 * P, lkey: bmr.lkey }], rdma: { remoteAddr: buf, rkey: m1.rkey } }), 'post');
    }
    yield* sim.sleep(20_000);
    t.true(a.node.nic.engine.stats.accesses > 0, 'the NIC is busy when the process exits');
    must(yield* a.p.exit(), 'exit');
    t.true(a.p.mm.exited);
    t.true(frames.every((f) => a.k.phys.maybeDmaPinned(f)), 'exit_mmap dropped the mappings; the pins hold the frames (rule 65)');
    t.is(a.p.mm.pinnedVm, 8);
    const qps = [...a.ctx.ucontext.qps];
    yield* a.ctx.close();
    t.true(qps.every((q) => q.destroyed && q.state === IBV_QPS_RESET), 'the QPs were destroyed first');
    t.is(a.ctx.ucontext.umems.size, 0);
    t.is(a.p.mm.pinnedVm, 0);
    t.true(frames.every((f) => a.k.phys.refcount[f] === 0 && !a.k.phys.isAllocated(f)), 'every pinned frame went back to the allocator');
    t.is(a.node.device.umemByKey.size, 0);
    t.is(a.p.mm.count, 0, 'the umems\' and the context\'s mm_count references are all dropped');
    // Let whatever the devices still had in flight play out (b's QPs time out).
    yield* sim.sleep(100_000_000);
    t.true(qb.state === IBV_QPS_ERR || qb2.state === IBV_QPS_ERR, 'the peer lost its connection');
  });
  t.is(frames.length, 8);
  t.deepEqual(lateAccesses, [], 'no device access to a released frame');
});
