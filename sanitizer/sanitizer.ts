/**
 * The sanitizer: every checker attached to a run's streams. It observes, never steers:
 * it subscribes to streams, reads model state while an event is delivered, and emits no
 * trace record, so a run gives the same trace with or without it (tested).
 *
 * @example
 *   const s = attachSanitizer({ sim, kernels: [node.kernel], nics: [node.nic], bindings$: node.device.binding$ });
 *   sim.run();
 *   s.finish();                   // end-of-run checks: lost-write, pin-leak
 *   console.log(s.render());      // text, with trails; s.render('json') for tools
 *   s.count('use-after-invalidate');
 */
import { Subject, type Observable } from 'rxjs';
import { SanitizerContext, type Checker, type SanitizerInputs } from './context.ts';
import { createUseAfterInvalidate } from './use-after-invalidate.ts';
import { createDmaToFreedPage } from './dma-to-freed-page.ts';
import { createStaleTranslation } from './stale-translation.ts';
import { createPinnedIncoherence } from './pinned-incoherence.ts';
import { createDmaWriteCleanPage } from './dma-write-clean-page.ts';
import { createDirtyWithoutBuffers } from './dirty-without-buffers.ts';
import { createLostWrite } from './lost-write.ts';
import { createSleepInAtomic } from './sleep-in-atomic.ts';
import { createNotifierContract } from './notifier-contract.ts';
import { createDeadlock } from './deadlock.ts';
import { createPinLeak } from './pin-leak.ts';
import { createFaultRetryStorm } from './fault-retry-storm.ts';
import { createBlockedMigration } from './blocked-migration.ts';
import { createSharedPageWrite } from './shared-page-write.ts';
import { createTeardownOrder } from './teardown-order.ts';
import { createHoldoffLiveness } from './holdoff-liveness.ts';
import { createStaleRegistration } from './stale-registration.ts';
import { renderJson, renderText } from './render.ts';
import { VIOLATION_IDS, type Violation, type ViolationId } from './violation.ts';

export const CHECKERS = {
  'use-after-invalidate': createUseAfterInvalidate,
  'dma-to-freed-page': createDmaToFreedPage,
  'stale-translation': createStaleTranslation,
  'pinned-incoherence': createPinnedIncoherence,
  'dma-write-clean-page': createDmaWriteCleanPage,
  'dirty-without-buffers': createDirtyWithoutBuffers,
  'lost-write': createLostWrite,
  'sleep-in-atomic': createSleepInAtomic,
  'notifier-contract': createNotifierContract,
  deadlock: createDeadlock,
  'pin-leak': createPinLeak,
  'fault-retry-storm': createFaultRetryStorm,
  'blocked-migration': createBlockedMigration,
  'shared-page-write': createSharedPageWrite,
  'teardown-order': createTeardownOrder,
  'holdoff-liveness': createHoldoffLiveness,
  'stale-registration': createStaleRegistration,
} as const satisfies Record<string, (ctx: SanitizerContext) => Checker>;

export type CheckerId = keyof typeof CHECKERS;

export interface SanitizerOptions extends SanitizerInputs {
  /** Which checkers to attach (default: all). */
  checkers?: readonly CheckerId[];
}

export interface Sanitizer {
  /** Every violation so far, in the order found. */
  readonly violations: Violation[];
  /** Violations as they are found. */
  readonly violation$: Observable<Violation>;
  /** Violations per id (every id present, 0 when none). */
  readonly counts: Readonly<Record<ViolationId, number>>;
  count(id: ViolationId): number;
  errors(): Violation[];
  warnings(): Violation[];
  /** Figures checkers keep besides violations (fault-retry-storm's). */
  metrics(): Record<string, Record<string, number>>;
  /** End-of-run checks (lost-write, pin-leak); idempotent. Returns every violation. */
  finish(): readonly Violation[];
  render(format?: 'text' | 'json'): string;
  /** Exceptions thrown inside checkers (kept out of the simulation). Empty in a sound run. */
  readonly internalErrors: readonly string[];
  /** Stop observing. */
  detach(): void;
}

/** Attach every checker (or `opts.checkers`) to the streams of a run. Call before `sim.run()`. */
export function attachSanitizer(opts: SanitizerOptions): Sanitizer {
  const violations: Violation[] = [];
  const subject = new Subject<Violation>();
  const counts = Object.fromEntries(VIOLATION_IDS.map((id) => [id, 0])) as Record<ViolationId, number>;
  const ctx = new SanitizerContext(opts, (v) => {
    violations.push(v);
    counts[v.id]++;
    subject.next(v);
  });
  const ids = opts.checkers ?? (Object.keys(CHECKERS) as CheckerId[]);
  const checkers: Checker[] = ids.map((id) => CHECKERS[id](ctx));
  ctx.start();
  let finished = false;

  return {
    violations,
    violation$: subject.asObservable(),
    counts,
    count: (id) => counts[id],
    errors: () => violations.filter((v) => v.severity === 'error'),
    warnings: () => violations.filter((v) => v.severity === 'warning'),
    metrics() {
      const out: Record<string, Record<string, number>> = {};
      for (const c of checkers) if (c.metrics) out[c.id] = c.metrics();
      return out;
    },
    finish() {
      if (!finished) {
        finished = true;
        for (const c of checkers) if (c.finish) ctx.guard(c.id, () => c.finish?.());
      }
      return violations;
    },
    render(format = 'text') {
      if (format === 'json') {
        const nonZero = Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 0));
        return renderJson(violations, { counts: nonZero, metrics: this.metrics() });
      }
      return renderText(violations);
    },
    internalErrors: ctx.internalErrors,
    detach() {
      ctx.stop();
      subject.complete();
    },
  };
}
