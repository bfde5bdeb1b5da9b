import { Mutex, type Co, type Task } from './sim/index.ts';
import type { Kernel } from './kernel.ts';
import type { MmStruct } from './mm.ts';
import type { File } from './file.ts';
import { EFAULT, EINVAL, ESRCH } from './errno.ts';
import { MADV_DOFORK, MADV_DONTFORK, PAGE_SIZE, pageAlignDown, pageAlignUp, vpn } from './constants.ts';
import { doMadvise } from './madvise.ts';
import { doMmap, doMremap, doMunmapSyscall } from './mmap.ts';
import { doMprotect } from './mprotect.ts';
import { doBrk, sbrk } from './brk.ts';
import { dupMmap } from './fork.ts';
import { mmput } from './exit.ts';
import { faultInPage } from './memory.ts';
import { PTE_ACCESSED, PTE_DIRTY, pteWith } from './page-table.ts';
import { findOrReadPage, folioMarkDirty, truncatePages, writebackFile } from './filemap.ts';
import { PG_PRIVATE } from './page-frames.ts';

export const MS_ASYNC = 1;
export const MS_SYNC = 4;
export const MS_INVALIDATE = 2;

/**
 * A process: an mm and the user threads (tasks) sharing it, with the system calls a
 * scenario makes. Every call is a coroutine run by one of its threads, returns what
 * Linux returns (a value or -errno), and appears in the trace as syscall-begin/end.
 *
 * @example
 *   const buf = yield* p.mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
 *   yield* p.store(buf, new Uint8Array([1, 2, 3]));
 */
export class Process {
  readonly threads: Task[] = [];
  alive = true;
  /** exit has run (a killed process is not alive but still exits once). */
  exited = false;

  constructor(readonly kernel: Kernel, readonly pid: number, readonly name: string, readonly mm: MmStruct) {}

  /** Start a user thread of this process. */
  spawnThread<T>(name: string, body: () => Co<T>): Task<T> {
    const t = this.kernel.sim.spawn(`${this.name}/${name}`, body, { kind: 'user', pid: this.pid, node: this.kernel.node });
    this.threads.push(t);
    return t;
  }

  private *syscall(name: string, args: string, body: () => Co<number>, evenIfKilled = false): Co<number> {
    const { sim } = this.kernel;
    sim.emit({ type: 'syscall-begin', pid: this.pid, name, args, node: this.kernel.node });
    const ret = this.alive || (evenIfKilled && !this.exited) ? yield* body() : -ESRCH;
    sim.emit({ type: 'syscall-end', pid: this.pid, name, ret, node: this.kernel.node });
    return ret;
  }

  private *writeLocked(body: () => Co<number>): Co<number> {
    yield* this.mm.mmapLock.downWrite();
    try {
      return yield* body();
    } finally {
      this.mm.mmapLock.upWrite();
    }
  }

  private *readLocked(body: () => Co<number>): Co<number> {
    yield* this.mm.mmapLock.downRead();
    try {
      return yield* body();
    } finally {
      this.mm.mmapLock.upRead();
    }
  }

  *mmap(addr: number, length: number, prot: number, flags: number, file: File | null = null, offset = 0): Co<number> {
    return yield* this.syscall('mmap', `${hx(addr)}, ${length}, ${prot}, ${flags}${file ? ', ' + file.name : ''}, ${offset}`, () =>
      this.writeLocked(() => doMmap(this.mm, addr, length, prot, flags, file, offset)));
  }

  *munmap(addr: number, length: number): Co<number> {
    return yield* this.syscall('munmap', `${hx(addr)}, ${length}`, () => this.writeLocked(() => doMunmapSyscall(this.mm, addr, length)));
  }

  *mremap(oldAddr: number, oldLength: number, newLength: number, flags = 0, newAddr = 0): Co<number> {
    return yield* this.syscall('mremap', `${hx(oldAddr)}, ${oldLength}, ${newLength}, ${flags}, ${hx(newAddr)}`, () =>
      this.writeLocked(() => doMremap(this.mm, oldAddr, oldLength, newLength, flags, newAddr)));
  }

  *mprotect(addr: number, length: number, prot: number): Co<number> {
    return yield* this.syscall('mprotect', `${hx(addr)}, ${length}, ${prot}`, () => this.writeLocked(() => doMprotect(this.mm, addr, length, prot)));
  }

  /**
   * brk(2) (kernel-model/brk.ts): the new break, or the old one when refused; a shrink
   * unmaps like munmap (one UNMAP over [newbrk, oldbrk)).
   */
  *brk(addr: number): Co<number> {
    return yield* this.syscall('brk', hx(addr), () => this.writeLocked(() => doBrk(this.mm, addr)));
  }

  /** glibc's sbrk(3): the old break, or -ENOMEM (a brk(2) call, traced as such). */
  *sbrk(increment: number): Co<number> {
    return yield* sbrk((a) => this.brk(a), this.mm.brk, increment);
  }

  /**
   * madvise(2). Like Linux, the advices that only zap or reclaim pages (DONTNEED, FREE,
   * PAGEOUT, REMOVE) take mmap_lock for read, so they run concurrently with faults and with
   * each other; those that change VMA flags (DONTFORK, DOFORK) take it for write.
   */
  *madvise(addr: number, length: number, advice: number): Co<number> {
    const changesVmas = advice === MADV_DONTFORK || advice === MADV_DOFORK;
    return yield* this.syscall('madvise', `${hx(addr)}, ${length}, ${advice}`, () =>
      changesVmas ? this.writeLocked(() => doMadvise(this.mm, addr, length, advice)) : this.readLocked(() => doMadvise(this.mm, addr, length, advice)));
  }

  /**
   * A CPU load of `length` bytes: faults pages in as needed. Returns the bytes, or
   * -EFAULT where a real process would take SIGSEGV (no VMA, no permission) or SIGBUS.
   */
  *load(addr: number, length: number): Co<Uint8Array | number> {
    const out = new Uint8Array(length);
    const r = yield* this.access(addr, length, false, (frame, off, pos, n) => out.set(this.kernel.phys.read(frame, off, n), pos));
    return r < 0 ? r : out;
  }

  /** A CPU store: write faults (COW, page_mkwrite) as needed; 0 or -EFAULT. */
  *store(addr: number, bytes: Uint8Array): Co<number> {
    return yield* this.access(addr, bytes.length, true, (frame, off, pos, n) => this.kernel.phys.write(frame, off, bytes.subarray(pos, pos + n)));
  }

  private *access(addr: number, length: number, write: boolean, fn: (frame: number, off: number, pos: number, n: number) => void): Co<number> {
    if (!this.alive) return -ESRCH;
    const mm = this.mm;
    let pos = 0;
    while (pos < length) {
      const a = addr + pos;
      const page = pageAlignDown(a);
      const n = Math.min(length - pos, page + PAGE_SIZE - a);
      yield* mm.mmapLock.downRead();
      const frame = yield* faultInPage(mm, a, write);
      if (frame >= 0) {
        fn(frame, a - page, pos, n);
        const v = vpn(page);
        mm.pageTable.set(v, pteWith(mm.pageTable.get(v), PTE_ACCESSED | (write ? PTE_DIRTY : 0)));
        if (write) this.kernel.sim.emit({ type: 'cpu-store', node: this.kernel.node, mm: mm.id, addr: a, frame, offset: a - page, length: n });
      }
      mm.mmapLock.upRead();
      if (frame < 0) return frame;
      pos += n;
    }
    return 0;
  }

  /** fork(2): a child process with a copy of the address space (or -errno). */
  *fork(name = `${this.name}-child`): Co<Process | number> {
    const { kernel } = this;
    const childMm = kernel.newMm();
    childMm.mmapBase = this.mm.mmapBase; // dup_mmap copies the parent's layout
    childMm.startBrk = this.mm.startBrk; // dup_mm copies the whole mm_struct, break included
    childMm.brk = this.mm.brk;
    let child: Process | null = null;
    const ret = yield* this.syscall('fork', '', () =>
      this.writeLocked(function* (this: Process) {
        const r = yield* dupMmap(this.mm, childMm);
        if (r < 0) return r;
        child = kernel.createProcess(name, childMm);
        return child.pid;
      }.bind(this)));
    return ret < 0 || !child ? ret : child;
  }

  /**
   * exit(2): the process's mm reference goes; exit_mmap runs if it was the last. A killed
   * process (an OOM victim) makes no other system call but still exits, as do_exit runs
   * when SIGKILL is delivered; only a process that already exited cannot.
   */
  *exit(): Co<number> {
    return yield* this.syscall('exit', '', function* (this: Process) {
      this.alive = false;
      this.exited = true;
      yield* mmput(this.mm);
      this.kernel.processes.delete(this.pid);
      return 0;
    }.bind(this), true);
  }

  /** msync(2): MS_SYNC writes back the file pages of shared mappings in the range. */
  *msync(addr: number, length: number, flags: number): Co<number> {
    return yield* this.syscall('msync', `${hx(addr)}, ${length}, ${flags}`, function* (this: Process) {
      if (addr % PAGE_SIZE !== 0 || flags & ~(MS_ASYNC | MS_SYNC | MS_INVALIDATE) || (flags & MS_ASYNC && flags & MS_SYNC)) return -EINVAL;
      const end = addr + pageAlignUp(length);
      const vmas = this.mm.vmasIn(addr, end);
      if (vmas.length === 0) return -12; // ENOMEM: range not mapped
      if (flags & MS_SYNC) for (const v of vmas) if (v.file && v.shared) yield* writebackFile(this.kernel, v.file);
      return 0;
    }.bind(this));
  }

  /** fsync(2). */
  *fsync(file: File): Co<number> {
    return yield* this.syscall('fsync', file.name, function* (this: Process) {
      yield* writebackFile(this.kernel, file);
      return 0;
    }.bind(this));
  }

  /**
   * pwrite(2) through the page cache: the pages become dirty with buffers attached. Under
   * the inode lock (generic_file_write_iter, mm/filemap.c: inode_lock around
   * __generic_file_write_iter), so it waits for a truncation in progress instead of
   * instantiating a page the truncation then drops.
   */
  *pwrite(file: File, offset: number, bytes: Uint8Array): Co<number> {
    return yield* this.syscall('pwrite', `${file.name}, ${bytes.length}, ${offset}`, function* (this: Process) {
      if (offset < 0) return -EINVAL;
      const lock = inodeLock(this.kernel, file);
      yield* lock.lock();
      try {
        return yield* this.pwriteLocked(file, offset, bytes);
      } finally {
        lock.unlock();
      }
    }.bind(this));
  }

  private *pwriteLocked(file: File, offset: number, bytes: Uint8Array): Co<number> {
    {
      const { phys } = this.kernel;
      let pos = 0;
      while (pos < bytes.length) {
        const off = offset + pos;
        const index = Math.floor(off / PAGE_SIZE);
        const n = Math.min(bytes.length - pos, PAGE_SIZE - (off % PAGE_SIZE));
        const f = findOrReadPage(this.kernel, file, index);
        if (f < 0) return f;
        phys.write(f, off % PAGE_SIZE, bytes.subarray(pos, pos + n));
        phys.set(f, PG_PRIVATE);
        folioMarkDirty(this.kernel, f, 'generic_perform_write');
        this.kernel.sim.emit({ type: 'file-write', node: this.kernel.node, file: file.id, offset: off, length: n });
        pos += n;
      }
      if (offset + bytes.length > file.size) file.size = offset + bytes.length;
      yield* this.kernel.sim.preemptPoint('pwrite');
      return bytes.length;
    }
  }

  /** pread(2) through the page cache. */
  *pread(file: File, offset: number, length: number): Co<Uint8Array | number> {
    if (offset < 0 || length < 0) return -EINVAL;
    const out = new Uint8Array(Math.max(0, Math.min(length, file.size - offset)));
    for (let pos = 0; pos < out.length;) {
      const off = offset + pos;
      const n = Math.min(out.length - pos, PAGE_SIZE - (off % PAGE_SIZE));
      const f = findOrReadPage(this.kernel, file, Math.floor(off / PAGE_SIZE));
      if (f < 0) return f;
      out.set(this.kernel.phys.read(f, off % PAGE_SIZE, n), pos);
      pos += n;
    }
    yield* this.kernel.sim.preemptPoint('pread');
    return out;
  }

  /**
   * ftruncate(2): shrinking unmaps and drops the pages past the new size (rule 21c). Under
   * the inode lock (do_truncate, fs/open.c: inode_lock): a second truncate, an extension
   * included, waits until the first has zapped the mappings and dropped the pages, so a
   * fault cannot find an old page inside the new size while it is being truncated.
   */
  *ftruncate(file: File, size: number): Co<number> {
    return yield* this.syscall('ftruncate', `${file.name}, ${size}`, function* (this: Process) {
      if (size < 0) return -EINVAL;
      const lock = inodeLock(this.kernel, file);
      yield* lock.lock();
      try {
        return yield* this.truncateLocked(file, size);
      } finally {
        lock.unlock();
      }
    }.bind(this));
  }

  /** truncate_pagecache and the tail zeroing, under the inode lock. */
  private *truncateLocked(file: File, size: number): Co<number> {
    const oldPages = file.pages;
    file.size = size;
    const firstGone = Math.ceil(size / PAGE_SIZE);
    // truncate_pagecache: unmap_mapping_range(holebegin, 0, even_cows = 1), i.e. to the
    // end of every VMA, private COW copies included.
    if (firstGone < oldPages) yield* truncatePages(this.kernel, file, firstGone, Infinity, true);
    // Zero the tail of a partial last page, as truncate_inode_pages_range does.
    if (size % PAGE_SIZE) {
      const idx = Math.floor(size / PAGE_SIZE);
      const f = file.pageCache.get(idx);
      const off = size % PAGE_SIZE;
      if (f !== undefined) this.kernel.phys.write(f, off, new Uint8Array(PAGE_SIZE - off));
      const d = file.disk.get(idx);
      if (d) d.fill(0, off);
    }
    return 0;
  }

  /**
   * fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) over whole pages, under the inode
   * lock as the filesystems take it (ext4_punch_hole, shmem_fallocate: inode_lock).
   */
  *punchHole(file: File, offset: number, length: number): Co<number> {
    return yield* this.syscall('fallocate', `${file.name}, PUNCH_HOLE, ${offset}, ${length}`, function* (this: Process) {
      if (offset < 0 || length <= 0) return -EINVAL;
      const first = Math.ceil(offset / PAGE_SIZE);
      const last = Math.floor((offset + length) / PAGE_SIZE) - 1;
      if (last < first) return 0;
      const lock = inodeLock(this.kernel, file);
      yield* lock.lock();
      try {
        yield* truncatePages(this.kernel, file, first, last);
      } finally {
        lock.unlock();
      }
      return 0;
    }.bind(this));
  }
}

function hx(n: number): string {
  return '0x' + n.toString(16);
}

export { EFAULT };

/** Per file: the inode's i_rwsem, as truncation takes it (inode_lock). */
const inodeLocks = new WeakMap<File, Mutex>();

function inodeLock(kernel: Kernel, file: File): Mutex {
  let m = inodeLocks.get(file);
  if (!m) inodeLocks.set(file, (m = new Mutex(kernel.sim, `${file.name}.i_rwsem`, 'inode->i_rwsem')));
  return m;
}
