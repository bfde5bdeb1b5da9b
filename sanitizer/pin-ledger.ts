/**
 * Outstanding GUP references per frame, from the `gup` and `gup-release` records: which mm
 * and address each came from, when, by which task. A helper each checker instantiates for
 * itself (pin-leak, blocked-migration), so that checkers keep their own shadow state.
 */
import { ZERO_PFN, type Kernel } from '../kernel-model/index.ts';
import type { SanitizerContext, TraceOf } from './context.ts';

export interface GupRef {
  kernel: Kernel;
  mm: number;
  addr: number;
  frame: number;
  pin: boolean;
  longterm: boolean;
  time: number;
  task: number | null;
}

export class PinLedger {
  private readonly byFrame = new Map<string, GupRef[]>();
  /** Per node and pid: the mm its tasks pinned from (the process may be gone at release). */
  private readonly mmOfPid = new Map<string, number>();

  constructor(private readonly ctx: SanitizerContext) {}

  private key(k: Kernel, frame: number): string {
    return `${this.ctx.kernelIndex(k)}:${frame}`;
  }

  take(r: TraceOf<'gup'>): void {
    const k = this.ctx.kernelByNode(r.node);
    if (!k) return;
    const pid = this.ctx.taskInfo(r.task)?.pid;
    if (pid != null) this.mmOfPid.set(`${r.node}:${pid}`, r.mm);
    r.frames.forEach((frame, i) => {
      if (frame === ZERO_PFN) return; // never counted (rule 55)
      const key = this.key(k, frame);
      let list = this.byFrame.get(key);
      if (!list) this.byFrame.set(key, (list = []));
      list.push({ kernel: k, mm: r.mm, addr: r.addr + i * 4096, frame, pin: r.pin, longterm: r.longterm, time: r.t, task: r.task });
    });
  }

  release(r: TraceOf<'gup-release'>): void {
    const k = this.ctx.kernelByNode(r.node);
    if (!k) return;
    const pid = this.ctx.taskInfo(r.task)?.pid;
    const mine = pid != null ? (this.mmOfPid.get(`${r.node}:${pid}`) ?? -1) : -1;
    for (const frame of r.frames) {
      if (frame === ZERO_PFN) continue;
      const key = this.key(k, frame);
      const list = this.byFrame.get(key);
      if (!list) continue;
      // unpin_user_pages names frames, not the mm: two processes pinning one page-cache
      // page hold two references on one frame. Give the release to a reference of the
      // releasing task's own mm first (ib_umem_release runs in the owner's context), else
      // to the oldest (a worker's release).
      const i = mine >= 0 ? list.findIndex((g) => g.pin === r.pin && g.mm === mine) : -1;
      const j = i >= 0 ? i : list.findIndex((g) => g.pin === r.pin);
      if (j >= 0) list.splice(j, 1);
      if (list.length === 0) this.byFrame.delete(key);
    }
  }

  /** Outstanding references on a frame. */
  on(k: Kernel, frame: number): readonly GupRef[] {
    return this.byFrame.get(this.key(k, frame)) ?? [];
  }

  /** Outstanding references taken from an mm. */
  fromMm(k: Kernel, mm: number): GupRef[] {
    const out: GupRef[] = [];
    for (const list of this.byFrame.values()) for (const g of list) if (g.kernel === k && g.mm === mm) out.push(g);
    return out;
  }
}
