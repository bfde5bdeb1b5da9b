/**
 * The userspace stream's data type: what a process's communication library sees and does
 * above the verbs API (its allocator's calls, its registration cache's lookups, hits,
 * registrations and invalidations, the work requests it posts). The provider side
 * publishes it (driver/rcache.ts, IbDevice `rcache$`) but the sanitizer may not import the
 * driver (it judges it), so the shape is declared here and matched structurally, as
 * `MrBinding` is (test/sanitizer/stale-registration.test.ts checks the two agree).
 */

/** Where a registration cache learns that memory went away (driver/rcache.ts). */
export type RcacheSourceName = 'memory-hooks' | 'mr-event' | 'none' | 'odp' | 'hooks-failed';

export type RcacheEvent =
  /** The allocator handed out [addr, addr + length) (malloc, calloc, realloc, memalign). */
  | { type: 'alloc'; nic: string; mmId: number; fn: string; addr: number; length: number }
  /** The application freed it. */
  | { type: 'free'; nic: string; mmId: number; fn: string; addr: number; length: number }
  | { type: 'lookup'; nic: string; mmId: number; cache: string; addr: number; length: number }
  /** A lookup found a region whose key it returns. */
  | { type: 'hit'; nic: string; mmId: number; cache: string; addr: number; length: number; key: number; start: number; end: number }
  | { type: 'register'; nic: string; mmId: number; cache: string; key: number; start: number; end: number }
  | { type: 'deregister'; nic: string; mmId: number; cache: string; key: number; start: number; end: number; why: string }
  /** The cache dropped its regions overlapping [start, end) because `source` said the memory went (`cause`: the syscall or event). */
  | { type: 'invalidate'; nic: string; mmId: number; cache: string; start: number; end: number; source: string; cause: string; keys: number[] }
  /** The cache was asked for memory hooks and could not install them. */
  | { type: 'hooks-failed'; nic: string; mmId: number; cache: string }
  /** A work request posted through `key` over [addr, addr + length): `out` the NIC reads it, `in` it writes it. */
  | { type: 'post'; nic: string; mmId: number; key: number; addr: number; length: number; opcode: string; direction: 'out' | 'in' };
