import { renderText, type Violation } from '../sanitizer/index.ts';
import type { ScenarioReport } from '../scenarios/scenario.ts';
import type { FuzzReport } from '../scenarios/fuzz/fuzz.ts';
import type { RunResult } from '../scenarios/fuzz/run.ts';
import type { CheckReport } from '../scenarios/check/check.ts';
import { renderCheck } from '../scenarios/check/check.ts';

/** What the assertion accepts: a story report, a fuzz report, one fuzz run, a check, or violations. */
export type Judged = ScenarioReport | FuzzReport | RunResult | CheckReport | readonly Violation[];

/** The smallest part of an ava `t` (or any test framework's) the assertion needs. */
export interface Assertions {
  pass(message?: string): void;
  fail(message?: string): void;
}

/** The violations (and failures) in `x` that count at `severity`, each as text with its trail; empty when clean. */
export function findings(x: Judged, opts: { severity?: 'error' | 'any' } = {}): string[] {
  const counts = (v: Violation) => opts.severity !== 'error' || v.severity === 'error';
  const text = (vs: readonly Violation[]) => vs.filter(counts).map((v) => renderText([v]).trimEnd());
  if (Array.isArray(x)) return text(x as readonly Violation[]);
  const o = x as Exclude<Judged, readonly Violation[]>;
  if ('rows' in o) return o.ok ? [] : [renderCheck(o).join('\n')];
  if ('target' in o) {
    // A fuzz report: `failing` is what its target counts; for a reference-like target that
    // is every violation it does not allow, which `severity` filters further.
    if (!o.found) return [];
    const out = text(o.failing ?? []);
    if (o.failure) out.push(`model failure: ${o.failure}`);
    for (const e of o.sanitizerErrors ?? []) out.push(`sanitizer error: ${e}`);
    if (out.length > 0 && o.reproducer) out.push(`(fuzz seed ${o.seed}, run ${o.runsToDetection} of ${o.runs}, simulation seed ${o.reproducer.simSeed})`);
    return out;
  }
  if ('scenario' in o) {
    const out = text(o.violations);
    if (o.outcome.failure) out.push(`run failed (seed ${o.seed}): ${o.outcome.failure}`);
    return out;
  }
  const out = text(o.violations);
  if (o.failure) out.push(`model failure: ${o.failure}`);
  for (const e of o.sanitizerErrors) out.push(`sanitizer error: ${e}`);
  return out;
}

/**
 * Pass when `x` shows no violation (of error severity, with `{ severity: 'error' }`) and no
 * failure; otherwise fail the test with every finding and its trail.
 *
 * @example
 *   assertNoViolations(t, runStory('odp-swap-storm', myStrategy), { severity: 'error' });
 */
export function assertNoViolations(t: Assertions, x: Judged, opts: { severity?: 'error' | 'any' } = {}): void {
  const f = findings(x, opts);
  if (f.length === 0) t.pass();
  else t.fail(`${f.length} finding${f.length === 1 ? '' : 's'}:\n${f.join('\n')}`);
}
