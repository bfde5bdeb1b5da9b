/**
 * What changed between two instants: the two snapshots rendered as blocks (render.ts),
 * compared block by block as sequences of lines (jsdiff's array diff, an O(ND) Myers diff),
 * so a PTE run that split in two shows as one line removed and two added.
 */
import { diffArrays } from 'diff';
import { SECTIONS, fmtNs, type Section, type WorldSnapshot } from './snapshot.ts';
import { snapshotBlocks } from './render.ts';

export interface BlockChange {
  id: string;
  title: string;
  removed: string[];
  added: string[];
  /** The block's lines in order, each prefixed '-', '+' or ' ' (context elided). */
  lines: string[];
}

export function diffSnapshots(a: WorldSnapshot, b: WorldSnapshot, what: ReadonlySet<Section> = new Set(SECTIONS)): BlockChange[] {
  const before = new Map(snapshotBlocks(a).map((x) => [x.id, x]));
  const after = snapshotBlocks(b);
  const ids = [...new Set([...after.map((x) => x.id), ...before.keys()])];
  const afterById = new Map(after.map((x) => [x.id, x]));
  const out: BlockChange[] = [];
  for (const id of ids) {
    const x = before.get(id);
    const y = afterById.get(id);
    const section = (y ?? x)?.section as Section;
    if (!what.has(section)) continue;
    const parts = diffArrays(x?.lines ?? [], y?.lines ?? []);
    const removed: string[] = [];
    const added: string[] = [];
    const lines: string[] = [];
    for (const p of parts) {
      if (p.removed) for (const l of p.value) { removed.push(l); lines.push(`- ${l}`); }
      else if (p.added) for (const l of p.value) { added.push(l); lines.push(`+ ${l}`); }
    }
    if (removed.length || added.length) out.push({ id, title: (y ?? x)?.title ?? id, removed, added, lines });
  }
  return out;
}

export function renderDiff(a: WorldSnapshot, b: WorldSnapshot, name: string, what: ReadonlySet<Section>): string[] {
  const changes = diffSnapshots(a, b, what);
  const when = (s: WorldSnapshot) => (s.at.startsWith('time ') ? s.at : `${s.at} (t = ${fmtNs(s.t)})`);
  const out = [`== ${name}: what changed from ${when(a)} to ${when(b)}`];
  if (changes.length === 0) out.push('', 'nothing changed in the chosen sections');
  for (const c of changes) {
    out.push('', `-- ${c.title}: ${c.removed.length} line${c.removed.length === 1 ? '' : 's'} removed, ${c.added.length} added`);
    for (const l of c.lines) out.push(`  ${l}`);
  }
  return out;
}
