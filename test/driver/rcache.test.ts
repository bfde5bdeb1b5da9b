/**
 * The userspace registration cache (driver/rcache.ts), after UCX's rcache
 * (ucs/memory/rcache.c: ucs_rcache_get, ucs_rcache_region_put, ucs_rcache_invalidate_range)
 * and its ucm memory hooks: lookup by VA range, register on miss, LRU with a size bound,
 * references for in-flight work, and the invalidation sources.
 */
import test from 'ava';
import { MADV_DONTNEED, Simulation, setBrkBase, type Co } from '../../kernel-model/index.ts';
import { Fabric, MLX5_ODP_CAPS } from '../../device/index.ts';
import {
  defineCachePolicy, holdoffStrategy, isCachePolicyDefinition, odpStrategy, rcachePolicy, RegistrationCache,
  SIZE_MAX, type RcachePolicy, type RcacheRegion, type RcacheStreamEvent,
} from '../../driver/index.ts';
import { ALL_ACCESS, ANON, P, RW, makeApp, type App } from './_verbs-rig.ts';

function rig(policy: RcachePolicy, opts: Parameters<typeof makeApp>[3] = {}): { sim: Simulation; app: App; cache: RegistrationCache; events: RcacheStreamEvent[] } {
  const sim = new Simulation({ seed: 1 });
  const app = makeApp(sim, new Fabric(sim), 'a', opts);
  const events: RcacheStreamEvent[] = [];
  app.node.device.rcache$.subscribe((e) => events.push(e));
  return { sim, app, cache: new RegistrationCache(app.ctx, { pd: app.pd, access: ALL_ACCESS, policy }), events };
}

function run(t: import('ava').ExecutionContext, r: { sim: Simulation; app: App }, body: () => Co<void>): void {
  const task = r.app.p.spawnThread('main', body);
  const out = r.sim.run();
  if (out.reason === 'failed') t.fail(out.failure ?? 'failed');
  t.true(task.done);
}

const region = (v: RcacheRegion | number): RcacheRegion => {
  if (typeof v === 'number') throw new Error(`get failed ${v}`);
  return v;
};

test('lookup by VA range: a miss registers the page-aligned range, a covered lookup hits the same key; the stream carries lookup, register, hit (ucs_rcache_get)', (t) => {
  const r = rig(rcachePolicy('memory-hooks'));
  run(t, r, function* () {
    const buf = (yield* r.app.p.mmap(0, 8 * P, RW, ANON)) as number;
    const a = region(yield* r.cache.get(buf + 100, 3 * P));
    t.is(a.start, buf);
    t.is(a.end, buf + 4 * P);
    const b = region(yield* r.cache.get(buf + P, 2 * P));
    t.is(b, a, 'a sub-range of a cached region is a hit');
    const c = region(yield* r.cache.get(buf + 6 * P, P));
    t.not(c.key, a.key, 'outside it: another registration');
    t.deepEqual(r.cache.stats, { lookups: 3, hits: 1, misses: 2, registrations: 2, deregistrations: 0, invalidations: 0, evictions: 0 });
  });
  t.deepEqual(r.events.map((e) => e.type), ['lookup', 'register', 'lookup', 'hit', 'lookup', 'register']);
});

test('references for in-flight work: an invalidated region leaves the lookup at once but is deregistered only at its last put (ucs_rcache_region_put)', (t) => {
  const r = rig(rcachePolicy('memory-hooks'));
  run(t, r, function* () {
    const buf = (yield* r.app.p.mmap(0, 4 * P, RW, ANON)) as number;
    const a = region(yield* r.cache.get(buf, 4 * P));
    t.is(yield* r.cache.munmap(buf, 4 * P), 0);
    t.is(r.cache.size, 0);
    t.is(r.cache.stats.deregistrations, 0, 'still referenced: the MR stays');
    t.true(r.app.node.device.umemByKey.has(a.key));
    yield* r.cache.put(a);
    t.is(r.cache.stats.deregistrations, 1);
    t.false(r.app.node.device.umemByKey.has(a.key));
  });
  const inv = r.events.find((e) => e.type === 'invalidate');
  t.like(inv, { source: 'memory-hooks', cause: 'munmap' });
});

test('LRU with a size bound: past maxRegions the least recently used idle region is deregistered; a referenced one is never evicted', (t) => {
  const r = rig(rcachePolicy('none', { maxRegions: 2 }));
  run(t, r, function* () {
    const buf = (yield* r.app.p.mmap(0, 16 * P, RW, ANON)) as number;
    const a = region(yield* r.cache.get(buf, P));
    const b = region(yield* r.cache.get(buf + 2 * P, P));
    yield* r.cache.put(b);
    const c = region(yield* r.cache.get(buf + 4 * P, P));
    t.is(r.cache.size, 2);
    t.is(r.cache.stats.evictions, 1);
    t.false(r.app.node.device.umemByKey.has(b.key), 'b (idle, least recent among idle) evicted');
    t.true(r.app.node.device.umemByKey.has(a.key), 'a is referenced: kept even though older');
    yield* r.cache.put(a);
    yield* r.cache.put(c);
    region(yield* r.cache.get(buf + 6 * P, P));
    t.false(r.app.node.device.umemByKey.has(a.key), 'now a is the LRU idle region');
  });
});

test('memory hooks see munmap, madvise(DONTNEED), brk shrink and mremap before the syscall; a cache without them (none, hooks-failed) sees nothing (ucm)', (t) => {
  for (const source of ['memory-hooks', 'none', 'hooks-failed'] as const) {
    const r = rig(rcachePolicy(source));
    const heap = 0x5555_0000_0000;
    setBrkBase(r.app.p.mm, heap);
    run(t, r, function* () {
      const buf = (yield* r.app.p.mmap(0, 16 * P, RW, ANON)) as number;
      for (const off of [0, 4, 8]) yield* r.cache.put(region(yield* r.cache.get(buf + off * P, P)));
      yield* r.app.p.brk(heap + 8 * P);
      yield* r.cache.put(region(yield* r.cache.get(heap + 6 * P, P)));
      t.is(r.cache.size, 4);
      yield* r.cache.munmap(buf, P);
      yield* r.cache.madvise(buf + 4 * P, P, MADV_DONTNEED);
      yield* r.cache.mremap(buf + 8 * P, P, 2 * P, 1);
      yield* r.cache.brk(heap + 2 * P);
      t.is(r.cache.size, source === 'memory-hooks' ? 0 : 4, `${source}: regions left`);
    });
    const causes = r.events.filter((e) => e.type === 'invalidate').map((e) => (e as { cause: string }).cause);
    t.deepEqual(causes, source === 'memory-hooks' ? ['munmap', 'madvise', 'mremap', 'brk'] : []);
    t.is(r.events.some((e) => e.type === 'hooks-failed'), source === 'hooks-failed');
  }
});

test('the mr-event source drops a region when a holdoff MR reports its invalidation (opt-in mr:invalidated, rdma F4 extension), at the next lookup', (t) => {
  const r = rig(rcachePolicy('mr-event'), { nonOdp: holdoffStrategy({ holdoffTimeoutNs: 1_000_000 }) });
  run(t, r, function* () {
    const buf = (yield* r.app.p.mmap(0, 4 * P, RW, ANON)) as number;
    yield* r.cache.put(region(yield* r.cache.get(buf, 4 * P)));
    yield* r.app.p.munmap(buf, 4 * P);
    t.is(r.cache.size, 1, 'queued, as UCX queues on its inv_q');
    yield* r.app.p.mmap(buf, 4 * P, RW, ANON | 0x10);
    const again = region(yield* r.cache.get(buf, 4 * P));
    t.is(r.cache.stats.misses, 2, 'the second lookup missed: the event dropped the region first');
    t.is(again.start, buf);
  });
});

test('the odp source hands out the keys of one implicit ODP MR (rdma A7): every lookup after the first hits it', (t) => {
  const r = rig(rcachePolicy('odp'), { caps: { odp: MLX5_ODP_CAPS }, odp: odpStrategy() });
  run(t, r, function* () {
    const buf = (yield* r.app.p.mmap(0, 4 * P, RW, ANON)) as number;
    const a = region(yield* r.cache.get(buf, P));
    const b = region(yield* r.cache.get(buf + 3 * P, P));
    t.is(a, b);
    t.is(a.end, SIZE_MAX);
    t.is(r.cache.stats.registrations, 1);
  });
});

test("a user's cache policy (defineCachePolicy): its registerRange widens misses, and an onInvalidate that refuses leaves the region stale", (t) => {
  const def = defineCachePolicy({
    name: 'wide-deaf', source: 'memory-hooks',
    policy: () => ({ name: 'wide-deaf', source: 'memory-hooks', registerRange: (s, e) => ({ start: s, end: e + 4 * P }), onInvalidate: () => false }),
  });
  t.true(isCachePolicyDefinition(def));
  t.throws(() => defineCachePolicy({ name: 'x', source: 'bogus' as never, policy: () => rcachePolicy('none') }), { message: /source must be one of/ });
  const r = rig(def.policy({}));
  run(t, r, function* () {
    const buf = (yield* r.app.p.mmap(0, 16 * P, RW, ANON)) as number;
    const a = region(yield* r.cache.get(buf, P));
    t.is(a.end, buf + 5 * P);
    yield* r.cache.put(a);
    yield* r.cache.munmap(buf, 16 * P);
    t.is(r.cache.size, 1, 'the policy refused the invalidation');
  });
});
