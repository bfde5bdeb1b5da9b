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
 * rule 34), then one UNMAP over everything under the mmap lock (rule 33), then free.
 */
export function* exitMmap(mm: MmStruct): Co {
  yield* mmuNotifierRelease(mm);
  yield* mm.mmapLock.downWrite();
  const range = mmuNotifierRangeInit(mm, MmuNotifyEvent.UNMAP, 0, ULONG_MAX);
  yield* mmuNotifierInvalidateRangeStart(range);
  const toFree: number[] = [];
  for (const vma of mm.vmas) zapPteRange(mm, vma, vma.start, vma.end, toFree);
  yield* mmuNotifierInvalidateRangeEnd(range);
  for (const vma of mm.vmas) vma.file?.mappings.delete(vma);
  mm.vmas = [];
  mm.exited = true;
  mm.mmapLock.upWrite();
  for (const f of toFree) mm.kernel.phys.put(f);
  mm.kernel.sim.emit({ type: 'note', text: `exit_mmap(mm${mm.id}) done` });
}
