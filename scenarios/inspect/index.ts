// Time travel (issue 21): the state of a run at any instant, in the terminal (lab inspect)
// and in a self-contained HTML page (lab run --html).
export { parseInstant, INSTANT_FORMS, type InstantSpec } from './at.ts';
export { takeSnapshot, SECTIONS, type WorldSnapshot, type Section, type StaleEntry } from './snapshot.ts';
export { WorldObserver, type TimelineMark } from './observer.ts';
export { runObserved, captureInstants, type InspectTarget } from './capture.ts';
export { renderSnapshot, snapshotBlocks, filterSnapshot } from './render.ts';
export { diffSnapshots, renderDiff } from './diff.ts';
export { registerInspectCommand, resolveTarget } from './command.ts';
export { buildHtmlPage, runScenarioWithHtml, GRID_POINTS, MAX_SNAPSHOTS, type PageData } from './html.ts';
