import type { Co } from './sim/index.ts';
import type { MmuIntervalNotifier } from './mmu-interval-notifier.ts';
import { mmuIntervalCheckRetry } from './mmu-interval-notifier.ts';
import { EBUSY, EFAULT, EINVAL, EPERM } from './errno.ts';
import { PAGE_SIZE, PMD_SIZE, isPageAligned, vpn } from './constants.ts';
import { VM_IO, VM_PFNMAP, VM_READ, VM_WRITE } from './vma.ts';
import { PTE_PROTNONE, isDevicePrivateEntry, isMigrationEntry, pteFrame, pteHas, ptePresent, pteWrite } from './page-table.ts';
import { pagePgmap } from './memremap.ts';
import { HPAGE_PMD_ORDER } from './huge-memory.ts';
import { migrationEntryWait } from './migrate.ts';
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

/** hmm_pte_need_fault's answer: no fault, a read fault, or a write fault. */
const NEED_FAULT = 1;
const NEED_WRITE_FAULT = 2;

/** hmm_pte_need_fault (mm/hmm.c): what page `i` needs given the CPU's HMM_PFN_* view of it. */
function pteNeedFault(range: HmmRange, i: number, cpuFlags: number): number {
  const req = ((range.flags[i] as number) & range.pfnFlagsMask) | range.defaultFlags;
  if (!(req & HMM_PFN_REQ_FAULT)) return 0;
  if (req & HMM_PFN_REQ_WRITE && !(cpuFlags & HMM_PFN_WRITE)) return NEED_FAULT | NEED_WRITE_FAULT;
  if (!(cpuFlags & HMM_PFN_VALID)) return NEED_FAULT;
  return 0;
}

/** hmm_range_need_fault: the OR of the needs of pages [from, to) (holes, huge entries, bad VMAs). */
function rangeNeedFault(range: HmmRange, from: number, to: number, cpuFlags: number): number {
  if (!((range.defaultFlags | range.pfnFlagsMask) & HMM_PFN_REQ_FAULT)) return 0;
  let need = 0;
  for (let i = from; i < to && need !== (NEED_FAULT | NEED_WRITE_FAULT); i++) need |= pteNeedFault(range, i, cpuFlags);
  return need;
}

function fill(range: HmmRange, from: number, to: number, flags: number): void {
  for (let i = from; i < to; i++) {
    range.flags[i] = flags | ((range.flags[i] as number) & STICKY);
    range.pfns[i] = 0;
    range.order[i] = 0;
  }
}

/**
 * hmm_range_fault: snapshot (and, where requested, fault in) the CPU page table for
 * [start, end), walking it as mm/hmm.c does. Before every walk the notifier sequence is
 * checked (rule 41): a collision returns -EBUSY and the caller restarts from
 * mmu_interval_read_begin. The walk goes in steps: a VMA the walk cannot handle
 * (hmm_vma_walk_test), a gap between VMAs, or a PMD slot of a VMA. A step with no page
 * table (pmd_none, hmm_vma_walk_hole) is faulted whole with the OR of its pages' needs;
 * at PTE level the first page needing a fault has [addr, step end) faulted with its own
 * write need (hmm_vma_fault), so pages that did not ask are faulted too. After a fault
 * the walk restarts at that address (-EBUSY inside hmm_range_fault), re-checking the
 * sequence. A migration entry is waited for (migration_entry_wait) only where the page
 * needs a fault; otherwise the page is reported without VALID. Takes no page references
 * (rule 49). Returns 0, -EBUSY, -EFAULT, -EPERM or -EINVAL (rule 48).
 */
export function* hmmRangeFault(range: HmmRange): Co<number> {
  const mm = range.notifier.mm;
  const { sim, profile } = mm.kernel;
  if (requireInterface(profile, 'hmmRangeFault', 'hmm_range_fault', (m) => sim.emit({ type: 'note', text: m })) < 0) return -EINVAL;
  if (!isPageAligned(range.start) || !isPageAligned(range.end) || range.end <= range.start) return -EINVAL;
  if (!mm.mmapLock.heldByCurrent('read')) {
    sim.emit({ type: 'notifier-warn', sub: range.notifier.name, message: 'hmm_range_fault called without the mmap lock held (rule 40)' });
  }
  const n = range.flags.length;
  const index = (addr: number) => (addr - range.start) / PAGE_SIZE;
  let last = 0;
  walk: for (;;) {
    if (mmuIntervalCheckRetry(range.notifier, range.notifierSeq)) return -EBUSY;
    for (let i = last; i < n;) {
      const addr = range.start + i * PAGE_SIZE;
      const vma = mm.findVma(addr);
      if (!vma) {
        // A gap between VMAs: hmm_vma_walk_hole without a VMA.
        const next = mm.vmasIn(addr, range.end)[0];
        const stop = next ? index(next.start) : n;
        if (rangeNeedFault(range, i, stop, 0)) return -EFAULT;
        fill(range, i, stop, HMM_PFN_ERROR);
        i = stop;
        continue;
      }
      const vmaStop = index(Math.min(vma.end, range.end));
      if (vma.flags & (VM_IO | VM_PFNMAP) || !(vma.flags & VM_READ)) {
        // hmm_vma_walk_test: the whole VMA is refused, or skipped as ERROR.
        if (rangeNeedFault(range, i, vmaStop, 0)) return -EFAULT;
        fill(range, i, vmaStop, HMM_PFN_ERROR);
        i = vmaStop;
        continue;
      }
      const stepEnd = Math.min(vma.end, range.end, Math.floor(addr / PMD_SIZE) * PMD_SIZE + PMD_SIZE);
      const stop = index(stepEnd);
      const fault = function* (at: number, need: number): Co<number> {
        // hmm_vma_fault: every page of [at, stepEnd) with the same flags, then -EBUSY.
        last = index(at);
        if (need & NEED_WRITE_FAULT && !(vma.flags & VM_WRITE)) return -EPERM;
        const flags = FAULT_FLAG_REMOTE | (need & NEED_WRITE_FAULT ? FAULT_FLAG_WRITE : 0);
        for (let a = at; a < stepEnd; a += PAGE_SIZE) {
          if ((yield* handleMmFault(mm, vma, a, flags)) < 0) return -EFAULT;
        }
        return -EBUSY;
      };
      const pmd = mm.pageTable.getPmd(vpn(addr));
      if (pmd !== 0) {
        // pmd_trans_huge (or a hugetlb entry, hmm_vma_walk_hugetlb_entry): hmm_vma_handle_pmd.
        // Every page of the step gets the PMD's flags (pmd_to_hmm_pfn_flags: none when
        // PROT_NONE) and, from 5.10, the mapping's order (hmm_pfn_flags_order(PMD_SHIFT -
        // PAGE_SHIFT), rule 47), which describes the CPU mapping, even where it reaches past
        // the requested range. A need for a fault faults the whole step (hmm_vma_fault).
        const cpuFlags = pteHas(pmd, PTE_PROTNONE) ? 0 : HMM_PFN_VALID | (pteWrite(pmd) ? HMM_PFN_WRITE : 0);
        const need = rangeNeedFault(range, i, stop, cpuFlags);
        if (need) {
          const r = yield* fault(addr, need);
          if (r === -EBUSY) continue walk;
          return r;
        }
        const order = profile.hmmMapOrder && cpuFlags ? HPAGE_PMD_ORDER : 0;
        const head = pteFrame(pmd);
        const base = vpn(addr) - (vpn(addr) % (1 << HPAGE_PMD_ORDER));
        for (; i < stop; i++) {
          const sticky = (range.flags[i] as number) & STICKY;
          range.pfns[i] = head + (vpn(range.start) + i - base);
          range.flags[i] = cpuFlags | sticky;
          range.order[i] = order;
        }
        continue;
      }
      if (!mm.pageTable.pmdPopulated(vpn(addr))) {
        // pmd_none: hmm_vma_walk_hole over the step.
        const need = rangeNeedFault(range, i, stop, 0);
        if (!need) {
          fill(range, i, stop, 0);
          i = stop;
          continue;
        }
        const r = yield* fault(addr, need);
        if (r === -EBUSY) continue walk;
        return r;
      }
      for (; i < stop; i++) {
        const a = range.start + i * PAGE_SIZE;
        yield* sim.preemptPoint('hmm pte read');
        const pte = mm.pageTable.get(vpn(a));
        const sticky = (range.flags[i] as number) & STICKY;
        if (!ptePresent(pte)) {
          // hmm_vma_handle_pte: a device-private entry of the caller's own device
          // (pgmap->owner == range->dev_private_owner) is reported, never faulted, even
          // when a write was asked of a read-only entry: VALID, WRITE iff the entry is
          // writable, the device page's pfn. Any other device-private entry is faulted
          // (do_swap_page -> migrate_to_ram) when a fault is needed, else reported as 0.
          if (isDevicePrivateEntry(pte)) {
            const pgmap = pagePgmap(mm.kernel, pteFrame(pte));
            if (pgmap && range.devPrivateOwner !== null && range.devPrivateOwner !== undefined && pgmap.owner === range.devPrivateOwner) {
              range.pfns[i] = pteFrame(pte);
              range.flags[i] = HMM_PFN_VALID | (pteWrite(pte) ? HMM_PFN_WRITE : 0) | sticky;
              range.order[i] = 0;
              continue;
            }
          }
          const need = pteNeedFault(range, i, 0);
          if (!need) {
            range.flags[i] = sticky;
            range.pfns[i] = 0;
            range.order[i] = 0;
            continue;
          }
          if (isMigrationEntry(pte)) {
            last = i;
            yield* migrationEntryWait(mm, vpn(a));
            continue walk;
          }
          const r = yield* fault(a, need);
          if (r === -EBUSY) continue walk;
          return r;
        }
        // pte_to_hmm_pfn_flags: a PROT_NONE / NUMA-hint PTE is present but not valid.
        // A present PTE is reported with its pfn whatever page it maps (vm_normal_page is
        // true for a device-coherent page, so the HMM_PFN_ERROR branch for special PTEs
        // does not apply); dev_private_owner plays no part: a device-coherent page of any
        // device is reported in place, never faulted or migrated back.
        const cpuFlags = pteHas(pte, PTE_PROTNONE) ? 0 : HMM_PFN_VALID | (pteWrite(pte) ? HMM_PFN_WRITE : 0);
        const need = pteNeedFault(range, i, cpuFlags);
        if (need) {
          const r = yield* fault(a, need);
          if (r === -EBUSY) continue walk;
          return r;
        }
        range.pfns[i] = pteFrame(pte);
        range.flags[i] = cpuFlags | sticky;
        range.order[i] = 0;
      }
    }
    return 0;
  }
}
