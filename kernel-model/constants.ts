/** x86-64 defaults: 4 KiB pages, 2 MiB PMD, 1 GiB PUD, 4-level page tables (48-bit VA). */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
export const PAGE_MASK = -PAGE_SIZE;
export const PMD_SIZE = 2 * 1024 * 1024;
export const PUD_SIZE = 1024 * 1024 * 1024;
/** Top of user space: 128 TiB minus one page (x86-64 TASK_SIZE_MAX). */
export const TASK_SIZE = 2 ** 47 - PAGE_SIZE;
/** The kernel's ULONG_MAX as used for whole-mm ranges ([0, ULONG_MAX)). */
export const ULONG_MAX = 2 ** 64 - 1;

export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;

export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;

export const MREMAP_MAYMOVE = 1;
export const MREMAP_FIXED = 2;
export const MREMAP_DONTUNMAP = 4;

export const MADV_DONTNEED = 4;
export const MADV_FREE = 8;
export const MADV_REMOVE = 9;
export const MADV_DONTFORK = 10;
export const MADV_DOFORK = 11;
export const MADV_MERGEABLE = 12;
export const MADV_UNMERGEABLE = 13;
export const MADV_PAGEOUT = 21;
export const MADV_HUGEPAGE = 14;
export const MADV_NOHUGEPAGE = 15;
/** mmap: back the mapping with hugetlb pages (2 MiB, the default hstate on x86-64). */
export const MAP_HUGETLB = 0x40000;

export const pageAlignDown = (a: number): number => a - (a % PAGE_SIZE);
export const pageAlignUp = (a: number): number => Math.ceil(a / PAGE_SIZE) * PAGE_SIZE;
export const isPageAligned = (a: number): boolean => a % PAGE_SIZE === 0;
/** Virtual page number. Addresses stay below 2^53, so plain division is exact. */
export const vpn = (addr: number): number => Math.floor(addr / PAGE_SIZE);

/** Hex for messages and traces: 0x7f0000001000. */
export const hex = (n: number): string => (n === ULONG_MAX ? '0xffffffffffffffff' : '0x' + n.toString(16));

/** Where top-down mmap placement starts (below the stack), as on x86-64, unless randomized. */
export const MMAP_BASE = 0x7f0000000000;

/**
 * Pages of mmap_base randomization: x86-64's default mmap_rnd_bits is 28
 * (arch/x86/Kconfig ARCH_MMAP_RND_BITS_MIN/DEFAULT), so up to 2^28 pages below the base.
 */
export const MMAP_RND_PAGES = 2 ** 28;
