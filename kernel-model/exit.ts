import type { Co } from './sim/index.ts';
import type { MmStruct } from './mm.ts';
import { ULONG_MAX } from './constants.ts';
import { MmuNotifyEvent, mmuNotifierRangeInit } from './mmu-notifier-range.ts';
import { mmuNotifierInvalidateRangeEnd, mmuNotifierInvalidateRangeStart, mmuNotifierRelease } from './mmu-notifier.ts';
import { zapPteRange } from './memory.ts';

/**
 * mmput: drop an address-space reference. The last one runs exit_mmap in the caller's
 * context (which may be a driver's worker holding its own locks: CVE-2022-48675).
 */
export function* mmput(mm: MmStruct): Co {
  if (mm.users <= 0) throw new Error(`mmput on mm${mm.id} with no users`);
  if (--mm.users > 0) return;
  yield* exitMmap(mm);
  mm.mmdrop();
}

/**
 * exit_mmap: release first (RELEASE to interval subscribers, ->release to classic ones,
 * rule 34), then one UNMAP over everything (rule 33), then free. From 6.1 (mm/mmap.c
 * exit_mmap after the maple-tree rework) the unmap_vmas part runs under the mmap lock
 * for read and only the page-table and VMA teardown (free_pgtables, remove_vma) takes it
 * for write, so readers (the OOM reaper, a driver's mmap_read_lock) can run while the
 * UNMAP callbacks do; older profiles keep the write lock throughout (5.19's 64591e8605d6;
 * before it exit_mmap took no lock at all for the unmap, which the model does not show).
 */
export function* exitMmap(mm: MmStruct): Co {
  yield* mmuNotifierRelease(mm);
  const split = releaseAtLeast(mm.kernel.profile.release, 6, 1);
  if (split) yield* mm.mmapLock.downRead();
  else yield* mm.mmapLock.downWrite();
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.UNMAP, 0, ULONG_MAX);
  yield* mmuNotifierInvalidateRangeStart(range);
  const toFree: number[] = [];
  for (const vma of mm.vmas) zapPteRange(mm, vma, vma.start, vma.end, toFree);
  yield* mmuNotifierInvalidateRangeEnd(range);
  if (split) {
    mm.mmapLock.upRead();
    yield* mm.mmapLock.downWrite();
  }
  for (const vma of mm.vmas) vma.file?.mappings.delete(vma);
  mm.vmas = [];
  mm.exited = true;
  mm.mmapLock.upWrite();
  for (const f of toFree) mm.kernel.phys.put(f);
  mm.kernel.sim.emit({ type: 'note', text: `exit_mmap(mm${mm.id}) done` });
}

function releaseAtLeast(release: string, major: number, minor: number): boolean {
  const [ma = 0, mi = 0] = release.split('.').map((x) => Number.parseInt(x, 10));
  return ma > major || (ma === major && mi >= minor);
}
