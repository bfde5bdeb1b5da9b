/**
 * Broken ODP driver: every page it installs is device-writable in a writable MR, whatever
 * the CPU PTE grants.
 *
 * Real-world bug: ignoring HMM_PFN_WRITE (rdma A4, D2; kernel rules 18 and 57). A read
 * fault of never-written anonymous memory maps the shared zero page read-only, and after
 * fork both processes map their anonymous pages read-only until a write fault copies one:
 * the CPU PTE being read-only is what makes the next write copy. A device entry made
 * writable anyway writes the zero page, which every process reads as zeros, or the page
 * the other process still shares.
 *
 * Caught by: shared-page-write (a device write into the zero page or a COW-shared page),
 * with stale-translation (device rights above the CPU's).
 *
 * The change: the `program` step (of `UmemOdp.map`) asked to map writable whenever the MR
 * is, with HMM_PFN_WRITE set on every valid page it got.
 */
import { HMM_PFN_VALID, HMM_PFN_WRITE, type Co, type HmmRange } from '../../kernel-model/index.ts';
import { UmemOdp, odpStrategy, type OdpMapMode, type OdpStrategy } from '../umem-odp.ts';

export class WriteThroughReadOnlyUmemOdp extends UmemOdp {
  protected override *program(range: HmmRange, mode: OdpMapMode): Co<number> {
    if (this.owner.writable) {
      // BUG: the CPU's answer (HMM_PFN_WRITE) overridden.
      for (let i = 0; i < range.flags.length; i++) if ((range.flags[i] as number) & HMM_PFN_VALID) range.flags[i] = (range.flags[i] as number) | HMM_PFN_WRITE;
      return yield* super.program(range, { fault: mode.fault, write: true });
    }
    return yield* super.program(range, mode);
  }
}

export function writeThroughReadOnlyStrategy(): OdpStrategy {
  return odpStrategy({ name: 'write-through-read-only' }, WriteThroughReadOnlyUmemOdp);
}
