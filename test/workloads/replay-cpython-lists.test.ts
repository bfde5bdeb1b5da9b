/**
 * The shipped trace cpython-lists.trace replays (issue 20, done-when) under pinned (+ memory
 * hooks), odp and holdoff (+ the opt-in MR event), each with its report: invalidations per
 * second by event type and source syscall, pages invalidated, NIC faults, registration
 * calls, latency percentiles, bytes lost or misdirected (none: every cache here is coherent).
 */
import test from 'ava';
import { replayShipped } from './_replay.ts';

for (const driver of ['pinned', 'odp', 'holdoff'] as const) {
  test(`cpython-lists replays under ${driver} with its report`, (t) => {
    const extra = replayShipped(t, 'cpython-lists', driver);
    if (driver === 'pinned') t.true(Number(extra['registration calls']) > 0, 'the pinned cache registers');
  });
}
