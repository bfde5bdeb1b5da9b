/**
 * Violations for people and for tools: a text block per violation with its trail, or JSON.
 *
 * @example
 *   console.log(renderText(s.violations));
 *   // error use-after-invalidate at 1.204 ms: nic0 wrote 64 bytes at 0x7effff000000 ...
 *   //     1.000 ms  syscall           munmap(0x7effff000000, 8192) by pid 100 [task 3 app/main]
 *   //     1.001 ms  invalidate-start  UNMAP [0x7effff000000, 0x7effff002000) of mm1
 */
import { formatNs, type Violation } from './violation.ts';

export function renderText(violations: readonly Violation[], opts: { maxTrail?: number } = {}): string {
  if (violations.length === 0) return 'no violations\n';
  const max = opts.maxTrail ?? 24;
  let out = '';
  for (const v of violations) {
    out += `${v.severity} ${v.id} at ${formatNs(v.time)}: ${v.message}\n`;
    const steps = v.trail.length > max ? [...v.trail.slice(0, max - 1), v.trail[v.trail.length - 1]!] : v.trail;
    for (const e of steps) out += `    ${formatNs(e.time).padStart(14)}  ${e.kind.padEnd(17)} ${e.text}\n`;
    if (v.trail.length > max) out += `    (${v.trail.length - max} more steps)\n`;
    if (v.cause) out += `    ${v.cause}\n`;
  }
  return out;
}

/** A one-line summary: counts per id, errors first. */
export function renderCounts(counts: Readonly<Record<string, number>>): string {
  const parts = Object.entries(counts).filter(([, n]) => n > 0).map(([id, n]) => `${id}: ${n}`);
  return parts.length === 0 ? 'no violations' : parts.join(', ');
}

export function renderJson(violations: readonly Violation[], extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ ...extra, violations }, null, 2);
}
