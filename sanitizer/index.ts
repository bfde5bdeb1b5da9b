// The public face of the sanitizer: checkers that watch the streams and report violated
// contracts (DESIGN.md "Sanitizer"). It imports kernel-model and device, never driver.
export { attachSanitizer, CHECKERS, type Sanitizer, type SanitizerOptions, type CheckerId } from './sanitizer.ts';
export {
  VIOLATION_IDS, SEVERITY, violation, formatNs,
  type Violation, type ViolationId, type Severity, type TrailEntry,
} from './violation.ts';
export type { RcacheEvent, RcacheSourceName } from './rcache-event.ts';
export { bindingKind, DEFAULT_PINNED_STRATEGIES, type MrBinding, type BindingKind } from './binding.ts';
export { renderText, renderJson, renderCounts } from './render.ts';
export { SanitizerContext, type SanitizerInputs, type Checker } from './context.ts';
export type { FaultRetryMetrics } from './fault-retry-storm.ts';
