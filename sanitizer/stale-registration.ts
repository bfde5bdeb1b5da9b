/**
 * stale-registration (error): a work request is posted through an MR whose device
 * translations are no longer what the process maps at those addresses: the NIC is about
 * to move other pages than the application meant. The classic case is a userspace
 * registration cache (UCX's rcache and the like) whose memory hooks missed a release: the
 * application frees a buffer, the allocator gives the memory back (munmap, MADV_DONTNEED,
 * brk shrink, mremap), a later allocation reuses the address, and the next send from the
 * new buffer hits the cache and goes out through the old, still pinned, frames.
 *
 * Observed: the userspace stream (sanitizer/rcache-event.ts: allocator calls, cache
 * lookups, hits, registrations, invalidations, posts), the MR bindings, each MR's device
 * page table and the CPU page table, compared at the moment a post is published (after
 * the provider prepared the WR, before the NIC reads a byte). Its trail names the free, the
 * system call that released the memory (its invalidation), the allocation that reused the
 * address, the cache hit and the post.
 *
 * How it differs from pinned-incoherence (a warning): that one fires when the mapping
 * changes under a pinned MR whether or not anything uses it; this one fires only when work
 * is posted through the stale translation, i.e. when data is about to go to or come from
 * the wrong pages.
 *
 * Not flagged: pages the device does not translate (an ODP or holdoff MR after its
 * invalidation: the NIC will fault or the provider remaps), pages inside an open
 * invalidation window, MRs not backed by process memory.
 */
import { PAGE_SIZE, pteFrame, ptePresent, type Kernel } from '../kernel-model/index.ts';
import type { Checker, InvalidationInfo, SanitizerContext } from './context.ts';
import type { RcacheEvent } from './rcache-event.ts';
import { hex, violation, type TrailEntry } from './violation.ts';

/** How many allocator and invalidation records are kept per mm for trails. */
const KEEP = 4096;
/** Pages of one post compared (a post of a huge buffer is judged by its first pages). */
const MAX_PAGES = 4096;

type Timed<E> = E & { time: number };

export function createStaleRegistration(ctx: SanitizerContext): Checker {
  const id = 'stale-registration';
  const allocs = new Map<string, Timed<Extract<RcacheEvent, { type: 'alloc' | 'free' }>>[]>();
  const hits = new Map<string, Timed<Extract<RcacheEvent, { type: 'hit' }>>>();
  const regs = new Map<string, Timed<Extract<RcacheEvent, { type: 'register' }>>>();
  const invalidations = new Map<string, InvalidationInfo[]>();
  const reported = new Set<string>();

  const push = <T>(m: Map<string, T[]>, key: string, v: T) => {
    let l = m.get(key);
    if (!l) m.set(key, (l = []));
    l.push(v);
    if (l.length > 2 * KEEP) l.splice(0, l.length - KEEP);
  };

  ctx.on(ctx.invalidation$, id, ({ phase, inv }) => {
    if (phase === 'start') push(invalidations, `${ctx.kernelIndex(inv.kernel)}:${inv.mm.id}`, inv);
  });

  ctx.on(ctx.rcache$, id, (e) => {
    const time = ctx.sim.now();
    if (e.type === 'alloc' || e.type === 'free') push(allocs, `${e.nic}:${e.mmId}`, { ...e, time });
    else if (e.type === 'hit') hits.set(`${e.nic}:${e.key}`, { ...e, time });
    else if (e.type === 'register') regs.set(`${e.nic}:${e.key}`, { ...e, time });
    else if (e.type === 'post') check(e, time);
  });

  function check(e: Extract<RcacheEvent, { type: 'post' }>, time: number): void {
    const b = ctx.binding(e.nic, e.key);
    if (!b || b.kind === 'other' || b.mmId === null || !b.kernel) return;
    const mr = b.nicObj?.mrByKey(e.key);
    if (!mr) return;
    const k: Kernel = b.kernel;
    const mm = e.mmId;
    let stale = 0;
    let first: { va: number; dev: number; cpu: number | null } | null = null;
    const from = Math.max(e.addr, b.addr);
    const to = Math.min(e.addr + e.length, b.addr + b.length);
    let pages = 0;
    for (let va = from - (from % PAGE_SIZE); va < to && pages < MAX_PAGES; va += PAGE_SIZE, pages++) {
      const index = ctx.indexOfVa(b, mr, Math.max(va, from));
      const dev = mr.pageTable.frameOf(index);
      if (dev < 0) continue;
      if (ctx.inWindow(k, mm, va)) continue;
      const pte = ctx.cpuPte(k, mm, va);
      if (ptePresent(pte) && pteFrame(pte) === dev) continue;
      stale++;
      if (!first) first = { va, dev, cpu: ptePresent(pte) ? pteFrame(pte) : null };
    }
    if (!first) return;
    const dedupe = `${e.nic}:${e.key}:${first.va}:${first.dev}:${first.cpu}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const lo = first.va;
    const hi = first.va + PAGE_SIZE;
    const overlaps = (a: { addr: number; length: number }) => a.addr < hi && lo < a.addr + Math.max(a.length, 1);
    const records = allocs.get(`${e.nic}:${mm}`) ?? [];
    let free: Timed<Extract<RcacheEvent, { type: 'free' }>> | undefined;
    let reuse: Timed<Extract<RcacheEvent, { type: 'alloc' }>> | undefined;
    for (let i = records.length - 1; i >= 0; i--) {
      const r = records[i]!;
      if (!overlaps(r)) continue;
      if (r.type === 'alloc' && !reuse && !free) reuse = r as Timed<Extract<RcacheEvent, { type: 'alloc' }>>;
      else if (r.type === 'free' && !free) {
        free = r as Timed<Extract<RcacheEvent, { type: 'free' }>>;
        break;
      }
    }
    const invs = invalidations.get(`${ctx.kernelIndex(k)}:${mm}`) ?? [];
    const released = [...invs].reverse().find((inv) => inv.start < hi && lo < inv.end && (!free || inv.time >= free.time));
    const hit = hits.get(`${e.nic}:${e.key}`);
    const reg = regs.get(`${e.nic}:${e.key}`);
    const trail: (TrailEntry | null)[] = [
      reg ? { time: reg.time, kind: 'rcache-register', text: `${reg.cache} registered [${hex(reg.start)}, ${hex(reg.end)}) of mm${mm}: key ${hex(reg.key)}` } : null,
      free ? { time: free.time, kind: 'free', text: `${free.fn}(${hex(free.addr)}) of ${free.length} bytes by mm${mm}` } : null,
      ...(released ? ctx.trailInvalidation(released) : []),
      reuse ? { time: reuse.time, kind: 'alloc', text: `${reuse.fn} returned ${hex(reuse.addr)} (${reuse.length} bytes) to mm${mm}: the address is reused` } : null,
      hit ? { time: hit.time, kind: 'rcache-hit', text: `${hit.cache} lookup of [${hex(hit.addr)}, ${hex(hit.addr + hit.length)}) hit region [${hex(hit.start)}, ${hex(hit.end)}) key ${hex(hit.key)}` } : null,
      { time, kind: 'post', text: `${e.opcode} posted through ${e.nic} key ${hex(e.key)} over [${hex(e.addr)}, ${hex(e.addr + e.length)}) (the NIC ${e.direction === 'out' ? 'reads' : 'writes'} it)` },
    ];
    const cpu = first.cpu === null ? 'maps nothing there' : `maps frame ${first.cpu} there`;
    const message = `${e.opcode} posted through ${e.nic} key ${hex(e.key)} (${b.strategy}) over [${hex(e.addr)}, ${hex(e.addr + e.length)}) of mm${mm}: ` +
      `the MR translates ${hex(first.va)} to frame ${first.dev} but the process ${cpu}; ${stale} page${stale === 1 ? '' : 's'} of the request are stale: ` +
      `the NIC ${e.direction === 'out' ? 'sends bytes the application no longer has there' : 'writes into pages the application no longer sees'}`;
    ctx.emitViolation(violation(id, time, message, trail));
  }

  return { id };
}
