/**
 * dma-write-clean-page (error): the device wrote a file page (page cache of a file with a
 * backing store) that writeback has cleaned and nothing has dirtied since.
 *
 * Observed: writeback records (which page cache page was cleaned and written to disk),
 * device write accesses (which frame), and the frame's flags at the moment of the write:
 * still a page-cache page of that file, still the same allocation, PG_DIRTY clear.
 *
 * Why it is a bug: the kernel believes a clean page equals the disk, so the device's
 * bytes are never written back, and the page may be dropped (kernel H7, rule 76; the
 * 2005-2018 pinned-file-page saga). A mirror that follows the notifier cannot do this:
 * the PROTECTION_PAGE invalidation of folio_mkclean takes its write access away, and its
 * refault is a write fault that dirties the page again.
 *
 * Not flagged: device writes before the clean (a short pin cleaned by writeback is
 * legitimate until the device writes after the clean), writes to a page that was dirtied
 * again in between (a refault, unpin_user_pages_dirty_lock, a CPU store), shmem pages
 * (no backing store), and clean pages never written back (read from disk: not this
 * checker's business; lost-write sees their bytes).
 */
import { PG_DIRTY, type Kernel } from '../kernel-model/index.ts';
import type { Checker, SanitizerContext, SyscallInfo } from './context.ts';
import { hex, violation } from './violation.ts';

interface Clean {
  time: number;
  ordinal: number;
  generation: number;
  file: number;
  index: number;
  task: number | null;
  syscall: SyscallInfo | null;
}

export function createDmaWriteCleanPage(ctx: SanitizerContext): Checker {
  const id = 'dma-write-clean-page';
  const cleaned = new Map<string, Clean>();
  const reported = new Set<string>();
  const key = (k: Kernel, frame: number) => `${ctx.kernelIndex(k)}:${frame}`;

  ctx.onRecords(['writeback'], id, (r) => {
    if (r.type !== 'writeback') return;
    for (const k of ctx.kernels) {
      if (k.fileById(r.file)?.pageCache.get(r.index) !== r.frame) continue;
      cleaned.set(key(k, r.frame), {
        time: r.t, ordinal: ctx.ordinal, generation: k.phys.generation[r.frame] ?? 0, file: r.file, index: r.index,
        task: r.task, syscall: ctx.syscallOf(r.task),
      });
    }
  });

  ctx.on(ctx.access$, id, (e) => {
    const a = e.access;
    const k = e.kernel;
    if (!a.write || !k) return;
    const f = a.frame;
    const fileId = k.phys.mappingFile[f] ?? -1;
    if (fileId < 0 || k.phys.has(f, PG_DIRTY)) return;
    const file = k.fileById(fileId);
    if (!file || file.shmem) return;
    const c = cleaned.get(key(k, f));
    if (!c || c.generation !== k.phys.generation[f] || c.file !== fileId) return;
    const dedupe = `${key(k, f)}:${c.ordinal}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const where = e.va !== undefined ? ` (va ${hex(e.va)})` : '';
    const message = `${a.nic} wrote ${a.length} bytes at offset ${a.offset} of frame ${f}${where}, page ${c.index} of file ${file.name}, ` +
      `which writeback cleaned and nothing dirtied since: the bytes will not reach the disk`;
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [
      ctx.trailInstall(ctx.install(a.nic, a.generation), e.binding, e.mr),
      ctx.trailSyscall(c.syscall),
      { time: c.time, kind: 'writeback', task: c.task, text: `writeback cleaned page ${c.index} of ${file.name} (frame ${f}) [${ctx.taskName(c.task)}]` },
      ctx.trailAccess(e),
    ]));
  });

  return { id };
}
