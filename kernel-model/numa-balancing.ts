import type { Co } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import type { Vma } from './vma.ts';
import { VM_EXEC, VM_IO, VM_PFNMAP, VM_READ, VM_WRITE } from './vma.ts';
import { PAGE_SIZE, PMD_SIZE, TASK_SIZE, vpn } from './constants.ts';
import { pteFrame, ptePresent } from './page-table.ts';
import { changeProtection } from './mprotect.ts';
import { migratePage } from './migrate.ts';
import { mmput } from './exit.ts';

export interface NumaBalancingOptions {
  /** numa_scan_period: how often each mm's scan runs (virtual ns; default 1 s, sysctl_numa_balancing_scan_period_min). */
  periodNs: number;
  /** sysctl_numa_balancing_scan_size in MiB (default 256). */
  scanSizeMb: number;
}

export interface NumaBalancingStats {
  /** task_numa_work passes. */
  scans: number;
  /** PTEs change_prot_numa turned into NUMA hints. */
  ptesUpdated: number;
  /** Hinting faults on a misplaced page, and how their migrations ended. */
  attempted: number;
  migrated: number;
  failed: number;
}

interface NumaState {
  stats: NumaBalancingStats;
  /** mm->numa_scan_offset. */
  offsets: WeakMap<MmStruct, number>;
  /** Frames already on the faulting task's node (moved there by a hinting fault): frame -> generation. */
  local: Map<number, number>;
}

const states = new WeakMap<Kernel, NumaState>();

/**
 * Automatic NUMA balancing (kernel/sched/fair.c task_numa_work, mm/mprotect.c
 * change_prot_numa, mm/memory.c do_numa_page). Every scan period each mm's next scan
 * window (sysctl_numa_balancing_scan_size, 256 MB; up to eight times that of virtual
 * space when the window is empty or already hinted) goes through change_protection with
 * MM_CP_PROT_NUMA: a PROTECTION_VMA invalidation from the first populated PUD of each
 * piece, whether or not anything will ever migrate, and the present PTEs become NUMA
 * hints. The process's next access takes a hinting fault, which migrates the page when it
 * is misplaced (the CLEAR of rule 73) or just restores the PTE. The scan runs in a
 * kernel thread standing in for each task's task_work, and the topology is assumed: the
 * tasks run on node 1, pages start on node 0, a page a hinting fault moved is local.
 */
export function startNumaBalancing(kernel: Kernel, opts: Partial<NumaBalancingOptions> = {}): NumaBalancingStats {
  const periodNs = opts.periodNs ?? 1_000_000_000;
  const scanPages = ((opts.scanSizeMb ?? 256) * 1024 * 1024) / PAGE_SIZE;
  const existing = states.get(kernel);
  const state: NumaState = existing ?? {
    stats: { scans: 0, ptesUpdated: 0, attempted: 0, migrated: 0, failed: 0 },
    offsets: new WeakMap(),
    local: new Map(),
  };
  states.set(kernel, state);
  kernel.sim.spawn('numa-balancing', function* () {
    for (;;) {
      yield* kernel.sim.sleep(periodNs);
      const mms = new Set<MmStruct>();
      for (const p of kernel.processes.values()) if (p.alive && !p.mm.exited) mms.add(p.mm);
      for (const mm of mms) {
        if (!mm.mmgetNotZero()) continue;
        yield* taskNumaWork(mm, scanPages, state);
        yield* mmput(mm);
      }
    }
  }, { kind: 'kthread' });
  return state.stats;
}

/** task_numa_work for one mm: change_prot_numa over the next scan window. */
function* taskNumaWork(mm: MmStruct, scanPages: number, state: NumaState): Co {
  if (!mm.mmapLock.downReadTrylock()) return;
  state.stats.scans++;
  let pages = scanPages;
  let virtpages = scanPages * 8;
  let start = state.offsets.get(mm) ?? 0;
  let vmas = mm.vmasIn(start, TASK_SIZE);
  if (vmas.length === 0) {
    start = 0;
    vmas = [...mm.vmas];
  }
  let stoppedAt = -1;
  scan: for (const vma of vmas) {
    if (!numaScannable(vma)) continue;
    let end: number;
    do {
      start = Math.max(start, vma.start);
      end = Math.min(Math.ceil((start + pages * PAGE_SIZE) / PMD_SIZE) * PMD_SIZE, vma.end);
      const updated = yield* changeProtection(mm, vma, start, end, vma.flags & (VM_READ | VM_WRITE | VM_EXEC), true);
      state.stats.ptesUpdated += updated;
      // Only windows that had something to hint count against scan_size.
      if (updated) pages -= (end - start) / PAGE_SIZE;
      virtpages -= (end - start) / PAGE_SIZE;
      start = end;
      if (pages <= 0 || virtpages <= 0) {
        stoppedAt = start;
        break scan;
      }
    } while (end !== vma.end);
  }
  // numa_scan_offset: resume here next time, or from the start (reset_ptenuma_scan).
  state.offsets.set(mm, stoppedAt >= 0 ? stoppedAt : 0);
  mm.mmapLock.upRead();
}

/**
 * The VMAs task_numa_work skips: not migratable (VM_IO, VM_PFNMAP), read-only file
 * mappings (shared libraries), and inaccessible ones (PROT_NONE would be confused with the
 * hints).
 */
function numaScannable(vma: Vma): boolean {
  if (vma.flags & (VM_IO | VM_PFNMAP)) return false;
  if (vma.file && (vma.flags & (VM_READ | VM_WRITE)) === VM_READ) return false;
  return (vma.flags & (VM_READ | VM_WRITE | VM_EXEC)) !== 0;
}

/**
 * do_numa_page's migration step: with balancing on, a hinting fault on a misplaced page
 * migrates it (migrate_misplaced_folio) and the PTE comes back through
 * remove_migration_ptes. Returns true when the page moved; otherwise the caller restores
 * the PTE (a local page, balancing off, or a failed migration).
 */
export function* numaHintingFault(mm: MmStruct, addr: number): Co<boolean> {
  const { kernel } = mm;
  const state = states.get(kernel);
  if (!state) return false;
  const pte = mm.pageTable.get(vpn(addr));
  if (!ptePresent(pte)) return false;
  const frame = pteFrame(pte);
  if (state.local.get(frame) === kernel.phys.generation[frame]) return false;
  state.stats.attempted++;
  const r = yield* migratePage(kernel, frame, 'numa');
  const now = mm.pageTable.get(vpn(addr));
  if (r === 0 && ptePresent(now) && pteFrame(now) !== frame) {
    state.stats.migrated++;
    state.local.set(pteFrame(now), kernel.phys.generation[pteFrame(now)]!);
    return true;
  }
  state.stats.failed++;
  return false;
}
