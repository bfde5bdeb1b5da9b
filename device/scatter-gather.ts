import type { Co } from '../kernel-model/sim/index.ts';
import { DEVICE_PAGE_SIZE } from './device-page-table.ts';
import { XLATE_PROT, type AccessContext, type DmaEngine } from './dma-engine.ts';
import type { MemoryRegion } from './memory-region.ts';
import type { Sge } from './work-request.ts';

/**
 * Splitting a message into page accesses: gather from and scatter into a local SGE list,
 * read and write a remote range of one MR. What happens at a page that cannot be used is
 * the caller's choice (`onFault`): the requester stalls its QP until the driver resumes the
 * fault and then retries the page; the responder posts the fault and stops.
 */

/** Completed. */
export const SG_OK = 0;
/** Key, PD, bounds, access rights or validity check failed, or a non-faultable page was missing. */
export const SG_PROT = 1;
/** Returned by `onFault` to access the same page again (the fault was resolved). */
export const SG_RETRY = -1;

/**
 * Decide what to do about a page that faulted: return SG_RETRY, or a stop code the caller
 * of the scatter/gather understands (anything but SG_OK and SG_PROT is the caller's own).
 * `remaining` is the bytes from `iova` to the end of the segment or operation.
 */
export type OnFault = (mr: MemoryRegion, key: number, iova: number, remaining: number, write: boolean, xlateCode: number) => Co<number>;

/** Resolve a key for a range: the MR, or null when a check fails. */
export type KeyLookup = (key: number, addr: number, length: number) => MemoryRegion | null;

function pageRoom(iova: number): number {
  return DEVICE_PAGE_SIZE - (iova - Math.floor(iova / DEVICE_PAGE_SIZE) * DEVICE_PAGE_SIZE);
}

/**
 * Read [iova, iova + length) through `mr`, page by page. Returns the bytes (the bus's own
 * buffer when one page access covers the range), or a stop code.
 */
export function* readRange(
  engine: DmaEngine, ctx: AccessContext, mr: MemoryRegion, key: number, iova: number, length: number,
  faultable: boolean, extraNs: number, onFault: OnFault,
): Co<Uint8Array | number> {
  let out: Uint8Array | null = null;
  let off = 0;
  while (off < length) {
    if (!mr.valid) return SG_PROT;
    const a = iova + off;
    const len = Math.min(pageRoom(a), length - off);
    const r = yield* engine.readPage(ctx, mr, key, a, len, faultable, extraNs);
    if (typeof r === 'number') {
      if (r === XLATE_PROT) return SG_PROT;
      const action = yield* onFault(mr, key, a, length - off, false, r);
      if (action === SG_RETRY) continue;
      return action;
    }
    extraNs = 0;
    if (len === length) return r;
    if (!out) out = new Uint8Array(length);
    out.set(r, off);
    off += len;
  }
  return out ?? new Uint8Array(0);
}

/** Write data[dataPos, dataPos + length) to [iova, iova + length) through `mr`. Returns SG_OK or a stop code. */
export function* writeRange(
  engine: DmaEngine, ctx: AccessContext, mr: MemoryRegion, key: number, iova: number,
  data: Uint8Array, dataPos: number, length: number, faultable: boolean, extraNs: number, onFault: OnFault,
): Co<number> {
  let off = 0;
  while (off < length) {
    if (!mr.valid) return SG_PROT;
    const a = iova + off;
    const len = Math.min(pageRoom(a), length - off);
    const p = dataPos + off;
    const chunk = p === 0 && len === data.length ? data : data.subarray(p, p + len);
    const r = yield* engine.writePage(ctx, mr, key, a, chunk, faultable, extraNs);
    if (r !== 0) {
      if (r === XLATE_PROT) return SG_PROT;
      const action = yield* onFault(mr, key, a, length - off, true, r);
      if (action === SG_RETRY) continue;
      return action;
    }
    extraNs = 0;
    off += len;
  }
  return SG_OK;
}

/** Gather a local SGE list into one message. Returns the bytes or a stop code. */
export function* gather(
  engine: DmaEngine, ctx: AccessContext, sgList: readonly Sge[], lookup: KeyLookup,
  odpAllowed: boolean, extraNs: number, onFault: OnFault,
): Co<Uint8Array | number> {
  let total = 0;
  let used = 0;
  let single: Sge | null = null;
  for (const s of sgList) {
    total += s.length;
    if (s.length > 0) {
      used++;
      single = s;
    }
  }
  if (used === 1 && single) {
    const mr = lookup(single.lkey, single.addr, single.length);
    if (!mr) return SG_PROT;
    return yield* readRange(engine, ctx, mr, single.lkey, single.addr, single.length, mr.onDemand && odpAllowed, extraNs, onFault);
  }
  const out = new Uint8Array(total);
  let pos = 0;
  for (const s of sgList) {
    if (s.length === 0) continue;
    const mr = lookup(s.lkey, s.addr, s.length);
    if (!mr) return SG_PROT;
    const r = yield* readRange(engine, ctx, mr, s.lkey, s.addr, s.length, mr.onDemand && odpAllowed, extraNs, onFault);
    if (typeof r === 'number') return r;
    extraNs = 0;
    out.set(r, pos);
    pos += s.length;
  }
  return out;
}

/** Bytes an SGE list can hold. */
export function sglCapacity(sgList: readonly Sge[]): number {
  let n = 0;
  for (const s of sgList) n += s.length;
  return n;
}

/**
 * Scatter `data` into a local SGE list, starting `skip` bytes into the list's space (a UD
 * receive leaves its first 40 bytes for the GRH). Returns SG_OK or a stop code.
 */
export function* scatter(
  engine: DmaEngine, ctx: AccessContext, sgList: readonly Sge[], data: Uint8Array, skip: number,
  lookup: KeyLookup, odpAllowed: boolean, extraNs: number, onFault: OnFault,
): Co<number> {
  let pos = 0;
  let skipLeft = skip;
  for (const s of sgList) {
    if (pos >= data.length) break;
    let off = 0;
    if (skipLeft >= s.length) {
      skipLeft -= s.length;
      continue;
    }
    off = skipLeft;
    skipLeft = 0;
    const n = Math.min(s.length - off, data.length - pos);
    if (n <= 0) continue;
    const mr = lookup(s.lkey, s.addr + off, n);
    if (!mr) return SG_PROT;
    const r = yield* writeRange(engine, ctx, mr, s.lkey, s.addr + off, data, pos, n, mr.onDemand && odpAllowed, extraNs, onFault);
    if (r !== SG_OK) return r;
    extraNs = 0;
    pos += n;
  }
  return SG_OK;
}
