/**
 * Issue 13 item 4: README.md's section "What the threads argued, replayed" is what
 * `npx tsx scenarios/compare/readme.ts --write` generates from a fresh run of each
 * comparison (its variants table and the seed stories' tables), byte for byte.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { currentSection, readmeSection, withSection } from '../../scenarios/compare/readme.ts';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

test('README section "What the threads argued, replayed" equals a fresh run of its comparisons (regenerate: npx tsx scenarios/compare/readme.ts --write)', (t) => {
  const now = currentSection(README);
  t.not(now, null, 'the section is in README.md');
  t.is(now, readmeSection());
});

test('the README section generator replaces the section in place and nothing else', (t) => {
  const doc = '# x\n\nintro\n\n## What the threads argued, replayed\n\nold text\n\n## The command line: `lab`\n\nrest\n';
  const out = withSection(doc, '## What the threads argued, replayed\n\nnew\n\n');
  t.is(out, '# x\n\nintro\n\n## What the threads argued, replayed\n\nnew\n\n## The command line: `lab`\n\nrest\n');
  t.is(withSection(out, '## What the threads argued, replayed\n\nnew\n\n'), out);
});
