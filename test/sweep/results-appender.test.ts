/**
 * results.jsonl is written in batches (issue 22 item 5: "results appended by the parent in
 * batches with an fsync per batch"): nothing reaches the file until a batch is full, its
 * time is up, or the appender is closed; then every line of the batch, in order.
 */
import test from 'ava';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ResultsAppender } from '../../scenarios/sweep/results.ts';

const TMP = mkdtempSync(join(tmpdir(), 'sweep-appender-'));
const read = (f: string) => readFileSync(f, 'utf8');

test('a full batch is written at once, in order; close writes the rest', (t) => {
  const f = join(TMP, 'full.jsonl');
  const a = new ResultsAppender(f, { batchLines: 3, batchMs: 60_000 });
  a.append('1');
  a.append('2');
  t.is(read(f), '', 'two of three: nothing written yet');
  a.append('3');
  t.is(read(f), '1\n2\n3\n');
  a.append('4');
  t.is(read(f), '1\n2\n3\n');
  a.close();
  t.is(read(f), '1\n2\n3\n4\n', 'close writes the partial batch');
  t.throws(() => a.append('5'), { message: 'results file closed' });
});

test('a batch that does not fill is written when its time is up', async (t) => {
  const f = join(TMP, 'timed.jsonl');
  const a = new ResultsAppender(f, { batchLines: 100, batchMs: 30 });
  a.append('x');
  t.is(read(f), '');
  await new Promise((r) => setTimeout(r, 200));
  t.is(read(f), 'x\n');
  a.close();
  t.is(read(f), 'x\n');
});

test('by default every line is written as it comes', (t) => {
  const f = join(TMP, 'each.jsonl');
  const a = new ResultsAppender(f);
  a.append('a');
  t.is(read(f), 'a\n');
  a.close();
});
