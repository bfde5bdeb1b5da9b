/**
 * The userspace verbs API (driver/verbs.ts) over the pinned strategy: registration checks
 * (rdma A1, A2, A5, A8), every opcode end to end, error completions and the QP state
 * machine (F1-F3), MR events (F4), protection between PDs, MRs and processes.
 */
import test from 'ava';
import {
  EFAULT, EINVAL, ENOENT, EOPNOTSUPP, MADV_DONTNEED, Simulation, VM_DONTCOPY, errnoName,
} from '../../kernel-model/index.ts';
import {
  IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_ATOMIC, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE,
  IBV_QPS_ERR, IBV_QPS_RTS, IBV_SEND_SIGNALED, IBV_WC_COMP_SWAP, IBV_WC_FETCH_ADD, IBV_WC_LOC_PROT_ERR, IBV_WC_RDMA_READ,
  IBV_WC_RDMA_WRITE, IBV_WC_RECV, IBV_WC_REM_ACCESS_ERR, IBV_WC_SEND, IBV_WC_SUCCESS, IBV_WC_WR_FLUSH_ERR,
  IBV_WR_ATOMIC_CMP_AND_SWP, IBV_WR_ATOMIC_FETCH_AND_ADD, IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, IBV_WR_SEND, Fabric,
  MLX5_ODP_CAPS, PTE_READ, type SendWr,
} from '../../device/index.ts';
import {
  IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_FLAG_FLUSH, IBV_FORK_DISABLED, IBV_FORK_ENABLED, IBV_FORK_UNNEEDED,
  newUmemCounters, pinnedStrategy, type IbUmem, type IbvMr, type MrEvent, type UmemStrategy,
} from '../../driver/index.ts';
import {
  ALL_ACCESS, P, bringUp, completions, connectRc, createRcQp, load, makeApp, mapAnon, must, openApp, pattern, regOk, run,
  statusNames, store, twoApps, type App,
} from './_verbs-rig.ts';

const S = IBV_SEND_SIGNALED;

function word(n: bigint): Uint8Array {
  const u = new Uint8Array(8);
  new DataView(u.buffer).setBigUint64(0, n, true);
  return u;
}

function readWord(bytes: Uint8Array): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
}

function writeWr(wrId: number, src: { addr: number; lkey: number }, dst: { addr: number; rkey: number }, length = P, lkey = src.lkey): SendWr {
  return { wrId, opcode: IBV_WR_RDMA_WRITE, sendFlags: S, sgList: [{ addr: src.addr, length, lkey }], rdma: { remoteAddr: dst.addr, rkey: dst.rkey } };
}

/**
 * A stand-in ODP strategy until driver/umem-odp.ts lands: a faultable device MR with no
 * pages and no pins (enough for the userspace bookkeeping of rdma A8).
 */
function stubOdpStrategy(): UmemStrategy {
  return {
    name: 'odp-stub',
    *regMr(ctx, req) {
      const { nic } = ctx.device;
      const mr = nic.createMr({ pd: req.pd, iova: req.iova, length: req.length, access: req.access, onDemand: true });
      if (typeof mr === 'number') return mr;
      const umem: IbUmem = {
        strategy: 'odp-stub', ctx, mr, addr: req.addr, length: req.length, access: req.access, counters: newUmemCounters(),
        *dereg() {
          return nic.destroyMr(mr);
        },
      };
      return umem;
    },
  };
}

/**
 * The pinned strategy plus what a revoking driver (dma-buf, holdoff) does: revoke the
 * device MR and report it, or report an invalidation, on the context's MR event stream.
 */
function revocablePinned() {
  const inner = pinnedStrategy();
  const strategy: UmemStrategy = { name: 'pinned-revocable', regMr: (ctx, req) => inner.regMr(ctx, req) };
  return {
    strategy,
    revoke(umem: IbUmem): void {
      umem.ctx.device.nic.revokeMr(umem.mr);
      umem.ctx.mrEvents.next({ type: 'revoked', umem, start: umem.addr, end: umem.addr + umem.length });
    },
    invalidate(umem: IbUmem, start: number, end: number): void {
      const ev: MrEvent = { type: 'invalidated', umem, start, end };
      umem.ctx.mrEvents.next(ev);
    },
  };
}

// ---- registration checks ------------------------------------------------------------------

test('rdma A1, A2: access flags are checked in the kernel\'s order (remote write/atomic without local write, unknown bits, then ON_DEMAND on a non-ODP NIC); nothing is pinned by a refused registration', (t) => {
  const { sim, a } = twoApps();
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 2);
    const reg = (access: number) => a.ctx.regMr(a.pd, buf, 2 * P, access);
    const cases: [string, number, number][] = [
      ['REMOTE_WRITE without LOCAL_WRITE (step 1)', IBV_ACCESS_REMOTE_WRITE, -EINVAL],
      ['REMOTE_ATOMIC without LOCAL_WRITE (step 1)', IBV_ACCESS_REMOTE_ATOMIC | IBV_ACCESS_REMOTE_READ, -EINVAL],
      ['an unknown bit (step 2)', IBV_ACCESS_LOCAL_WRITE | (1 << 20), -EINVAL],
      ['an unknown bit with ON_DEMAND (step 2 before step 3)', IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND | (1 << 20), -EINVAL],
      ['ON_DEMAND on a NIC without ODP (step 3, A2)', IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND, -EOPNOTSUPP],
      ['ON_DEMAND alone on a NIC without ODP (A2)', IBV_ACCESS_ON_DEMAND, -EOPNOTSUPP],
      ['REMOTE_WRITE | ON_DEMAND on a NIC without ODP (step 1 runs first)', IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_ON_DEMAND, -EINVAL],
    ];
    for (const [what, access, want] of cases) {
      const r = yield* reg(access);
      t.is(r, want, `${what}: got ${typeof r === 'number' ? errnoName(r) : 'an MR'}`);
    }
    t.is(a.p.mm.pinnedVm, 0, 'no refused registration charged pinned_vm');
    t.false(a.p.mm.hasPinned, 'no refused registration pinned a page');
    t.is(a.ctx.ucontext.umems.size, 0);
    // The control: the same buffer with valid flags registers.
    const mr = yield* reg(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    t.not(typeof mr, 'number');
    t.is(a.p.mm.pinnedVm, 2);
  });
});

test('rdma A1: a PD that is not this context\'s gives EINVAL', (t) => {
  const { sim, a, b } = twoApps();
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 1);
    t.is(yield* a.ctx.regMr(b.pd + 100, buf, P, ALL_ACCESS), -EINVAL);
  });
});

test('rdma A5: a zero-length registration gives EINVAL; a start and iova with different page offsets give EINVAL (ib_uverbs_reg_mr)', (t) => {
  const { sim, a } = twoApps();
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 2);
    t.is(yield* a.ctx.regMr(a.pd, buf, 0, ALL_ACCESS), -EINVAL);
    t.is(yield* a.ctx.regMr(a.pd, buf + 100, P, ALL_ACCESS, 0x10000 + 200), -EINVAL);
    t.is(a.p.mm.pinnedVm, 0);
    // Same page offset, another iova: fine.
    const mr = yield* a.ctx.regMr(a.pd, buf + 100, P, ALL_ACCESS, 0x10000 + 100);
    t.not(typeof mr, 'number');
    t.is(a.p.mm.pinnedVm, 2, 'the span covers both pages the unaligned range touches');
  });
});

// ---- fork bookkeeping (rdma A8, H2) ------------------------------------------------------

test('rdma A8 (linux-5.8): ibv_fork_init after a registration fails with EINVAL and fork support stays disabled', (t) => {
  const { sim, a } = twoApps({ profile: 'linux-5.8' });
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 1);
    t.is(a.ctx.isForkInitialized(), IBV_FORK_DISABLED);
    const mr = yield* regOk(a, buf, P);
    t.is(a.ctx.forkInit(), -EINVAL);
    t.is(a.ctx.isForkInitialized(), IBV_FORK_DISABLED);
    // too_late is sticky in rdma-core: deregistering does not make fork_init possible again.
    must(yield* a.ctx.deregMr(mr), 'dereg');
    t.is(a.ctx.forkInit(), -EINVAL);
  });
});

test('rdma A8 (linux-5.8): with ibv_fork_init a pinned MR\'s pages are MADV_DONTFORK (counted per page), the child has no mapping there, and dereg undoes it', (t) => {
  const { sim, a } = twoApps({ profile: 'linux-5.8' });
  run(t, sim, function* () {
    t.is(a.ctx.forkInit(), 0);
    t.is(a.ctx.isForkInitialized(), IBV_FORK_ENABLED);
    t.is(a.ctx.forkInit(), 0, 'a second call is a no-op');
    const buf = yield* mapAnon(a, 4);
    for (let i = 0; i < 4; i++) yield* store(a, buf + i * P, pattern(i, 16));
    const dontcopy = (i: number) => ((a.p.mm.findVma(buf + i * P)?.flags ?? 0) & VM_DONTCOPY) !== 0;
    // An unaligned MR over pages 1 and 2, and a second one over page 2 only.
    const mr1 = yield* regOk(a, buf + P + 100, 2 * P - 200);
    const mr2 = yield* regOk(a, buf + 2 * P, P);
    t.deepEqual([0, 1, 2, 3].map(dontcopy), [false, true, true, false]);
    const child = yield* a.p.fork();
    if (typeof child === 'number') throw new Error(`fork: ${child}`);
    t.truthy(child.mm.findVma(buf), 'page 0 is inherited');
    t.is(child.mm.findVma(buf + P), undefined, 'page 1 (MR) is not');
    t.is(child.mm.findVma(buf + 2 * P), undefined, 'page 2 (MR) is not');
    t.truthy(child.mm.findVma(buf + 3 * P), 'page 3 is inherited');
    t.is(yield* child.load(buf + P, 1), -EFAULT, 'the child faults on the registered range');
    must(yield* a.ctx.deregMr(mr1), 'dereg mr1');
    t.deepEqual([0, 1, 2, 3].map(dontcopy), [false, false, true, false], 'page 2 still belongs to mr2');
    must(yield* a.ctx.deregMr(mr2), 'dereg mr2');
    t.deepEqual([0, 1, 2, 3].map(dontcopy), [false, false, false, false]);
  });
});

test('rdma A8 (linux-5.8): ODP MRs are not marked MADV_DONTFORK and do not make ibv_fork_init too late (stub ODP strategy)', (t) => {
  const { sim, a } = twoApps({ profile: 'linux-5.8', caps: { odp: MLX5_ODP_CAPS }, odp: stubOdpStrategy() });
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 2);
    const odp1 = yield* regOk(a, buf, P, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND);
    t.is(odp1.umem.strategy, 'odp-stub');
    t.is(a.ctx.forkInit(), 0, 'an ODP registration does not set too_late');
    const odp2 = yield* regOk(a, buf + P, P, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND);
    t.is((a.p.mm.findVma(buf + P)?.flags ?? 0) & VM_DONTCOPY, 0, 'the ODP range is not DONTFORK');
    const pinned = yield* regOk(a, buf, P);
    t.is(pinned.umem.strategy, 'pinned');
    t.not((a.p.mm.findVma(buf)?.flags ?? 0) & VM_DONTCOPY, 0, 'the pinned range is');
    const child = yield* a.p.fork();
    if (typeof child === 'number') throw new Error(`fork: ${child}`);
    t.truthy(child.mm.findVma(buf + P), 'the child keeps the ODP range');
    t.is(child.mm.findVma(buf), undefined);
    must(yield* a.ctx.deregMr(odp2), 'dereg odp');
    t.not((a.p.mm.findVma(buf)?.flags ?? 0) & VM_DONTCOPY, 0, 'deregistering an ODP MR leaves the pinned range marked');
  });
});

test('rdma A8, H2 (linux-6.x): ibv_is_fork_initialized is UNNEEDED, ibv_fork_init returns 0 even after a registration and marks nothing (unless RDMAV_USE_MADVISE)', (t) => {
  const { sim, a } = twoApps({ profile: 'linux-6.x' });
  run(t, sim, function* () {
    t.is(a.ctx.isForkInitialized(), IBV_FORK_UNNEEDED);
    const buf = yield* mapAnon(a, 2);
    yield* regOk(a, buf, P);
    t.is(a.ctx.forkInit(), 0);
    t.is(a.ctx.isForkInitialized(), IBV_FORK_UNNEEDED);
    yield* regOk(a, buf + P, P);
    t.is((a.p.mm.findVma(buf + P)?.flags ?? 0) & VM_DONTCOPY, 0, 'not needed, so not done');
    t.is(a.ctx.forkInit({ useMadvise: true }), -EINVAL, 'forcing madvise after a registration is too late');
  });
});

// ---- the data path --------------------------------------------------------------------------

test('rdma F: every opcode through verbs between two nodes with pinned MRs (SEND/RECV, RDMA WRITE, RDMA READ, CAS, FAA): the receiver\'s process sees the bytes', (t) => {
  const { sim, a, b } = twoApps();
  const [qa, qb] = connectRc(a, b);
  run(t, sim, function* () {
    const abuf = yield* mapAnon(a, 4);
    const bbuf = yield* mapAnon(b, 4);
    const amr = yield* regOk(a, abuf, 4 * P);
    const bmr = yield* regOk(b, bbuf, 4 * P);
    // SEND / RECV: 5000 bytes across a page boundary on both sides.
    const msg = pattern(1, 5000);
    yield* store(a, abuf + 100, msg);
    must(yield* b.ctx.postRecv(qb, { wrId: 900, sgList: [{ addr: bbuf + 3000, length: 6000, lkey: bmr.lkey }] }), 'post_recv');
    must(yield* a.ctx.postSend(qa, { wrId: 1, opcode: IBV_WR_SEND, sendFlags: S, sgList: [{ addr: abuf + 100, length: 5000, lkey: amr.lkey }] }), 'post_send');
    const [sendWc] = yield* completions(a, 1);
    const [recvWc] = yield* completions(b, 1);
    t.like(sendWc, { wrId: 1, status: IBV_WC_SUCCESS, opcode: IBV_WC_SEND, qpNum: qa.qpNum });
    t.like(recvWc, { wrId: 900, status: IBV_WC_SUCCESS, opcode: IBV_WC_RECV, byteLen: 5000, qpNum: qb.qpNum });
    t.deepEqual(yield* load(b, bbuf + 3000, 5000), msg, 'SEND: the receiver reads the message');
    // RDMA WRITE into the second half of b's buffer.
    const w = pattern(2, 2 * P);
    yield* store(a, abuf + 2 * P, w);
    must(yield* a.ctx.postSend(qa, writeWr(2, { addr: abuf + 2 * P, lkey: amr.lkey }, { addr: bbuf + 2 * P, rkey: bmr.rkey }, 2 * P)), 'post WRITE');
    const [writeWc] = yield* completions(a, 1);
    t.like(writeWc, { wrId: 2, status: IBV_WC_SUCCESS, opcode: IBV_WC_RDMA_WRITE });
    t.deepEqual(yield* load(b, bbuf + 2 * P, 2 * P), w, 'RDMA WRITE: the target process reads the bytes');
    // RDMA READ: b's bytes into a.
    const r = pattern(3, 3000);
    yield* store(b, bbuf + 500, r);
    must(yield* a.ctx.postSend(qa, { wrId: 3, opcode: IBV_WR_RDMA_READ, sendFlags: S, sgList: [{ addr: abuf + P + 7, length: 3000, lkey: amr.lkey }],
      rdma: { remoteAddr: bbuf + 500, rkey: bmr.rkey } }), 'post READ');
    const [readWc] = yield* completions(a, 1);
    t.like(readWc, { wrId: 3, status: IBV_WC_SUCCESS, opcode: IBV_WC_RDMA_READ, byteLen: 3000 });
    t.deepEqual(yield* load(a, abuf + P + 7, 3000), r, 'RDMA READ: the requester process reads the peer\'s bytes');
    // CAS then FAA on a word of b's buffer; the old values land in a's buffer.
    yield* store(b, bbuf + 64, word(100n));
    must(yield* a.ctx.postSend(qa, { wrId: 4, opcode: IBV_WR_ATOMIC_CMP_AND_SWP, sendFlags: S, sgList: [{ addr: abuf, length: 8, lkey: amr.lkey }],
      atomic: { remoteAddr: bbuf + 64, compareAdd: 100n, swap: 555n, rkey: bmr.rkey } }), 'post CAS');
    must(yield* a.ctx.postSend(qa, { wrId: 5, opcode: IBV_WR_ATOMIC_FETCH_AND_ADD, sendFlags: S, sgList: [{ addr: abuf + 8, length: 8, lkey: amr.lkey }],
      atomic: { remoteAddr: bbuf + 64, compareAdd: 7n, swap: 0n, rkey: bmr.rkey } }), 'post FAA');
    const atomics = yield* completions(a, 2);
    t.deepEqual(atomics.map((w2) => [w2.wrId, w2.status, w2.opcode]), [[4, IBV_WC_SUCCESS, IBV_WC_COMP_SWAP], [5, IBV_WC_SUCCESS, IBV_WC_FETCH_ADD]]);
    t.is(readWord(yield* load(a, abuf, 8)), 100n, 'CAS returned the old value');
    t.is(readWord(yield* load(a, abuf + 8, 8)), 555n, 'FAA returned the swapped value');
    t.is(readWord(yield* load(b, bbuf + 64, 8)), 562n, 'the target word: 100 -> 555 -> 562');
  });
});

// ---- errors, QP state, events (rdma F1-F4) ----------------------------------------------------

test('rdma F1, F3: a bad lkey completes with IBV_WC_LOC_PROT_ERR, the QP goes to ERROR, the WRs behind it and later posts are flushed with IBV_WC_WR_FLUSH_ERR', (t) => {
  const { sim, a, b } = twoApps();
  const [qa] = connectRc(a, b);
  run(t, sim, function* () {
    const abuf = yield* mapAnon(a, 1);
    const bbuf = yield* mapAnon(b, 1);
    const amr = yield* regOk(a, abuf, P);
    const bmr = yield* regOk(b, bbuf, P);
    const dst = { addr: bbuf, rkey: bmr.rkey };
    must(yield* a.ctx.postSend(qa, writeWr(1, amr, dst)), 'post 1');
    must(yield* a.ctx.postSend(qa, writeWr(2, amr, dst, P, amr.lkey + 1)), 'post 2 (bad lkey)');
    must(yield* a.ctx.postSend(qa, writeWr(3, amr, dst)), 'post 3');
    must(yield* a.ctx.postRecv(qa, { wrId: 4, sgList: [{ addr: abuf, length: 64, lkey: amr.lkey }] }), 'post_recv');
    const wcs = yield* completions(a, 4);
    t.deepEqual(statusNames(wcs), ['IBV_WC_SUCCESS', 'IBV_WC_LOC_PROT_ERR', 'IBV_WC_WR_FLUSH_ERR', 'IBV_WC_WR_FLUSH_ERR']);
    t.deepEqual(wcs.map((w) => w.wrId), [1, 2, 3, 4]);
    t.true(wcs.slice(1).every((w) => w.opcode === undefined && w.byteLen === 0 && w.qpNum === qa.qpNum), 'F3: only wr_id, status, qp_num defined');
    t.is(qa.state, IBV_QPS_ERR);
    t.is(yield* a.ctx.postSend(qa, writeWr(5, amr, dst)), 0, 'posting to an ERROR QP succeeds');
    const [late] = yield* completions(a, 1);
    t.like(late, { wrId: 5, status: IBV_WC_WR_FLUSH_ERR });
  });
});

test('rdma F2: a bad rkey completes with IBV_WC_REM_ACCESS_ERR; both QPs go to ERROR and the responder\'s context gets IBV_EVENT_QP_ACCESS_ERR', (t) => {
  const { sim, a, b } = twoApps();
  const [qa, qb] = connectRc(a, b);
  const events: string[] = [];
  b.ctx.on('async', (ev) => events.push(`${ev.type}:${ev.qpNum}`));
  a.ctx.on('async', (ev) => events.push(`a:${ev.type}`));
  run(t, sim, function* () {
    const abuf = yield* mapAnon(a, 1);
    const bbuf = yield* mapAnon(b, 1);
    const amr = yield* regOk(a, abuf, P);
    const bmr = yield* regOk(b, bbuf, P);
    must(yield* b.ctx.postRecv(qb, { wrId: 70, sgList: [{ addr: bbuf, length: 64, lkey: bmr.lkey }] }), 'post_recv');
    must(yield* a.ctx.postSend(qa, writeWr(1, amr, { addr: bbuf, rkey: bmr.rkey + 1 })), 'post');
    const [wc] = yield* completions(a, 1);
    t.like(wc, { wrId: 1, status: IBV_WC_REM_ACCESS_ERR });
    const [rwc] = yield* completions(b, 1);
    t.like(rwc, { wrId: 70, status: IBV_WC_WR_FLUSH_ERR });
  });
  t.is(qa.state, IBV_QPS_ERR);
  t.is(qb.state, IBV_QPS_ERR);
  t.deepEqual(events, [`IBV_EVENT_QP_ACCESS_ERR:${qb.qpNum}`]);
});

test('rdma F4: no MR-level event by default (a revoked MR shows only as error completions); with enableMrEvents the extension reports mr:revoked and mr:invalidated', (t) => {
  const rev = revocablePinned();
  const { sim, a, b } = twoApps({ nonOdp: rev.strategy });
  const [qa, qb] = connectRc(a, b);
  const [qa2, qb2] = connectRc(a, b);
  const seen: string[] = [];
  b.ctx.on('mr:revoked', (mr) => seen.push(`revoked:${mr.lkey}`));
  b.ctx.on('mr:invalidated', (mr, start, end) => seen.push(`invalidated:${mr.lkey}:${start - mr.addr}-${end - mr.addr}`));
  run(t, sim, function* () {
    const abuf = yield* mapAnon(a, 1);
    const bbuf = yield* mapAnon(b, 2);
    const amr = yield* regOk(a, abuf, P);
    const m1 = yield* regOk(b, bbuf, P);
    rev.revoke(m1.umem);
    rev.invalidate(m1.umem, m1.addr, m1.addr + 100);
    t.deepEqual(seen, [], 'nothing by default, as in libibverbs');
    must(yield* a.ctx.postSend(qa, writeWr(1, amr, { addr: bbuf, rkey: m1.rkey })), 'post');
    const [wc] = yield* completions(a, 1);
    t.like(wc, { wrId: 1, status: IBV_WC_REM_ACCESS_ERR }, 'the application learns of the revocation from the peer\'s error completion');
    t.is(qb.state, IBV_QPS_ERR);
    b.ctx.enableMrEvents();
    const m2 = yield* regOk(b, bbuf + P, P);
    rev.invalidate(m2.umem, m2.addr + 16, m2.addr + 32);
    rev.revoke(m2.umem);
    t.deepEqual(seen, [`invalidated:${m2.lkey}:16-32`, `revoked:${m2.lkey}`]);
    must(yield* a.ctx.postSend(qa2, writeWr(2, amr, { addr: bbuf + P, rkey: m2.rkey })), 'post');
    const [wc2] = yield* completions(a, 1);
    t.is(wc2!.status, IBV_WC_REM_ACCESS_ERR);
    t.is(qb2.state, IBV_QPS_ERR);
    must(yield* b.ctx.deregMr(m1), 'a revoked MR can still be deregistered');
    t.is(b.p.mm.pinnedVm, 1);
  });
});

// ---- protection ----------------------------------------------------------------------------

for (const variant of ['another PD', 'a deregistered MR', 'a revoked MR', 'an MR without REMOTE_WRITE', 'an MR without REMOTE_READ (RDMA READ)'] as const) {
  test(`rdma F2 (protection): an rkey of ${variant} gives IBV_WC_REM_ACCESS_ERR and the target bytes are untouched`, (t) => {
    const rev = revocablePinned();
    const { sim, a, b } = twoApps({ nonOdp: rev.strategy });
    const [qa] = connectRc(a, b);
    run(t, sim, function* () {
      const abuf = yield* mapAnon(a, 1);
      const bbuf = yield* mapAnon(b, 1);
      yield* store(a, abuf, pattern(9, P));
      yield* store(b, bbuf, pattern(4, P));
      const amr = yield* regOk(a, abuf, P);
      const access = variant === 'an MR without REMOTE_WRITE' ? IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ
        : variant === 'an MR without REMOTE_READ (RDMA READ)' ? IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE : ALL_ACCESS;
      const pd = variant === 'another PD' ? b.ctx.allocPd() : b.pd;
      const bmr = yield* regOk(b, bbuf, P, access, pd);
      if (variant === 'a deregistered MR') must(yield* b.ctx.deregMr(bmr), 'dereg');
      if (variant === 'a revoked MR') rev.revoke(bmr.umem);
      const wr: SendWr = variant === 'an MR without REMOTE_READ (RDMA READ)'
        ? { wrId: 1, opcode: IBV_WR_RDMA_READ, sendFlags: S, sgList: [{ addr: abuf, length: P, lkey: amr.lkey }], rdma: { remoteAddr: bbuf, rkey: bmr.rkey } }
        : writeWr(1, amr, { addr: bbuf, rkey: bmr.rkey });
      must(yield* a.ctx.postSend(qa, wr), 'post');
      const [wc] = yield* completions(a, 1);
      t.is(wc!.status, IBV_WC_REM_ACCESS_ERR);
      t.deepEqual(yield* load(b, bbuf, P), pattern(4, P), 'the target is untouched');
      t.deepEqual(yield* load(a, abuf, P), pattern(9, P), 'the local buffer is untouched');
    });
  });
}

test('protection: after fork the child cannot use the parent\'s MRs or QPs (dereg EINVAL, post EINVAL, advise ENOENT; its own QP with the parent\'s lkey gets IBV_WC_LOC_PROT_ERR) and the parent\'s MR keeps working', (t) => {
  const { sim, a, b } = twoApps();
  const [qa] = connectRc(a, b);
  run(t, sim, function* () {
    const abuf = yield* mapAnon(a, 1);
    const bbuf = yield* mapAnon(b, 2);
    const amr = yield* regOk(a, abuf, P);
    const bmr = yield* regOk(b, bbuf, 2 * P);
    const childProc = yield* a.p.fork();
    if (typeof childProc === 'number') throw new Error(`fork: ${childProc}`);
    const child = openApp(a.node, childProc);
    t.is(yield* child.ctx.deregMr(amr), -EINVAL, 'dereg of the parent\'s MR');
    t.is(yield* child.ctx.postSend(qa, writeWr(1, amr, { addr: bbuf, rkey: bmr.rkey })), -EINVAL, 'post on the parent\'s QP');
    t.is(yield* child.ctx.postRecv(qa, { wrId: 2, sgList: [{ addr: abuf, length: 8, lkey: amr.lkey }] }), -EINVAL);
    t.is(yield* child.ctx.adviseMr(child.pd, IBV_ADVISE_MR_ADVICE_PREFETCH, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr: abuf, length: P, lkey: amr.lkey }]), -ENOENT);
    // The child's own QP (its own PD) posting the parent's lkey.
    const cq = createRcQp(child);
    const bq = createRcQp(b);
    bringUp(child, cq, b, bq);
    bringUp(b, bq, child, cq);
    t.is(cq.state, IBV_QPS_RTS);
    must(yield* child.ctx.postSend(cq, writeWr(3, amr, { addr: bbuf + P, rkey: bmr.rkey })), 'child post');
    const [cwc] = yield* completions(child, 1);
    t.like(cwc, { wrId: 3, status: IBV_WC_LOC_PROT_ERR });
    // The parent's registration is intact.
    t.is(a.ctx.ucontext.umems.size, 1);
    yield* store(a, abuf, pattern(5, 64));
    must(yield* a.ctx.postSend(qa, writeWr(4, amr, { addr: bbuf, rkey: bmr.rkey }, 64)), 'parent post');
    const [pwc] = yield* completions(a, 1);
    t.like(pwc, { wrId: 4, status: IBV_WC_SUCCESS });
    t.deepEqual(yield* load(b, bbuf, 64), pattern(5, 64));
  });
});

test('protection: a process cannot register memory that is not mapped in its own mm (pinned: EFAULT), nor another process\'s buffer', (t) => {
  const sim = new Simulation({ seed: 1 });
  const fabric = new Fabric(sim);
  const a = makeApp(sim, fabric, 'a');
  const other: App = openApp(a.node, a.k.createProcess('other'));
  run(t, sim, function* () {
    const buf = yield* mapAnon(a, 2);
    yield* store(a, buf, pattern(1, 2 * P));
    t.is(yield* other.ctx.regMr(other.pd, buf, 2 * P, ALL_ACCESS), -EFAULT, 'the other process has nothing mapped there');
    must(yield* a.p.munmap(buf + P, P), 'munmap');
    t.is(yield* a.ctx.regMr(a.pd, buf, 2 * P, ALL_ACCESS), -EFAULT, 'half of the range is unmapped');
    t.is(a.p.mm.pinnedVm, 0);
    t.is(other.p.mm.pinnedVm, 0);
    const mr: IbvMr | number = yield* a.ctx.regMr(a.pd, buf, P, ALL_ACCESS);
    t.not(typeof mr, 'number', 'the mapped half registers');
  });
});

test('rdma A1: a READ response scattered into a local MR without LOCAL_WRITE gives IBV_WC_LOC_PROT_ERR (a read-only pinned MR is mapped read-only)', (t) => {
  const { sim, a, b } = twoApps();
  const [qa] = connectRc(a, b);
  run(t, sim, function* () {
    const abuf = yield* mapAnon(a, 1);
    const bbuf = yield* mapAnon(b, 1);
    yield* store(a, abuf, pattern(2, 64));
    const amr = yield* regOk(a, abuf, P, IBV_ACCESS_REMOTE_READ);
    t.is(amr.umem.mr.pageTable.perm(0), PTE_READ, 'programmed read-only');
    const bmr = yield* regOk(b, bbuf, P);
    must(yield* a.ctx.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_READ, sendFlags: S, sgList: [{ addr: abuf, length: 64, lkey: amr.lkey }],
      rdma: { remoteAddr: bbuf, rkey: bmr.rkey } }), 'post');
    const [wc] = yield* completions(a, 1);
    t.is(wc!.status, IBV_WC_LOC_PROT_ERR);
    t.deepEqual(yield* load(a, abuf, 64), pattern(2, 64));
  });
});

test('rdma H1 in the verbs API: a successful RDMA WRITE after MADV_DONTNEED still completes with IBV_WC_SUCCESS (nothing tells the application)', (t) => {
  const { sim, a, b } = twoApps();
  const [qa] = connectRc(a, b);
  run(t, sim, function* () {
    const abuf = yield* mapAnon(a, 1);
    const bbuf = yield* mapAnon(b, 1);
    const amr = yield* regOk(a, abuf, P);
    const bmr = yield* regOk(b, bbuf, P);
    must(yield* a.p.madvise(abuf, P, MADV_DONTNEED), 'madvise');
    must(yield* a.ctx.postSend(qa, writeWr(1, amr, { addr: bbuf, rkey: bmr.rkey })), 'post');
    const [wc] = yield* completions(a, 1);
    t.is(wc!.status, IBV_WC_SUCCESS);
  });
});
