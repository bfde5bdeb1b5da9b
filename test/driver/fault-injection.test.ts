/**
 * Seeded fault injection where real hardware and kernels fail, and what each caller sees:
 * a failing device command during a registration or an ODP fault, an allocation failure
 * during a registration, a signal during GUP. Each gives the documented error and leaves
 * no half-done state.
 */
import test from 'ava';
import { EINTR, EIO, ENOMEM, GUP_PIN_COUNTING_BIAS, Simulation, errnoName } from '../../kernel-model/index.ts';
import { Fabric, IBV_ACCESS_ON_DEMAND, IBV_SEND_SIGNALED, IBV_WC_SUCCESS, IBV_WR_RDMA_WRITE, MLX5_ODP_CAPS, wcStatusName } from '../../device/index.ts';
import { createRdmaNode, odpStrategy, pinnedStrategy } from '../../driver/index.ts';
import { ALL_ACCESS, P, completions, connectRc, mapAnon, openApp, pattern, regOk, store } from '../../scenarios/app.ts';

function pair(seed = 1) {
  const sim = new Simulation({ seed });
  const fabric = new Fabric(sim);
  const mk = (name: string) => createRdmaNode(sim, fabric, { name, nic: { caps: { odp: MLX5_ODP_CAPS } }, device: { nonOdp: pinnedStrategy(), odp: odpStrategy() } });
  const na = mk('a');
  const nb = mk('b');
  return { sim, na, nb, a: openApp(na, na.kernel.createProcess('a')), b: openApp(nb, nb.kernel.createProcess('b')) };
}

for (const [what, setup, errno] of [
  ['a failing device command', (r: ReturnType<typeof pair>) => { r.na.nic.faultInjection.commandFailureRate = 1; }, -EIO],
  ['an allocation failure', (r: ReturnType<typeof pair>) => { r.na.kernel.phys.allocFailureRate = 1; }, -ENOMEM],
  ['a fatal signal in GUP', (r: ReturnType<typeof pair>) => { r.na.kernel.faultInjection.signalRate = 1; }, -EINTR],
] as const) {
  test(`pinned registration under ${what} returns ${errnoName(errno)} and leaves nothing pinned, charged or mapped on the device`, (t) => {
    const r = pair();
    const { a } = r;
    const main = r.sim.spawn('main', function* () {
      // Half the buffer written, half never touched: registration must fault the rest in.
      const buf = yield* mapAnon(a, 8);
      yield* store(a, buf, pattern(1, 4 * P));
      setup(r);
      const ret = yield* a.ctx.regMr(a.pd, buf, 8 * P, ALL_ACCESS);
      t.is(ret, errno);
      r.na.nic.faultInjection.commandFailureRate = 0;
      a.k.phys.allocFailureRate = 0;
      a.k.faultInjection.signalRate = 0;
      const frames = [...Array(8).keys()].map((i) => Math.floor(a.p.mm.pageTable.get(buf / P + i) / 64)).filter((f) => f > 0);
      t.true(frames.every((f) => (a.k.phys.refcount[f] ?? 0) < GUP_PIN_COUNTING_BIAS), 'no pin left behind');
      t.is(a.p.mm.pinnedVm, 0, 'pinned_vm uncharged');
      t.is(r.na.device.umemByKey.size, 0, 'no MR left registered');
      const ok = yield* regOk(a, buf, 8 * P, ALL_ACCESS);
      t.true(ok.lkey > 0, 'a later registration works');
    });
    const out = r.sim.run({ task: main, untilNs: 1e10 });
    t.not(out.reason, 'failed', out.failure);
  });
}

test('an ODP fault whose device update fails resumes with error: the WR completes in error, the QP errors, and nothing stale is mapped', (t) => {
  const r = pair(3);
  const { a, b } = r;
  const main = r.sim.spawn('main', function* () {
    const src = yield* mapAnon(a, 4);
    const dst = yield* mapAnon(b, 4);
    yield* store(a, src, pattern(2, 4 * P));
    const ms = yield* regOk(a, src, 4 * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND);
    const md = yield* regOk(b, dst, 4 * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND);
    const [qa] = connectRc(a, b);
    // The destination was never touched: the responder faults, and its update fails.
    r.nb.nic.faultInjection.commandFailureRate = 1;
    yield* a.ctx.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: src, length: 4 * P, lkey: ms.lkey }], rdma: { remoteAddr: dst, rkey: md.rkey } });
    const [wc] = yield* completions(a, 1);
    t.not(wc?.status, IBV_WC_SUCCESS, `completed ${wcStatusName(wc?.status ?? -1)}`);
    t.is(md.umem.mr.pageTable.presentPages, 0, 'the failed update installed nothing');
    t.true(r.nb.nic.faultQueue.resumedWithError >= 1, 'the fault was resumed with the error bit');
    void ms;
  });
  const out = r.sim.run({ task: main, untilNs: 1e10 });
  t.not(out.reason, 'failed', out.failure);
});
