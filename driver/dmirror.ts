import type { Co } from '../kernel-model/sim/index.ts';
import { Mutex } from '../kernel-model/sim/index.ts';
import {
  EBUSY, EFAULT, ENOENT, PAGE_SIZE, TASK_SIZE, MmuNotifyEvent, mmuNotifierRangeBlockable,
  HMM_PFN_REQ_FAULT, HMM_PFN_REQ_WRITE, HMM_PFN_WRITE, HMM_RANGE_DEFAULT_TIMEOUT_NS,
  hmmRangeFault, hmmRangeInit, mmput,
  mmuIntervalNotifierInsert, mmuIntervalNotifierRemove, mmuIntervalReadBegin, mmuIntervalReadRetry, mmuIntervalSetSeq,
  MmuIntervalNotifier, type Kernel, type MmStruct, type MmuNotifierRange,
} from '../kernel-model/index.ts';

/** One mirrored page: the frame and whether the device may write it. */
export interface MirrorEntry {
  frame: number;
  write: boolean;
}

/**
 * Pages per hmm_range_fault call in lib/test_hmm.c's dmirror_fault and dmirror_snapshot
 * (`unsigned long pfns[64]` since the module appeared in 5.7), halved to 32 by
 * "lib/test_hmm: reduce stack usage" (Arnd Bergmann, merged for 6.17).
 */
export function testHmmChunkPages(release: string): number {
  const [major = 0, minor = 0] = release.split('.').map((x) => Number.parseInt(x, 10));
  return major > 6 || (major === 6 && minor >= 17) ? 32 : 64;
}

/**
 * A reference mirror modelled on lib/test_hmm.c's dmirror: a fake device with its own
 * sparse page table that mirrors one process's address space through an interval
 * subscription covering all of user space, a mutex, and the rule-31 fault loop.
 *
 * Why no page references: the mirror relies on invalidations to drop stale entries
 * (rule 49), which is the whole point of a notifier-based driver; holding references
 * would hide exactly the bugs this model exists to show.
 */
export class Dmirror {
  /** Virtual page number -> mirrored page. Sparse: costs only what was faulted. */
  readonly pt = new Map<number, MirrorEntry>();
  readonly mutex: Mutex;
  readonly notifier: MmuIntervalNotifier;
  /** Rounds of the fault loop that had to fault something (test_hmm's `faults`). */
  faults = 0;
  /** Invalidations received, for demos. */
  readonly invalidations: { start: number; end: number; event: MmuNotifyEvent; time: number }[] = [];

  private constructor(readonly kernel: Kernel, readonly mm: MmStruct, readonly name: string) {
    this.mutex = new Mutex(kernel.sim, `${name}.mutex`, 'dmirror.mutex');
    this.notifier = new MmuIntervalNotifier(name);
  }

  /** Open the device for a process's mm: insert the interval subscription (rule 23). */
  static *open(kernel: Kernel, mm: MmStruct, name = 'dmirror'): Co<Dmirror | number> {
    const d = new Dmirror(kernel, mm, name);
    const ret = yield* mmuIntervalNotifierInsert(d.notifier, mm, 0, TASK_SIZE, {
      invalidate: (sub, range, curSeq) => d.invalidate(sub, range, curSeq),
    }, { lock: d.mutex });
    return ret < 0 ? ret : d;
  }

  /**
   * dmirror_interval_invalidate: skip only MIGRATE events this device started (rule 22);
   * lock (try-lock when non-blockable, rule 16), set_seq unconditionally (rule 26), drop
   * the entries. Like the original it erases through end >> PAGE_SHIFT inclusive, one
   * page too many, which is harmless.
   */
  private *invalidate(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): Co<boolean> {
    if (range.event === MmuNotifyEvent.MIGRATE && range.owner === this) return true;
    if (mmuNotifierRangeBlockable(range)) yield* this.mutex.lock();
    else if (!this.mutex.trylock()) return false;
    mmuIntervalSetSeq(sub, curSeq);
    this.invalidations.push({ start: range.start, end: range.end, event: range.event, time: this.kernel.sim.now() });
    this.erase(Math.floor(range.start / PAGE_SIZE), Math.floor(Math.min(range.end, TASK_SIZE) / PAGE_SIZE));
    this.mutex.unlock();
    return true;
  }

  private erase(first: number, last: number): void {
    if (last - first + 1 > this.pt.size) {
      for (const v of [...this.pt.keys()]) if (v >= first && v <= last) this.pt.delete(v);
    } else {
      for (let v = first; v <= last; v++) this.pt.delete(v);
    }
  }

  /**
   * dmirror_fault: the canonical collision-retry loop (rule 31) per chunk, bounded
   * by HMM_RANGE_DEFAULT_TIMEOUT in virtual time. Returns 0 or -errno.
   */
  *fault(start: number, end: number, write: boolean): Co<number> {
    const chunk = testHmmChunkPages(this.kernel.profile.release) * PAGE_SIZE;
    for (let addr = start; addr < end; addr += chunk) {
      const r = yield* this.faultChunk(addr, Math.min(end, addr + chunk), write);
      if (r < 0) return r;
    }
    return 0;
  }

  private *faultChunk(start: number, end: number, write: boolean): Co<number> {
    const { sim } = this.kernel;
    if (!this.mm.mmgetNotZero()) return -EFAULT;
    const timeout = sim.now() + HMM_RANGE_DEFAULT_TIMEOUT_NS;
    let ret = 0;
    for (;;) {
      if (sim.now() > timeout) {
        ret = -EBUSY;
        break;
      }
      const seq = yield* mmuIntervalReadBegin(this.notifier);
      const range = hmmRangeInit(this.notifier, start, end, seq, HMM_PFN_REQ_FAULT | (write ? HMM_PFN_REQ_WRITE : 0));
      range.devPrivateOwner = this;
      yield* this.mm.mmapLock.downRead();
      ret = yield* hmmRangeFault(range);
      this.mm.mmapLock.upRead();
      if (ret === -EBUSY) continue;
      if (ret < 0) break;
      yield* this.mutex.lock();
      if (mmuIntervalReadRetry(this.notifier, seq)) {
        this.mutex.unlock();
        continue;
      }
      // Program the mirror from the snapshot while still holding the lock (rule 31 step 6).
      for (let i = 0; i < range.pfns.length; i++) {
        this.pt.set(start / PAGE_SIZE + i, {
          frame: range.pfns[i] as number,
          write: ((range.flags[i] as number) & HMM_PFN_WRITE) !== 0,
        });
      }
      this.mutex.unlock();
      break;
    }
    yield* mmput(this.mm);
    return ret;
  }

  /** Device read through the mirror (dmirror_read): fault what is missing, then copy. */
  *read(addr: number, length: number): Co<Uint8Array | number> {
    const out = new Uint8Array(length);
    const r = yield* this.access(addr, length, false, (frame, off, pos, n) => out.set(this.kernel.dmaBus.read(frame, off, n), pos));
    return r < 0 ? r : out;
  }

  /** Device write through the mirror (dmirror_write): needs writable entries. */
  *write(addr: number, bytes: Uint8Array): Co<number> {
    return yield* this.access(addr, bytes.length, true, (frame, off, pos, n) => this.kernel.dmaBus.write(frame, off, bytes.subarray(pos, pos + n)));
  }

  /**
   * dmirror_read / dmirror_write: copy under the mutex as far as the mirror allows; on a
   * missing (or, for a write, read-only) page fault from there to the end and go on from
   * `cmd->addr + (cpages << PAGE_SHIFT)`: pages already copied are not copied again, even
   * if an invalidation dropped them meanwhile.
   */
  private *access(addr: number, length: number, write: boolean, copy: (frame: number, off: number, pos: number, n: number) => void): Co<number> {
    const end = addr + length;
    let start = addr;
    for (;;) {
      yield* this.mutex.lock();
      const missing = this.copyUnderLock(addr, start, end, write, copy);
      this.mutex.unlock();
      if (missing < 0) return 0;
      start = missing;
      const r = yield* this.fault(Math.floor(start / PAGE_SIZE) * PAGE_SIZE, Math.ceil(end / PAGE_SIZE) * PAGE_SIZE, write);
      if (r < 0) return r === -ENOENT ? -EFAULT : r;
      this.faults++;
    }
  }

  /** Copy [start, end) as far as the mirror allows; return the first address missing, or -1 when done. */
  private copyUnderLock(addr: number, start: number, end: number, write: boolean, copy: (frame: number, off: number, pos: number, n: number) => void): number {
    for (let a = start; a < end;) {
      const page = Math.floor(a / PAGE_SIZE) * PAGE_SIZE;
      const e = this.pt.get(page / PAGE_SIZE);
      if (!e || (write && !e.write)) return a;
      const n = Math.min(end - a, page + PAGE_SIZE - a);
      copy(e.frame, a - page, a - addr, n);
      a += n;
    }
    return -1;
  }

  /** Close the device: remove the subscription (rule 30; may sleep). */
  *close(): Co {
    yield* mmuIntervalNotifierRemove(this.notifier);
  }
}
