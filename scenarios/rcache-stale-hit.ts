import {
  MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, type Co,
} from '../kernel-model/index.ts';
import { IBV_WR_RDMA_WRITE, MLX5_ODP_CAPS, NO_ODP_CAPS } from '../device/index.ts';
import {
  holdoffStrategy, odpStrategy, pinnedStrategy, rcachePolicy, RegistrationCache, type IbDeviceOptions, type RcacheRegion, type RcacheSource,
} from '../driver/index.ts';
import { ALL_ACCESS, completions, connectRc, equalBytes, load, mapAnon, must, openApp, pattern, regOk, store } from './app.ts';
import type { ScenarioDefinition } from './scenario.ts';

/** The buffer: above glibc's M_MMAP_THRESHOLD (128 KiB), so malloc mmaps it and free munmaps it. */
const BUF = 256 * 1024;
/** glibc's chunk header before the user pointer of an mmapped chunk (2 * SIZE_SZ). */
const CHUNK_HEADER = 16;

interface Variant {
  name: string;
  source: RcacheSource;
  driver: 'pinned' | 'holdoff' | 'odp';
  summary: string;
  expect: readonly string[];
}

const VARIANTS: readonly Variant[] = [
  { name: 'rcache-stale-hit', source: 'none', driver: 'pinned', expect: ['pinned-incoherence', 'stale-registration'],
    summary: 'a registration cache without memory hooks: free, munmap, the address reused, a cache hit sends the OLD pages to the peer' },
  { name: 'rcache-stale-hit-hooks', source: 'memory-hooks', driver: 'pinned', expect: [],
    summary: 'the same with memory hooks (UCX ucm): munmap is intercepted, the region dropped, the next send registers the new pages' },
  { name: 'rcache-stale-hit-hooks-failed', source: 'hooks-failed', driver: 'pinned', expect: ['pinned-incoherence', 'stale-registration'],
    summary: 'the same when the hooks failed to install and the cache kept trusting itself (UCX before it learned to refuse, PR #5910)' },
  { name: 'rcache-stale-hit-event', source: 'mr-event', driver: 'holdoff', expect: [],
    summary: "the same with the project's opt-in MR event: a holdoff MR reports its invalidation, the cache drops the region" },
  { name: 'rcache-stale-hit-odp', source: 'odp', driver: 'odp', expect: [],
    summary: 'the same with ODP: the cache holds the keys of one implicit ODP MR, nothing is pinned, the NIC faults the new pages in' },
];

/**
 * The stale-hit story, toward the application that suffers it (issue 20; seed 003 argues
 * applications need an MR-level event). A communication library keeps a registration
 * cache (driver/rcache.ts, after UCX's rcache). The application mallocs a 256 KiB buffer
 * (glibc mmaps it), sends it to a peer (a miss: registered and pinned), frees it (glibc
 * munmaps it), mallocs another of the same size (mmap returns the same address), writes
 * new data and sends again. Without memory hooks the lookup hits the old region, whose
 * pinned frames are the freed pages: the NIC sends the old bytes (stale-registration, an
 * error at the post; pinned-incoherence, the warning when the new page appeared under the
 * pinned MR). With hooks the munmap drops the region first; with the opt-in MR event a
 * holdoff MR reports its invalidation and the cache drops it at the next lookup; with ODP
 * nothing is pinned and the NIC faults the new pages in.
 */
function story(v: Variant): ScenarioDefinition {
  return {
    name: v.name,
    summary: v.summary,
    seeds: ['003'],
    defaultProfile: 'linux-6.x',
    drivers: [v.driver],
    defaultDriver: v.driver,
    untilNs: 2_000_000_000,
    expect: (profile) => (profile === 'linux-3.0' && v.driver === 'odp' ? [] : v.expect),
    setup(ctx) {
      const device: IbDeviceOptions = v.driver === 'odp'
        ? { nonOdp: pinnedStrategy(), odp: odpStrategy() }
        : { nonOdp: v.driver === 'holdoff' ? holdoffStrategy({ holdoffTimeoutNs: 1_000_000 }) : pinnedStrategy() };
      const host = ctx.node('host', { caps: { odp: v.driver === 'odp' ? MLX5_ODP_CAPS : NO_ODP_CAPS }, device });
      const peerNode = ctx.node('peer', { device: { nonOdp: pinnedStrategy() } });
      const app = openApp(host, host.kernel.createProcess('app'));
      const peer = openApp(peerNode, peerNode.kernel.createProcess('peer'));
      const [qApp] = connectRc(app, peer);
      const cache = new RegistrationCache(app.ctx, { pd: app.pd, access: ALL_ACCESS, policy: rcachePolicy(v.source) });

      /** glibc malloc of an mmapped chunk: mmap(size + header, rounded), user pointer after the header. */
      const malloc = function* (size: number): Co<number> {
        const len = Math.ceil((size + CHUNK_HEADER) / PAGE_SIZE) * PAGE_SIZE;
        const base = must(yield* app.p.mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS), 'mmap');
        cache.noteAlloc('malloc', base + CHUNK_HEADER, size);
        return base + CHUNK_HEADER;
      };
      /** glibc free of an mmapped chunk: munmap_chunk, through the cache's hooks when it has them. */
      const free = function* (ptr: number, size: number): Co {
        cache.noteFree('free', ptr, size);
        const base = ptr - CHUNK_HEADER;
        must(yield* cache.munmap(base, Math.ceil((size + CHUNK_HEADER) / PAGE_SIZE) * PAGE_SIZE), 'munmap');
      };
      let wrId = 1;
      /** Send `ptr` to the peer's buffer through the cache: lookup, post, wait, put. */
      const send = function* (ptr: number, dst: number, rkey: number): Co<{ hit: boolean; status: number }> {
        const hitsBefore = cache.stats.hits;
        const region = must(yield* cache.get(ptr, BUF), 'rcache get') as RcacheRegion;
        const hit = cache.stats.hits > hitsBefore;
        must(yield* cache.postSend(qApp, {
          wrId: wrId++, opcode: IBV_WR_RDMA_WRITE, sgList: [{ addr: ptr, length: BUF, lkey: region.key }], rdma: { remoteAddr: dst, rkey },
        }, 'RDMA_WRITE'), 'post');
        const [wc] = yield* completions(app, 1);
        yield* cache.put(region);
        return { hit, status: wc?.status ?? -1 };
      };

      return function* () {
        ctx.say(`a registration cache (${cache.policy.source}) over the ${v.driver} driver; the application sends ${BUF / 1024} KiB buffers to a peer`);
        const dst = yield* mapAnon(peer, BUF / PAGE_SIZE);
        const dstMr = yield* regOk(peer, dst, BUF);
        const a = yield* malloc(BUF);
        yield* store(app, a, pattern(1, BUF));
        let r = yield* send(a, dst, dstMr.rkey);
        ctx.say(`malloc(${BUF}) = 0x${a.toString(16)} (glibc mmaps it); the first send is a cache ${r.hit ? 'hit' : 'miss'}: registered [0x${(a - (a % PAGE_SIZE)).toString(16)}, ...)`);
        yield* free(a, BUF);
        ctx.say(v.source === 'memory-hooks' ? 'free(): glibc munmaps the chunk; the memory hook sees the munmap first and drops the region (its MR is deregistered, the pages unpinned)'
          : v.source === 'mr-event' ? 'free(): glibc munmaps the chunk; the holdoff MR is invalidated and reports it through the opt-in mr:invalidated event'
            : v.source === 'odp' ? 'free(): glibc munmaps the chunk; the implicit ODP MR drops its translations in the notifier callback'
              : 'free(): glibc munmaps the chunk; nothing tells the cache (no hooks), the MR keeps the old pages pinned');
        const b = yield* malloc(BUF);
        const fresh = pattern(2, BUF);
        yield* store(app, b, fresh);
        ctx.say(`malloc(${BUF}) = 0x${b.toString(16)}: ${b === a ? 'the same address' : 'another address'}; the application writes new data`);
        r = yield* send(b, dst, dstMr.rkey);
        const got = yield* load(peer, dst, BUF);
        const ok = equalBytes(got, fresh);
        const old = equalBytes(got, pattern(1, BUF));
        ctx.figure('second send', r.hit ? 'cache hit' : 'cache miss');
        ctx.figure('peer received', ok ? 'the new bytes' : old ? 'the OLD bytes' : 'other bytes');
        ctx.figure('registrations', cache.stats.registrations);
        ctx.figure('cache invalidations', cache.stats.invalidations);
        ctx.say(`the second send is a cache ${r.hit ? 'hit' : 'miss'}; the peer receives ${ok ? 'the new bytes' : old ? 'the OLD bytes: the NIC read the freed pages the stale MR still pins' : 'other bytes'}`);
        yield* cache.destroy();
        yield* app.ctx.close();
        yield* peer.ctx.close();
        yield* app.p.exit();
        yield* peer.p.exit();
      };
    },
  };
}

export const RCACHE_STALE_HIT_SCENARIOS: readonly ScenarioDefinition[] = VARIANTS.map(story);
export function rcacheStaleHitVariant(name: string): ScenarioDefinition | undefined {
  return RCACHE_STALE_HIT_SCENARIOS.find((s) => s.name === name);
}

