/**
 * The "Prototype your driver" tutorial's strategy (README): an ODP driver that, on a NIC
 * page fault, also maps the neighbouring pages that are already present, so a stream of
 * faults on consecutive pages becomes one fault per few pages. It started as
 * `lab new strategy fault-around --from odp` and changes ONE step of the reference,
 * `buildRange`: the hmm_range covers AROUND pages on each side (clipped to the umem); the
 * pages the device asked for are faulted in (REQ_FAULT, plus REQ_WRITE), the neighbours
 * only snapshotted (no request bits), so a hole or a swapped-out page next door neither
 * fails nor slows the fault (mm/hmm.c: a page's request is `(hmm_pfns[i] &
 * pfn_flags_mask) | default_flags`). The reference `program` maps a snapshotted
 * neighbour with the CPU's permission, so nothing else changes.
 *
 *   npx lab check ./driver/examples/fault-around.ts
 */
import { HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, PAGE_SIZE, hmmRangeInit, type HmmRange } from '../../kernel-model/index.ts';
import { UmemOdp, defineStrategy, odpRangeFlags, odpStrategy, type OdpMapAttempt } from '../index.ts';

/** Neighbouring pages mapped on each side of a fault. */
export const AROUND_PAGES = 4;

export class FaultAroundUmemOdp extends UmemOdp {
  protected override buildRange(a: OdpMapAttempt): HmmRange {
    if (!a.mode.fault) return super.buildRange(a); // registration and NO_FAULT prefetch: as the reference
    const start = Math.max(this.start, a.start - AROUND_PAGES * PAGE_SIZE);
    const end = Math.min(this.end, a.end + AROUND_PAGES * PAGE_SIZE);
    const range = hmmRangeInit(this.notifier, start, end, a.seq, 0);
    range.pfnFlagsMask = HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE;
    const req = odpRangeFlags(a.mode);
    for (let va = a.start; va < a.end; va += PAGE_SIZE) range.flags[(va - start) / PAGE_SIZE] = req;
    return range;
  }
}

export default defineStrategy({
  name: 'fault-around',
  nic: 'faultable',
  description: `ODP that also maps up to ${AROUND_PAGES} present neighbours on each side of a fault`,
  strategy: (_params, env) => odpStrategy({ name: 'fault-around', batching: env.batching, batchingName: env.batchingName }, FaultAroundUmemOdp),
});
