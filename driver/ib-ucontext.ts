import { Subject } from 'rxjs';
import type { Co, MmStruct, Process } from '../kernel-model/index.ts';
import type { CompletionQueue, QueuePair } from '../device/index.ts';
import type { IbDevice } from './ib-device.ts';
import type { IbUmem } from './umem.ts';

export interface MrEvent {
  type: 'invalidated' | 'revoked';
  umem: IbUmem;
  start: number;
  end: number;
}

/**
 * `struct ib_ucontext`: one process's open of the device. It holds an mm_count reference
 * (mmgrab, as ib_uverbs does), so the mm struct outlives the process's exit while MRs
 * still point at it; the address space itself may be gone (mm.users == 0).
 */
export class IbUcontext {
  readonly mm: MmStruct;
  readonly pds = new Set<number>();
  readonly umems = new Set<IbUmem>();
  readonly qps = new Set<QueuePair>();
  readonly cqs = new Set<CompletionQueue>();
  closed = false;
  /**
   * What strategies report about an MR's memory going away under it. Real verbs have no
   * such event (rdma F4); the verbs layer turns it into the opt-in extension events.
   */
  readonly mrEvents = new Subject<MrEvent>();

  constructor(readonly device: IbDevice, readonly process: Process) {
    this.mm = process.mm;
    this.mm.mmgrab();
  }

  /**
   * ib_uverbs_close / ucontext cleanup: destroy QPs first (the device stops), then
   * deregister every MR, then drop the mm reference.
   */
  *close(): Co {
    if (this.closed) return;
    this.closed = true;
    const { nic } = this.device;
    for (const qp of this.qps) nic.destroyQp(qp);
    this.qps.clear();
    for (const umem of [...this.umems]) yield* this.device.deregMr(umem);
    for (const pd of this.pds) nic.deallocPd(pd);
    this.pds.clear();
    this.mm.mmdrop();
  }
}
