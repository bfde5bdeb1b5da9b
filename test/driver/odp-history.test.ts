/**
 * ODP as each kernel ran it (issue 12 items 3, 4): the 3.19-to-5.4 protocol on linux-4.18
 * (driver/umem-odp-ucontext.ts: drivers/infiniband/core/umem_odp.c of 4.18, one classic
 * notifier per ucontext with its own interval tree, notifiers_seq/notifiers_count and
 * ib_umem_mmu_notifier_retry, get_user_pages_remote + put_page), the GUP fault of 5.5 to
 * 5.9 on linux-5.8 (driver/odp-gup-fault.ts), hmm_range_fault from 5.10 (36f30e486dce).
 */
import test from 'ava';
import {
  EAGAIN, EINVAL, MAP_ANONYMOUS, MAP_PRIVATE, MmuNotifier, PAGE_SIZE, PROFILES, PROT_READ, PROT_WRITE, Simulation, mmuNotifierRegister,
  pteFrame, vpn, type Co, type ProfileName, type TraceRecord,
} from '../../kernel-model/index.ts';
import { Fabric, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND, PTE_ABSENT, PTE_READ_WRITE, type DeviceFault } from '../../device/index.ts';
import { createRdmaNode } from '../../driver/rdma-node.ts';
import { openDevice, type IbvMr } from '../../driver/verbs.ts';
import type { UmemStrategy } from '../../driver/umem.ts';
import { odpStrategy } from '../../driver/odp-strategy.ts';
import { UmemOdpUcontext } from '../../driver/umem-odp-ucontext.ts';

const P = PAGE_SIZE;
const NO_PIN: UmemStrategy = { name: 'none', regMr: function* () { return -95; } };
const ACCESS = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND;

function node(profile: ProfileName) {
  const sim = new Simulation({ seed: 1 });
  const fabric = new Fabric(sim);
  const n = createRdmaNode(sim, fabric, { name: 'a', kernel: { profile: PROFILES[profile] }, device: { nonOdp: NO_PIN, odp: odpStrategy() } });
  const p = n.kernel.createProcess('app');
  const ctx = openDevice(n.device, p);
  const records: TraceRecord[] = [];
  sim.trace$.subscribe((r) => records.push(r));
  return { sim, n, k: n.kernel, p, ctx, pd: ctx.allocPd(), records };
}

/** A NIC fault as the device would raise it (a write to an absent entry). */
function fault(mr: IbvMr, va: number, id: number): DeviceFault {
  return {
    id, nic: 'a', time: 0, qpNum: 1, transport: 'RC', side: 'responder', opcode: 0, mrKey: mr.lkey,
    iova: va, length: P, write: true, reason: 'absent',
  };
}

const perm = (mr: IbvMr, va: number): number => mr.umem.mr.pageTable.perm(mr.umem.mr.pageIndexOf(va));

test('ODP on linux-4.18 (3.19-5.4 protocol, umem_odp.c ib_umem_odp_get): two MRs share one classic notifier per ucontext, no interval notifier; a fault maps through get_user_pages_remote and put_page drops the reference at once', (t) => {
  const { sim, k, p, ctx, pd, records } = node('linux-4.18');
  sim.spawn('main', function* (): Co {
    const a = yield* p.mmap(0, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    yield* p.store(a, new Uint8Array([1]));
    const m1 = yield* ctx.regMr(pd, a, 2 * P, ACCESS);
    const m2 = yield* ctx.regMr(pd, a + 2 * P, 2 * P, ACCESS);
    if (typeof m1 === 'number' || typeof m2 === 'number') throw new Error(`reg ${m1} ${m2}`);
    t.true(m1.umem instanceof UmemOdpUcontext);
    const subs = p.mm.notifierSubscriptions;
    t.is(subs?.list.length, 1, 'one context->mn for both MRs');
    t.false(subs?.hasItree, 'no mmu_interval_notifier (5.5)');
    t.is(perm(m1, a), PTE_ABSENT, 'registration maps nothing');
    const f = pteFrame(p.mm.pageTable.get(vpn(a)));
    const before = k.phys.refcount[f];
    yield* m1.umem.handleFault!(fault(m1, a, 1));
    t.is(perm(m1, a), PTE_READ_WRITE);
    t.is(k.phys.refcount[f], before, 'ODP avoids pinning: put_page after mapping');
    const gups = records.filter((r) => r.type === 'gup');
    t.is(gups.length, 1);
    t.false((gups[0] as { pin: boolean }).pin, 'FOLL_GET, not FOLL_PIN');
    const u = m1.umem as UmemOdpUcontext;
    const seq = u.notifiersSeq;
    yield* p.munmap(a, P);
    t.is(perm(m1, a), PTE_ABSENT, 'invalidate_range_start walked the tree and zapped');
    t.is(u.notifiersSeq, seq + 1, 'invalidate_range_end bumped notifiers_seq');
    t.is(u.notifiersCount, 0);
    t.is((m2.umem as UmemOdpUcontext).notifiersSeq, 0, 'the other umem is outside the range: untouched');
    t.is(yield* ctx.deregMr(m1), 0);
    t.is(p.mm.notifierSubscriptions?.list.length, 1, 'still one ODP MR: the notifier stays');
    t.is(yield* ctx.deregMr(m2), 0);
    t.is(p.mm.notifierSubscriptions?.list.length, 0, 'the last ODP MR unregistered context->mn');
  });
  const out = sim.run({ untilNs: 10e9 });
  t.is(out.reason, 'idle', out.failure);
});

test('ODP on linux-4.18 (mlx5 pagefault_mr, ib_umem_mmu_notifier_retry): a fault during an invalidation gets -EAGAIN, maps nothing, and waits for notifier_completion until the invalidation ends', (t) => {
  const { sim, p, ctx, pd } = node('linux-4.18');
  let faultDone = -1;
  let invalEnd = -1;
  let perms = -1;
  sim.spawn('main', function* (): Co {
    const a = yield* p.mmap(0, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    yield* p.store(a, new Uint8Array([1]));
    yield* p.store(a + P, new Uint8Array([2]));
    // Registered first, so called after context->mn (newest first): it sleeps while our
    // umem's notifiers_count is raised.
    yield* mmuNotifierRegister(new MmuNotifier('slow', {
      *invalidateRangeStart() { yield* sim.sleep(100_000); return 0; },
      invalidateRangeEnd: () => { invalEnd = sim.now(); },
    }), p.mm);
    const mr = yield* ctx.regMr(pd, a, 2 * P, ACCESS);
    if (typeof mr === 'number') throw new Error(`reg ${mr}`);
    const u = mr.umem as UmemOdpUcontext;
    sim.spawn('nic-fault', function* () {
      yield* sim.sleep(10_000);
      t.is(u.notifiersCount, 1, 'start_account raised the count');
      yield* u.handleFault(fault(mr, a + P, 7));
      faultDone = sim.now();
      perms = perm(mr, a + P);
    });
    yield* p.munmap(a, P);
  });
  const out = sim.run({ untilNs: 10e9 });
  t.is(out.reason, 'idle', out.failure);
  t.is(perms, PTE_ABSENT, 'the retry check refused to map while the invalidation ran (-EAGAIN; the hardware retries)');
  t.true(invalEnd > 0 && faultDone >= invalEnd, 'the fault waited for the completion at the end of the invalidation');
  void EAGAIN;
});

for (const [profile, gup] of [['linux-5.8', true], ['linux-5.15', false]] as const) {
  test(`ODP fault on ${profile}: ${gup ? 'get_user_pages_remote + put_page over an interval notifier (until 5.10)' : 'hmm_range_fault, no GUP reference at all (5.10, 36f30e486dce)'}`, (t) => {
    const { sim, p, ctx, pd, records } = node(profile);
    sim.spawn('main', function* (): Co {
      const a = yield* p.mmap(0, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
      yield* p.store(a, new Uint8Array([1]));
      const mr = yield* ctx.regMr(pd, a, P, ACCESS);
      if (typeof mr === 'number') throw new Error(`reg ${mr}`);
      t.true(p.mm.notifierSubscriptions?.hasItree, 'interval notifiers');
      yield* mr.umem.handleFault!(fault(mr, a, 3));
      t.is(perm(mr, a), PTE_READ_WRITE);
    });
    const out = sim.run({ untilNs: 10e9 });
    t.is(out.reason, 'idle', out.failure);
    t.is(records.filter((r) => r.type === 'gup').length, gup ? 1 : 0);
    t.is(records.filter((r) => r.type === 'gup-release').length, gup ? 1 : 0);
  });
}

test('ODP on linux-3.0: ibv_reg_mr(ON_DEMAND) is refused with EINVAL, naming 3.19', (t) => {
  const { sim, p, ctx, pd, records } = node('linux-3.0');
  sim.spawn('main', function* (): Co {
    const a = yield* p.mmap(0, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    t.is(yield* ctx.regMr(pd, a, P, ACCESS), -EINVAL);
  });
  sim.run({ untilNs: 1e9 });
  t.true(records.some((r) => r.type === 'interface-refused' && /linux-3\.0: it was introduced in Linux 3\.19/.test(r.message)));
});
