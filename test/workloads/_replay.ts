import type { ExecutionContext } from 'ava';
import { loadTrace, replayWorkload, shippedTracePath, type SHIPPED_TRACES } from '../../scenarios/workloads/index.ts';

/**
 * Replay a shipped trace under one driver (with the cache that driver gets by default) and
 * check the report of issue 20 item 3 is there and the run was clean.
 */
export function replayShipped(t: ExecutionContext, name: keyof typeof SHIPPED_TRACES, driver: 'pinned' | 'odp' | 'holdoff'): Record<string, number | string> {
  const trace = loadTrace(shippedTracePath(name));
  const r = replayWorkload(trace, { driver, cache: driver === 'pinned' ? 'memory-hooks' : driver === 'holdoff' ? 'mr-event' : 'none' });
  t.true(r.ok, `${name} under ${driver}: ${JSON.stringify(r.outcome)}`);
  t.is(r.replayed, trace.events.length, 'every event replayed (none beyond the model)');
  for (const k of ['invalidations per second', 'pages invalidated', 'NIC faults', 'registration calls', 'WR latency p50 (ns)', 'WR latency p99 (ns)',
    'bytes misdirected (peer got other bytes)', 'bytes lost (peer wrote, process does not see)']) t.true(k in r.extra, `report has ${k}`);
  t.true(Object.keys(r.extra).some((k) => k.startsWith('invalidations/s UNMAP from munmap')), 'invalidations by event type and source syscall');
  t.true(Number(r.extra['sends']) > 0, 'traffic from the program buffers');
  t.is(r.extra['bytes misdirected (peer got other bytes)'], 0);
  t.is(r.extra['bytes lost (peer wrote, process does not see)'], 0);
  return r.extra;
}
