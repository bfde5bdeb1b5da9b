/**
 * Two broken drivers random search once reached too rarely (they were `directed` until
 * issue 19 gave the fuzzer the two patterns they need: exit-during-fault and
 * lazyfree-write-pageout in scenarios/fuzz/commands.ts), each still caught by its dedicated
 * command list, and the same list run against the reference ODP strategy reports nothing.
 *
 * - mmput-under-mutex (CVE-2022-48675): the process's last exit must land inside the few
 *   microseconds a NIC fault holds an mm reference. A remote RDMA WRITE faults on a page of
 *   MR 0 that setup never touched; the exit is swept over 225-255 µs after it, and at least
 *   one exit time must hit the window (the reference never deadlocks at any of them). On
 *   the calibrated timeline (kernel-model/cpu-costs.ts, NIC faults calibrated end to end)
 *   the requester first faults its own untouched source page on node 1 and the transfer is
 *   retried after it: node 0's responder fault starts about 232 µs after the post and holds
 *   the mm about 13 µs (measured on the trace; the exit hits it at 243-245 µs). Before the
 *   costs the window was 0-30 µs after the post.
 * - no-dirty-at-unmap (rdma C8): MADV_FREE of a registered page, a device write into it,
 *   then MADV_PAGEOUT of it once the write landed: the refault found the PTE writable and clean, so only the
 *   driver's set_page_dirty at unmap keeps reclaim from discarding the device's bytes.
 */
import test from 'ava';
import { runConfigFor, runTarget } from '../../scenarios/fuzz/fuzz.ts';
import { fuzzTarget } from '../../scenarios/fuzz/targets.ts';
import type { Command } from '../../scenarios/fuzz/commands.ts';
import { BROKEN_DRIVERS } from '../../driver/broken/index.ts';
import { renderText } from '../../sanitizer/index.ts';

test('a directed broken driver, if any, says why random search does not reach it', (t) => {
  const directed = BROKEN_DRIVERS.filter((b) => b.detection === 'directed');
  for (const b of directed) t.true((b.whyDirected ?? '').length > 40, b.name);
  t.pass();
});

function exitDuringFault(exitAt: number): Command[] {
  return [
    // Node 1 writes MR 0 page 5 of node 0's process 0: slot 0 page 6, never touched: a NIC fault.
    { node: 1, proc: 0, thread: 0, at: 0, op: 'post', verb: 'write', mr: 0, peerMr: 0, page: 5, pages: 1 },
    { node: 0, proc: 0, thread: 1, at: exitAt, op: 'exit' },
  ];
}

test('mmput-under-mutex: an exit during a NIC fault deadlocks the fault worker on its own umem mutex (CVE-2022-48675)', (t) => {
  const broken = fuzzTarget('mmput-under-mutex')!;
  const reference = fuzzTarget('odp')!;
  const hits: number[] = [];
  for (let at = 225; at <= 255; at++) {
    const config = { ...runConfigFor(broken, {}, 1), preempt: false as const };
    const r = runTarget(broken, exitDuringFault(at), config);
    const deadlocks = r.violations.filter((v) => v.id === 'deadlock');
    if (deadlocks.length > 0) {
      hits.push(at);
      t.regex(deadlocks[0]!.message, /page-fault waits for .*umem_mutex/);
    }
    const ref = runTarget(reference, exitDuringFault(at), { ...runConfigFor(reference, {}, 1), preempt: false });
    t.deepEqual(ref.violations.map((v) => v.id), [], `reference odp, exit at ${at} µs:\n${renderText(ref.violations)}`);
  }
  t.true(hits.length > 0, 'no exit time hit the fault window');
  t.log(`deadlock when the exit starts ${hits.join(', ')} µs after the post`);
});

const freeWritePageout: Command[] = [
  { node: 0, proc: 0, thread: 0, at: 0, op: 'madvise', slot: 0, first: 2, pages: 1, advice: 'free' },
  // MR 0 page 1 is slot 0 page 2.
  { node: 1, proc: 0, thread: 0, at: 20, op: 'post', verb: 'write', mr: 0, peerMr: 0, page: 1, pages: 1 },
  // The pageout after the device's write: on the calibrated timeline (cpu-costs.ts) the
  // responder faults on the lazily-freed page and the write lands 200-260 µs after the post
  // (a pageout 180 µs after it comes first and finds nothing written; before the costs, 20 µs
  // was enough).
  { node: 0, proc: 0, thread: 0, at: 300, op: 'madvise', slot: 0, first: 2, pages: 1, advice: 'pageout' },
];

test('no-dirty-at-unmap: MADV_FREE, a device write, MADV_PAGEOUT: reclaim discards the device\'s bytes (rdma C8)', (t) => {
  const broken = fuzzTarget('no-dirty-at-unmap')!;
  const r = runTarget(broken, freeWritePageout, runConfigFor(broken, {}, 1));
  const lost = r.violations.filter((v) => v.id === 'lost-write');
  t.true(lost.length > 0, renderText(r.violations));
  t.true(lost[0]!.trail.some((e) => e.kind === 'dma'), 'the trail names the device write');
  const reference = fuzzTarget('odp')!;
  const ref = runTarget(reference, freeWritePageout, runConfigFor(reference, {}, 1));
  t.deepEqual(ref.violations.map((v) => v.id), [], renderText(ref.violations));
});
