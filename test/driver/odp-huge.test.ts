/**
 * ODP over large folios: an MR over THP memory and the invalidations its splits send
 * (spec/kernel.md rule 21f), IBV_ACCESS_HUGETLB for explicit ODP with 2 MiB device entries
 * (drivers/infiniband/core/umem_odp.c ib_umem_odp_get: page_shift = HPAGE_SHIFT since 5.10,
 * ib_umem_odp_map_dma_and_lock's hmm_order check) and its refusal for implicit ODP.
 */
import test, { type ExecutionContext } from 'ava';
import {
  EINVAL, MADV_DONTNEED, MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_FIXED, MAP_HUGETLB, MAP_PRIVATE, PAGE_SIZE, PMD_SIZE, PROFILES, PROT_READ, PROT_WRITE,
  Simulation, pteFrame, vpn, type Co, type Kernel, type NotifierStreamEvent, type Process, type ProfileName,
} from '../../kernel-model/index.ts';
import { Fabric, IBV_ACCESS_HUGETLB, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE } from '../../device/index.ts';
import { createRdmaNode } from '../../driver/rdma-node.ts';
import { openDevice, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, type IbvContext, type IbvMr } from '../../driver/verbs.ts';
import { SIZE_MAX } from '../../driver/ib-device.ts';
import type { UmemStrategy } from '../../driver/umem.ts';
import { IbUmemOdp } from '../../driver/umem-odp.ts';
import { odpStrategy } from '../../driver/odp-strategy.ts';

const P = PAGE_SIZE;
const M2 = PMD_SIZE;
const RW = PROT_READ | PROT_WRITE;
const ALL = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
const ODP = IBV_ACCESS_ON_DEMAND;
const NO_PIN: UmemStrategy = { name: 'none', regMr: function* () { return -95; } };
const BASE = 0x7e0000000000;

interface App { k: Kernel; p: Process; ctx: IbvContext; pd: number; zaps: { first: number; count: number }[]; events: NotifierStreamEvent[] }

function app(profile: ProfileName = 'linux-6.x'): { sim: Simulation; a: App } {
  const sim = new Simulation({ seed: 1 });
  const fabric = new Fabric(sim);
  const node = createRdmaNode(sim, fabric, { name: 'a', kernel: { profile: PROFILES[profile] }, nic: {}, device: { nonOdp: NO_PIN, odp: odpStrategy() } });
  const p = node.kernel.createProcess('a-app');
  const ctx = openDevice(node.device, p);
  const zaps: { first: number; count: number }[] = [];
  node.nic.command$.subscribe((c) => {
    if (c.kind === 'zap') zaps.push({ first: c.firstPage, count: c.count });
  });
  const events: NotifierStreamEvent[] = [];
  node.kernel.notifier$.subscribe((e) => e.phase === 'start' && events.push(e));
  return { sim, a: { k: node.kernel, p, ctx, pd: ctx.allocPd(), zaps, events } };
}

function run(t: ExecutionContext, sim: Simulation, a: App, body: () => Co): void {
  const task = a.p.spawnThread('main', body);
  const out = sim.run({ task, untilNs: 60_000_000_000 });
  t.is(out.failure, undefined, out.failure);
  t.true(task.done);
}

function must(ret: number, what: string): number {
  if (ret < 0) throw new Error(`${what} failed: ${ret}`);
  return ret;
}

function* reg(a: App, addr: number, len: number, access: number): Co<IbvMr> {
  const mr = yield* a.ctx.regMr(a.pd, addr, len, access);
  if (typeof mr === 'number') throw new Error(`regMr ${mr}`);
  return mr;
}

function* thp(a: App, blocks: number): Co<number> {
  const buf = must(yield* a.p.mmap(BASE, blocks * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), 'mmap');
  must(yield* a.p.madvise(buf, blocks * M2, MADV_HUGEPAGE), 'madvise');
  for (let b = 0; b < blocks; b++) must(yield* a.p.store(buf + b * M2, new Uint8Array([b + 1])), 'store');
  return buf;
}

const umemOf = (mr: IbvMr): IbUmemOdp => mr.umem as IbUmemOdp;

test('rule 21f, mm/huge_memory.c (__split_huge_pmd) with rdma C4: an ODP MR over a THP loses all 512 device entries when a partial munmap splits it (the CLEAR over the 2 MiB block), in one C4 zap run, before the UNMAP of the four pages', (t) => {
  const { sim, a } = app();
  run(t, sim, a, function* () {
    const buf = yield* thp(a, 1);
    const mr = yield* reg(a, buf, M2, ALL | ODP);
    const table = mr.umem.mr.pageTable;
    t.is(table.presentPages, 512, 'registration snapshot: every page of the THP device-visible (4 KiB entries)');
    t.is(table.hugeEntries, 0);
    a.events.length = 0;
    a.zaps.length = 0;
    must(yield* a.p.munmap(buf + 100 * P, 4 * P), 'munmap');
    t.deepEqual(a.events.map((e) => [e.range.event, e.range.start - buf, e.range.end - buf]), [[1, 0, M2], [0, 100 * P, 104 * P]], 'CLEAR over the block (the split), then UNMAP');
    t.deepEqual(a.zaps, [{ first: 0, count: 512 }], 'the split zapped the whole block in one run; the UNMAP found nothing left');
    t.is(table.presentPages, 0);
    t.is(umemOf(mr).counters.invalidationPages, 512, 'a 4-page munmap cost 512 pages of device invalidation');
  });
});

test('IBV_ACCESS_HUGETLB, drivers/infiniband/core/umem_odp.c (ib_umem_odp_get: page_shift = HPAGE_SHIFT, 5.10 36f30e486dce): an explicit ODP MR over THPs maps each 2 MiB page with one device entry; a split invalidates the whole entry (one zap of 512 pages), and a refault of the now 4 KiB-mapped block fails with EINVAL (the hmm_order check)', (t) => {
  const { sim, a } = app();
  run(t, sim, a, function* () {
    const buf = yield* thp(a, 2);
    t.is(yield* a.ctx.regMr(a.pd, buf + P, M2, ALL | ODP | IBV_ACCESS_HUGETLB), -EINVAL, 'model choice: a 2 MiB aligned start');
    const mr = yield* reg(a, buf, 2 * M2, ALL | ODP | IBV_ACCESS_HUGETLB);
    t.is(umemOf(mr).odp.pageShift, 21);
    const table = mr.umem.mr.pageTable;
    t.is(table.hugeEntries, 2, 'one device entry per 2 MiB page');
    t.is(table.frameOf(mr.umem.mr.pageIndexOf(buf + M2 + 7 * P)), pteFrame(a.p.mm.pageTable.getPmd(vpn(buf + M2))) + 7);
    a.zaps.length = 0;
    must(yield* a.p.madvise(buf + 3 * P, P, MADV_DONTNEED), 'madvise');
    t.deepEqual(a.zaps, [{ first: 0, count: 512 }], 'one huge entry zapped');
    t.is(table.hugeEntries, 1);
    t.is(yield* a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr: buf, length: P, lkey: mr.lkey }]), -EINVAL, 'the block is PTE-mapped now: hmm_order 0 < page_shift 21');
    t.is(yield* a.ctx.adviseMr(a.pd, IBV_ADVISE_MR_ADVICE_PREFETCH_WRITE, IBV_ADVISE_MR_FLAG_FLUSH, [{ addr: buf + M2, length: P, lkey: mr.lkey }]), 0, 'the intact THP maps');
  });
});

test('IBV_ACCESS_HUGETLB over MAP_HUGETLB memory: a huge device entry per hugetlb page; an aligned DONTNEED zaps it (one zap of 512 pages); implicit ODP refuses HUGETLB with EINVAL', (t) => {
  const { sim, a } = app();
  a.k.hugetlb.setNrHugepages(2);
  run(t, sim, a, function* () {
    const buf = must(yield* a.p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB), 'mmap');
    for (let b = 0; b < 2; b++) must(yield* a.p.store(buf + b * M2, new Uint8Array([1])), 'store');
    const mr = yield* reg(a, buf, 2 * M2, ALL | ODP | IBV_ACCESS_HUGETLB);
    t.is(mr.umem.mr.pageTable.hugeEntries, 2);
    a.zaps.length = 0;
    must(yield* a.p.madvise(buf + M2, M2, MADV_DONTNEED), 'madvise');
    t.deepEqual(a.zaps, [{ first: 512, count: 512 }]);
    t.is(yield* a.ctx.regMr(a.pd, 0, SIZE_MAX, ALL | ODP | IBV_ACCESS_HUGETLB), -EINVAL, 'implicit ODP: no HUGETLB');
  });
});

test('profile linux-5.8 (ib_umem_odp_get before 5.10): IBV_ACCESS_HUGETLB needs the start in a hugetlb VMA (EINVAL over THP memory)', (t) => {
  const { sim, a } = app('linux-5.8');
  run(t, sim, a, function* () {
    const buf = yield* thp(a, 1);
    t.is(yield* a.ctx.regMr(a.pd, buf, M2, ALL | ODP | IBV_ACCESS_HUGETLB), -EINVAL);
  });
});
