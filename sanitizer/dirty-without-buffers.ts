/**
 * dirty-without-buffers (error): `set_page_dirty` (folio_mark_dirty) on a file page whose
 * filesystem state (buffers, PG_PRIVATE) was dropped after writeback cleaned it.
 *
 * Observed: the kernel model records exactly this moment (`dirty-without-buffers`, with
 * the caller: put_user_pages / unpin_user_pages_dirty_lock after DMA, set_page_dirty_lock,
 * zap_pte_range). The checker adds the history: the writeback that cleaned the page and
 * the device writes into it since.
 *
 * Why it is a bug: the filesystem finds a dirty page it has no block mapping for; in 2018
 * this was the ext4 crash (BUG_ON in the writepages path) reached after a long-term pin's
 * DMA, and before that, silent data loss.
 *
 * Not flagged: dirtying a page that still has its buffers (the normal path), or a page that
 * is already dirty; shmem and anonymous pages (the model does not record those).
 */
import { PG_PRIVATE, type Kernel } from '../kernel-model/index.ts';
import type { AccessEvent, Checker, SanitizerContext } from './context.ts';
import type { TrailEntry } from './violation.ts';
import { formatNs, violation } from './violation.ts';

export function createDirtyWithoutBuffers(ctx: SanitizerContext): Checker {
  const id = 'dirty-without-buffers';
  const cleaned = new Map<string, TrailEntry>();
  /** Per kernel: frame -> the last device write into it (no string built per write). */
  const lastDeviceWrite = new Map<Kernel, Map<number, AccessEvent>>();
  const key = (k: Kernel, frame: number) => `${ctx.kernelIndex(k)}:${frame}`;
  const writesOf = (k: Kernel) => {
    let m = lastDeviceWrite.get(k);
    if (!m) lastDeviceWrite.set(k, (m = new Map()));
    return m;
  };

  ctx.on(ctx.access$, id, (e) => {
    if (e.access.write && e.kernel) writesOf(e.kernel).set(e.access.frame, e);
  });

  ctx.onRecords(['writeback', 'dirty-without-buffers'], id, (r) => {
    if (r.type === 'writeback') {
      for (const k of ctx.kernels) {
        if (k.fileById(r.file)?.pageCache.get(r.index) !== r.frame) continue;
        const name = k.fileById(r.file)?.name ?? `file ${r.file}`;
        cleaned.set(key(k, r.frame), { time: r.t, kind: 'writeback', task: r.task, text: `writeback cleaned page ${r.index} of ${name} (frame ${r.frame}) [${ctx.taskName(r.task)}]` });
        lastDeviceWrite.get(k)?.delete(r.frame);
      }
      return;
    }
    if (r.type !== 'dirty-without-buffers') return;
    // The record says which frame, not which kernel: the one where it is a file page without buffers.
    const candidates = ctx.kernels.filter((k) => (k.phys.mappingFile[r.frame] ?? -1) >= 0 && !k.phys.has(r.frame, PG_PRIVATE));
    const k = candidates[0];
    const file = k ? k.fileById(k.phys.mappingFile[r.frame] as number) : undefined;
    const what = file ? `page ${k!.phys.index[r.frame]} of ${file.name}` : 'a file page';
    const dw = k ? lastDeviceWrite.get(k)?.get(r.frame) : undefined;
    const s = ctx.syscallOf(r.task);
    const message = `${r.caller} dirtied frame ${r.frame} (${what}) whose filesystem buffers were dropped after writeback cleaned it` +
      `${dw ? `; the device wrote it at ${formatNs(dw.access.time)}` : ''}`;
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [
      k ? cleaned.get(key(k, r.frame)) : null,
      dw ? ctx.trailAccess(dw) : null,
      ctx.trailSyscall(s),
      { time: r.t, kind: 'set-page-dirty', task: r.task, text: `${r.caller} marks frame ${r.frame} dirty [${ctx.taskName(r.task)}]` },
    ]));
  });

  return { id };
}
