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
  /**
   * dirty_expire_interval: the periodic (kupdate-style) writeback only writes an inode
   * dirtied at least this long ago (mm/page-writeback.c, `dirty_expire_interval = 30 * 100`
   * centiseconds; fs/fs-writeback.c wb_writeback with `older_than_this`). 0 (the model's
   * default here, for stories that want every flusher round to write) writes every dirty
   * inode; DIRTY_EXPIRE_INTERVAL_NS is the kernel's.
   */
  dirtyExpireNs: number;
}

/** The kernel's default dirty_expire_interval (30 s). */
export const DIRTY_EXPIRE_INTERVAL_NS = 30_000_000_000;
/** The kernel's default dirty_writeback_interval (5 s). */
export const DIRTY_WRITEBACK_INTERVAL_NS = 5_000_000_000;

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
  const expireNs = opts.dirtyExpireNs ?? 0;
  const stats: FlusherStats = { rounds: 0, pagesWritten: 0 };
  kernel.sim.spawn('flush-8:0', function* () {
    for (;;) {
      yield* kernel.sim.sleep(periodNs);
      stats.rounds++;
      for (const file of kernel.allFiles()) {
        if (file.shmem) continue;
        // An inode whose dirtied_when is unknown (dirtied behind folio_mark_dirty's back) counts as expired.
        if (expireNs > 0 && file.dirtiedWhenNs >= 0 && kernel.sim.now() - file.dirtiedWhenNs < expireNs) continue;
        stats.pagesWritten += yield* writebackFile(kernel, file, dropBuffers);
      }
    }
  }, { kind: 'kthread', node: kernel.node });
  return stats;
}
