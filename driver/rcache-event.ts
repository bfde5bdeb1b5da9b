/**
 * What a process's provider-side library publishes on its device's `rcache$` stream: its
 * allocator's calls, its registration cache's lookups, hits, registrations and
 * invalidations, and the work requests it posts. The sanitizer declares the same shape in
 * sanitizer/rcache-event.ts (it may not import the driver); the two are checked to agree.
 */
export type RcacheSource = 'memory-hooks' | 'mr-event' | 'none' | 'odp' | 'hooks-failed';

export type RcacheStreamEvent =
  | { type: 'alloc'; nic: string; mmId: number; fn: string; addr: number; length: number }
  | { type: 'free'; nic: string; mmId: number; fn: string; addr: number; length: number }
  | { type: 'lookup'; nic: string; mmId: number; cache: string; addr: number; length: number }
  | { type: 'hit'; nic: string; mmId: number; cache: string; addr: number; length: number; key: number; start: number; end: number }
  | { type: 'register'; nic: string; mmId: number; cache: string; key: number; start: number; end: number }
  | { type: 'deregister'; nic: string; mmId: number; cache: string; key: number; start: number; end: number; why: string }
  | { type: 'invalidate'; nic: string; mmId: number; cache: string; start: number; end: number; source: string; cause: string; keys: number[] }
  | { type: 'hooks-failed'; nic: string; mmId: number; cache: string }
  | { type: 'post'; nic: string; mmId: number; key: number; addr: number; length: number; opcode: string; direction: 'out' | 'in' };
