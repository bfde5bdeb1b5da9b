/**
 * A complete driver strategy in one page, for a NIC that cannot fault: registration
 * faults the range in through hmm_range_fault (the rule-31 loop, no pins), and an interval
 * notifier zaps and fences the device before the kernel may reuse a page. With
 * `{ skipSync: true }` it forgets the fence, and the sanitizer says so.
 *
 * Run it: npx tsx driver/examples/snapshot-mirror.ts
 */
import {
  EBUSY, HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_WRITE, MAP_ANONYMOUS, MAP_PRIVATE, MmuIntervalNotifier, Mutex,
  PAGE_SIZE, PROT_READ, PROT_WRITE, Simulation, hmmRangeFault, hmmRangeInit, mmuIntervalNotifierInsert,
  mmuIntervalNotifierRemove, mmuIntervalReadBegin, mmuIntervalReadRetry, mmuIntervalSetSeq, mmuNotifierRangeBlockable,
  type Co,
} from '../../kernel-model/index.ts';
import {
  Fabric, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_REMOTE_WRITE, IBV_WR_RDMA_WRITE, IBV_SEND_SIGNALED, accessWritable, wcStatusName,
} from '../../device/index.ts';
import { createRdmaNode, newUmemCounters, type IbUmem, type UmemStrategy } from '../index.ts';
import { attachSanitizer } from '../../sanitizer/index.ts';
import { connectRc, completions, openApp, regOk } from '../../scenarios/app.ts';

export function snapshotMirror(opts: { skipSync?: boolean } = {}): UmemStrategy {
  return {
    name: 'snapshot-mirror',
    *regMr(ctx, req): Co<IbUmem | number> {
      const { nic } = ctx.device;
      const mr = nic.createMr({ pd: req.pd, iova: req.iova, length: req.length, access: req.access });
      if (typeof mr === 'number') return mr;
      const start = Math.floor(req.addr / PAGE_SIZE) * PAGE_SIZE;
      const end = Math.ceil((req.addr + req.length) / PAGE_SIZE) * PAGE_SIZE;
      const mutex = new Mutex(nic.sim, `snapshot-mirror ${mr.lkey}`);
      const sub = new MmuIntervalNotifier(`snapshot-mirror ${mr.lkey}`);
      const umem: IbUmem = {
        strategy: 'snapshot-mirror', ctx, mr, addr: req.addr, length: req.length, access: req.access, counters: newUmemCounters(),
        *dereg() {
          // Stop the device before the memory is the process's again (rdma C9): revoke the
          // key and sync, so no access already translated outlives the return.
          nic.revokeMr(mr);
          yield* nic.sync();
          nic.destroyMr(mr);
          yield* mmuIntervalNotifierRemove(sub);
          return 0;
        },
      };
      const r = yield* mmuIntervalNotifierInsert(sub, ctx.mm, start, end - start, {
        *invalidate(s, range, curSeq) {
          if (!mmuNotifierRangeBlockable(range)) return false; // may not sleep: let the caller retry
          yield* mutex.lock();
          mmuIntervalSetSeq(s, curSeq);
          const first = Math.max(range.start, start), last = Math.min(range.end, end); // ranges are not clipped (rule 13)
          if (first < last) yield* nic.zapEntries(mr, (first - start) / PAGE_SIZE, (last - first) / PAGE_SIZE);
          if (!opts.skipSync) yield* nic.sync(); // the device may still use cached translations until this
          mutex.unlock();
          umem.counters.invalidations++;
          return true;
        },
      }, { lock: mutex });
      if (r < 0) return r;
      // The rule-31 loop: snapshot and fault, then install only if no invalidation raced.
      const write = accessWritable(req.access);
      for (;;) {
        const seq = yield* mmuIntervalReadBegin(sub);
        const range = hmmRangeInit(sub, start, end, seq, HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0));
        yield* ctx.mm.mmapLock.downRead();
        const ret = yield* hmmRangeFault(range);
        ctx.mm.mmapLock.upRead();
        if (ret === -EBUSY) continue;
        if (ret < 0) return ret;
        yield* mutex.lock();
        if (mmuIntervalReadRetry(sub, seq)) {
          mutex.unlock();
          continue;
        }
        const writable = Array.from(range.flags, (f) => (f & HMM_PFN_WRITE) !== 0);
        yield* nic.updateEntries(mr, 0, range.pfns, writable);
        mutex.unlock();
        return umem;
      }
    },
  };
}

/** Two nodes; B's application registers a buffer with the strategy, A writes into it twice, B unmaps a page in between. */
export function demo(opts: { skipSync?: boolean } = {}): string[] {
  const sim = new Simulation({ seed: 1 });
  const fabric = new Fabric(sim);
  const na = createRdmaNode(sim, fabric, { name: 'a', device: { nonOdp: snapshotMirror(opts) } });
  const nb = createRdmaNode(sim, fabric, { name: 'b', device: { nonOdp: snapshotMirror(opts) } });
  const sanitizer = attachSanitizer({ sim, kernels: [na.kernel, nb.kernel], nics: [na.nic, nb.nic], bindings$: [na.device.binding$, nb.device.binding$] });
  const sender = openApp(na, na.kernel.createProcess('sender'));
  const receiver = openApp(nb, nb.kernel.createProcess('receiver'));
  const lines: string[] = [];
  const main = sim.spawn('main', function* () {
    const rw = PROT_READ | PROT_WRITE, anon = MAP_PRIVATE | MAP_ANONYMOUS;
    const src = (yield* sender.p.mmap(0, 4 * PAGE_SIZE, rw, anon)) as number;
    const dst = (yield* receiver.p.mmap(0, 4 * PAGE_SIZE, rw, anon)) as number;
    const access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
    const smr = yield* regOk(sender, src, 4 * PAGE_SIZE, access);
    const dmr = yield* regOk(receiver, dst, 4 * PAGE_SIZE, access);
    const [qa] = connectRc(sender, receiver);
    for (let i = 0; i < 2; i++) {
      // The second WRITE targets a page the receiver has unmapped in between: the device
      // must not reach the old frame (it was freed). A NIC without faults can only fail it.
      if (i === 1) yield* receiver.p.munmap(dst + 3 * PAGE_SIZE, PAGE_SIZE);
      yield* sender.ctx.postSend(qa, { wrId: i, opcode: IBV_WR_RDMA_WRITE, sendFlags: IBV_SEND_SIGNALED, sgList: [{ addr: src, length: 4 * PAGE_SIZE, lkey: smr.lkey }], rdma: { remoteAddr: dst, rkey: dmr.rkey } });
      const [wc] = yield* completions(sender, 1);
      lines.push(`RDMA WRITE ${i}: ${wcStatusName(wc?.status ?? -1)}`);
    }
  });
  sim.run({ task: main, untilNs: 1e9 });
  sanitizer.finish();
  lines.push(sanitizer.violations.length ? sanitizer.render('text') : 'sanitizer: no violations');
  return lines;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log('-- snapshot-mirror, correct --');
  for (const l of demo()) console.log(l);
  console.log('\n-- snapshot-mirror without the sync after the zap --');
  for (const l of demo({ skipSync: true })) console.log(l);
}
