/**
 * Implicit ODP (driver/implicit-odp.ts): one device key over the whole address space,
 * 1 GiB children created on demand and reaped when emptied. Titles cite spec/rdma.md.
 */
import test, { type ExecutionContext } from 'ava';
import {
  EFAULT, EINVAL, MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, Simulation, TASK_SIZE,
  pteFrame, ptePresent, vpn, type Co, type Kernel, type MmStruct, type Process, type RunOutcome,
} from '../../kernel-model/index.ts';
import {
  Fabric, IBV_ACCESS_HUGETLB, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_ATOMIC, IBV_ACCESS_REMOTE_READ,
  IBV_ACCESS_REMOTE_WRITE, IBV_ODP_SUPPORT, IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPT_RC, IBV_SEND_SIGNALED,
  IBV_WR_RDMA_WRITE, MLX5_ODP_CAPS, PTE_READ_WRITE, wcStatusName,
  type CompletionQueue, type NicOptions, type QueuePair, type SendWr, type WorkCompletion,
} from '../../device/index.ts';
import { createRdmaNode, type RdmaNode } from '../../driver/rdma-node.ts';
import { SIZE_MAX } from '../../driver/ib-device.ts';
import {
  IBV_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, openDevice, type IbvContext, type IbvMr,
} from '../../driver/verbs.ts';
import type { UmemStrategy } from '../../driver/umem.ts';
import { odpStrategy } from '../../driver/odp-strategy.ts';
import { IMPLICIT_CHILD_SIZE, IMPLICIT_SLOTS, ImplicitOdpUmem } from '../../driver/implicit-odp.ts';

const P = PAGE_SIZE;
const GiB = IMPLICIT_CHILD_SIZE;
const RW = PROT_READ | PROT_WRITE;
const ALL = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
const ODP = IBV_ACCESS_ON_DEMAND;
const NO_PIN: UmemStrategy = { name: 'none', regMr: function* () { return -95; } };
const QP_ATTR = { timeout: 10, retryCnt: 7, rnrRetry: 7, minRnrTimer: 1, maxRdAtomic: 16, maxDestRdAtomic: 16 };

interface App { node: RdmaNode; k: Kernel; p: Process; ctx: IbvContext; pd: number; cq: CompletionQueue }

function makeApp(sim: Simulation, fabric: Fabric, name: string, nic: Omit<NicOptions, 'name' | 'fabric'> = {}): App {
  const node = createRdmaNode(sim, fabric, { name, kernel: { frames: 1 << 17 }, nic, device: { nonOdp: NO_PIN, odp: odpStrategy() } });
  const p = node.kernel.createProcess(`${name}-app`);
  const ctx = openDevice(node.device, p);
  const cq = ctx.createCq(4096);
  if (typeof cq === 'number') throw new Error(`createCq ${cq}`);
  return { node, k: node.kernel, p, ctx, pd: ctx.allocPd(), cq };
}

function world(nic: Omit<NicOptions, 'name' | 'fabric'> = {}): { sim: Simulation; a: App; b: App } {
  const sim = new Simulation({ seed: 1 });
  const fabric = new Fabric(sim);
  watchContracts(sim);
  return { sim, a: makeApp(sim, fabric, 'a', nic), b: makeApp(sim, fabric, 'b', nic) };
}

/**
 * What the kernel model reports against a driver: notifier contract breaches and
 * warnings, sleeping in atomic context, deadlocks and lock-order inversions.
 */
const complaints = new WeakMap<Simulation, string[]>();
function watchContracts(sim: Simulation): void {
  const out: string[] = [];
  complaints.set(sim, out);
  sim.trace$.subscribe((r) => {
    if (r.type === 'notifier-warn' || r.type === 'notifier-contract') out.push(`${r.type}: ${r.sub}: ${r.message}`);
    else if (r.type === 'might-sleep') out.push(`might-sleep: ${r.what} in ${r.context}`);
    else if (r.type === 'deadlock' || r.type === 'lock-order') out.push(`${r.type}: ${JSON.stringify(r)}`);
  });
}

function must(ret: number, what: string): number {
  if (ret < 0) throw new Error(`${what} failed: ${ret}`);
  return ret;
}

/** RC QPs from `from` to `to`, connected through the verbs calls. */
function rcPair(from: App, to: App): [QueuePair, QueuePair] {
  const mk = (x: App) => {
    const qp = x.ctx.createQp({ qpType: IBV_QPT_RC, pd: x.pd, sendCq: x.cq, recvCq: x.cq, cap: { maxSendWr: 1024, maxRecvWr: 1024 } });
    if (typeof qp === 'number') throw new Error(`createQp ${qp}`);
    return qp;
  };
  const q1 = mk(from);
  const q2 = mk(to);
  for (const [x, q, peer, pq] of [[from, q1, to, q2], [to, q2, from, q1]] as const) {
    must(x.ctx.modifyQp(q, { qpState: IBV_QPS_INIT, qpAccessFlags: ALL }), 'INIT');
    must(x.ctx.modifyQp(q, { ...QP_ATTR, qpState: IBV_QPS_RTR, destQpNum: pq.qpNum, ahAttr: { dlid: peer.node.nic.lid } }), 'RTR');
    must(x.ctx.modifyQp(q, { ...QP_ATTR, qpState: IBV_QPS_RTS }), 'RTS');
  }
  return [q1, q2];
}

function* mmapAt(p: Process, addr: number, len: number): Co<number> {
  return must(yield* p.mmap(addr, len, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), 'mmap');
}

function* regImplicit(app: App): Co<{ mr: IbvMr; umem: ImplicitOdpUmem }> {
  const mr = yield* app.ctx.regMr(app.pd, 0, SIZE_MAX, ALL | ODP);
  if (typeof mr === 'number') throw new Error(`regMr ${mr}`);
  if (!(mr.umem instanceof ImplicitOdpUmem)) throw new Error('not implicit');
  return { mr, umem: mr.umem };
}

function* regExplicit(app: App, addr: number, len: number): Co<IbvMr> {
  const mr = yield* app.ctx.regMr(app.pd, addr, len, ALL | ODP);
  if (typeof mr === 'number') throw new Error(`regMr ${mr}`);
  return mr;
}

function pattern(seed: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (seed * 31 + i * 13) & 0xff;
  return out;
}

function* post(app: App, qp: QueuePair, wr: Omit<SendWr, 'sendFlags'>): Co {
  must(yield* app.ctx.postSend(qp, { ...wr, sendFlags: IBV_SEND_SIGNALED }), 'postSend');
}

function* nextWc(app: App): Co<WorkCompletion> {
  if (app.cq.length === 0) yield* app.cq.wait();
  return app.cq.poll(1)[0] as WorkCompletion;
}

function* load(p: Process, addr: number, len: number): Co<Uint8Array> {
  const r = yield* p.load(addr, len);
  if (typeof r === 'number') throw new Error(`load ${r}`);
  return r;
}

function frameAt(mm: MmStruct, va: number): number {
  const pte = mm.pageTable.get(vpn(va));
  return ptePresent(pte) ? pteFrame(pte) : -1;
}

function run(t: ExecutionContext, sim: Simulation, app: App, body: () => Co): RunOutcome {
  const task = app.p.spawnThread('main', body);
  const out = sim.run({ task, untilNs: 60_000_000_000 });
  t.is(out.failure, undefined, out.failure);
  t.true(task.done, `script did not finish (${out.reason} at ${out.now})`);
  t.deepEqual(complaints.get(sim) ?? [], [], 'no contract complaint');
  return out;
}

/** Every device access through an ODP key uses the frame the CPU maps there now (rdma C5). */
function watchAccesses(apps: App[]): { checked: number; bad: string[] } {
  const res = { checked: 0, bad: [] as string[] };
  for (const app of apps) {
    app.node.nic.access$.subscribe((acc) => {
      const umem = app.node.device.umemByKey.get(acc.mrKey);
      if (!umem || umem.strategy !== 'odp') return;
      const va = umem.addr + (acc.iova - umem.mr.iova);
      res.checked++;
      if (frameAt(umem.ctx.mm, va) !== acc.frame) res.bad.push(`${acc.write ? 'write' : 'read'} ${va.toString(16)} frame ${acc.frame}`);
    });
  }
  return res;
}

/** The device entries of an implicit MR agree with the children's mirrors (the driver's state). */
function deviceMatchesChildren(t: ExecutionContext, umem: ImplicitOdpUmem): void {
  let mirrored = 0;
  for (const odp of umem.children.values()) {
    for (const [idx, v] of odp.pages) {
      mirrored++;
      t.is(umem.mr.pageTable.frameOf(odp.firstDevicePage + idx), Math.floor(v / 2));
    }
  }
  t.is(umem.mr.pageTable.presentPages, mirrored);
}

test('rdma A7, C1, E1: an implicit MR is one device key over [0, 2^47) with no notifier of its own', (t) => {
  const { sim, a } = world();
  run(t, sim, a, function* () {
    const { mr, umem } = yield* regImplicit(a);
    t.true(umem.mr.implicit);
    t.is(umem.mr.iova, 0);
    t.is(umem.mr.length, 2 ** 47);
    t.is(mr.length, SIZE_MAX);
    t.is(umem.children.size, 0);
    t.falsy(a.p.mm.notifierSubscriptions?.itree.size, 'the parent subscribes to nothing');
    t.is(yield* a.ctx.regMr(a.pd, 0, SIZE_MAX, ALL | ODP, 4096), -EINVAL, 'iova must be 0');
    t.is(yield* a.ctx.regMr(a.pd, 0, SIZE_MAX, ALL | ODP | IBV_ACCESS_HUGETLB), -EINVAL, 'HUGETLB refused');
  });
  const { sim: sim2, a: plain } = world({ caps: { odp: { ...MLX5_ODP_CAPS, generalCaps: IBV_ODP_SUPPORT } } });
  run(t, sim2, plain, function* () {
    t.is(yield* plain.ctx.regMr(plain.pd, 0, SIZE_MAX, ALL | ODP), -EINVAL, 'needs the implicit capability');
  });
});

test('rdma E2, C1: children are created lazily, one per touched 1 GiB slot, each with its own notifier and mutex', (t) => {
  const { sim, a, b } = world();
  const accesses = watchAccesses([a, b]);
  const inserted: string[] = [];
  sim.trace$.subscribe((r) => {
    if (r.type === 'interval-insert' && r.sub.includes('/child(')) inserted.push(r.sub);
  });
  run(t, sim, a, function* () {
    const [qb] = rcPair(b, a);
    const { mr, umem } = yield* regImplicit(a);
    const x = yield* mmapAt(a.p, 5 * GiB - P, 2 * P); // straddles the slot 4 / slot 5 boundary
    const y = yield* mmapAt(a.p, 9 * GiB + 123 * P, P);
    const src = yield* mmapAt(b.p, 2 * GiB, 2 * P);
    must(yield* b.p.store(src, pattern(1, 2 * P)), 'store');
    const smr = yield* regExplicit(b, src, 2 * P);
    yield* post(b, qb, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sgList: [{ addr: src, length: 2 * P, lkey: smr.lkey }], rdma: { remoteAddr: x, rkey: mr.rkey } });
    t.is(wcStatusName((yield* nextWc(b)).status), 'IBV_WC_SUCCESS');
    yield* post(b, qb, { wrId: 2, opcode: IBV_WR_RDMA_WRITE, sgList: [{ addr: src, length: P, lkey: smr.lkey }], rdma: { remoteAddr: y, rkey: mr.rkey } });
    t.is(wcStatusName((yield* nextWc(b)).status), 'IBV_WC_SUCCESS');
    t.deepEqual([...umem.children.keys()].sort((p, q) => p - q), [4, 5, 9]);
    t.is(umem.created, 3);
    for (const [slot, odp] of umem.children) {
      t.is(odp.notifier.start, slot * GiB);
      t.is(odp.notifier.last, (slot + 1) * GiB - 1);
      t.is(odp.notifier.lock, odp.mutex);
      t.is(odp.mutex.cls, 'umem_odp.umem_mutex');
      // ib_umem_start/ib_umem_end read the notifier's tree keys (include/rdma/ib_umem_odp.h).
      t.is(odp.start, slot * GiB);
      t.is(odp.end, (slot + 1) * GiB);
      // Named after the parent and the slot, built when printed; the notifier and the mutex by it.
      t.is(odp.name, `${umem.name}/child(${slot})`);
      t.is(odp.notifier.name, odp.name);
      t.is(odp.mutex.name, `${odp.name}.umem_mutex`);
    }
    t.deepEqual(inserted.sort(), [4, 5, 9].map((s) => `${umem.name}/child(${s})`), 'interval-insert names each child');
    t.is(a.p.mm.notifierSubscriptions?.itree.size, 3);
    t.deepEqual(yield* load(a.p, x, 2 * P), pattern(1, 2 * P));
    t.deepEqual(yield* load(a.p, y, P), pattern(1, P));
    t.is(umem.mr.pageTable.perm(umem.mr.pageIndexOf(y)), PTE_READ_WRITE);
    t.is(umem.counters.faultPages, 3);
    deviceMatchesChildren(t, umem);
  });
  t.deepEqual(accesses.bad, []);
});

test('rdma E2: faults racing to create the same child end with one child; the loser drops its copy', (t) => {
  const { sim, a, b } = world();
  run(t, sim, a, function* () {
    const { mr, umem } = yield* regImplicit(a);
    const buf = yield* mmapAt(a.p, 3 * GiB, 4 * P);
    const src = yield* mmapAt(b.p, 3 * GiB, 4 * P);
    must(yield* b.p.store(src, pattern(2, 4 * P)), 'store');
    const smr = yield* regExplicit(b, src, 4 * P);
    const qps = [0, 1, 2, 3].map(() => rcPair(b, a)[0]);
    // Hold the mmap lock so the first child creation (which registers the mm's interval
    // tree, mmap lock for write) sleeps until every fault has arrived and is creating too.
    yield* a.p.mm.mmapLock.downWrite();
    for (let i = 0; i < 4; i++) {
      yield* post(b, qps[i] as QueuePair, { wrId: i, opcode: IBV_WR_RDMA_WRITE, sgList: [{ addr: src + i * P, length: P, lkey: smr.lkey }], rdma: { remoteAddr: buf + i * P, rkey: mr.rkey } });
    }
    yield* sim.sleep(200_000);
    t.is(umem.children.size, 0);
    a.p.mm.mmapLock.upWrite();
    for (let i = 0; i < 4; i++) t.is(wcStatusName((yield* nextWc(b)).status), 'IBV_WC_SUCCESS');
    t.is(umem.children.size, 1);
    t.is(umem.created, 1);
    t.true(umem.createRaces >= 1, 'the others raced the first creation');
    t.is(a.p.mm.notifierSubscriptions?.itree.size, 1, 'the losers removed their notifiers');
    t.deepEqual(yield* load(a.p, buf, 4 * P), pattern(2, 4 * P));
    deviceMatchesChildren(t, umem);
  });
});

test('rdma B4, E1: an access beyond the last 1 GiB slot is EFAULT', (t) => {
  const { sim, a, b } = world({ caps: { maxMrSize: 2 ** 48 } });
  run(t, sim, a, function* () {
    const [qb] = rcPair(b, a);
    const { mr, umem } = yield* regImplicit(a);
    t.is(IMPLICIT_SLOTS * GiB, 2 ** 47);
    const beyond = IMPLICIT_SLOTS * GiB + 16 * P;
    t.is(yield* a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr: beyond, length: P, lkey: mr.lkey }]), -EFAULT);
    const src = yield* mmapAt(b.p, GiB, P);
    const smr = yield* regExplicit(b, src, P);
    yield* post(b, qb, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sgList: [{ addr: src, length: 8, lkey: smr.lkey }], rdma: { remoteAddr: beyond, rkey: mr.rkey } });
    t.is(wcStatusName((yield* nextWc(b)).status), 'IBV_WC_REM_ACCESS_ERR');
    t.is(umem.children.size, 0);
    // The last slot itself is usable up to TASK_SIZE.
    const last = yield* mmapAt(a.p, TASK_SIZE - P, P);
    must(yield* a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr: last, length: P, lkey: mr.lkey }]), 'advise');
    t.deepEqual([...umem.children.keys()], [IMPLICIT_SLOTS - 1]);
  });
});

test('rdma E3, C3: an invalidation that empties a child reaps it on a worker; the next fault creates a new one', (t) => {
  const { sim, a } = world();
  run(t, sim, a, function* () {
    const { mr, umem } = yield* regImplicit(a);
    const buf = yield* mmapAt(a.p, 7 * GiB, 2 * P);
    const flush = (addr: number, n: number) => a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr, length: n * P, lkey: mr.lkey }]);
    must(yield* flush(buf, 2), 'advise');
    const first = umem.children.get(7);
    if (!first) throw new Error('no child');
    must(yield* a.p.madvise(buf, P, MADV_DONTNEED), 'madvise');
    t.is(umem.children.get(7), first, 'still one page mapped: kept');
    must(yield* a.p.madvise(buf + P, P, MADV_DONTNEED), 'madvise');
    t.false(umem.children.has(7), 'emptied: out of its slot at once');
    t.is(umem.reaped, 1);
    yield* sim.sleep(1_000_000);
    t.false(first.notifier.inserted, 'destroyed by the worker');
    t.is(umem.dying.size, 0);
    must(yield* flush(buf, 1), 'advise');
    t.not(umem.children.get(7), first);
    t.is(umem.created, 2);
    deviceMatchesChildren(t, umem);
  });
});

test('rdma E3, B6: a child reaped while a fault installs entries in it: the fault refills it, the reaper fences that, the WR completes', (t) => {
  const { sim, a, b } = world();
  const accesses = watchAccesses([a, b]);
  run(t, sim, a, function* () {
    const [qb] = rcPair(b, a);
    const { mr, umem } = yield* regImplicit(a);
    const buf = yield* mmapAt(a.p, 11 * GiB, 2 * P);
    must(yield* a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr: buf, length: P, lkey: mr.lkey }]), 'advise');
    const child = umem.children.get(11);
    if (!child) throw new Error('no child');
    const src = yield* mmapAt(b.p, GiB, P);
    must(yield* b.p.store(src, pattern(3, P)), 'store');
    const smr = yield* regExplicit(b, src, P);
    // When the fault for the second page reaches the child's mutex, drop the only page
    // the child maps: the invalidation empties it and reaps it under the fault's feet.
    const lock = child.mutex.lock.bind(child.mutex);
    const unlock = child.mutex.unlock.bind(child.mutex);
    let injected = false;
    let faultLocks = 0;
    let refilled = false;
    child.mutex.unlock = () => {
      if (sim.current?.name.endsWith('/page-fault') && child.pages.has(1)) refilled = true;
      unlock();
    };
    child.mutex.lock = function* () {
      if (sim.current?.name.endsWith('/page-fault')) faultLocks++;
      if (!injected && sim.current?.name.endsWith('/page-fault')) {
        injected = true;
        yield* sim.join(a.p.spawnThread('inject', function* () { must(yield* a.p.madvise(buf, P, MADV_DONTNEED), 'madvise'); }));
        t.false(umem.children.has(11), 'reaped while the fault holds it');
      }
      yield* lock();
    };
    yield* post(b, qb, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sgList: [{ addr: src, length: P, lkey: smr.lkey }], rdma: { remoteAddr: buf + P, rkey: mr.rkey } });
    t.is(wcStatusName((yield* nextWc(b)).status), 'IBV_WC_SUCCESS');
    t.true(injected);
    t.is(faultLocks, 2, 'the fault saw the sequence move and retried in the same (reaped) child');
    t.true(refilled, 'a racing fault may refill the child first (E3)');
    t.is(umem.reaped, 1);
    yield* sim.sleep(1_000_000);
    t.false(child.notifier.inserted, 'the reaped child was destroyed');
    t.is(child.pages.size, 0, 'what the racing fault refilled was dropped with it');
    t.deepEqual(yield* load(a.p, buf + P, P), pattern(3, P));
    deviceMatchesChildren(t, umem);
  });
  t.true(accesses.checked > 0);
  t.deepEqual(accesses.bad, []);
});

test('rdma E1, A7: 5000 random pages over 128 TiB keep the driver and device state sparse', (t) => {
  const { sim, a } = world();
  const N = 5000;
  run(t, sim, a, function* () {
    const { mr, umem } = yield* regImplicit(a);
    must(yield* a.p.mmap(GiB, TASK_SIZE - GiB, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), 'mmap');
    const rng = sim.rng('test:pages');
    const pages = new Set<number>();
    while (pages.size < N) pages.add(rng.int(GiB / P, TASK_SIZE / P - 1));
    const sgl = [...pages].map((pg) => ({ addr: pg * P, length: P, lkey: mr.lkey }));
    for (let i = 0; i < sgl.length; i += 500) must(yield* a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, sgl.slice(i, i + 500)), 'advise');
    const slots = new Set([...pages].map((pg) => Math.floor((pg * P) / GiB)));
    t.is(umem.children.size, slots.size);
    let mirrored = 0;
    for (const odp of umem.children.values()) mirrored += odp.pages.size;
    t.is(mirrored, N, 'the mirrors hold one entry per page, nothing per slot');
    t.is(umem.mr.pageTable.presentPages, N);
    t.true(umem.mr.pageTable.chunkCount <= N);
    t.true(umem.mr.pageTable.bytes <= N * 512 * 21, `device table ${umem.mr.pageTable.bytes} bytes`);
    t.is(umem.counters.prefetches, N);
  });
});

test('rdma C9, E3, kernel rule 34: exit reaps every child; deregistration tears down what is left', (t) => {
  const { sim, a, b } = world();
  run(t, sim, a, function* () {
    const { mr, umem } = yield* regImplicit(a);
    for (const slot of [2, 40, 1000]) {
      const buf = yield* mmapAt(a.p, slot * GiB, P);
      must(yield* a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr: buf, length: P, lkey: mr.lkey }]), 'advise');
    }
    const untouched = yield* mmapAt(a.p, 77 * GiB, P);
    must(yield* a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr: untouched, length: P, lkey: mr.lkey }]), 'advise');
    t.is(umem.children.size, 4, 'a NO_FAULT snapshot of an empty slot still creates its child');
    // Dereg with live children first (a second context on b shows the same on another node).
    const other = yield* regImplicit(b);
    const bb = yield* mmapAt(b.p, 3 * GiB, P);
    must(yield* b.ctx.adviseMr(b.pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr: bb, length: P, lkey: other.mr.lkey }]), 'advise');
    t.is(yield* b.ctx.deregMr(other.mr), 0);
    t.is(other.umem.children.size, 0);
    t.is(b.p.mm.notifierSubscriptions?.itree.size, 0, 'every child notifier removed');
    t.is(other.umem.mr.state, 'destroyed');
    // Exit: the release invalidation empties (and so reaps) every child that had pages.
    yield* sim.join(a.p.spawnThread('exit', function* () { must(yield* a.p.exit(), 'exit'); }));
    yield* sim.sleep(1_000_000);
    t.is(umem.reaped, 3);
    t.deepEqual([...umem.children.keys()], [77], 'the child that never mapped a page is not reaped by an invalidation');
    t.is(umem.mr.pageTable.presentPages, 0);
    t.is(yield* a.ctx.deregMr(mr), 0);
    t.is(umem.children.size, 0);
    t.is(a.p.mm.notifierSubscriptions?.itree.size, 0);
  });
});

test('rdma B4: a fault on an implicit MR after its owner exited fails (EINVAL) without subscribing to the dead mm', (t) => {
  const { sim, a, b } = world();
  run(t, sim, b, function* () {
    const [qb] = rcPair(b, a);
    const { mr, umem } = yield* regImplicit(a);
    const buf = yield* mmapAt(a.p, 6 * GiB, P);
    yield* sim.join(a.p.spawnThread('exit', function* () { must(yield* a.p.exit(), 'exit'); }));
    const src = yield* mmapAt(b.p, GiB, P);
    const smr = yield* regExplicit(b, src, P);
    yield* post(b, qb, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sgList: [{ addr: src, length: 8, lkey: smr.lkey }], rdma: { remoteAddr: buf, rkey: mr.rkey } });
    t.is(wcStatusName((yield* nextWc(b)).status), 'IBV_WC_REM_ACCESS_ERR');
    t.is(umem.children.size, 0);
    t.is(umem.created, 0);
  });
});
