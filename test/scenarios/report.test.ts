import test from 'ava';
import { readFileSync } from 'node:fs';
import { Simulation, MADV_DONTNEED } from '../../kernel-model/index.ts';
import { Fabric, MLX5_ODP_CAPS, IBV_ACCESS_ON_DEMAND, IBV_WR_RDMA_WRITE, IBV_WC_SUCCESS } from '../../device/index.ts';
import { createRdmaNode, odpStrategy, pinnedStrategy } from '../../driver/index.ts';
import { runScenario } from '../../scenarios/scenario.ts';
import { parseSets } from '../../scenarios/params.ts';
import { scenarioReportSchema, reportJsonSchema } from '../../scenarios/report-schema.ts';
import { PerfettoTrace, type ChromeTraceEvent } from '../../scenarios/perfetto.ts';
import { gupBiasFalsePositive } from '../../scenarios/gup-bias-false-positive.ts';
import { ALL_ACCESS, P, connectRc, completions, mapAnon, openApp, regOk, store, pattern } from '../../scenarios/app.ts';

const defaults = () => {
  const p = parseSets([]);
  if ('error' in p) throw new Error(p.error);
  return p.values;
};

test('--json: a run report matches the documented schema, and report.schema.json is the schema generated from it', (t) => {
  const r = runScenario(gupBiasFalsePositive, { seed: 3, profile: 'linux-6.x', driver: 'pinned', params: defaults() });
  const parsed = scenarioReportSchema.safeParse(JSON.parse(JSON.stringify(r)));
  t.true(parsed.success, parsed.success ? '' : JSON.stringify(parsed.error.issues.slice(0, 3)));
  const committed = JSON.parse(readFileSync(new URL('../../scenarios/report.schema.json', import.meta.url), 'utf8'));
  t.deepEqual(committed, JSON.parse(JSON.stringify(reportJsonSchema())));
});

test('--json: a report missing a documented field is rejected by the schema', (t) => {
  const r = JSON.parse(JSON.stringify(runScenario(gupBiasFalsePositive, { seed: 3, profile: 'linux-6.x', driver: 'pinned', params: defaults() })));
  delete r.outcome.ok;
  t.false(scenarioReportSchema.safeParse(r).success);
});

test('same seed, same report, byte for byte', (t) => {
  const a = JSON.stringify(runScenario(gupBiasFalsePositive, { seed: 9, profile: 'linux-6.x', driver: 'pinned', params: defaults() }));
  const b = JSON.stringify(runScenario(gupBiasFalsePositive, { seed: 9, profile: 'linux-6.x', driver: 'pinned', params: defaults() }));
  t.is(a, b);
});

test('--trace: Chrome trace JSON with metadata, µs timestamps, properly nested spans per thread, fault async slices and flows', (t) => {
  const sim = new Simulation({ seed: 2 });
  const fabric = new Fabric(sim);
  const mk = (name: string) => createRdmaNode(sim, fabric, { name, nic: { caps: { odp: MLX5_ODP_CAPS } }, device: { nonOdp: pinnedStrategy(), odp: odpStrategy() } });
  const na = mk('a');
  const nb = mk('b');
  const trace = new PerfettoTrace(sim, [na.kernel, nb.kernel], [na.nic, nb.nic]);
  const a = openApp(na, na.kernel.createProcess('sender'));
  const b = openApp(nb, nb.kernel.createProcess('receiver'));
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
  const doc = JSON.parse(trace.toJson()) as { traceEvents: ChromeTraceEvent[] };
  const ev = doc.traceEvents;
  t.true(ev.some((e) => e.ph === 'M' && e.name === 'process_name'));
  t.true(ev.some((e) => e.ph === 'M' && e.name === 'thread_name'));
  const phases = new Set(ev.map((e) => e.ph));
  for (const ph of ['B', 'E', 'X', 'b', 'e', 's', 'f', 'C', 'M'] as const) t.true(phases.has(ph), `phase ${ph} present`);
  // Timestamps are microseconds: the whole run is a few ms of virtual time.
  const maxTs = Math.max(...ev.map((e) => e.ts));
  t.true(maxTs > 1 && maxTs < sim.now() / 1000 + 1, `max ts ${maxTs} µs for ${sim.now()} ns`);
  // B/E nest per (pid, tid), E names the open B, and time never goes back within a thread.
  const stacks = new Map<string, { name: string; ts: number }[]>();
  for (const e of ev) {
    if (e.ph !== 'B' && e.ph !== 'E') continue;
    const key = `${e.pid}/${e.tid}`;
    const s = stacks.get(key) ?? [];
    stacks.set(key, s);
    if (e.ph === 'B') s.push({ name: e.name, ts: e.ts });
    else {
      const top = s.pop();
      t.truthy(top, `E without B on ${key}`);
      t.is(top?.name, e.name);
      t.true((top?.ts ?? 0) <= e.ts);
    }
  }
  for (const [key, s] of stacks) t.is(s.length, 0, `unclosed spans on ${key}`);
  // Every fault's async slice begins and ends; every flow has both ends.
  const count = (ph: string, cat: string) => ev.filter((e) => e.ph === ph && e.cat === cat).length;
  t.true(count('b', 'nic-fault') > 0);
  t.is(count('b', 'nic-fault'), count('e', 'nic-fault'));
  t.is(ev.filter((e) => e.ph === 's').length, ev.filter((e) => e.ph === 'f').length);
  t.true(ev.some((e) => e.ph === 's' && e.name === 'invalidation → sync'));
});
