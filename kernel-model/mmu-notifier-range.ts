import type { MmStruct } from './mm.ts';

/** `enum mmu_notifier_event`, values in the kernel's stable order (rule 19). */
export enum MmuNotifyEvent {
  UNMAP = 0,
  CLEAR = 1,
  PROTECTION_VMA = 2,
  PROTECTION_PAGE = 3,
  SOFT_DIRTY = 4,
  RELEASE = 5,
  MIGRATE = 6,
  EXCLUSIVE = 7,
}

export const MMU_NOTIFIER_RANGE_BLOCKABLE = 1;

/**
 * `struct mmu_notifier_range` (rule 9): half-open [start, end), flags, event, owner.
 * There is no vma field in current kernels.
 */
export interface MmuNotifierRange {
  readonly mm: MmStruct;
  readonly start: number;
  readonly end: number;
  readonly flags: number;
  readonly event: MmuNotifyEvent;
  /** Only meaningful for MIGRATE and EXCLUSIVE (rule 22). */
  readonly owner: unknown;
}

export function mmuNotifierRangeBlockable(range: MmuNotifierRange): boolean {
  return (range.flags & MMU_NOTIFIER_RANGE_BLOCKABLE) !== 0;
}

export function eventName(e: MmuNotifyEvent): string {
  return MmuNotifyEvent[e] ?? String(e);
}

/** mmu_notifier_range_init: a blockable range unless flags say otherwise. */
export function mmuNotifierRangeInit(
  mm: MmStruct,
  event: MmuNotifyEvent,
  start: number,
  end: number,
  opts: { blockable?: boolean; owner?: unknown } = {},
): MmuNotifierRange {
  return {
    mm,
    start,
    end,
    flags: opts.blockable === false ? 0 : MMU_NOTIFIER_RANGE_BLOCKABLE,
    event,
    owner: opts.owner ?? null,
  };
}
