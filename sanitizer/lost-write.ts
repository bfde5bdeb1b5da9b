/**
 * lost-write (error, checked at `finish()`): at the end of the run (after the caller's final
 * sync, if it made one) a byte that a CPU store, a pwrite or a device write put somewhere
 * is not where it should be: not in the process's memory at that address, or, for a file
 * page (a shared file mapping, pwrite, a device write into a page-cache page), not in what
 * the file will hold once the kernel has written back what it considers dirty.
 *
 * The shadow of intent: every store is recorded where it was meant to land, with its bytes
 * (read from the frame as the store is reported):
 * - a CPU store (`cpu-store` record) at (mm, address), or at (file, offset) when the
 *   address is in a shared file mapping;
 * - a pwrite (`file-write` record) at (file, offset);
 * - a device write (`nic.access$`) where the frame it wrote is: at the bound mm's address
 *   when the CPU maps that very frame there, else where the bound mm maps that frame now
 *   (an mremap moved it with its PTE), else at (file, offset) when the frame is a
 *   page-cache page (a pinned file page written after the process unmapped it still belongs
 *   to the file), else nowhere (an orphaned anonymous page the process no longer sees: that
 *   is pinned-incoherence's business, or use-after-invalidate's).
 * Later stores overwrite earlier intent byte by byte.
 *
 * Legitimate discards drop intent: munmap, mmap over a range (MAP_FIXED), mremap (both
 * ranges; content that moved is not followed), MADV_DONTNEED/FREE/REMOVE, ftruncate (file
 * bytes past the size, and private copies of those pages), hole punch, exit, an OOM reap,
 * and processes no longer alive (exited or OOM-killed). So does reclaim discarding a
 * lazyfree KSM page (a `race-guard` record `lazyfree-ksm-discard`): that data loss is the
 * kernel's (one sharer's MADV_FREE during ksmd's merge), not a driver's.
 *
 * What is compared: for an address, the page the CPU maps now (or its swap slot, or the
 * file page behind a private file mapping, or zeros); for a file page, the page-cache page
 * if it is dirty (or shmem), else the disk: a clean page-cache page is one the kernel may
 * drop at any time, so only the disk counts for it (the 2018 data loss: the device wrote a
 * page after writeback cleaned it, and nobody dirtied it again).
 *
 * A discarding call still in progress at the end (a task that never returned) counts as
 * done: it may have discarded any part of its range.
 *
 * Not flagged: anything discarded as above; addresses whose mapping changed in a way this
 * checker cannot follow (the VMA is gone, or is now a shared file mapping). Writers that are
 * not on the streams (a DmaBus write not made by a NIC, such as dmirror's) are not intents;
 * a test that writes through them over recorded intent will see reports.
 */
import { Buffer } from 'node:buffer';
import {
  MAP_FIXED, PAGE_SIZE, PG_DIRTY, PTE_SWAP, isDevicePfn, isDevicePrivateEntry, isMigrationEntry, pageAlignUp, pteFrame, pteHas, ptePresent,
  type Kernel, type MmStruct,
} from '../kernel-model/index.ts';
import type { AccessEvent, Checker, SanitizerContext, TraceOf } from './context.ts';
import type { TrailEntry } from './violation.ts';
import { hex, violation } from './violation.ts';

type Loc = { kind: 'mm'; k: Kernel; mm: number; page: number } | { kind: 'file'; k: Kernel; file: number; page: number };

/** Who wrote: a trail step, or a device access formatted only if it is ever reported. */
type Writer = TrailEntry | AccessEvent;

/**
 * The intent for one page. Each byte has a tag: 0 when nothing is intended there, else 1 +
 * the index into `writers` of its last writer (index 0 is "earlier writes", once compaction
 * needed it). The tags are kept per byte in `tags`, or, while every byte has the same tag
 * (nothing yet, or whole-page writes only: the common case), as `uniform` alone.
 */
interface Shadow {
  loc: Loc;
  /** What was written, where the tag is not 0. */
  bytes: Uint8Array;
  tags: Uint8Array | null;
  /** Every byte's tag while `tags` is null. */
  uniform: number;
  writers: (Writer | null)[];
}

/** Pages per slab that shadow byte and tag arrays are cut from (256 KiB). */
const SLAB_PAGES = 64;

/** Writers remembered per page; older ones are folded into one "earlier writes" entry. */
const MAX_WRITERS = 255;

interface Begun {
  r: TraceOf<'syscall-begin'>;
  targets: { k: Kernel; mm: MmStruct | undefined }[];
}

const MADV_DISCARDS = new Set([4, 8, 9]); // DONTNEED, FREE, REMOVE
/** A page of zeros, compared against, never written. */
const ZEROS = new Uint8Array(PAGE_SIZE);
const MADV_REMOVE = 9;

export function createLostWrite(ctx: SanitizerContext): Checker {
  const id = 'lost-write';
  /** Shadow pages per owner (`kind:kernel:owner`), owners in the order first written. */
  const shadows = new Map<string, Map<number, Shadow>>();
  /** The same groups by kind, kernel index and owner: found without building the key. */
  const groupIndex = { mm: new Map<number, Map<number, Map<number, Shadow>>>(), file: new Map<number, Map<number, Map<number, Shadow>>>() };
  const begun = new Map<number | null, Begun[]>();
  const lastWriteback = new Map<string, TrailEntry>();

  function groupOf(kind: 'mm' | 'file', ki: number, owner: number, create: boolean): Map<number, Shadow> | undefined {
    let byOwner = groupIndex[kind].get(ki);
    if (!byOwner) {
      if (!create) return undefined;
      groupIndex[kind].set(ki, (byOwner = new Map()));
    }
    let group = byOwner.get(owner);
    if (!group && create) {
      byOwner.set(owner, (group = new Map()));
      shadows.set(`${kind}:${ki}:${owner}`, group);
    }
    return group;
  }

  // The per-byte arrays of shadow pages are cut from shared slabs, and those of discarded
  // pages are reused: few, large buffers rather than some per page written.
  let slab: ArrayBuffer | null = null;
  let slabUsed = SLAB_PAGES;
  const spare: Uint8Array[] = [];

  /** A page-sized array whose contents are undefined (every user writes before it reads). */
  function pageArray(): Uint8Array {
    const reused = spare.pop();
    if (reused) return reused;
    if (!slab || slabUsed === SLAB_PAGES) {
      slab = new ArrayBuffer(SLAB_PAGES * PAGE_SIZE);
      slabUsed = 0;
    }
    return new Uint8Array(slab, PAGE_SIZE * slabUsed++, PAGE_SIZE);
  }

  function dropShadow(group: Map<number, Shadow>, page: number, s: Shadow): void {
    group.delete(page);
    spare.push(s.bytes);
    if (s.tags) spare.push(s.tags);
  }

  /** Per-byte tags from here on (filled with the uniform tag). */
  function tagsOf(s: Shadow): Uint8Array {
    if (!s.tags) {
      s.tags = pageArray();
      s.tags.fill(s.uniform);
    }
    return s.tags;
  }

  /** Keep the writers still referenced, newest first, within MAX_WRITERS; fold the rest into slot 0. */
  function compact(s: Shadow): void {
    const used = new Set<number>();
    const tags = s.tags;
    if (tags) {
      for (let j = 0; j < PAGE_SIZE; j++) if (tags[j]) used.add((tags[j] as number) - 1);
    } else if (s.uniform !== 0) {
      used.add(s.uniform - 1);
    }
    const keep = [...used].filter((w) => w !== 0).sort((a, b) => b - a).slice(0, MAX_WRITERS - 2);
    const remap = new Map<number, number>();
    const writers: (Writer | null)[] = [{ time: 0, kind: 'writes', text: 'earlier writes' }];
    for (const w of keep.reverse()) {
      remap.set(w, writers.length);
      writers.push(s.writers[w] ?? null);
    }
    if (tags) {
      for (let j = 0; j < PAGE_SIZE; j++) if (tags[j]) tags[j] = (remap.get((tags[j] as number) - 1) ?? 0) + 1;
    } else if (s.uniform !== 0) {
      s.uniform = (remap.get(s.uniform - 1) ?? 0) + 1;
    }
    s.writers = writers;
  }

  /**
   * Record that bytes [offset, offset + length) of the location were meant to hold what
   * frame `f` of `k` holds at the same offset now (read in place: no copy of the page).
   */
  function intend(loc: Loc, offset: number, k: Kernel, f: number, length: number, w: Writer): void {
    const group = groupOf(loc.kind, ctx.kernelIndex(loc.k), loc.kind === 'mm' ? loc.mm : loc.file, true) as Map<number, Shadow>;
    let s = group.get(loc.page);
    if (!s) {
      s = { loc, bytes: pageArray(), tags: null, uniform: 0, writers: [null] };
      group.set(loc.page, s);
    }
    if (s.writers.length >= MAX_WRITERS) compact(s);
    const wi = s.writers.push(w) - 1;
    const n = Math.min(length, PAGE_SIZE - offset);
    if (n <= 0) return;
    const page = k.phys.pageBytes(f);
    if (page) s.bytes.set(page.subarray(offset, offset + n), offset);
    else s.bytes.fill(0, offset, offset + n);
    if (n === PAGE_SIZE) {
      // The whole page: one writer for every byte.
      if (s.tags) spare.push(s.tags);
      s.tags = null;
      s.uniform = wi + 1;
    } else {
      tagsOf(s).fill(wi + 1, offset, offset + n);
    }
  }

  /** Where an address of an mm lands: the file behind a shared file mapping, else the mm itself. */
  function locate(k: Kernel, mm: MmStruct, va: number): Loc | null {
    const vma = mm.findVma(va);
    if (!vma) return null;
    const page = Math.floor(va / PAGE_SIZE);
    if (vma.file && vma.shared) return { kind: 'file', k, file: vma.file.id, page: vma.fileIndex(page * PAGE_SIZE) };
    return { kind: 'mm', k, mm: mm.id, page };
  }

  /** Drop intent over [from, to) of one owner's group of shadow pages. */
  function discard(kind: 'mm' | 'file', k: Kernel, owner: number, from: number, to: number): void {
    const group = groupOf(kind, ctx.kernelIndex(k), owner, false);
    if (!group || group.size === 0 || !(from < to)) return;
    const cut = (page: number, s: Shadow) => {
      const lo = Math.max(from, page * PAGE_SIZE);
      const hi = Math.min(to, (page + 1) * PAGE_SIZE);
      if (lo >= hi) return;
      if (lo === page * PAGE_SIZE && hi === (page + 1) * PAGE_SIZE) {
        dropShadow(group, page, s);
        return;
      }
      if (s.tags || s.uniform !== 0) tagsOf(s).fill(0, lo - page * PAGE_SIZE, hi - page * PAGE_SIZE);
    };
    // Visit whichever is smaller: the pages of the range, or the shadows of the group (a
    // small discard costs its own size, not the number of pages ever written).
    const first = Math.floor(from / PAGE_SIZE);
    const last = Math.ceil(to / PAGE_SIZE) - 1;
    if (last - first + 1 <= group.size) {
      for (let page = first; page <= last; page++) {
        const s = group.get(page);
        if (s) cut(page, s);
      }
    } else {
      // Deleting the entry being visited is safe while iterating a Map.
      for (const [page, s] of group) cut(page, s);
    }
  }

  // ---- intent --------------------------------------------------------------------------

  function onCpuStore(r: TraceOf<'cpu-store'>): void {
    const k = ctx.kernelByNode(r.node);
    const mm = ctx.mmOf(k, r.mm);
    if (!k || !mm) return;
    const loc = locate(k, mm, r.addr);
    if (!loc) return;
    intend(loc, r.offset, k, r.frame, r.length, {
      time: r.t, kind: 'cpu-store', task: r.task, text: `CPU store of ${r.length} bytes at ${hex(r.addr)} of mm${r.mm} [${ctx.taskName(r.task)}]`,
    });
  }

  function onFileWrite(r: TraceOf<'file-write'>): void {
    const k = ctx.kernelByNode(r.node);
    const file = k?.fileById(r.file);
    if (!k || !file) return;
    const index = Math.floor(r.offset / PAGE_SIZE);
    const frame = file.pageCache.get(index);
    if (frame === undefined) return;
    const off = r.offset % PAGE_SIZE;
    intend({ kind: 'file', k, file: r.file, page: index }, off, k, frame, r.length, {
      time: r.t, kind: 'pwrite', task: r.task, text: `pwrite of ${r.length} bytes at offset ${r.offset} of ${file.name} [${ctx.taskName(r.task)}]`,
    });
  }

  function onDeviceWrite(e: AccessEvent): void {
    const a = e.access;
    const k = e.kernel;
    if (!a.write || !k) return;
    const f = a.frame;
    let loc: Loc | null = null;
    const b = e.binding;
    if (b && b.mmId !== null && e.va !== undefined) {
      const mm = ctx.mmOf(k, b.mmId);
      const pte = mm ? mm.pageTable.get(Math.floor(e.va / PAGE_SIZE)) : 0;
      if (mm && ptePresent(pte) && pteFrame(pte) === f) loc = locate(k, mm, e.va);
    }
    if (!loc && b && b.mmId !== null) {
      // The bound mm maps the frame elsewhere now: an mremap moved the PTEs with their
      // pages (move_ptes), and a pinned MR's device write lands in what the process sees
      // at the new address.
      const here = k.phys.mappingsOf(f).filter((m) => m.mm.id === b.mmId);
      if (here.length === 1) loc = locate(k, here[0]!.mm, here[0]!.addr);
    }
    if (!loc) {
      const fileId = k.phys.mappingFile[f] ?? -1;
      const file = fileId >= 0 ? k.fileById(fileId) : undefined;
      const index = k.phys.index[f] ?? 0;
      if (file && file.pageCache.get(index) === f) loc = { kind: 'file', k, file: fileId, page: index };
      else if (!b) {
        const maps = k.phys.mappingsOf(f);
        const only = maps.length === 1 ? maps[0] : undefined;
        if (only) loc = locate(k, only.mm, only.addr);
      }
    }
    if (!loc) return;
    intend(loc, a.offset, k, f, a.length, e);
  }

  // ---- discards ------------------------------------------------------------------------

  function onSyscallEnd(b: Begun, ret: number): void {
    const { r } = b;
    const args = r.args.split(', ');
    const num = (i: number) => Number(args[i]);
    for (const { k, mm } of b.targets) {
      const m = mm?.id;
      const dropMm = (from: number, to: number) => { if (m !== undefined) discard('mm', k, m, from, to); };
      switch (r.name) {
        case 'munmap':
          dropMm(num(0), num(0) + pageAlignUp(num(1)));
          break;
        case 'mmap': {
          const len = pageAlignUp(num(1));
          if (ret >= 0) dropMm(ret, ret + len);
          else if (num(3) & MAP_FIXED) dropMm(num(0), num(0) + len);
          break;
        }
        case 'mremap':
          dropMm(num(0), num(0) + pageAlignUp(num(1)));
          if (ret >= 0) dropMm(ret, ret + pageAlignUp(num(2)));
          break;
        case 'madvise': {
          const advice = num(2);
          if (!MADV_DISCARDS.has(advice)) break;
          const start = num(0);
          const end = start + pageAlignUp(num(1));
          dropMm(start, end);
          if (advice === MADV_REMOVE && mm) {
            for (const v of mm.vmasIn(start, end)) {
              if (!v.file || !v.shared) continue;
              const s = Math.max(start, v.start);
              const e = Math.min(end, v.end);
              discard('file', k, v.file.id, v.fileIndex(s) * PAGE_SIZE, v.fileIndex(e) * PAGE_SIZE);
            }
          }
          break;
        }
        case 'ftruncate': {
          const size = Number(args[args.length - 1]);
          const name = args.slice(0, -1).join(', ');
          for (const file of k.allFiles()) {
            if (file.name !== name) continue;
            discard('file', k, file.id, size, Infinity);
            const firstGone = Math.ceil(size / PAGE_SIZE);
            for (const v of file.mappings) discard('mm', k, v.mm.id, Math.max(v.start, v.addrOfIndex(firstGone)), v.end);
          }
          break;
        }
        case 'fallocate': {
          if (args.length < 4) break;
          const off = Number(args[args.length - 2]);
          const len = Number(args[args.length - 1]);
          const name = args.slice(0, -3).join(', ');
          const first = Math.ceil(off / PAGE_SIZE);
          const last = Math.floor((off + len) / PAGE_SIZE) - 1;
          if (last < first) break;
          for (const file of k.allFiles()) if (file.name === name) discard('file', k, file.id, first * PAGE_SIZE, (last + 1) * PAGE_SIZE);
          break;
        }
        case 'exit':
          dropMm(0, Infinity);
          break;
        default:
          break;
      }
    }
  }

  ctx.onRecords(['cpu-store', 'file-write', 'syscall-begin', 'syscall-end', 'oom-reap', 'writeback', 'race-guard'], id, (r) => {
    switch (r.type) {
      case 'cpu-store':
        onCpuStore(r);
        return;
      case 'file-write':
        onFileWrite(r);
        return;
      case 'syscall-begin': {
        const byNode = ctx.kernelByNode(r.node);
        const targets = (byNode ? [byNode] : ctx.kernelsForPid(r.pid, r.task)).map((k) => ({ k, mm: k.processes.get(r.pid)?.mm }));
        let st = begun.get(r.task);
        if (!st) begun.set(r.task, (st = []));
        st.push({ r, targets });
        return;
      }
      case 'syscall-end': {
        const b = begun.get(r.task)?.pop();
        if (b) onSyscallEnd(b, r.ret);
        return;
      }
      case 'oom-reap':
        if (r.ret === 0) for (const k of ctx.kernelsForMm(r.mm)) discard('mm', k, r.mm, r.start, r.end);
        return;
      case 'race-guard':
        // The kernel's own loss, not the driver's: reclaim discarding a lazyfree KSM page
        // from a process that never freed it (vmscan.ts unmapOne).
        if (r.what === 'lazyfree-ksm-discard' && r.mm !== undefined && r.addr !== undefined) {
          const k = ctx.kernelByNode(r.node);
          if (k) discard('mm', k, r.mm, r.addr, r.addr + PAGE_SIZE);
        }
        return;
      case 'writeback':
        for (const k of ctx.kernelByNode(r.node) ? [ctx.kernelByNode(r.node) as Kernel] : ctx.kernels) {
          const file = k.fileById(r.file);
          if (file?.pageCache.get(r.index) !== r.frame) continue;
          lastWriteback.set(`${ctx.kernelIndex(k)}:${r.file}:${r.index}`, {
            time: r.t, kind: 'writeback', task: r.task, text: `writeback of page ${r.index} of ${file.name} (frame ${r.frame}) [${ctx.taskName(r.task)}]`,
          });
        }
        return;
      default:
        return;
    }
  });

  ctx.on(ctx.access$, id, onDeviceWrite);

  // ---- the end -------------------------------------------------------------------------

  /** A frame's bytes, read in place (never written through: `finish` only compares). */
  const frameBytes = (k: Kernel, f: number): Uint8Array => k.phys.pageBytes(f) ?? ZEROS;

  /**
   * What the location holds now (or will hold on disk), and where that is (written only if
   * a loss is reported); null when it cannot be told.
   */
  function current(s: Shadow): { bytes: Uint8Array; where: () => string } | null {
    const { loc } = s;
    const k = loc.k;
    if (loc.kind === 'file') {
      const file = k.fileById(loc.file);
      if (!file || loc.page * PAGE_SIZE >= file.size) return null;
      const f = file.pageCache.get(loc.page);
      if (f !== undefined) {
        if (file.shmem || k.phys.has(f, PG_DIRTY)) return { bytes: frameBytes(k, f), where: () => `the dirty page-cache page of ${file.name}` };
        return { bytes: file.diskPage(loc.page), where: () => `the disk of ${file.name} (its page-cache page is clean, so the kernel may drop it)` };
      }
      if (file.shmem) return null;
      return { bytes: file.diskPage(loc.page), where: () => `the disk of ${file.name} (not in the page cache)` };
    }
    const mm = ctx.mmOf(k, loc.mm);
    if (!mm || mm.exited || mm.users <= 0) return null;
    let alive = false;
    for (const p of k.processes.values()) if (p.mm === mm && p.alive) { alive = true; break; }
    if (!alive) return null;
    const va = loc.page * PAGE_SIZE;
    const vma = mm.findVma(va);
    if (!vma || (vma.file && vma.shared)) return null;
    const pte = mm.pageTable.get(loc.page);
    if (ptePresent(pte)) return { bytes: frameBytes(k, pteFrame(pte)), where: () => `frame ${pteFrame(pte)}, which mm${loc.mm} maps at ${hex(va)}` };
    if (isDevicePrivateEntry(pte)) return null; // the bytes are on the device, out of the kernel's sight
    if (isMigrationEntry(pte) && isDevicePfn(pteFrame(pte))) return null;
    if (isMigrationEntry(pte)) {
      // Mid-migration the bytes are in the folio the entry names (the copy comes later).
      return { bytes: frameBytes(k, pteFrame(pte)), where: () => `frame ${pteFrame(pte)}, under migration at ${hex(va)} in mm${loc.mm}` };
    }
    if (pte !== 0 && pteHas(pte, PTE_SWAP)) {
      const slot = pteFrame(pte);
      const cached = k.swap.cachedFrame(slot);
      if (cached >= 0 && k.phys.isAllocated(cached)) return { bytes: frameBytes(k, cached), where: () => `the swap cache of ${hex(va)}` };
      const b = k.swap.bytes(slot);
      return { bytes: b ?? ZEROS, where: () => `the swap slot of ${hex(va)}` };
    }
    if (vma.file) {
      const idx = vma.fileIndex(va);
      const f = vma.file.pageCache.get(idx);
      const name = vma.file.name;
      return { bytes: f !== undefined ? frameBytes(k, f) : vma.file.diskPage(idx), where: () => `${name} behind ${hex(va)} (no private copy)` };
    }
    return { bytes: ZEROS, where: () => `nothing at ${hex(va)} (reads as zeros)` };
  }

  function finish(): void {
    // A discarding call still in progress when the run ended (its task waits forever, for
    // instance in a callback behind a count batching policy that never reached its count)
    // may have discarded any part of its range: count it as done (an unknown result, so a
    // MAP_FIXED mmap counts its fixed range).
    for (const stack of begun.values()) for (const b of stack) onSyscallEnd(b, -1);
    begun.clear();
    for (const group of shadows.values()) {
      for (const s of group.values()) {
        const now = current(s);
        if (!now) continue;
        const tags = s.tags;
        if (!tags && s.uniform === 0) continue; // nothing intended
        // A wholly written page that still holds what was written: one memcmp, no byte loop.
        if (!tags && now.bytes.length === PAGE_SIZE && Buffer.compare(s.bytes, now.bytes) === 0) continue;
        let lost = 0;
        let first = -1;
        const writers = new Set<number>();
        for (let j = 0; j < PAGE_SIZE; j++) {
          const tag = tags ? (tags[j] as number) : s.uniform;
          if (tag === 0 || now.bytes[j] === s.bytes[j]) continue;
          lost++;
          if (first < 0) first = j;
          writers.add(tag - 1);
        }
        if (lost === 0) continue;
        const { loc } = s;
        const where = loc.kind === 'mm'
          ? `${hex(loc.page * PAGE_SIZE + first)} of mm${loc.mm}`
          : `offset ${loc.page * PAGE_SIZE + first} of ${loc.k.fileById(loc.file)?.name ?? `file ${loc.file}`}`;
        const message = `${lost} byte(s) written at ${where} are lost: ${now.where()} holds ${now.bytes[first]} where ` +
          `the last write put ${s.bytes[first]}`;
        const steps: (TrailEntry | null | undefined)[] = [...writers].sort((a, b) => a - b).slice(-4).map((w) => {
          const wr = s.writers[w];
          if (!wr) return null;
          return 'access' in wr ? ctx.trailAccess(wr) : wr;
        });
        if (loc.kind === 'file') steps.push(lastWriteback.get(`${ctx.kernelIndex(loc.k)}:${loc.file}:${loc.page}`));
        steps.push({ time: ctx.sim.now(), kind: 'finish', text: `end of run: ${now.where()}` });
        ctx.emitViolation(violation(id, ctx.sim.now(), message, steps));
      }
    }
  }

  return { id, finish };
}
