/**
 * The binding stream's data type: which process memory an MR key translates. The driver
 * publishes it (IbDevice `binding$`) but the sanitizer may not import the driver (it judges
 * it), so the shape is declared here and matched structurally.
 *
 * An access through `key` at `iova` concerns virtual address `addr + (iova - iova0)` of mm
 * `mmId` (the umem and the MR share their offset within a page, so MR page `i` is the
 * CPU page at `pageIova(i) + (addr - iova)`).
 */
export interface MrBinding {
  nic: string;
  key: number;
  /** null when the MR is not backed by process memory (a dma-buf). */
  mmId: number | null;
  addr: number;
  length: number;
  iova: number;
  strategy: string;
  /** The MR holds its pages pinned (a strategy of any name that pins, not only 'pinned'). */
  pinned?: boolean;
  event: 'reg' | 'dereg';
}

/**
 * How a checker treats an MR:
 * - `pinned`: no notifier, the device keeps the frames it was given (pinned-incoherence);
 * - `mirrored`: follows the CPU through notifiers (ODP, implicit ODP, holdoff): the
 *   use-after-invalidate and stale-translation contracts apply;
 * - `other`: not process memory (dma-buf), out of the mm checks.
 */
export type BindingKind = 'pinned' | 'mirrored' | 'other';

export const DEFAULT_PINNED_STRATEGIES: readonly string[] = ['pinned'];

export function bindingKind(b: Pick<MrBinding, 'strategy' | 'mmId' | 'pinned'>, pinnedStrategies: readonly string[] = DEFAULT_PINNED_STRATEGIES): BindingKind {
  if (b.mmId === null || b.strategy.startsWith('dmabuf')) return 'other';
  return b.pinned || pinnedStrategies.includes(b.strategy) ? 'pinned' : 'mirrored';
}
