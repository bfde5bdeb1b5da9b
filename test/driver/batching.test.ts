/**
 * Batching policies (DESIGN "Batching policies"): rxjs operators over the stream of sync
 * requests that invalidations make after their zaps (rdma C3-C5: the callback returns only
 * once its zaps are fenced). Measured on a holdoff NIC with k processes, each with its own
 * registered MR, invalidating (munmap or MADV_DONTNEED) at about the same time: threads of
 * one process cannot, since munmap and madvise serialize on its mmap_lock.
 */
import test, { type ExecutionContext } from 'ava';
import { map, tap } from 'rxjs';
import { MADV_DONTNEED, MmuNotifyEvent, Simulation, eventName, type Co } from '../../kernel-model/index.ts';
import { Fabric } from '../../device/index.ts';
import {
  BATCH_POLICY_NAMES, adaptiveBatching, batchPolicyByName, byEventType, countBatching, noBatching, windowBatching,
  windowOrCount, type BatchPolicy,
} from '../../driver/index.ts';
import { P, complaints, holdoffNode, kernelZapCpuNs, mapFilled, must, openApp, regMr, zapNs } from './_holdoff-rig.ts';

const W = 50_000;
const BASE = 1_000_000; // every process has registered by then
const PAGES = 4;

interface RequestLog {
  time: number;
  event: number;
  doneAt: number;
}

interface Log {
  requests: RequestLog[];
  batches: { at: number; events: number[] }[];
}

/** Wrap a policy to record each request (and when the sync covering it completed) and each batch. */
function instrument(sim: Simulation, policy: BatchPolicy, log: Log): BatchPolicy {
  return (source) => source.pipe(
    map((r) => {
      const rec: RequestLog = { time: r.time, event: r.event, doneAt: -1 };
      log.requests.push(rec);
      return { ...r, done: () => { rec.doneAt = sim.now(); r.done(); } };
    }),
    policy,
    tap((batch) => log.batches.push({ at: sim.now(), events: batch.map((r) => r.event) })),
  );
}

type Op = 'munmap' | 'dontneed';

interface Outcome {
  /** Latency of each invalidating system call, in plan order. */
  latencies: number[];
  syncs: number;
  log: Log;
  zap: number;
  syncNs: number;
}

/**
 * One process per entry of `plan`, each with a registered MR of PAGES pages; process i
 * invalidates its whole buffer at BASE + plan[i].at. With `serial`, one process instead
 * invalidates `serial` ranges of one MR one after another.
 */
function run(t: ExecutionContext, policy: (sim: Simulation) => BatchPolicy, plan: { at: number; op: Op }[], serial = 0): Outcome {
  const sim = new Simulation({ seed: 1 });
  const fabric = new Fabric(sim);
  const log: Log = { requests: [], batches: [] };
  const node = holdoffNode(sim, fabric, 'n', { holdoffTimeoutNs: 10_000_000, batching: instrument(sim, policy(sim), log) });
  const costs = node.node.nic.costs;
  const latencies: number[] = [];
  const tasks = [];
  if (serial > 0) {
    const app = openApp(node, 'serial');
    tasks.push(app.p.spawnThread('main', function* (): Co {
      const buf = yield* mapFilled(app, serial * PAGES, () => 1);
      yield* regMr(app, buf, serial * PAGES * P);
      yield* sim.sleep(BASE - sim.now());
      for (let i = 0; i < serial; i++) {
        const t0 = sim.now();
        must(yield* app.p.munmap(buf + i * PAGES * P, PAGES * P), 'munmap');
        latencies.push(sim.now() - t0);
      }
    }));
  } else {
    plan.forEach((step, i) => {
      const app = openApp(node, `p${i}`);
      tasks.push(app.p.spawnThread('main', function* (): Co {
        const buf = yield* mapFilled(app, PAGES, () => i);
        yield* regMr(app, buf, PAGES * P);
        yield* sim.sleep(BASE + step.at - sim.now());
        const t0 = sim.now();
        if (step.op === 'munmap') must(yield* app.p.munmap(buf, PAGES * P), 'munmap');
        else must(yield* app.p.madvise(buf, PAGES * P, MADV_DONTNEED), 'madvise');
        latencies[i] = sim.now() - t0;
      }));
    });
  }
  const out = sim.run({ untilNs: 10_000_000_000 });
  t.is(out.failure, undefined, out.failure);
  t.true(tasks.every((task) => task.done), `not every process finished (run ended: ${out.reason})`);
  t.deepEqual(complaints(sim), [], 'no complaint from the kernel model');
  const syncs = node.strategy.batcherOf(node.node.nic)?.stats.syncs ?? -1;
  // The invalidation's own work: the device zap plus the kernel's CPU time around it (cpu-costs.ts).
  return { latencies, syncs, log, zap: zapNs(costs, PAGES) + kernelZapCpuNs(PAGES), syncNs: costs.syncNs };
}

const together = (k: number, op: Op = 'munmap') => Array.from({ length: k }, () => ({ at: 0, op }));

test('window policy: k invalidations from k processes arriving within W share one sync; each waiter waits at most W + sync', (t) => {
  const k = 8;
  const none = run(t, () => noBatching(), together(k));
  const win = run(t, (sim) => windowBatching(W, sim.scheduler), together(k));
  t.is(none.syncs, k, 'without batching: one sync per invalidation');
  t.is(win.syncs, 1, 'with a window: one sync for all');
  t.is(win.log.requests.length, k);
  const first = win.log.requests[0]!.time;
  t.true(win.log.requests.every((r) => r.time - first < W), 'the requests arrived within W (their zaps queue on the NIC)');
  for (const r of win.log.requests) t.true(r.doneAt - r.time <= W + win.syncNs, `waited ${r.doneAt - r.time} ns`);
  t.is(win.log.requests[0]!.doneAt - first, W + win.syncNs, 'the first waiter pays the whole window and the sync');
  // Every munmap started at BASE and ended when the one sync did: after the first zap, W and the sync.
  t.deepEqual(win.latencies, Array.from({ length: k }, () => win.zap + W + win.syncNs));
});

test('window policy: a single task invalidating serially pays W every time and saves no sync', (t) => {
  const k = 5;
  const none = run(t, () => noBatching(), [], k);
  const win = run(t, (sim) => windowBatching(W, sim.scheduler), [], k);
  t.is(win.syncs, k);
  t.is(none.syncs, k);
  t.deepEqual(none.latencies, Array.from({ length: k }, () => none.zap + none.syncNs));
  t.deepEqual(win.latencies, Array.from({ length: k }, () => win.zap + W + win.syncNs), 'each munmap pays W');
});

test('count policy: a batch is synced exactly when its N-th request arrives', (t) => {
  const N = 4;
  const plan = Array.from({ length: 8 }, (_, i) => ({ at: i * 10_000, op: 'munmap' as const }));
  const r = run(t, () => countBatching(N), plan);
  t.is(r.syncs, 2);
  t.deepEqual(r.log.batches.map((b) => b.events.length), [N, N]);
  const req = r.log.requests;
  t.is(r.log.batches[0]!.at, req[N - 1]!.time, 'flushed at the arrival of the 4th request');
  for (const q of req.slice(0, N)) t.is(q.doneAt, req[N - 1]!.time + r.syncNs);
  t.is(r.latencies[0], 3 * 10_000 + r.zap + r.syncNs, 'the first waited for three more invalidations');
  t.is(r.latencies[N - 1], r.zap + r.syncNs, 'the N-th did not wait at all');
});

test('window-or-count policy: whichever comes first closes the batch', (t) => {
  // Four at once, a long window: the count closes it.
  const byCount = run(t, (sim) => windowOrCount(1_000_000, 4, sim.scheduler), together(4));
  t.is(byCount.syncs, 1);
  t.is(byCount.log.batches[0]!.at, byCount.log.requests[3]!.time, 'closed by the 4th request');
  t.true(byCount.latencies.every((l) => l < 100_000), 'nobody waited for the 1 ms window');
  // Three at once, a count of 100: the window closes it.
  const byWindow = run(t, (sim) => windowOrCount(W, 100, sim.scheduler), together(3));
  t.is(byWindow.syncs, 1);
  t.is(byWindow.log.batches[0]!.at, byWindow.log.requests[0]!.time + W, 'closed W after the first request');
});

test('by-event-type policy: one sync never mixes notifier event types (UNMAP from munmap, CLEAR from MADV_DONTNEED)', (t) => {
  const plan = [
    { at: 0, op: 'munmap' as const }, { at: 0, op: 'dontneed' as const },
    { at: 1_000, op: 'munmap' as const }, { at: 1_000, op: 'dontneed' as const },
  ];
  const mixed = run(t, (sim) => windowBatching(W, sim.scheduler), plan);
  t.is(mixed.syncs, 1);
  t.deepEqual(new Set(mixed.log.batches[0]!.events).size, 2, 'a plain window mixes them');
  const split = run(t, (sim) => byEventType(windowBatching(W, sim.scheduler)), plan);
  t.is(split.syncs, 2);
  for (const b of split.log.batches) t.is(new Set(b.events).size, 1, `batch of ${b.events.map(eventName).join(', ')}`);
  t.deepEqual(split.log.batches.map((b) => eventName(b.events[0]!)).sort(), [eventName(MmuNotifyEvent.CLEAR), eventName(MmuNotifyEvent.UNMAP)].sort());
  const overridden = run(t, (sim) => byEventType(windowBatching(W, sim.scheduler), { [MmuNotifyEvent.UNMAP]: noBatching() }), plan);
  t.is(overridden.syncs, 3, 'UNMAP synced one by one, the CLEARs together');
});

test('adaptive policy: a serial invalidator pays only the minimum window; a burst widens it', (t) => {
  // The burst's zaps reach the batcher one zap command (about 2 µs) apart: a 4 µs minimum lets two meet.
  const adaptive = (sim: Simulation) => adaptiveBatching({ minWindowNs: 4_000, maxWindowNs: 64_000 }, sim.scheduler);
  const serial = run(t, adaptive, [], 4);
  t.deepEqual(serial.latencies, Array.from({ length: 4 }, () => serial.zap + 4_000 + serial.syncNs));
  const burst = run(t, adaptive, together(16));
  t.true(burst.syncs < 16, `${burst.syncs} syncs for 16 invalidations`);
  const sizes = burst.log.batches.map((b) => b.events.length);
  t.true(sizes.some((s) => s > 2), `batches grew: ${sizes.join(', ')}`);
});

test('batchPolicyByName: a bad policy name or parameter gives one clear line naming it and what is accepted', (t) => {
  const sim = new Simulation({ seed: 1 });
  const s = sim.scheduler;
  const bad: [string, Record<string, number | string | undefined>, RegExp][] = [
    ['windw', {}, /unknown batching policy 'windw'; valid policies: none, window, count, window-or-count, adaptive, by-event-type/],
    ['window', {}, /window: parameter 'windowNs' is required \(a positive integer of ns\)/],
    ['window', { windowNs: -5 }, /window: windowNs must be a positive integer of ns, got '-5'/],
    ['window', { windowNs: '50us' }, /windowNs must be a positive integer of ns, got '50us'/],
    ['window', { windowNs: 1000, count: 3 }, /window: unknown parameter 'count'; accepted: windowNs/],
    ['count', { count: 0 }, /count: count must be an integer >= 1, got '0'/],
    ['none', { windowNs: 5 }, /none: unknown parameter 'windowNs'; it takes no parameters/],
    ['window-or-count', { windowNs: 1000 }, /window-or-count: parameter 'count' is required/],
    ['adaptive', { minWindowNs: 5000, maxWindowNs: 1000 }, /adaptive: maxWindowNs must be at least minWindowNs \(5000\), got 1000/],
    ['by-event-type', {}, /by-event-type: parameter 'inner' is required/],
    ['by-event-type', { inner: 'by-event-type' }, /by-event-type: inner must be one of none, window, count, window-or-count, adaptive, got 'by-event-type'/],
    ['by-event-type', { inner: 'window', windowNs: 0 }, /by-event-type: window: windowNs must be a positive integer of ns, got '0'/],
  ];
  for (const [name, params, want] of bad) {
    const r = batchPolicyByName(name, params, s);
    if (!('error' in r)) {
      t.fail(`${name} ${JSON.stringify(params)} was accepted`);
      continue;
    }
    t.regex(r.error, want);
    t.false(r.error.includes('\n'), 'one line');
  }
  t.deepEqual([...BATCH_POLICY_NAMES], ['none', 'window', 'count', 'window-or-count', 'adaptive', 'by-event-type']);
  const good = batchPolicyByName('window-or-count', { windowNs: '50000', count: 8 }, s);
  t.false('error' in good);
  if (!('error' in good)) t.is(good.name, 'window-or-count(windowNs=50000, count=8)');
});

test('batchPolicyByName: a policy built from its name batches like the operator itself', (t) => {
  const byName = (sim: Simulation): BatchPolicy => {
    const r = batchPolicyByName('by-event-type', { inner: 'window', windowNs: W }, sim.scheduler);
    if ('error' in r) throw new Error(r.error);
    return r.policy;
  };
  const r = run(t, byName, [{ at: 0, op: 'munmap' }, { at: 0, op: 'munmap' }, { at: 0, op: 'dontneed' }]);
  t.is(r.syncs, 2);
  t.deepEqual(r.log.batches.map((b) => b.events.length).sort(), [1, 2]);
});
