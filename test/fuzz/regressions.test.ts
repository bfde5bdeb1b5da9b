/**
 * Command lists the fuzzer found against the reference strategies while it was being
 * built: each exposed a race in the kernel model (fixed in kernel-model, named in the
 * file's `why`). Each must still reach its race, shown by its witness
 * (corpus-witnesses.ts: an entry that no longer gets there passes trivially), and stay
 * violation-free.
 */
import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TraceRecord } from '../../kernel-model/sim/index.ts';
import { parseReproducer } from '../../scenarios/fuzz/cli.ts';
import { failingPart, runTarget } from '../../scenarios/fuzz/fuzz.ts';
import { renderText } from '../../sanitizer/index.ts';
import { CORPUS_WITNESSES } from './corpus-witnesses.ts';

const dir = fileURLToPath(new URL('./corpus/', import.meta.url));
const names = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();

for (const name of names) {
  const text = readFileSync(dir + name, 'utf8');
  const why = (JSON.parse(text) as { why?: string }).why ?? '';
  test(`${name}: ${why}`, (t) => {
    const parsed = parseReproducer(text);
    if ('error' in parsed) return t.fail(parsed.error);
    t.is(parsed.target.kind, 'reference');
    const witness = CORPUS_WITNESSES[name];
    if (!witness) return t.fail(`${name} has no witness in test/fuzz/corpus-witnesses.ts (see test/fuzz/corpus/README.md)`);
    const { rep } = parsed;
    const records: TraceRecord[] = [];
    // The reproducer's run (replayReproducer's), its trace kept for the witness.
    const r = runTarget(parsed.target, rep.commands, {
      seed: rep.simSeed, profile: rep.profile, preempt: rep.preempt, frames: rep.frames,
      commandPhaseNs: rep.commandPhaseNs, epilogueNs: rep.epilogueNs, maxEvents: rep.maxEvents,
      ...(rep.schedule ? { schedule: rep.schedule } : {}),
      observe: (sim) => { sim.trace$.subscribe((rec) => records.push(rec)); },
    });
    t.true(witness.holds(records), `the run no longer reaches its race: ${witness.describe}`);
    const part = failingPart(parsed.target, r);
    t.is(part, null, part ? `${part.failure ?? ''}\n${renderText(part.violations)}` : '');
  });
}

test('every witness names a corpus entry (none left behind by a rename)', (t) => {
  t.deepEqual(Object.keys(CORPUS_WITNESSES).filter((n) => !names.includes(n)), []);
});
