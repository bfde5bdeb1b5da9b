/**
 * Issue 14 item 10: the fuzzer's commands for the new invalidation sources (KSM merges,
 * NUMA balancing's scanner, allocation pressure that enters direct reclaim) are in the
 * default mix that CI's reference fuzz tests draw from, and each really does what it says
 * in a run against the reference ODP strategy, which stays clean.
 * Kernel sources: mm/ksm.c (ksm_do_scan), mm/page_alloc.c (__alloc_pages_direct_reclaim),
 * kernel/sched/fair.c (task_numa_work, through kernel-model/numa-balancing.ts).
 */
import test from 'ava';
import fc from 'fast-check';
import { DEFAULT_SHAPE, commandsArbitrary, type Command } from '../../scenarios/fuzz/commands.ts';
import { runConfigFor, runTarget } from '../../scenarios/fuzz/fuzz.ts';
import { fuzzTarget } from '../../scenarios/fuzz/targets.ts';
import { ksmStats, type Kernel } from '../../kernel-model/index.ts';
import { renderText } from '../../sanitizer/index.ts';

test('the default command mix draws merge, numa and pressure commands (so CI fuzzes the reference strategies with them)', (t) => {
  const lists = fc.sample(commandsArbitrary(DEFAULT_SHAPE), { numRuns: 200, seed: 7 });
  const ops = new Set<string>(lists.flat().map((c) => c.op));
  for (const op of ['merge', 'numa', 'pressure']) t.true(ops.has(op), op);
  const share = lists.filter((l) => l.some((c) => c.op === 'merge' || c.op === 'numa' || c.op === 'pressure')).length / lists.length;
  t.true(share > 0.3, `share of lists with a new source: ${share}`);
});

test('merge, pressure and numa commands against the reference odp strategy: KSM merges pages, allocations reclaim directly, NUMA balancing migrates, and nothing is violated', (t) => {
  const commands: Command[] = [
    { node: 0, proc: 0, thread: 0, at: 0, op: 'merge', slot: 0 },
    { node: 0, proc: 1, thread: 0, at: 0, op: 'merge', slot: 0 },
    { node: 1, proc: 0, thread: 1, at: 5, op: 'post', verb: 'write', mr: 0, peerMr: 0, page: 0, pages: 4 },
    { node: 0, at: 20, op: 'pressure', pages: 16, holdUs: 10 },
    { node: 0, proc: 0, thread: 1, at: 22, op: 'store', slot: 0, page: 6, byte: 9 },
    { node: 0, at: 30, op: 'numa', periodUs: 3 },
    { node: 1, proc: 0, thread: 1, at: 40, op: 'post', verb: 'read', mr: 0, peerMr: 0, page: 0, pages: 4 },
  ];
  const target = fuzzTarget('odp')!;
  let kernels: Kernel[] = [];
  let directReclaims = 0;
  let numaMigrations = 0;
  const config = {
    ...runConfigFor(target, {}, 1),
    observe: (sim: Parameters<NonNullable<ReturnType<typeof runConfigFor>['observe']>>[0], nodes: Parameters<NonNullable<ReturnType<typeof runConfigFor>['observe']>>[1]) => {
      kernels = nodes.map((n) => n.kernel);
      sim.trace$.subscribe((r) => {
        if (r.type === 'note' && r.text.startsWith('direct reclaim')) directReclaims++;
        if (r.type === 'migrate' && r.reason === 'numa') numaMigrations++;
      });
    },
  };
  const r = runTarget(target, commands, config);
  t.is(r.failure, undefined);
  t.deepEqual(r.violations.map((v) => v.id), [], renderText(r.violations));
  t.true(ksmStats(kernels[0]!).merged > 0, `KSM merges: ${JSON.stringify(ksmStats(kernels[0]!))}`);
  t.true(directReclaims > 0, 'direct reclaim ran');
  t.true(numaMigrations > 0, 'NUMA balancing migrated pages');
});
