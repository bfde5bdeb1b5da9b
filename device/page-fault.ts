import { Observable, Subject } from 'rxjs';
import type { Simulation } from '../kernel-model/sim/index.ts';
import type { CostModel } from './cost-model.ts';
import { ENOENT } from './errno.ts';

/**
 * A NIC page fault as the driver sees it on the fault stream: which QP stalled, on which
 * MR (by the key the access used), which iova range, and whether it needs write access.
 * mlx5 reports either a WQE fault (requester side, or a receive WQE) or an RDMA responder
 * fault carrying rkey, va and length (rdma B5, B6); both are one shape here.
 */
export interface DeviceFault {
  /** Unique per NIC; what `resumeFault` takes. */
  readonly id: number;
  readonly nic: string;
  /** When the faulting access happened (the fault reaches the stream `faultReportNs` later). */
  readonly time: number;
  readonly qpNum: number;
  readonly transport: 'RC' | 'UD' | 'XRC';
  /** Requester: gathering or scattering for a local WQE. Responder: executing an incoming request. */
  readonly side: 'requester' | 'responder';
  /** The work-request opcode being executed. */
  readonly opcode: number;
  /** The lkey (requester, or a receive WQE) or rkey (RDMA responder) that faulted. */
  readonly mrKey: number;
  /** First faulting byte. */
  readonly iova: number;
  /** Bytes from `iova` to the end of the segment or RDMA operation (the hardware's demand). */
  readonly length: number;
  readonly write: boolean;
  /** Why: no entry, or a read-only entry and a write. */
  readonly reason: 'absent' | 'read-only';
}

/** A resume command: which fault, when, and whether with the error bit (rdma B6). */
export interface FaultResume {
  readonly fault: DeviceFault;
  readonly time: number;
  readonly error: boolean;
}

export interface FaultResolution {
  error: boolean;
}

interface Outstanding {
  fault: DeviceFault;
  resolved: (r: FaultResolution) => void;
  reported: boolean;
}

/**
 * The fault pipeline between the DMA engine and the driver (rdma B7): a bounded event
 * queue (mlx5's has 4096 entries). A fault is on the stream from the moment it is reported
 * until the driver resumes it; each is resumed on its own, in any order, so faults on
 * different QPs resolve concurrently. When the queue is full a new fault waits, unreported,
 * until a resume frees a slot: its QP simply stays stalled longer (assumed; an EQ overrun
 * is not modelled as fatal).
 */
export class FaultQueue {
  private readonly subject = new Subject<DeviceFault>();
  /** Every fault, when it is reported. */
  readonly fault$: Observable<DeviceFault> = this.subject.asObservable();
  private readonly outstanding = new Map<number, Outstanding>();
  private readonly backlog: Outstanding[] = [];
  private slotsUsed = 0;
  private readonly resumeSubject = new Subject<FaultResume>();
  /** Every resume command, as the driver issues it: for fault-latency metrics and traces. */
  readonly resume$: Observable<FaultResume> = this.resumeSubject.asObservable();
  private nextId = 1;
  raised = 0;
  resumed = 0;
  resumedWithError = 0;
  /** Most faults ever outstanding on the stream at once. */
  highWater = 0;

  /**
   * `inline`: misses resolved in the copy path itself (rxe): no EQE, no interrupt, no
   * resume command, so the fault reaches the driver and the queue goes on at once.
   */
  constructor(private readonly sim: Simulation, private readonly costs: CostModel, readonly depth: number, readonly inline = false) {
    if (!(depth >= 1)) throw new RangeError(`fault queue depth ${depth}`);
  }

  /** Faults reported and not yet resumed, oldest first. */
  pending(): DeviceFault[] {
    const out: DeviceFault[] = [];
    for (const o of this.outstanding.values()) if (o.reported) out.push(o.fault);
    return out;
  }

  /** Faults waiting for a free slot in the queue. */
  get backlogged(): number {
    return this.backlog.length;
  }

  allocateId(): number {
    return this.nextId++;
  }

  /**
   * Raise a fault; `resolved` runs (in a scheduler event) when the driver has resumed it
   * and `faultResumeNs` has passed.
   */
  post(fault: DeviceFault, resolved: (r: FaultResolution) => void): void {
    this.raised++;
    const o: Outstanding = { fault, resolved, reported: false };
    this.outstanding.set(fault.id, o);
    if (this.slotsUsed < this.depth) this.report(o);
    else this.backlog.push(o);
  }

  private report(o: Outstanding): void {
    this.slotsUsed++;
    this.highWater = Math.max(this.highWater, this.slotsUsed);
    this.sim.scheduler.after(this.inline ? 0 : this.costs.faultReportNs + this.costs.faultInterruptNs, () => {
      o.reported = true;
      this.subject.next(o.fault);
    });
  }

  /** The resume command (`mlx5_ib_page_fault_resume`): 0, or -ENOENT for an unknown or unreported fault. */
  resume(id: number, error: boolean): number {
    const o = this.outstanding.get(id);
    if (!o || !o.reported) return -ENOENT;
    this.outstanding.delete(id);
    if (this.resumeSubject.observed) this.resumeSubject.next({ fault: o.fault, time: this.sim.now(), error });
    this.resumed++;
    if (error) this.resumedWithError++;
    this.slotsUsed--;
    const next = this.backlog.shift();
    if (next) this.report(next);
    this.sim.scheduler.after(this.inline ? 0 : this.costs.faultResumeNs, () => o.resolved({ error }));
    return 0;
  }
}
