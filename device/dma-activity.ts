import { Observable, Subject } from 'rxjs';
import type { Co, SimEvent, Simulation } from '../kernel-model/sim/index.ts';
import type { MemoryRegion } from './memory-region.ts';
import type { Sge } from './work-request.ts';

/** One MR range a piece of DMA work may touch (iova space of that MR). */
export interface DmaRange {
  readonly mr: MemoryRegion;
  readonly iova: number;
  readonly length: number;
}

/**
 * DMA work the NIC is executing, named by the ranges it may touch. What counts as active:
 * - a send work request (SEND, RDMA WRITE, READ, atomic), on its local SGEs, from the
 *   doorbell until it completes (success, error or flush): the send engine reads the
 *   buffers of a SEND or WRITE again on a retransmission, and writes a READ or atomic
 *   result when the response arrives;
 * - the gather of a message and the scatter of a response while they run (they may
 *   outlive their WQE when the QP is moved to ERR in the middle);
 * - on the responder, an incoming request while it executes: a SEND on the receive WQE's
 *   SGEs, an RDMA WRITE, READ or atomic on its remote range.
 * A posted receive waiting for a message is not active: the NIC touches it only when a
 * message arrives, and nothing on this NIC can say when that will be.
 */
export interface ActiveDma {
  readonly id: number;
  readonly qpNum: number;
  readonly side: 'requester' | 'responder';
  /** The work-request opcode (IBV_WR_*). */
  readonly opcode: number;
  readonly ranges: readonly DmaRange[];
  /** Virtual time it became active. */
  readonly since: number;
  ended: boolean;
}

export interface DmaActivityEvent {
  readonly type: 'start' | 'end';
  readonly op: ActiveDma;
  readonly time: number;
}

/**
 * The NIC's record of DMA work in progress per memory region, and a way to sleep until no
 * work touches a range any more (in virtual time, optionally with a deadline). A driver for
 * a device that cannot fault uses it to hold back the removal of a translation until the
 * device is done with it. `activity$` emits every start and end (only built while observed).
 *
 * @example
 *   const idle = yield* nic.dmaActivity.waitIdle(mr, mr.iova, 4096, sim.now() + 1_000_000);
 *   if (!idle) for (const op of nic.dmaActivity.active(mr)) nic.qpToError(nic.qpByNum(op.qpNum)!);
 */
export class DmaActivity {
  private readonly byMr = new Map<MemoryRegion, Set<ActiveDma>>();
  private readonly waiters = new Map<MemoryRegion, (() => void)[]>();
  private readonly subject = new Subject<DmaActivityEvent>();
  readonly activity$: Observable<DmaActivityEvent> = this.subject.asObservable();
  private nextId = 1;

  constructor(private readonly sim: Simulation) {}

  /** Record work starting on `ranges` (zero-length ranges ignored); null when nothing is touched. */
  begin(qpNum: number, side: 'requester' | 'responder', opcode: number, ranges: readonly DmaRange[]): ActiveDma | null {
    const used = ranges.filter((r) => r.length > 0);
    if (used.length === 0) return null;
    const op: ActiveDma = { id: this.nextId++, qpNum, side, opcode, ranges: used, since: this.sim.now(), ended: false };
    for (const r of used) {
      let set = this.byMr.get(r.mr);
      if (!set) this.byMr.set(r.mr, (set = new Set()));
      set.add(op);
    }
    if (this.subject.observed) this.subject.next({ type: 'start', op, time: this.sim.now() });
    return op;
  }

  /** Record the end of `op` (idempotent) and wake whoever waits on its MRs. */
  end(op: ActiveDma | null | undefined): void {
    if (!op || op.ended) return;
    op.ended = true;
    for (const r of op.ranges) {
      const set = this.byMr.get(r.mr);
      if (set) {
        set.delete(op);
        if (set.size === 0) this.byMr.delete(r.mr);
      }
      const ws = this.waiters.get(r.mr);
      if (ws) {
        this.waiters.delete(r.mr);
        for (const w of ws) w();
      }
    }
    if (this.subject.observed) this.subject.next({ type: 'end', op, time: this.sim.now() });
  }

  /** Run `body` with `ranges` recorded as active for its whole duration. */
  *during<T>(qpNum: number, side: 'requester' | 'responder', opcode: number, ranges: readonly DmaRange[], body: Co<T>): Co<T> {
    const op = this.begin(qpNum, side, opcode, ranges);
    try {
      return yield* body;
    } finally {
      this.end(op);
    }
  }

  /** The ranges of an SGE list, resolving keys with `lookup` (unknown keys are skipped). */
  sglRanges(sgList: readonly Sge[], lookup: (key: number) => MemoryRegion | undefined): DmaRange[] {
    const out: DmaRange[] = [];
    for (const s of sgList) {
      if (s.length <= 0) continue;
      const mr = lookup(s.lkey);
      if (mr) out.push({ mr, iova: s.addr, length: s.length });
    }
    return out;
  }

  /** Every piece of work active now, oldest first (read-only, for inspection). */
  allActive(): ActiveDma[] {
    const ops = new Set<ActiveDma>();
    for (const set of this.byMr.values()) for (const op of set) ops.add(op);
    return [...ops].sort((a, b) => a.id - b.id);
  }

  /** Work active on `mr`, restricted to what overlaps [iova, iova + length) when given. */
  active(mr: MemoryRegion, iova = -Infinity, length = Infinity): ActiveDma[] {
    const set = this.byMr.get(mr);
    if (!set) return [];
    const end = length === Infinity ? Infinity : iova + length;
    const out: ActiveDma[] = [];
    for (const op of set) {
      if (op.ranges.some((r) => r.mr === mr && r.iova < end && r.iova + r.length > iova)) out.push(op);
    }
    return out;
  }

  /**
   * Sleep until no work overlaps [iova, iova + length) of `mr`, or until virtual time
   * `deadline`. Returns true when the range is idle, false when the deadline came first.
   * Work that starts on the range while this waits is waited for too.
   */
  *waitIdle(mr: MemoryRegion, iova: number, length: number, deadline = Infinity): Co<boolean> {
    const sim = this.sim;
    for (;;) {
      if (this.active(mr, iova, length).length === 0) return true;
      if (sim.now() >= deadline) return false;
      let timer: SimEvent | null = null;
      yield* sim.park<void>((wake) => {
        let ws = this.waiters.get(mr);
        if (!ws) this.waiters.set(mr, (ws = []));
        ws.push(() => wake());
        if (Number.isFinite(deadline)) timer = sim.scheduler.at(deadline, () => wake());
      });
      if (timer) (timer as SimEvent).cancelled = true;
    }
  }
}
