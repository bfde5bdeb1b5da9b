/**
 * Command lists the fuzzer found against the reference strategies while it was being
 * built: each exposed a race in the kernel model (fixed in kernel-model, named in the
 * file's `why`). They must stay violation-free.
 */
import test from 'ava';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseReproducer } from '../../scenarios/fuzz/cli.ts';
import { failingPart, replayReproducer } from '../../scenarios/fuzz/fuzz.ts';
import { renderText } from '../../sanitizer/index.ts';

const dir = fileURLToPath(new URL('./corpus/', import.meta.url));

for (const name of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
  const text = readFileSync(dir + name, 'utf8');
  const why = (JSON.parse(text) as { why?: string }).why ?? '';
  test(`${name}: ${why}`, (t) => {
    const parsed = parseReproducer(text);
    if ('error' in parsed) return t.fail(parsed.error);
    t.is(parsed.target.kind, 'reference');
    const r = replayReproducer(parsed.target, parsed.rep);
    const part = failingPart(parsed.target, r);
    t.is(part, null, part ? `${part.failure ?? ''}\n${renderText(part.violations)}` : '');
  });
}
