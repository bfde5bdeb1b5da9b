import {
  GUP_PIN_COUNTING_BIAS, MADV_PAGEOUT, getUserPagesFast, putUserPages, pteFrame, vpn,
} from '../kernel-model/index.ts';
import { pinnedStrategy } from '../driver/index.ts';
import { ALL_ACCESS, P, load, mapAnon, must, openApp, pattern, regOk, store, equalBytes } from './app.ts';
import type { ScenarioDefinition } from './scenario.ts';

/**
 * Seed 002 (Jérôme Glisse, 2019): pins became a bias of 1024 on the refcount, accepting
 * false positives: a page with 1024 or more ordinary references looks pinned. Here a
 * process holds 1024 plain get_user_pages references on one page (as many concurrent
 * O_DIRECT readers or vmsplice would) in an mm that also has a pinned MR (so
 * MMF_HAS_PINNED is set): fork copies that page for the child at once (rule 67) and
 * reclaim keeps it (rule 72), exactly as for a real pin. Nothing is violated; the cost is
 * counted.
 */
export const gupBiasFalsePositive: ScenarioDefinition = {
  name: 'gup-bias-false-positive',
  summary: 'seed 002: 1024 ordinary page references look pinned (fork copies early, reclaim keeps the page)',
  seeds: ['002'],
  defaultProfile: 'linux-6.x',
  drivers: ['pinned'],
  defaultDriver: 'pinned',
  untilNs: 1_000_000_000,
  expect: () => [],
  setup(ctx) {
    const node = ctx.node('host', { device: { nonOdp: pinnedStrategy() } });
    const p = node.kernel.createProcess('app');
    const app = openApp(node, p);
    const k = node.kernel;
    return function* () {
      const buf = yield* mapAnon(app, 2);
      const ring = yield* mapAnon(app, 1);
      yield* store(app, buf, pattern(1, 64));
      yield* store(app, ring, pattern(2, 64));
      yield* regOk(app, ring, P, ALL_ACCESS);
      ctx.say(`a pinned MR on ${P} bytes sets MMF_HAS_PINNED on the mm (rule 57): ${p.mm.hasPinned}`);
      const frame = pteFrame(p.mm.pageTable.get(vpn(buf)));
      const refs: number[] = [];
      for (let i = 0; i < GUP_PIN_COUNTING_BIAS; i++) must(yield* getUserPagesFast(p.mm, buf, 1, 0, refs), 'get_user_pages');
      const looksPinned = k.phys.maybeDmaPinned(frame);
      ctx.say(`${refs.length} plain references on frame ${frame}: refcount ${k.phys.refcount[frame]}, folio_maybe_dma_pinned = ${looksPinned} (a false positive, rule 56)`);
      ctx.figure('false positive', looksPinned ? 'yes' : 'no');
      const child = must(yield* p.fork('child'), 'fork');
      if (typeof child === 'number') return;
      const childFrame = pteFrame(child.mm.pageTable.get(vpn(buf)));
      const copied = childFrame !== frame;
      ctx.say(`fork: the child ${copied ? 'got its own copy at once (frame ' + childFrame + '), as for a real pin (rule 67)' : 'shares the page copy-on-write'}`);
      ctx.figure('fork early copies', copied ? 1 : 0);
      const swapBefore = k.swap.used;
      must(yield* p.madvise(buf, P, MADV_PAGEOUT), 'madvise(PAGEOUT)');
      const kept = pteFrame(p.mm.pageTable.get(vpn(buf))) === frame && k.swap.used === swapBefore;
      ctx.say(`MADV_PAGEOUT: reclaim ${kept ? 'kept the page (maybe pinned, rule 72)' : 'swapped it out'}`);
      ctx.figure('reclaim kept', kept ? 1 : 0);
      putUserPages(k, refs);
      ctx.say(`references dropped: refcount ${k.phys.refcount[frame]}, looks pinned = ${k.phys.maybeDmaPinned(frame)}`);
      must(yield* p.madvise(buf, P, MADV_PAGEOUT), 'madvise(PAGEOUT)');
      ctx.say(`MADV_PAGEOUT again: ${k.swap.used > swapBefore ? 'now swapped out' : 'still resident'}`);
      const back = yield* load(app, buf, 64);
      ctx.say(`the process reads its bytes back ${equalBytes(back, pattern(1, 64)) ? 'intact' : 'CORRUPTED'}`);
      yield* child.exit();
      yield* app.ctx.close();
      yield* p.exit();
    };
  },
};
