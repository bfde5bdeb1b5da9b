/**
 * What a checker reports (DESIGN "Sanitizer"): which contract, how bad, when, what happened,
 * and the causal chain that led there, each step stamped with its virtual time (the munmap
 * that started the invalidation, the callback that returned, the DMA access after it).
 */

/** Every checker's id, plus `lock-order`, the deadlock checker's warning. */
export const VIOLATION_IDS = [
  'use-after-invalidate',
  'dma-to-freed-page',
  'stale-translation',
  'pinned-incoherence',
  'dma-write-clean-page',
  'dirty-without-buffers',
  'lost-write',
  'sleep-in-atomic',
  'notifier-contract',
  'deadlock',
  'lock-order',
  'pin-leak',
  'fault-retry-storm',
  'blocked-migration',
  'shared-page-write',
  'teardown-order',
  'holdoff-liveness',
  'stale-registration',
] as const;

export type ViolationId = (typeof VIOLATION_IDS)[number];

export type Severity = 'error' | 'warning';

/** One step of a causal chain. */
export interface TrailEntry {
  /** Virtual time of the step (ns). */
  time: number;
  /** What kind of step: `syscall`, `invalidate-start`, `callback`, `install`, `dma`, ... */
  kind: string;
  text: string;
  /** The engine task that made the step, when known. */
  task?: number | null;
}

export interface Violation {
  id: ViolationId;
  severity: Severity;
  /** Virtual time at which the checker saw the violation (ns). */
  time: number;
  message: string;
  /** The causal chain, oldest first. */
  trail: TrailEntry[];
  /** One line after the trail: the likely strategy step (set by the fuzzer, which knows the strategy). */
  cause?: string;
}

/** The severity each id carries (warnings are hazards or legal-but-costly behaviour). */
export const SEVERITY: Readonly<Record<ViolationId, Severity>> = {
  'use-after-invalidate': 'error',
  'dma-to-freed-page': 'error',
  'stale-translation': 'error',
  'pinned-incoherence': 'warning',
  'dma-write-clean-page': 'error',
  'dirty-without-buffers': 'error',
  'lost-write': 'error',
  'sleep-in-atomic': 'error',
  'notifier-contract': 'error',
  deadlock: 'error',
  'lock-order': 'warning',
  'pin-leak': 'error',
  'fault-retry-storm': 'warning',
  'blocked-migration': 'warning',
  'shared-page-write': 'error',
  'teardown-order': 'error',
  'holdoff-liveness': 'error',
  'stale-registration': 'error',
};

/** A violation of `id` with its default severity; the trail is sorted by time (stable). */
export function violation(id: ViolationId, time: number, message: string, trail: readonly (TrailEntry | null | undefined)[]): Violation {
  const steps = trail.filter((e): e is TrailEntry => e != null);
  const sorted = steps.map((e, i) => [e, i] as const).sort((a, b) => a[0].time - b[0].time || a[1] - b[1]).map(([e]) => e);
  return { id, severity: SEVERITY[id], time, message, trail: sorted };
}

/** 0x7f0000001000; the kernel's ULONG_MAX as 0xffffffffffffffff. */
export function hex(n: number): string {
  if (n >= 2 ** 64 - 1) return '0xffffffffffffffff';
  return '0x' + Math.trunc(n).toString(16);
}

/** Virtual nanoseconds as a short human figure: 1.5 µs, 12.000 ms, 3.2 s. */
export function formatNs(ns: number): string {
  if (ns < 1_000) return `${ns} ns`;
  if (ns < 1_000_000) return `${(ns / 1_000).toFixed(3)} µs`;
  if (ns < 1_000_000_000) return `${(ns / 1_000_000).toFixed(3)} ms`;
  return `${(ns / 1_000_000_000).toFixed(6)} s`;
}
