import { PG_DMA_PINNED, ZERO_PFN, type Kernel, type Simulation } from '../../kernel-model/index.ts';

/**
 * What a kernel variant costs, measured from the trace by an observer that steers
 * nothing: the flags hubbard-flag leaves behind (Christopher Lameter's objection, seed
 * 000), the waits of wait-for-dma-idle and the ones that never end (named by the GUP
 * reference they wait for), the writebacks gup-dirty-forever skips, the cleans under a
 * live GUP reference (Dave Chinner's ~30 s, seed 002).
 */
export interface ProposalCosts {
  /** Frames that got hubbard-flag's PG_dma_pinned. */
  flaggedPages: number;
  /** At the end: frames still flagged (not freed) with no GUP reference left. */
  flaggedAfterRelease: number;
  /** At the end: the longest time one of those has stayed flagged since its last GUP reference went (virtual ns). */
  flaggedAfterReleaseNs: number;
  /** try_to_unmap or a buffer release that left a flagged page alone. */
  keptFlagged: number;
  /** Of those, how many found no GUP reference on the page: unreclaimable for nothing. */
  keptFlaggedUnreferenced: number;
  /** Pages written back (cleaned), by the flusher, fsync or reclaim. */
  writebacks: number;
  /** Pages cleaned while they held a GUP reference. */
  cleanedWhilePinned: number;
  /** The first such clean, in virtual ns since that page's GUP reference was taken (null: none). */
  firstCleanIntoPinNs: number | null;
  /** Writebacks skipped because the page held GUP references (gup-dirty-forever). */
  writebackSkipped: number;
  /** GUP releases that did not dirty the page (dirty-at-gup). */
  releasesNotDirtied: number;
  /** DMA-idle waits begun (wait-for-dma-idle). */
  waits: number;
  /** Virtual ns spent in DMA-idle waits that ended. */
  waitNs: number;
  /** Waits still waiting when the run ended, each naming what it waits for. */
  stuck: { node: string; frame: number; caller: string; sinceNs: number; holder: string }[];
}

interface Holder {
  count: number;
  mm: number;
  longterm: boolean;
  since: number;
}

export class ProposalCostObserver {
  private readonly refs = new Map<string, Holder[]>();
  private readonly lastRelease = new Map<string, number>();
  private readonly flagged = new Set<string>();
  private readonly waiting = new Map<string, { node: string; frame: number; caller: string; since: number }>();
  readonly costs: ProposalCosts = {
    flaggedPages: 0, flaggedAfterRelease: 0, flaggedAfterReleaseNs: 0, keptFlagged: 0, keptFlaggedUnreferenced: 0,
    writebacks: 0, cleanedWhilePinned: 0, firstCleanIntoPinNs: null, writebackSkipped: 0, releasesNotDirtied: 0,
    waits: 0, waitNs: 0, stuck: [],
  };

  constructor(private readonly sim: Simulation, private readonly kernels: () => readonly Kernel[]) {
    sim.trace$.subscribe((r) => {
      switch (r.type) {
        case 'gup':
          for (const f of r.frames) {
            if (f === ZERO_PFN) continue;
            const list = this.refs.get(`${r.node}:${f}`) ?? [];
            const h = list.find((x) => x.mm === r.mm && x.longterm === r.longterm);
            if (h) h.count++;
            else list.push({ count: 1, mm: r.mm, longterm: r.longterm, since: r.t });
            this.refs.set(`${r.node}:${f}`, list);
          }
          break;
        case 'gup-release':
          for (const f of r.frames) {
            const key = `${r.node}:${f}`;
            const list = this.refs.get(key);
            if (!list || list.length === 0) continue;
            const h = list[0]!;
            if (--h.count === 0) list.shift();
            if (list.length === 0) {
              this.refs.delete(key);
              this.lastRelease.set(key, r.t);
            }
          }
          break;
        case 'page-free': {
          const key = `${r.node}:${r.frame}`;
          this.refs.delete(key);
          this.flagged.delete(key);
          this.lastRelease.delete(key);
          break;
        }
        case 'writeback': {
          this.costs.writebacks++;
          const list = this.refs.get(`${r.node}:${r.frame}`);
          if (list && list.length > 0) {
            this.costs.cleanedWhilePinned++;
            if (this.costs.firstCleanIntoPinNs === null) this.costs.firstCleanIntoPinNs = r.t - Math.min(...list.map((h) => h.since));
          }
          break;
        }
        case 'proposal': {
          const key = `${r.node}:${r.frame}`;
          if (r.what === 'flag-set') {
            this.costs.flaggedPages++;
            this.flagged.add(key);
          } else if (r.what === 'kept-flagged') {
            this.costs.keptFlagged++;
            if (!this.refs.get(key)?.length) this.costs.keptFlaggedUnreferenced++;
          } else if (r.what === 'writeback-skipped') this.costs.writebackSkipped++;
          else if (r.what === 'release-not-dirtied') this.costs.releasesNotDirtied++;
          else if (r.what === 'dma-idle-wait') {
            this.costs.waits++;
            this.waiting.set(`${key}:${r.task ?? ''}`, { node: r.node, frame: r.frame, caller: r.caller, since: r.t });
          } else if (r.what === 'dma-idle-done') {
            const w = this.waiting.get(`${key}:${r.task ?? ''}`);
            if (w) this.costs.waitNs += r.t - w.since;
            this.waiting.delete(`${key}:${r.task ?? ''}`);
          }
          break;
        }
        default:
      }
    });
  }

  /** Who holds the GUP references of a frame, in words. */
  private holder(node: string, frame: number): string {
    const list = this.refs.get(`${node}:${frame}`) ?? [];
    if (list.length === 0) return 'a reference that is not a GUP reference';
    return list.map((h) => {
      let who = `mm ${h.mm}`;
      for (const k of this.kernels()) {
        if (k.node !== node) continue;
        for (const p of k.processes.values()) if (p.mm.id === h.mm) who = `${p.name} (pid ${p.pid})`;
      }
      return `${who}'s ${h.longterm ? 'long-term ' : ''}GUP reference, held since ${(h.since / 1e9).toFixed(3)} s`;
    }).join(', ');
  }

  /** The costs at the end of the run. */
  finish(): ProposalCosts {
    const now = this.sim.now();
    const c = this.costs;
    c.flaggedAfterRelease = 0;
    c.flaggedAfterReleaseNs = 0;
    for (const key of this.flagged) {
      if (this.refs.get(key)?.length) continue;
      c.flaggedAfterRelease++;
      const since = this.lastRelease.get(key);
      if (since !== undefined) c.flaggedAfterReleaseNs = Math.max(c.flaggedAfterReleaseNs, now - since);
    }
    c.stuck = [...this.waiting.values()].map((w) => ({ node: w.node, frame: w.frame, caller: w.caller, sinceNs: w.since, holder: this.holder(w.node, w.frame) }));
    return c;
  }
}

/** Whether a kernel-side flag is set (for tests that look at a frame directly). */
export function isFlagged(kernel: Kernel, frame: number): boolean {
  return kernel.phys.has(frame, PG_DMA_PINNED);
}
