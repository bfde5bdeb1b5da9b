import type { Co, Kernel, MmStruct } from '../kernel-model/index.ts';
import type { DeviceFault, MemoryRegion, Nic } from '../device/index.ts';
import type { IbUcontext } from './ib-ucontext.ts';

/** What userspace asked to register (ibv_reg_mr after the provider's checks). */
export interface RegMrRequest {
  pd: number;
  addr: number;
  length: number;
  iova: number;
  access: number;
}

/** Per-MR counters after mlx5's ODP statistics (rdma B9), plus the holdoff ones. */
export interface UmemCounters {
  /** Pages faulted in by NIC faults. */
  faultPages: number;
  /** Pages zapped by invalidations. */
  invalidationPages: number;
  prefetches: number;
  /** Faults handled (resumed without error). */
  faultsHandled: number;
  /** Invalidations (callbacks) that touched this MR. */
  invalidations: number;
}

export function newUmemCounters(): UmemCounters {
  return { faultPages: 0, invalidationPages: 0, prefetches: 0, faultsHandled: 0, invalidations: 0 };
}

/**
 * A registered user memory region as the driver holds it (`struct ib_umem` plus the
 * mlx5 MR): the device MR it programs and the strategy-specific state behind it. Each
 * reference strategy (pinned, odp, holdoff, dma-buf) implements this; a driver author
 * writes a new one.
 */
export interface IbUmem {
  /** The name of the strategy that registered it (bindings, violations and reports show it). */
  readonly strategy: string;
  /**
   * The umem holds page pins or references for its life (no notifier): the sanitizer then
   * judges it as pinned (incoherence, not use-after-invalidate), whatever its name.
   */
  readonly pinsPages?: boolean;
  readonly ctx: IbUcontext;
  readonly mr: MemoryRegion;
  /** Start of the registered user range and its length (the iova may differ). */
  readonly addr: number;
  readonly length: number;
  readonly access: number;
  readonly counters: UmemCounters;
  /** ib_dereg_mr: stop the device using the MR, then release the memory. */
  dereg(): Co<number>;
  /** A NIC page fault on this MR (ODP): map what it needs, then resume it. */
  handleFault?(fault: DeviceFault): Co<void>;
  /** ibv_advise_mr for a range of this MR (rdma D1 to D4). */
  advise?(advice: number, flags: number, addr: number, length: number): Co<number>;
  /**
   * The userspace provider calls this before ringing the doorbell for local work on the
   * MR; a holdoff MR remaps an invalidated range here (a system call). 0 or -errno.
   */
  prepareLocalAccess?(addr: number, length: number, write: boolean): Co<number>;
}

/**
 * A registration strategy: how `reg_mr` turns user memory into a device MR. The device
 * picks `odp` for ON_DEMAND registrations and its non-ODP mode (`pinned` or `holdoff`)
 * for the others; each can be replaced by a driver author's own.
 */
export interface UmemStrategy {
  readonly name: string;
  regMr(ctx: IbUcontext, req: RegMrRequest): Co<IbUmem | number>;
}

/** The parts of the node a strategy works with. */
export interface DriverEnv {
  kernel: Kernel;
  nic: Nic;
  mm: MmStruct;
}
