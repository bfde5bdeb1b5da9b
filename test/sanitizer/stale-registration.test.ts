/**
 * stale-registration (sanitizer/stale-registration.ts): an error when a WR is posted
 * through an MR whose frames are no longer what the process maps. Exercised through the
 * stale-hit stories (scenarios/rcache-stale-hit.ts): it fires without memory hooks (and
 * when they failed to install), with a trail naming the registration, the free, the munmap
 * and its UNMAP, the reusing malloc, the cache hit and the post; it stays silent with
 * hooks, with the opt-in MR event and with ODP, where the peer receives the new bytes.
 */
import test from 'ava';
import type { RcacheStreamEvent } from '../../driver/index.ts';
import type { RcacheEvent } from '../../sanitizer/index.ts';
import { RCACHE_STALE_HIT_SCENARIOS } from '../../scenarios/rcache-stale-hit.ts';
import { runScenario } from '../../scenarios/scenario.ts';

// The driver's and the sanitizer's declarations of the stream agree both ways (tsc checks).
const toSanitizer = (e: RcacheStreamEvent): RcacheEvent => e;
const toDriver = (e: RcacheEvent): RcacheStreamEvent => e;
void toSanitizer;
void toDriver;

function run(name: string) {
  const def = RCACHE_STALE_HIT_SCENARIOS.find((s) => s.name === name)!;
  return runScenario(def, { seed: 1, profile: def.defaultProfile, driver: def.defaultDriver, params: {} });
}

test('without hooks: the stale cache hit is an error at the post, with the trail free, munmap, UNMAP, reusing malloc, cache hit, post; the peer gets the old bytes', (t) => {
  const r = run('rcache-stale-hit');
  t.true(r.outcome.ok, JSON.stringify(r.outcome));
  const v = r.violations.filter((x) => x.id === 'stale-registration');
  t.is(v.length, 1);
  t.is(v[0]!.severity, 'error');
  t.regex(v[0]!.message, /RDMA_WRITE posted through host-nic key 0x[0-9a-f]+ \(pinned\).*the MR translates 0x[0-9a-f]+ to frame \d+ but the process maps frame \d+ there; 65 pages/);
  t.deepEqual(v[0]!.trail.map((e) => e.kind), ['rcache-register', 'free', 'syscall', 'invalidate-start', 'alloc', 'rcache-hit', 'post']);
  t.regex(v[0]!.trail[2]!.text, /^munmap\(/);
  t.is(r.extra['peer received'], 'the OLD bytes');
  t.true((r.outcome.seen['pinned-incoherence'] ?? 0) > 0, 'pinned-incoherence warned when the new page appeared under the pinned MR');
  const failed = run('rcache-stale-hit-hooks-failed');
  t.is(failed.outcome.seen['stale-registration'], 1, 'hooks that failed to install are no hooks');
});

for (const name of ['rcache-stale-hit-hooks', 'rcache-stale-hit-event', 'rcache-stale-hit-odp']) {
  test(`${name}: silent, and the peer receives the new bytes`, (t) => {
    const r = run(name);
    t.true(r.outcome.ok, JSON.stringify(r.outcome));
    t.deepEqual(r.violations.map((v) => v.id), []);
    t.is(r.extra['peer received'], 'the new bytes');
  });
}
