/**
 * use-after-invalidate (error): a device access through a translation of an address
 * whose invalidate callback returned `true` after that translation was installed.
 *
 * Observed: every page access of a mirrored MR (ODP, implicit ODP, holdoff: not pinned,
 * not dma-buf) names the translation it used (generation, install time); every install is
 * on the NIC's command stream; every callback return is in the trace, inside the
 * invalidation (from the notifier stream) whose range it received.
 *
 * Why it is a bug: the kernel may free or reuse a page as soon as the callback returns
 * (kernel rule 11, rdma C5); nothing waits for the device. So once the callbacks of every
 * interval subscriber covering an address have returned true, no translation installed
 * before that moment may be used again; the device must fault and get a new one.
 *
 * Not flagged:
 * - a `false` return or an invalidation that failed with -EAGAIN (nothing changed, the
 *   driver rightly kept its translations; rules 10, 16). A non-blockable invalidation only
 *   counts once its end is seen;
 * - a translation installed after the return (a refault after the invalidation);
 * - an access fenced by a sync (it was in flight when the sync began and is ordered
 *   before the sync's completion);
 * - an access while some subscriber covering the address is still running its callback
 *   (a holdoff driver waiting for DMA to drain), since which subscriber is the MR's is not
 *   on the streams: an address counts as invalidated only when every interval subscriber
 *   covering it has returned true, and no callback of that invalidation is still running.
 *   Addresses covered by no interval subscriber count when a classic
 *   `invalidate_range_start` returns 0.
 */
import { PAGE_SIZE, type Kernel } from '../kernel-model/index.ts';
import type { AccessEvent, CallbackInfo, Checker, InvalidationInfo, SanitizerContext, SubInfo } from './context.ts';
import { formatNs, hex, violation } from './violation.ts';

/** A range of an mm that became off-limits to older translations at `ordinal`. */
interface Span {
  start: number;
  end: number;
  ordinal: number;
  time: number;
  inv: InvalidationInfo;
  returns: CallbackInfo[];
}

interface Segment {
  start: number;
  end: number;
  cover: SubInfo[];
  done: boolean;
}

interface MmSpans {
  /** Page number -> the latest narrow span covering it. */
  small: Map<number, Span>;
  /** Wide spans, oldest first (at most MAX_WIDE). */
  wide: Span[];
}

interface InvState {
  segments: Segment[];
  /** Spans of a non-blockable invalidation, held until its end is seen. */
  deferred: Span[];
}

/** Spans wider than this many pages go to a per-mm list instead of the per-page index. */
const SMALL_PAGES = 1024;
/** Wide spans kept per mm (oldest dropped first). */
const MAX_WIDE = 4096;

export function createUseAfterInvalidate(ctx: SanitizerContext): Checker {
  const id = 'use-after-invalidate';
  /** Per kernel and mm: the latest span of each page (narrow spans), and the wide spans. */
  const spans = new Map<Kernel, Map<number, MmSpans>>();
  const invStates = new WeakMap<InvalidationInfo, InvState>();
  const reported = new Set<string>();

  function spansOf(k: Kernel, mm: number, create: boolean): MmSpans | undefined {
    let byMm = spans.get(k);
    if (!byMm) {
      if (!create) return undefined;
      spans.set(k, (byMm = new Map()));
    }
    let s = byMm.get(mm);
    if (!s && create) byMm.set(mm, (s = { small: new Map(), wide: [] }));
    return s;
  }

  function stateOf(inv: InvalidationInfo): InvState {
    let s = invStates.get(inv);
    if (!s) {
      const cuts = new Set<number>([inv.start, inv.end]);
      for (const sub of inv.subs) {
        if (sub.start > inv.start && sub.start < inv.end) cuts.add(sub.start);
        if (sub.last + 1 > inv.start && sub.last + 1 < inv.end) cuts.add(sub.last + 1);
      }
      const points = [...cuts].sort((a, b) => a - b);
      const segments: Segment[] = [];
      for (let i = 0; i + 1 < points.length; i++) {
        const start = points[i] as number;
        const end = points[i + 1] as number;
        segments.push({ start, end, cover: inv.subs.filter((s2) => s2.start <= start && s2.last >= end - 1), done: false });
      }
      invStates.set(inv, (s = { segments, deferred: [] }));
    }
    return s;
  }

  function record(span: Span): void {
    const first = Math.floor(span.start / PAGE_SIZE);
    const last = Math.ceil(span.end / PAGE_SIZE) - 1;
    const s = spansOf(span.inv.kernel, span.inv.mm.id, true) as MmSpans;
    if (last - first + 1 <= SMALL_PAGES) {
      for (let v = first; v <= last; v++) s.small.set(v, span);
    } else {
      const list = s.wide;
      list.push(span);
      if (list.length > MAX_WIDE) list.shift();
    }
  }

  function addSpan(inv: InvalidationInfo, seg: Segment, returns: CallbackInfo[]): void {
    const span: Span = { start: seg.start, end: seg.end, ordinal: ctx.ordinal, time: ctx.sim.now(), inv, returns };
    if (inv.blockable) record(span);
    else stateOf(inv).deferred.push(span);
  }

  ctx.on(ctx.callback$, id, ({ phase, cb }) => {
    if (phase !== 'return' || !cb.inv || cb.inv.phase !== 'open') return;
    const inv = cb.inv;
    const st = stateOf(inv);
    if (cb.op === 'invalidate') {
      for (const seg of st.segments) {
        if (seg.done || seg.cover.length === 0) continue;
        const rets = inv.callbacks.filter((c) => c.op === 'invalidate' && c.returnOrdinal !== undefined);
        // Every covering subscriber (by name, counting duplicates) returned true, none false.
        let complete = true;
        const used = new Set<CallbackInfo>();
        for (const sub of seg.cover) {
          const mine = rets.filter((c) => c.sub === sub.sub && !used.has(c));
          if (mine.some((c) => c.ret !== 'true')) {
            seg.done = true; // a false: this segment never counts
            complete = false;
            break;
          }
          const got = mine.find((c) => c.ret === 'true');
          if (!got) {
            complete = false;
            break;
          }
          used.add(got);
        }
        if (complete && !seg.done) {
          seg.done = true;
          addSpan(inv, seg, [...used]);
        }
      }
    } else if (cb.op === 'invalidate_range_start' && cb.ret === '0') {
      for (const seg of st.segments) {
        if (seg.done || seg.cover.length > 0) continue;
        seg.done = true;
        addSpan(inv, seg, [cb]);
      }
    }
  });

  ctx.on(ctx.invalidation$, id, ({ phase, inv }) => {
    if (phase === 'start' || inv.blockable) return;
    const st = invStates.get(inv);
    if (!st) return;
    if (phase === 'end') {
      for (const span of st.deferred) record({ ...span, ordinal: ctx.ordinal, time: ctx.sim.now() });
    }
    st.deferred.length = 0;
  });

  function latestSpan(k: Kernel, mm: number, va: number): Span | undefined {
    const s = spansOf(k, mm, false);
    if (!s) return undefined;
    let best = s.small.get(Math.floor(va / PAGE_SIZE));
    const list = s.wide;
    if (list.length > 0) {
      for (let i = list.length - 1; i >= 0; i--) {
        const s = list[i] as Span;
        if (best && s.ordinal < best.ordinal) break;
        if (s.start <= va && va < s.end) {
          if (!best || s.ordinal > best.ordinal) best = s;
          break;
        }
      }
    }
    return best;
  }

  ctx.on(ctx.access$, id, (e: AccessEvent) => {
    const b = e.binding;
    const a = e.access;
    if (!b || b.kind !== 'mirrored' || !e.kernel || e.va === undefined || b.mmId === null || a.fenced) return;
    const span = latestSpan(e.kernel, b.mmId, e.va);
    if (!span) return;
    // Still inside the start phase (another subscriber's callback is running, possibly the
    // MR's own classic one): not acknowledged yet.
    if (span.inv.phase === 'open' && ctx.callbacksOf(span.inv.task).some((c) => c.inv === span.inv)) return;
    const inst = ctx.install(a.nic, a.generation);
    const after = inst ? span.ordinal > inst.ordinal : span.time > a.installedAt;
    if (!after) return;
    const dedupe = `${a.nic}:${a.mrKey}:${a.generation}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const inv = span.inv;
    const subs = span.returns.map((c) => c.sub).join(', ');
    const message = `${a.nic} ${a.write ? 'wrote' : 'read'} ${a.length} bytes at ${hex(e.va)} of mm${b.mmId} (key ${hex(a.mrKey)}) ` +
      `through a translation to frame ${a.frame} installed at ${formatNs(a.installedAt)}, after the ${inv.event} invalidation of ` +
      `[${hex(span.start)}, ${hex(span.end)}) was acknowledged (${subs} returned at ${formatNs(span.time)})` +
      `${a.stale ? '; the translation came from the translation cache after a zap (no sync)' : ''}`;
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [
      ...ctx.trailMr(b, e.va, e.mr).filter((x) => x.kind !== 'callback'),
      ctx.trailInstall(inst, b, e.mr),
      ...ctx.trailInvalidation(inv, true, span.returns),
      ctx.trailAccess(e),
    ]));
  });

  return { id };
}
