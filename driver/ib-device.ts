import { Subject, type Observable, type Subscription } from 'rxjs';
import { EINVAL, EOPNOTSUPP, EOVERFLOW, PAGE_SIZE, type Co, type Kernel, type Process } from '../kernel-model/index.ts';
import {
  IBV_ACCESS_FLUSH_GLOBAL, IBV_ACCESS_FLUSH_PERSISTENT, IBV_ACCESS_HUGETLB, IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_ON_DEMAND,
  IBV_ACCESS_REMOTE_ATOMIC, IBV_ACCESS_REMOTE_WRITE, IBV_ACCESS_SUPPORTED_MASK, IB_UVERBS_DEVICE_FLUSH_GLOBAL,
  IB_UVERBS_DEVICE_FLUSH_PERSISTENT, hasDeviceCap, type DeviceFault, type Nic,
} from '../device/index.ts';
import { IbUcontext } from './ib-ucontext.ts';
import type { IbUmem, RegMrRequest, UmemStrategy } from './umem.ts';
import type { RcacheStreamEvent } from './rcache-event.ts';

/** SIZE_MAX as userspace passes it for an implicit ODP MR (rdma A7). */
export const SIZE_MAX = 2 ** 64 - 1;

/**
 * Which process memory an MR key translates (for checkers, which may not import the
 * driver): the key's iova range maps to [addr, addr + length) of mm `mmId` (null when the
 * MR is not backed by process memory). Published at registration and deregistration.
 */
export interface MrBindingEvent {
  nic: string;
  key: number;
  mmId: number | null;
  addr: number;
  length: number;
  iova: number;
  strategy: string;
  /** The umem pins its pages (IbUmem.pinsPages). */
  pinned?: boolean;
  event: 'reg' | 'dereg';
}

export interface IbDeviceOptions {
  /** How this device registers memory without ON_DEMAND: pin it, or hold off invalidations. */
  nonOdp: UmemStrategy;
  /** How it registers ON_DEMAND memory (needed only on a faultable NIC). */
  odp?: UmemStrategy;
  name?: string;
}

/**
 * The driver's device (an `ib_device` with its mlx5 private part): one per NIC. It checks
 * registrations (rdma A1, A2, A5, A7), hands them to a strategy, and routes every NIC
 * page fault to the MR that owns the faulting key, on its own worker task, so faults on
 * different QPs resolve concurrently (rdma B7).
 */
export class IbDevice {
  readonly name: string;
  readonly umemByKey = new Map<number, IbUmem>();
  private readonly faultSub: Subscription;
  /** Faults that arrived for a key no ODP MR owns (resumed with error). */
  strayFaults = 0;
  private readonly bindingSubject = new Subject<MrBindingEvent>();
  /** Every registration and deregistration through `regMr`/`deregMr`: key -> mm and range. */
  readonly binding$: Observable<MrBindingEvent> = this.bindingSubject.asObservable();
  /**
   * What the processes' provider-side libraries on this device publish (driver/rcache.ts):
   * allocator calls, registration-cache lookups, hits, registrations, invalidations, posts.
   */
  readonly rcache$ = new Subject<RcacheStreamEvent>();

  constructor(readonly kernel: Kernel, readonly nic: Nic, readonly opts: IbDeviceOptions) {
    this.name = opts.name ?? `ib_${nic.name}`;
    this.faultSub = nic.fault$.subscribe((fault) => {
      kernel.sim.spawn(`${this.name}/page-fault`, () => this.pageFault(fault), { kind: 'worker' });
    });
  }

  /** ibv_open_device: a user context for `process`. */
  open(process: Process): IbUcontext {
    return new IbUcontext(this, process);
  }

  /**
   * The page-fault work item (mlx5_ib_eqe_pf_action) for one NIC fault, before the MR's
   * strategy maps the pages: its fixed work is charged here, for every ODP strategy
   * (cpu-costs.ts odpFaultWorkNs: reading the WQE, finding the mkey,
   * pagefault_single_data_segment), or rxe's inline miss on a device that resolves misses
   * in its copy path (inlineMissNs, rxe_odp_map_range_and_lock).
   */
  private *pageFault(fault: DeviceFault): Co {
    const c = this.kernel.cpuCosts;
    yield* this.kernel.sim.cpu(this.nic.caps.odpMissHandling === 'inline' ? c.inlineMissNs : c.odpFaultWorkNs);
    const umem = this.umemByKey.get(fault.mrKey);
    if (!umem?.handleFault) {
      this.strayFaults++;
      this.nic.resumeFault(fault.id, { error: true });
      return;
    }
    yield* umem.handleFault(fault);
  }

  /**
   * ib_uverbs_reg_mr: the checks in the kernel's order (rdma A1: remote write or atomic
   * without local write, unknown bits, then ON_DEMAND without ODP; A5: range overflow and
   * an empty span; A7: implicit ODP), then the strategy.
   */
  *regMr(ctx: IbUcontext, req: RegMrRequest): Co<IbUmem | number> {
    const { access } = req;
    if (!ctx.pds.has(req.pd)) return -EINVAL;
    if (access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC) && !(access & IBV_ACCESS_LOCAL_WRITE)) return -EINVAL;
    if (access & ~IBV_ACCESS_SUPPORTED_MASK) return -EINVAL;
    const odp = (access & IBV_ACCESS_ON_DEMAND) !== 0;
    if (odp && (!this.nic.faultable || !this.opts.odp)) return -EOPNOTSUPP;
    // rdma A1 step 4 (ib_check_mr_access): a FLUSH access bit needs the device's flush capability.
    if (access & IBV_ACCESS_FLUSH_GLOBAL && !hasDeviceCap(this.nic.caps, IB_UVERBS_DEVICE_FLUSH_GLOBAL)) return -EOPNOTSUPP;
    if (access & IBV_ACCESS_FLUSH_PERSISTENT && !hasDeviceCap(this.nic.caps, IB_UVERBS_DEVICE_FLUSH_PERSISTENT)) return -EOPNOTSUPP;
    const implicit = odp && req.addr === 0 && req.length === SIZE_MAX;
    if (implicit) {
      if (req.iova !== 0 || access & IBV_ACCESS_HUGETLB) return -EINVAL;
    } else {
      if (req.length <= 0 || !Number.isFinite(req.length)) return -EINVAL;
      if (req.addr + req.length > 2 ** 64 - 1 || req.addr + req.length < req.addr) return -EOVERFLOW;
      const span = Math.ceil((req.addr + req.length) / PAGE_SIZE) - Math.floor(req.addr / PAGE_SIZE);
      if (span <= 0) return -EINVAL;
    }
    const strategy = odp ? (this.opts.odp as UmemStrategy) : this.opts.nonOdp;
    const umem = yield* strategy.regMr(ctx, req);
    if (typeof umem === 'number') return umem;
    this.umemByKey.set(umem.mr.lkey, umem);
    ctx.umems.add(umem);
    this.publishBinding(umem, 'reg');
    return umem;
  }

  private publishBinding(umem: IbUmem, event: 'reg' | 'dereg'): void {
    if (!this.bindingSubject.observed) return;
    this.bindingSubject.next({
      nic: this.nic.name, key: umem.mr.lkey, mmId: umem.ctx.mm.id, addr: umem.addr, length: umem.length,
      iova: umem.mr.iova, strategy: umem.strategy, event, ...(umem.pinsPages ? { pinned: true } : {}),
    });
  }

  /** ib_dereg_mr. */
  *deregMr(umem: IbUmem): Co<number> {
    if (!umem.ctx.umems.has(umem)) return -EINVAL;
    umem.ctx.umems.delete(umem);
    const r = yield* umem.dereg();
    this.umemByKey.delete(umem.mr.lkey);
    this.publishBinding(umem, 'dereg');
    return r;
  }

  /** Stop routing faults (the device is going away). */
  close(): void {
    this.faultSub.unsubscribe();
  }
}
