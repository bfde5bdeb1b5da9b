import type { Kernel } from './kernel.ts';
import { writebackFile } from './filemap.ts';

export interface FlusherOptions {
  /** dirty_writeback_interval: how often the flusher wakes (virtual ns, default 5 s). */
  periodNs: number;
  /**
   * Model the filesystem releasing the buffers of the pages it just cleaned (as
   * try_to_release_folio does under memory pressure). The 2018 crash needs it.
   */
  dropBuffers: boolean;
}

export interface FlusherStats {
  rounds: number;
  pagesWritten: number;
}

/**
 * The writeback flusher (wb_workfn): a kernel thread that periodically cleans every dirty
 * file page through folio_mkclean (PROTECTION_PAGE, rule 76), regardless of pins.
 */
export function startFlusher(kernel: Kernel, opts: Partial<FlusherOptions> = {}): FlusherStats {
  const periodNs = opts.periodNs ?? 5_000_000_000;
  const dropBuffers = opts.dropBuffers ?? false;
  const stats: FlusherStats = { rounds: 0, pagesWritten: 0 };
  kernel.sim.spawn('flush-8:0', function* () {
    for (;;) {
      yield* kernel.sim.sleep(periodNs);
      stats.rounds++;
      for (const file of kernel.allFiles()) {
        if (!file.shmem) stats.pagesWritten += yield* writebackFile(kernel, file, dropBuffers);
      }
    }
  }, { kind: 'kthread', node: kernel.node });
  return stats;
}
