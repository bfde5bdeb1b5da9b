/**
 * The sanitizer's face: counts per id, errors and warnings, a subset of checkers, the
 * text and JSON renderings with trails, detach, and the binding stream of IbDevice.
 */
import test from 'ava';
import { MADV_DONTNEED } from '../../kernel-model/index.ts';
import { IbDevice, newUmemCounters, type IbUmem, type MrBindingEvent, type UmemStrategy } from '../../driver/index.ts';
import { IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND } from '../../device/index.ts';
import { attachSanitizer, renderCounts, VIOLATION_IDS } from '../../sanitizer/index.ts';
import { MiniOdp, P, anon, devWrite, fill, ok, rig, run } from './_rig.ts';

function buggyRun(opts: Parameters<typeof rig>[0] = {}) {
  const r = rig(opts);
  return { r, body: function* () {
    const buf = yield* anon(r.p, 1);
    const odp = new MiniOdp(r, r.p.mm, buf, P, { bugs: { noZap: true } });
    yield* odp.register();
    ok(yield* devWrite(odp, buf, fill(1, 64)), 'dma');
    ok(yield* r.p.madvise(buf, P, MADV_DONTNEED), 'madvise');
    ok(yield* devWrite(odp, buf, fill(2, 64)), 'dma');
  } };
}

test('counts per id, errors, warnings, text and JSON with trails', (t) => {
  const { r, body } = buggyRun();
  run(t, r, body);
  const s = r.san!;
  t.deepEqual(Object.keys(s.counts).sort(), [...VIOLATION_IDS].sort());
  t.is(s.count('use-after-invalidate'), 1);
  t.is(s.errors().length, s.violations.length);
  t.is(s.warnings().length, 0);
  const text = s.render();
  t.regex(text, /^error use-after-invalidate at /m);
  t.regex(text, /^ +[0-9.]+ µs +syscall +madvise\(/m);
  const json = JSON.parse(s.render('json')) as { counts: Record<string, number>; violations: { id: string; trail: unknown[] }[] };
  t.is(json.counts['use-after-invalidate'], 1);
  t.true(json.violations.every((v) => v.trail.length > 0));
  t.regex(renderCounts(s.counts), /use-after-invalidate: 1/);
});

test('a subset of checkers; detach stops observing', (t) => {
  const { r, body } = buggyRun({ sanitizer: false });
  const s = attachSanitizer({ sim: r.k.sim, kernels: [r.k], nics: [r.nic], bindings$: r.bindings, checkers: ['dma-to-freed-page'] });
  const other = attachSanitizer({ sim: r.k.sim, kernels: [r.k], nics: [r.nic], bindings$: r.bindings });
  other.detach();
  run(t, r, body);
  s.finish();
  t.deepEqual([...new Set(s.violations.map((v) => v.id))], ['dma-to-freed-page']);
  t.is(other.violations.length, 0);
});

test('IbDevice publishes reg/dereg on binding$ in the shape the sanitizer consumes', (t) => {
  const r = rig({ sanitizer: false });
  // A minimal strategy: an MR with an empty table over the request (what matters is the key).
  const strategy: UmemStrategy = {
    name: 'odp',
    *regMr(ctx, req) {
      const mr = r.nic.createMr({ pd: req.pd, iova: req.iova, length: req.length, access: req.access, onDemand: true });
      if (typeof mr === 'number') return mr;
      const umem: IbUmem = {
        strategy: 'odp', ctx, mr, addr: req.addr, length: req.length, access: req.access, counters: newUmemCounters(),
        *dereg() { r.nic.destroyMr(mr); return 0; },
      };
      return umem;
    },
  };
  const dev = new IbDevice(r.k, r.nic, { nonOdp: strategy, odp: strategy });
  const seen: MrBindingEvent[] = [];
  dev.binding$.subscribe((b) => seen.push(b));
  const s = attachSanitizer({ sim: r.k.sim, kernels: [r.k], nics: [r.nic], bindings$: dev.binding$ });
  let key = -1;
  run(t, r, function* () {
    const buf = yield* anon(r.p, 2);
    const ctx = dev.open(r.p);
    const pd = r.nic.allocPd();
    ctx.pds.add(pd);
    const umem = yield* dev.regMr(ctx, { pd, addr: buf + 16, length: P, iova: 0x10010, access: IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND });
    if (typeof umem === 'number') throw new Error(`regMr ${umem}`);
    key = umem.mr.lkey;
    ok(yield* dev.deregMr(umem), 'dereg');
  });
  s.finish();
  t.deepEqual(seen.map((b) => [b.event, b.key, b.mmId, b.addr, b.iova, b.strategy]), [
    ['reg', key, r.p.mm.id, seen[0]!.addr, 0x10010, 'odp'],
    ['dereg', key, r.p.mm.id, seen[0]!.addr, 0x10010, 'odp'],
  ]);
  t.is(seen[0]!.addr % P, 16);
  t.deepEqual(s.internalErrors, []);
  dev.close();
});
