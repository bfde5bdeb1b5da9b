/**
 * Traces that Perfetto and Chrome draw (issue 11 item 1).
 *
 * Two consumers judge every scenario's trace: Chrome's trace engine itself
 * (`@paulirish/trace_engine`, the DevTools performance panel's parser), which must find
 * every flow the trace writes, and a re-statement of Perfetto's JSON importer rules
 * (Perfetto is not installable here; the rules are from
 * src/trace_processor/importers/json/json_trace_parser_impl.cc and
 * importers/common/slice_tracker.cc): a flow id is a number or a string the whole of which
 * parses as hex (else `flow_invalid_id`); a v1 flow is keyed by id, category and name;
 * `s` and `f` with `bp: "e"` bind to the topmost slice open on the thread's track at that
 * point (else `flow_no_enclosing_slice`), `f` without it to the next slice that begins.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as TraceEngine from '@paulirish/trace_engine/models/trace/trace.js';
import { Simulation, MADV_DONTNEED } from '../../kernel-model/index.ts';
import { Fabric, MLX5_ODP_CAPS, IBV_ACCESS_ON_DEMAND, IBV_WR_RDMA_WRITE, IBV_WC_SUCCESS } from '../../device/index.ts';
import { createRdmaNode, odpStrategy, pinnedStrategy } from '../../driver/index.ts';
import { runScenario } from '../../scenarios/scenario.ts';
import { SCENARIOS, scenarioByName } from '../../scenarios/catalogue.ts';
import { parseSets } from '../../scenarios/params.ts';
import { PerfettoTrace, type ChromeTraceEvent } from '../../scenarios/perfetto.ts';
import { ALL_ACCESS, P, connectRc, completions, mapAnon, openApp, regOk, store, pattern } from '../../scenarios/app.ts';

type Ev = Omit<ChromeTraceEvent, 'id'> & { id?: number | string };

// ---- Perfetto's JSON importer rules, restated --------------------------------------------

interface Slice { ev: Ev; start: number; end: number | null }
interface PerfettoImport {
  stats: { flow_invalid_id: number; flow_no_enclosing_slice: number; flow_end_without_start: number; flow_unterminated: number };
  /** Each v1 flow (key id/cat/name) with the slices its two ends bound to. */
  flows: { key: string; from: Ev; to: Ev }[];
}

function flowId(v: unknown): bigint | null {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 ? BigInt(v) : null;
  if (typeof v === 'string') return /^(0x)?[0-9a-fA-F]+$/.test(v) ? BigInt(v.startsWith('0x') ? v : `0x${v}`) : null;
  return null;
}

function perfettoImport(events: readonly Ev[]): PerfettoImport {
  const stats = { flow_invalid_id: 0, flow_no_enclosing_slice: 0, flow_end_without_start: 0, flow_unterminated: 0 };
  // The sorter orders by timestamp and keeps file order within one timestamp.
  const sorted = events.map((ev, i) => ({ ev, i })).sort((a, b) => a.ev.ts - b.ev.ts || a.i - b.i).map((x) => x.ev);
  const stacks = new Map<string, Slice[]>();
  const pendingNext = new Map<string, { key: string; from: Ev }[]>();
  const open = new Map<string, Ev>();
  const flows: PerfettoImport['flows'] = [];
  const closeEnded = (stack: Slice[], ts: number) => {
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as Slice;
      if (top.end === null || top.end >= ts) break;
      stack.pop();
    }
  };
  const startSlice = (track: string, ev: Ev, end: number | null) => {
    const stack = stacks.get(track) ?? [];
    stacks.set(track, stack);
    closeEnded(stack, ev.ts);
    stack.push({ ev, start: ev.ts, end });
    for (const p of pendingNext.get(track) ?? []) flows.push({ key: p.key, from: p.from, to: ev });
    pendingNext.delete(track);
  };
  const topmost = (track: string, ts: number): Ev | undefined => {
    const stack = stacks.get(track) ?? [];
    closeEnded(stack, ts);
    return stack[stack.length - 1]?.ev;
  };
  for (const ev of sorted) {
    const track = `${ev.pid}/${ev.tid ?? ev.pid}`;
    switch (ev.ph) {
      case 'B': startSlice(track, ev, null); break;
      case 'X': startSlice(track, ev, ev.ts + (ev.dur ?? 0)); break;
      case 'i': if (ev.s === undefined || ev.s === 't') startSlice(track, ev, ev.ts); break;
      case 'E': {
        const stack = stacks.get(track) ?? [];
        for (let i = stack.length - 1; i >= 0; i--) {
          const s = stack[i] as Slice;
          if (s.end === null) { s.end = ev.ts; if (i === stack.length - 1) stack.pop(); break; }
        }
        break;
      }
      case 's':
      case 'f': {
        const id = flowId(ev.id);
        if (id === null) { stats.flow_invalid_id++; break; }
        const key = `${id}|${ev.cat ?? ''}|${ev.name}`;
        if (ev.ph === 's') {
          const from = topmost(track, ev.ts);
          if (!from) { stats.flow_no_enclosing_slice++; break; }
          open.set(key, from);
          break;
        }
        const from = open.get(key);
        if (!from) { stats.flow_end_without_start++; break; }
        open.delete(key);
        if (ev.bp === 'e') {
          const to = topmost(track, ev.ts);
          if (!to) { stats.flow_no_enclosing_slice++; break; }
          flows.push({ key, from, to });
        } else {
          const list = pendingNext.get(track) ?? [];
          list.push({ key, from });
          pendingNext.set(track, list);
        }
        break;
      }
      default:
        break;
    }
  }
  stats.flow_unterminated = open.size;
  return { stats, flows };
}

test('the Perfetto rule check fails what Perfetto drops: string flow ids, a flow with no enclosing slice, ends of different categories', (t) => {
  const slice = (ts: number, tid: number, cat = 'driver'): Ev => ({ name: 'x', ph: 'X', ts, dur: 1, pid: 1, tid, cat });
  const good: Ev[] = [slice(1, 1), { name: 'f', ph: 's', ts: 1, pid: 1, tid: 1, cat: 'driver', id: 7 }, slice(5, 2), { name: 'f', ph: 'f', bp: 'e', ts: 5, pid: 1, tid: 2, cat: 'driver', id: 7 }];
  const ok = perfettoImport(good);
  t.deepEqual(ok.stats, { flow_invalid_id: 0, flow_no_enclosing_slice: 0, flow_end_without_start: 0, flow_unterminated: 0 });
  t.is(ok.flows.length, 1);
  t.is(ok.flows[0]?.to.ts, 5);
  // The ids the old trace wrote.
  const strings = perfettoImport(good.map((e) => (e.id === undefined ? e : { ...e, id: 'inv:0' })));
  t.is(strings.stats.flow_invalid_id, 2);
  t.is(strings.flows.length, 0);
  t.is(perfettoImport(good.map((e) => (e.id === undefined ? e : { ...e, id: '1f' }))).flows.length, 1, 'an all-hex string is an id');
  // No slice open at the start: dropped.
  const orphan = perfettoImport([{ name: 'f', ph: 's', ts: 1, pid: 1, tid: 1, cat: 'driver', id: 7 }, ...good.slice(2)]);
  t.is(orphan.stats.flow_no_enclosing_slice, 1);
  // A different category is a different flow: the end finds no start.
  const cats = perfettoImport(good.map((e) => (e.ph === 'f' ? { ...e, cat: 'flow' } : e)));
  t.is(cats.flows.length, 0);
  t.is(cats.stats.flow_end_without_start, 1);
});

// ---- Chrome's trace engine ---------------------------------------------------------------

async function chromeFlows(events: readonly Ev[]): Promise<Ev[][]> {
  const model = TraceEngine.TraceModel.Model.createWithAllHandlers();
  await model.parse(events as never);
  const parsed = model.parsedTrace(0);
  if (!parsed) throw new Error('the trace engine returned no data');
  return (parsed.data.Flows.flows as unknown as Ev[][]);
}

// ---- what every trace must satisfy --------------------------------------------------------

function checkStructure(t: import('ava').ExecutionContext, ev: readonly Ev[], label: string): void {
  const procNames = ev.filter((e) => e.ph === 'M' && e.name === 'process_name');
  const threadNames = ev.filter((e) => e.ph === 'M' && e.name === 'thread_name');
  t.is(new Set(procNames.map((e) => e.pid)).size, procNames.length, `${label}: each process named once`);
  t.is(new Set(threadNames.map((e) => `${e.pid}/${e.tid}`)).size, threadNames.length, `${label}: each thread named once`);
  const namedPid = new Set(procNames.map((e) => e.pid));
  const namedThread = new Set(threadNames.map((e) => `${e.pid}/${e.tid}`));
  for (const e of ev) {
    if (e.ph === 'M' || e.ph === 'C' || e.ph === 'b' || e.ph === 'e') continue;
    if (!namedPid.has(e.pid)) { t.fail(`${label}: pid ${e.pid} has no process_name (${e.name})`); return; }
    if (!namedThread.has(`${e.pid}/${e.tid}`)) { t.fail(`${label}: thread ${e.pid}/${e.tid} has no thread_name (${e.name})`); return; }
  }
  t.false(threadNames.some((e) => /^task \d+$/.test(String(e.args?.name))), `${label}: every task was named at its spawn (tracer attached first)`);
  // Instants are `i`, not 1 ns spans; async slices are one name per kind, the iova in args.
  t.false(ev.some((e) => e.ph === 'X' && (e.dur ?? 0) <= 0.001 && e.name !== 'sync' && !/pages$/.test(e.name)), `${label}: no 1 ns stand-in for an instant`);
  for (const e of ev.filter((x) => x.ph === 'b')) {
    if (e.name !== 'NIC fault' || typeof e.args?.iova !== 'string') { t.fail(`${label}: async slice ${e.name} without one name per kind and the iova in args`); return; }
  }
  // B/E nest per thread.
  const stacks = new Map<string, string[]>();
  for (const e of ev) {
    if (e.ph !== 'B' && e.ph !== 'E') continue;
    const key = `${e.pid}/${e.tid}`;
    const s = stacks.get(key) ?? [];
    stacks.set(key, s);
    if (e.ph === 'B') s.push(e.name);
    else if (s.pop() !== e.name) { t.fail(`${label}: E ${e.name} does not close the open span on ${key}`); return; }
  }
  for (const [key, s] of stacks) t.is(s.length, 0, `${label}: unclosed spans on ${key}`);
}

async function checkFlows(t: import('ava').ExecutionContext, ev: readonly Ev[], label: string): Promise<{ invalidation: number; fault: number }> {
  const starts = ev.filter((e) => e.ph === 's');
  t.is(starts.length, ev.filter((e) => e.ph === 'f').length, `${label}: every flow has two ends`);
  t.true(ev.filter((e) => e.ph === 's' || e.ph === 'f' || e.ph === 'b' || e.ph === 'e').every((e) => typeof e.id === 'number'), `${label}: numeric ids`);
  // Perfetto: every flow valid, bound, and bound to the slice it was written for (same ts).
  const imp = perfettoImport(ev);
  t.deepEqual(imp.stats, { flow_invalid_id: 0, flow_no_enclosing_slice: 0, flow_end_without_start: 0, flow_unterminated: 0 }, `${label}: Perfetto import stats`);
  t.is(imp.flows.length, starts.length, `${label}: Perfetto binds every flow`);
  const byName = { invalidation: 0, fault: 0 };
  for (const f of imp.flows) {
    const [, , name] = f.key.split('|');
    if (name === 'invalidation → sync') {
      byName.invalidation++;
      if (!/: invalidate/.test(f.from.name) || f.to.name !== 'sync') { t.fail(`${label}: ${name} joins ${f.from.name} to ${f.to.name}`); break; }
    } else if (name === 'fault → resume') {
      byName.fault++;
      if (f.from.name !== 'fault raised' || !f.to.name.startsWith('fault resumed') || f.from.args?.fault !== f.to.args?.fault) { t.fail(`${label}: ${name} joins ${f.from.name} to ${f.to.name}`); break; }
    } else {
      t.fail(`${label}: unexpected flow ${name}`);
    }
  }
  // Chrome: finds the same flows, each from its start slice to its end slice.
  const chrome = await chromeFlows(ev);
  t.is(chrome.length, starts.length, `${label}: Chrome's trace engine finds every flow`);
  const shapes = new Set(chrome.map((f) => `${f[0]?.name.includes(': invalidate') ? 'callback' : f[0]?.name} > ${f[f.length - 1]?.name.replace(' (error)', '')}`));
  for (const s of shapes) t.true(s === 'callback > sync' || s === 'fault raised > fault resumed', `${label}: Chrome flow ${s}`);
  return byName;
}

const defaults = (def: NonNullable<ReturnType<typeof scenarioByName>>) => {
  const p = parseSets([], def.params ?? []);
  if ('error' in p) throw new Error(p.error);
  return p.values;
};

function traceOf(name: string, opts: { seed?: number } = {}): { events: Ev[]; ok: boolean } {
  const def = scenarioByName(name);
  if (!def) throw new Error(name);
  const dir = mkdtempSync(join(tmpdir(), 'lab-trace-'));
  try {
    const file = join(dir, 't.json');
    const r = runScenario(def, { seed: opts.seed ?? 1, profile: def.defaultProfile, driver: def.defaultDriver, params: defaults(def), traceFile: file });
    return { events: (JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: Ev[] }).traceEvents, ok: r.outcome.ok };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const def of SCENARIOS) {
  test.serial(`issue 11 item 1: ${def.name}'s trace parses in Chrome's trace engine with every flow found, and meets Perfetto's JSON import rules`, async (t) => {
    const { events } = traceOf(def.name);
    checkStructure(t, events, def.name);
    const flows = await checkFlows(t, events, def.name);
    t.log(`${def.name}: ${events.length} events, ${flows.invalidation} invalidation → sync flows, ${flows.fault} fault → resume flows`);
  });
}

test.serial('odp-swap-storm: invalidations flow to the syncs their notifier issued, faults to their resume; NIC faults are one async track kind', async (t) => {
  const { events } = traceOf('odp-swap-storm');
  const flows = await checkFlows(t, events, 'odp-swap-storm');
  t.true(flows.invalidation > 100, `${flows.invalidation} invalidation flows`);
  t.true(flows.fault > 0, `${flows.fault} fault flows`);
  // Every sync that a notifier callback issued is an invalidation's end; no sync is joined twice from one callback.
  const faults = events.filter((e) => e.ph === 'b');
  t.is(new Set(faults.map((e) => e.name)).size, 1);
  t.is(faults.length, events.filter((e) => e.ph === 'e').length);
  t.true(events.some((e) => e.ph === 'i' && e.name === 'fault raised'));
});

test.serial('writeback-vs-longterm-pin: the trace shows its DMA writes and violations, and no invalidation → sync arrow (the pinned MR has no notifier)', async (t) => {
  const { events } = traceOf('writeback-vs-longterm-pin');
  const writes = events.filter((e) => e.ph === 'i' && e.name === 'DMA write');
  // The peer writes one record into each of two pages every second for 36 s.
  t.is(writes.length, 72);
  t.true(writes.every((e) => e.args?.bytes === 64 && e.args?.side === 'responder'));
  for (const id of ['dma-write-clean-page', 'dirty-without-buffers', 'lost-write']) {
    t.true(events.some((e) => e.ph === 'i' && e.name === id && e.cat === 'sanitizer'), `violation ${id}`);
    t.true(events.some((e) => e.ph === 'i' && e.name.startsWith(`${id} trail: `) && typeof e.args?.text === 'string'), `trail of ${id}`);
  }
  t.true(events.some((e) => e.ph === 'i' && e.name === 'dma-write-clean-page trail: writeback'));
  t.true(events.some((e) => e.name.startsWith('invalidate PROTECTION_PAGE')), 'the PROTECTION_PAGE invalidations are there');
  t.is(events.filter((e) => e.ph === 's').length, 0, 'and nothing joins them to the dereg sync');
});

test('DMA detail: per work request by default (one instant per contiguous run, with its access count), every access with dma: all', (t) => {
  const run = (dma: 'per-wr' | 'all') => {
    const sim = new Simulation({ seed: 1 });
    const trace = new PerfettoTrace(sim, { dma });
    const fabric = new Fabric(sim);
    const mk = (name: string) => createRdmaNode(sim, fabric, { name, nic: { caps: { odp: MLX5_ODP_CAPS } }, device: { nonOdp: pinnedStrategy(), odp: odpStrategy() } });
    const na = mk('a');
    const nb = mk('b');
    trace.addNode(na.kernel, na.nic);
    trace.addNode(nb.kernel, nb.nic);
    const a = openApp(na, na.kernel.createProcess('sender'));
    const b = openApp(nb, nb.kernel.createProcess('receiver'));
    const main = sim.spawn('main', function* () {
      const src = yield* mapAnon(a, 4);
      const dst = yield* mapAnon(b, 4);
      yield* store(a, src, pattern(1, 4 * P));
      const ms = yield* regOk(a, src, 4 * P, ALL_ACCESS);
      const md = yield* regOk(b, dst, 4 * P, ALL_ACCESS);
      const [qa] = connectRc(a, b);
      yield* a.ctx.postSend(qa, { wrId: 1, opcode: IBV_WR_RDMA_WRITE, sendFlags: 2, sgList: [{ addr: src, length: 4 * P, lkey: ms.lkey }], rdma: { remoteAddr: dst, rkey: md.rkey } });
      yield* completions(a, 1);
    });
    sim.run({ untilNs: 10e9, task: main });
    return (JSON.parse(trace.toJson()) as { traceEvents: Ev[] }).traceEvents.filter((e) => e.cat === 'dma');
  };
  const perWr = run('per-wr');
  const all = run('all');
  const writes = perWr.filter((e) => e.name === 'DMA write');
  t.is(writes.length, 1);
  t.is(writes[0]?.args?.bytes, 4 * P);
  const n = writes[0]?.args?.accesses as number;
  t.true(n > 1);
  t.is(all.filter((e) => e.name === 'DMA write').length, n);
  t.is(all.filter((e) => e.name === 'DMA write').reduce((s, e) => s + (e.args?.bytes as number), 0), 4 * P);
});

test.serial('two nodes: each process its own pid (both are pid 100 in their kernel), faults and flows on a hand-built run', async (t) => {
  const sim = new Simulation({ seed: 2 });
  const trace = new PerfettoTrace(sim);
  const fabric = new Fabric(sim);
  const mk = (name: string) => createRdmaNode(sim, fabric, { name, nic: { caps: { odp: MLX5_ODP_CAPS } }, device: { nonOdp: pinnedStrategy(), odp: odpStrategy() } });
  const na = mk('a');
  const nb = mk('b');
  trace.addNode(na.kernel, na.nic);
  trace.addNode(nb.kernel, nb.nic);
  const pa = na.kernel.createProcess('sender');
  const pb = nb.kernel.createProcess('receiver');
  t.is(pa.pid, pb.pid, 'the same Linux pid on both nodes');
  const a = openApp(na, pa);
  const b = openApp(nb, pb);
  // A thread in each process, each making a system call on its own track.
  for (const app of [a, b]) app.p.spawnThread('worker', function* () { yield* mapAnon(app, 1); });
  const main = sim.spawn('main', function* () {
    const src = yield* mapAnon(a, 4);
    const dst = yield* mapAnon(b, 4);
    yield* store(a, src, pattern(1, 4 * P));
    const ms = yield* regOk(a, src, 4 * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND);
    const md = yield* regOk(b, dst, 4 * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND);
    const [qa] = connectRc(a, b);
    for (let i = 0; i < 3; i++) {
      yield* a.ctx.postSend(qa, { wrId: i, opcode: IBV_WR_RDMA_WRITE, sendFlags: 2, sgList: [{ addr: src, length: 4 * P, lkey: ms.lkey }], rdma: { remoteAddr: dst, rkey: md.rkey } });
      const [wc] = yield* completions(a, 1);
      t.is(wc?.status, IBV_WC_SUCCESS);
      yield* b.p.madvise(dst, 4 * P, MADV_DONTNEED);
    }
  });
  sim.run({ untilNs: 10e9, task: main });
  const ev = (JSON.parse(trace.toJson()) as { traceEvents: Ev[] }).traceEvents;
  checkStructure(t, ev, 'two nodes');
  const procs = ev.filter((e) => e.ph === 'M' && e.name === 'process_name').map((e) => ({ pid: e.pid, name: String(e.args?.name) }));
  const sender = procs.find((p) => p.name.startsWith('sender'));
  const receiver = procs.find((p) => p.name.startsWith('receiver'));
  t.truthy(sender);
  t.truthy(receiver);
  t.not(sender?.pid, receiver?.pid);
  t.regex(sender?.name ?? '', /pid 100, node a/);
  const phases = new Set(ev.map((e) => e.ph));
  for (const ph of ['B', 'E', 'X', 'b', 'e', 's', 'f', 'C', 'M', 'i'] as const) t.true(phases.has(ph), `phase ${ph} present`);
  const maxTs = Math.max(...ev.map((e) => e.ts));
  t.true(maxTs > 1 && maxTs < sim.now() / 1000 + 1, `max ts ${maxTs} µs for ${sim.now()} ns`);
  const flows = await checkFlows(t, ev, 'two nodes');
  t.true(flows.fault > 0);
  t.true(flows.invalidation > 0);
});

test('same seed, same trace, byte for byte; a trace of another seed differs', (t) => {
  const a = JSON.stringify(traceOf('odp-swap-storm', { seed: 5 }).events);
  t.is(a, JSON.stringify(traceOf('odp-swap-storm', { seed: 5 }).events));
  t.not(a, JSON.stringify(traceOf('odp-swap-storm', { seed: 1 }).events));
});
