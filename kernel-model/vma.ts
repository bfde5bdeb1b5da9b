import type { MmStruct } from './mm.ts';
import type { File } from './file.ts';
import { PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE } from './constants.ts';

export const VM_READ = 0x1;
export const VM_WRITE = 0x2;
export const VM_EXEC = 0x4;
export const VM_SHARED = 0x8;
export const VM_MAYREAD = 0x10;
export const VM_MAYWRITE = 0x20;
export const VM_MAYEXEC = 0x40;
export const VM_MAYSHARE = 0x80;
export const VM_IO = 0x4000;
export const VM_DONTCOPY = 0x20000;
export const VM_PFNMAP = 0x400;
export const VM_LOCKED = 0x2000;
/** hugetlbfs mapping (MAP_HUGETLB): huge pages only, never split (hugetlb.ts). */
export const VM_HUGETLB = 0x00400000;
/** MADV_HUGEPAGE / MADV_NOHUGEPAGE (huge-memory.ts). */
export const VM_HUGEPAGE = 0x20000000;
export const VM_NOHUGEPAGE = 0x40000000;

/**
 * `struct vm_area_struct`: [start, end) with flags, and a file + page offset for file
 * mappings (shared anonymous memory is a shmem file, as in Linux). `anonVma` says whether
 * anonymous pages were ever created in it (fork copies page tables only then, rule 21i).
 */
export class Vma {
  anonVma = false;

  constructor(
    readonly mm: MmStruct,
    public start: number,
    public end: number,
    public flags: number,
    readonly file: File | null,
    /** File offset of `start`, in pages. */
    public pgoff: number,
  ) {}

  get shared(): boolean {
    return (this.flags & VM_SHARED) !== 0;
  }

  get anonymous(): boolean {
    return this.file === null;
  }

  /** Private and may be written: copy-on-write applies. */
  get cow(): boolean {
    return (this.flags & (VM_SHARED | VM_MAYWRITE)) === VM_MAYWRITE;
  }

  /** File page index backing addr. */
  fileIndex(addr: number): number {
    return this.pgoff + (addr - this.start) / PAGE_SIZE;
  }

  /** Address at which file page `index` is mapped in this VMA (may be outside it). */
  addrOfIndex(index: number): number {
    return this.start + (index - this.pgoff) * PAGE_SIZE;
  }

  /** Split off and return the part from addr up; this VMA keeps [start, addr). */
  splitAt(addr: number): Vma {
    const tail = new Vma(this.mm, addr, this.end, this.flags, this.file, this.file ? this.fileIndex(addr) : 0);
    tail.anonVma = this.anonVma;
    this.end = addr;
    this.file?.mappings.add(tail);
    return tail;
  }

  toString(): string {
    const p = (this.flags & VM_READ ? 'r' : '-') + (this.flags & VM_WRITE ? 'w' : '-') + (this.flags & VM_EXEC ? 'x' : '-') + (this.shared ? 's' : 'p');
    return `${this.start.toString(16)}-${this.end.toString(16)} ${p}${this.file ? ' ' + this.file.name : ''}`;
  }
}

export function protToVmFlags(prot: number): number {
  return (prot & PROT_READ ? VM_READ : 0) | (prot & PROT_WRITE ? VM_WRITE : 0) | (prot & PROT_EXEC ? VM_EXEC : 0);
}
