import {
  GUP_PIN_COUNTING_BIAS, MADV_PAGEOUT, PTE_SWAP, getUserPagesFast, pteFrame, pteHas, putUserPages, vpn, type Co,
} from '../kernel-model/index.ts';
import { pinnedStrategy } from '../driver/index.ts';
import { ALL_ACCESS, P, equalBytes, load, mapAnon, must, openApp, pattern, regOk, store } from './app.ts';
import type { ScenarioDefinition } from './scenario.ts';

/**
 * Seed 002 (Jérôme Glisse, March 2019): to tell GUP-held pages from others without a page
 * flag, "instead of incrementing page refcount by 1 on GUP we increment it by GUP_BIAS
 * [...] For false positive i think we agreed that it is something we can live with. It
 * could only happen to page that are share more than GUP_BIAS times". It landed (5.7) as
 * FOLL_PIN adding 1024 to a small page's refcount and folio_maybe_dma_pinned reading
 * "refcount >= 1024" (kernel rule 56, hazard H10): a page with 1024 or more ordinary
 * references looks pinned, and gets the treatment of a pinned page.
 *
 * The story: a process has a pinned MR on one page (so the mm has MMF_HAS_PINNED, rule 57)
 * and two ordinary buffer pages that many plain get_user_pages references point at (as
 * many concurrent O_DIRECT reads or vmsplice would): the suspect page reaches refcount
 * 1024 exactly (its mapping plus 1023 references), the control page stops one short, at
 * 1023. Then:
 * - folio_maybe_dma_pinned: true for the suspect (a false positive), false for the control;
 * - fork: the suspect is copied for the child at once, as a pinned page would be (rule 67,
 *   5.9+); the control is COW-shared;
 * - MADV_PAGEOUT: reclaim leaves the suspect mapped (rule 72); the control is unmapped (a
 *   CLEAR) and put in the swap cache, where its references keep it from being freed;
 * - with the references dropped, the suspect is an ordinary page again and swaps out.
 * Nothing is violated: the cost (a needless copy, a page reclaim will not take) is counted.
 *
 * On linux-4.18 and linux-3.0 there is no bias and no folio_maybe_dma_pinned: nothing can
 * tell a pinned page, so both pages are treated alike (the world seed 002 wanted to leave).
 * On linux-5.8 the bias exists but fork does not yet copy maybe-pinned pages (5.9).
 * Caveat of the model: its reclaim applies rule 72 on 5.8 too, where the check arrived
 * later (5.11, "mm: don't put pinned pages into the swap cache"); the 5.8 reclaim line is
 * today's behaviour, not 5.8's.
 */
export const gupBiasFalsePositive: ScenarioDefinition = {
  name: 'gup-bias-false-positive',
  summary: 'seed 002: a page with 1024 ordinary references looks pinned (fork copies it early, reclaim keeps it); one reference fewer does not',
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
    const tracking = k.profile.follPin;
    const reclaimed = new Map<number, string>();
    k.sim.trace$.subscribe((r) => {
      if (r.type === 'reclaim') reclaimed.set(r.frame, r.outcome);
    });
    const reclaimText: Record<string, string> = {
      pinned: 'left mapped, as a pinned page (rule 72)',
      busy: 'unmapped (a CLEAR) and put in the swap cache, but its references keep the frame: not freed',
      freed: 'swapped out and freed',
      young: 'given a second chance (recently used)',
      kept: 'kept',
      writeback: 'written back',
    };

    return function* (): Co<void> {
      const buf = yield* mapAnon(app, 2);
      const ring = yield* mapAnon(app, 1);
      yield* store(app, buf, pattern(1, 2 * P));
      yield* store(app, ring, pattern(2, 64));
      const mr = yield* regOk(app, ring, P, ALL_ACCESS);
      ctx.say(`a pinned MR on the ring ${tracking ? 'pins it with FOLL_PIN: MMF_HAS_PINNED is set on the mm (rule 57)' : 'takes a plain get_user_pages reference (no FOLL_PIN before 5.6): the mm has no MMF_HAS_PINNED'}`);

      const pages = [
        { name: 'suspect', addr: buf, target: GUP_PIN_COUNTING_BIAS, refs: [] as number[] },
        { name: 'control', addr: buf + P, target: GUP_PIN_COUNTING_BIAS - 1, refs: [] as number[] },
      ];
      const frameOf = (addr: number) => pteFrame(p.mm.pageTable.get(vpn(addr)));
      let falsePositives = 0;
      for (const pg of pages) {
        const f = frameOf(pg.addr);
        while ((k.phys.refcount[f] ?? 0) < pg.target) must(yield* getUserPagesFast(p.mm, pg.addr, 1, 0, pg.refs), 'get_user_pages');
        const looks = k.phys.maybeDmaPinned(f);
        if (looks) falsePositives++;
        ctx.say(`${pg.name} page (frame ${f}): ${pg.refs.length} plain references, refcount ${k.phys.refcount[f]}: ` + (tracking
          ? `folio_maybe_dma_pinned = ${looks}${looks ? ', a false positive (rule 56)' : ''}`
          : 'no folio_maybe_dma_pinned in this kernel (5.7): nothing can tell it from a pinned page'));
      }
      ctx.figure('false positives', tracking ? falsePositives : 'n/a (no pin tracking)');

      const before = pages.map((pg) => frameOf(pg.addr));
      const child = must(yield* p.fork('child'), 'fork');
      if (typeof child === 'number') return;
      let early = 0;
      for (const [i, pg] of pages.entries()) {
        const cf = pteFrame(child.mm.pageTable.get(vpn(pg.addr)));
        const copied = cf !== before[i];
        if (copied) early++;
        ctx.say(`fork: the child ${copied ? `got its own copy of the ${pg.name} page at once (frame ${cf}), as for a real pin (rule 67)` : `shares the ${pg.name} page copy-on-write (frame ${cf})`}`);
      }
      ctx.figure('fork early copies', early);
      ctx.figure('bytes copied at fork for no pin', early * P);
      yield* child.exit();
      ctx.say('the child exits');

      must(yield* p.madvise(buf, 2 * P, MADV_PAGEOUT), 'madvise(PAGEOUT)');
      let kept = 0;
      for (const [i, pg] of pages.entries()) {
        const outcome = reclaimed.get(before[i] as number) ?? 'not scanned';
        if (outcome === 'pinned') kept++;
        ctx.say(`MADV_PAGEOUT, ${pg.name} page: ${reclaimText[outcome] ?? outcome}`);
      }
      ctx.figure('reclaim kept', kept);

      const f0 = before[0] as number;
      const stillMapped = frameOf(buf) === f0 && !pteHas(p.mm.pageTable.get(vpn(buf)), PTE_SWAP);
      for (const pg of pages) putUserPages(k, pg.refs);
      ctx.say(`references dropped: the suspect frame's refcount is ${k.phys.refcount[f0]}` +
        (tracking ? `, looks pinned = ${k.phys.maybeDmaPinned(f0)}` : '') +
        (stillMapped ? '' : ' (the swap cache\'s own reference): the next reclaim pass can free it'));
      if (stillMapped) {
        reclaimed.clear();
        must(yield* p.madvise(buf, P, MADV_PAGEOUT), 'madvise(PAGEOUT)');
        const outcome = reclaimed.get(f0) ?? 'not scanned';
        ctx.say(`MADV_PAGEOUT of the suspect page again: ${outcome === 'freed' ? 'now it goes to swap like any page' : reclaimText[outcome] ?? outcome}`);
      }

      const back = yield* load(app, buf, 2 * P);
      const intact = equalBytes(back, pattern(1, 2 * P));
      ctx.say(`the process reads both pages back ${intact ? 'intact' : 'CORRUPTED'}`);
      ctx.figure('data intact', intact ? 'yes' : 'no');
      must(yield* app.ctx.deregMr(mr), 'dereg_mr');
      yield* app.ctx.close();
      yield* p.exit();
    };
  },
};
