import type { Co } from './sim/index.ts';
import type { MmuIntervalNotifier } from './mmu-interval-notifier.ts';
import { mmuIntervalCheckRetry } from './mmu-interval-notifier.ts';
import { EBUSY, EFAULT, EINVAL, EPERM } from './errno.ts';
import { PAGE_SIZE, PMD_SIZE, isPageAligned, vpn } from './constants.ts';
import { VM_IO, VM_PFNMAP, VM_READ, VM_WRITE } from './vma.ts';
import { PTE_PROTNONE, pteFrame, pteHas, ptePresent, pteWrite } from './page-table.ts';
import { FAULT_FLAG_REMOTE, FAULT_FLAG_WRITE, handleMmFault } from './memory.ts';
import { requireInterface } from './profile.ts';

/**
 * Per-page flags of an hmm_range_fault request or result (rule 45). The request bits are
 * the same bits as the result bits, as in the kernel: REQ_FAULT is VALID, REQ_WRITE is WRITE.
 */
export const HMM_PFN_VALID = 1 << 0;
export const HMM_PFN_WRITE = 1 << 1;
export const HMM_PFN_ERROR = 1 << 2;
export const HMM_PFN_DMA_MAPPED = 1 << 3;
export const HMM_PFN_P2PDMA = 1 << 4;
export const HMM_PFN_P2PDMA_BUS = 1 << 5;
export const HMM_PFN_REQ_FAULT = HMM_PFN_VALID;
export const HMM_PFN_REQ_WRITE = HMM_PFN_WRITE;
/** Preserved from input to output; every other bit is overwritten. */
const STICKY = HMM_PFN_DMA_MAPPED | HMM_PFN_P2PDMA | HMM_PFN_P2PDMA_BUS;

/** HMM_RANGE_DEFAULT_TIMEOUT: how long a driver's rule-31 loop may keep retrying. */
export const HMM_RANGE_DEFAULT_TIMEOUT_NS = 1_000_000_000;

/**
 * `struct hmm_range`, with the `hmm_pfns` array held as one structured record per page in
 * struct-of-arrays form: `pfns[i]` the frame, `flags[i]` the HMM_PFN_* bits, `order[i]` the
 * CPU mapping order. `hmmPfnEncode` gives the kernel's exact 64-bit word when the layout
 * itself matters.
 */
export interface HmmRange {
  notifier: MmuIntervalNotifier;
  notifierSeq: number;
  start: number;
  end: number;
  pfns: Float64Array;
  flags: Uint8Array;
  order: Uint8Array;
  defaultFlags: number;
  pfnFlagsMask: number;
  devPrivateOwner: unknown;
}

/** A range over [start, end) with every page's request set to `defaultFlags`. */
export function hmmRangeInit(notifier: MmuIntervalNotifier, start: number, end: number, notifierSeq: number, defaultFlags = 0): HmmRange {
  const n = Math.max(0, (end - start) / PAGE_SIZE);
  return {
    notifier, notifierSeq, start, end,
    pfns: new Float64Array(n), flags: new Uint8Array(n), order: new Uint8Array(n),
    defaultFlags, pfnFlagsMask: 0, devPrivateOwner: null,
  };
}

export interface HmmPfn {
  pfn: number;
  valid: boolean;
  write: boolean;
  error: boolean;
  dmaMapped: boolean;
  p2pdma: boolean;
  p2pdmaBus: boolean;
  order: number;
}

export function hmmPfnRecord(range: HmmRange, i: number): HmmPfn {
  const f = range.flags[i] ?? 0;
  return {
    pfn: range.pfns[i] ?? 0,
    valid: (f & HMM_PFN_VALID) !== 0,
    write: (f & HMM_PFN_WRITE) !== 0,
    error: (f & HMM_PFN_ERROR) !== 0,
    dmaMapped: (f & HMM_PFN_DMA_MAPPED) !== 0,
    p2pdma: (f & HMM_PFN_P2PDMA) !== 0,
    p2pdmaBus: (f & HMM_PFN_P2PDMA_BUS) !== 0,
    order: range.order[i] ?? 0,
  };
}

/**
 * The kernel's 64-bit hmm_pfns word (rule 45): pfn in the low bits, VALID bit 63, WRITE
 * 62, ERROR 61, DMA_MAPPED 60, P2PDMA 59, P2PDMA_BUS 58, map order in 5 bits from 53.
 */
export function hmmPfnEncode(p: HmmPfn): bigint {
  let w = BigInt(p.pfn) & ((1n << 53n) - 1n);
  if (p.valid) w |= 1n << 63n;
  if (p.write) w |= 1n << 62n;
  if (p.error) w |= 1n << 61n;
  if (p.dmaMapped) w |= 1n << 60n;
  if (p.p2pdma) w |= 1n << 59n;
  if (p.p2pdmaBus) w |= 1n << 58n;
  w |= (BigInt(p.order) & 31n) << 53n;
  return w;
}

export function hmmPfnDecode(w: bigint): HmmPfn {
  const bit = (n: bigint) => (w >> n) & 1n ? true : false;
  return {
    pfn: Number(w & ((1n << 53n) - 1n)),
    valid: bit(63n), write: bit(62n), error: bit(61n), dmaMapped: bit(60n), p2pdma: bit(59n), p2pdmaBus: bit(58n),
    order: Number((w >> 53n) & 31n),
  };
}

/**
 * hmm_range_fault: snapshot (and, where requested, fault in) the CPU page table for
 * [start, end). Before every walk the notifier sequence is checked (rule 41): a collision
 * returns -EBUSY and the caller restarts from mmu_interval_read_begin. A walk that had to
 * fault restarts from the first page not yet filled. Takes no page references (rule 49).
 * Returns 0, -EBUSY, -EFAULT, -EPERM, -EINVAL or -ENOMEM (rule 48).
 */
export function* hmmRangeFault(range: HmmRange): Co<number> {
  const mm = range.notifier.mm;
  const { sim, profile } = mm.kernel;
  if (requireInterface(profile, 'hmmRangeFault', 'hmm_range_fault', (m) => sim.emit({ type: 'note', text: m })) < 0) return -EINVAL;
  if (!isPageAligned(range.start) || !isPageAligned(range.end) || range.end <= range.start) return -EINVAL;
  if (!mm.mmapLock.heldByCurrent('read')) {
    sim.emit({ type: 'notifier-warn', sub: range.notifier.name, message: 'hmm_range_fault called without the mmap lock held (rule 40)' });
  }
  let cursor = 0;
  const n = range.flags.length;
  walk: for (;;) {
    if (mmuIntervalCheckRetry(range.notifier, range.notifierSeq)) return -EBUSY;
    for (let i = cursor; i < n; i++) {
      const addr = range.start + i * PAGE_SIZE;
      const req = ((range.flags[i] as number) & range.pfnFlagsMask) | range.defaultFlags;
      const wantFault = (req & HMM_PFN_REQ_FAULT) !== 0;
      const wantWrite = wantFault && (req & HMM_PFN_REQ_WRITE) !== 0;
      const sticky = (range.flags[i] as number) & STICKY;
      const vma = mm.findVma(addr);
      if (!vma || vma.flags & (VM_IO | VM_PFNMAP) || !(vma.flags & VM_READ)) {
        if (wantFault) return -EFAULT;
        range.flags[i] = HMM_PFN_ERROR | sticky;
        range.pfns[i] = 0;
        range.order[i] = 0;
        continue;
      }
      yield* sim.preemptPoint('hmm pte read');
      const pte = mm.pageTable.get(vpn(addr));
      const present = ptePresent(pte) && !pteHas(pte, PTE_PROTNONE);
      if (present && (!wantWrite || pteWrite(pte))) {
        range.pfns[i] = pteFrame(pte);
        range.flags[i] = HMM_PFN_VALID | (pteWrite(pte) ? HMM_PFN_WRITE : 0) | sticky;
        range.order[i] = 0;
        continue;
      }
      if (!wantFault) {
        range.pfns[i] = 0;
        range.flags[i] = sticky;
        range.order[i] = 0;
        continue;
      }
      if (wantWrite && !(vma.flags & VM_WRITE)) return -EPERM;
      // hmm_vma_fault: fault the rest of this walk step (to the PMD or VMA end), then
      // restart the walk here, re-checking the sequence first.
      const stop = Math.min(vma.end, Math.floor(addr / PMD_SIZE) * PMD_SIZE + PMD_SIZE, range.end);
      for (let a = addr, j = i; a < stop; a += PAGE_SIZE, j++) {
        const rj = ((range.flags[j] as number) & range.pfnFlagsMask) | range.defaultFlags;
        if (!(rj & HMM_PFN_REQ_FAULT)) continue;
        const w = (rj & HMM_PFN_REQ_WRITE) !== 0;
        if (w && !(vma.flags & VM_WRITE)) return -EPERM;
        const r = yield* handleMmFault(mm, vma, a, FAULT_FLAG_REMOTE | (w ? FAULT_FLAG_WRITE : 0));
        if (r < 0) return -EFAULT;
      }
      cursor = i;
      continue walk;
    }
    return 0;
  }
}
