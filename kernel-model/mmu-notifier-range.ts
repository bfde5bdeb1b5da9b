import type { MmStruct } from './mm.ts';
import { inNotifierCallback, refuseInterface } from './notifier-callback.ts';
import { requireInterface } from './profile.ts';

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

/**
 * mmu_notifier_range_blockable (include/linux/mmu_notifier.h, 5.2, with the range flags;
 * 4.19 passed a `bool blockable` argument and 5.0 a `bool blockable` in the range). A
 * driver callback asking on a kernel without it is refused, failing the run; the refusal
 * names 5.2 and what came before.
 */
export function mmuNotifierRangeBlockable(range: MmuNotifierRange): boolean {
  const { kernel } = range.mm;
  if (!kernel.profile.rangeFlags && inNotifierCallback(kernel.sim)) refuseInCallback(range, 'rangeFlags', 'mmu_notifier_range_blockable');
  return (range.flags & MMU_NOTIFIER_RANGE_BLOCKABLE) !== 0;
}

function refuseInCallback(range: MmuNotifierRange, feature: 'rangeFlags' | 'eventTypes', api: string): void {
  const { kernel } = range.mm;
  requireInterface(kernel.profile, feature, api, (message) => {
    refuseInterface(kernel.sim, api, message);
    kernel.sim.fail(`${message} (a driver callback used it)`);
  });
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
  const range = {
    mm,
    start,
    end,
    flags: opts.blockable === false ? 0 : MMU_NOTIFIER_RANGE_BLOCKABLE,
    event,
    owner: opts.owner ?? null,
  };
  if (!mm.kernel.profile.eventTypes) {
    // Before 5.2 (6f4f13e8d9e2) the range carried no event: the core still knows why it invalidates
    // (for the trace), but a driver callback reading it is refused.
    Object.defineProperty(range, 'event', {
      enumerable: true,
      get: () => {
        if (inNotifierCallback(mm.kernel.sim)) refuseInCallback(range, 'eventTypes', 'mmu_notifier_range.event');
        return event;
      },
    });
  }
  return range;
}
