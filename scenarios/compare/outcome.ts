import { OUTCOME_LABELS, type OutcomeLabel, type VariantExpectation } from '../../kernel-model/index.ts';
import type { ProposalCosts } from './costs.ts';

/** Violations that mean the device and the kernel no longer agree on a page. */
const INCOHERENCE = ['dma-write-clean-page', 'pinned-incoherence', 'stale-translation', 'use-after-invalidate', 'dma-to-freed-page'];

/**
 * A run's outcome in the words `lab compare` speaks, worst first: `crash` (the 2018
 * set_page_dirty on a page without buffers), `stuck` (a wait that never ended, a deadlock,
 * a story cut by its bound), `data lost` (lost-write), `incoherence` (the device and the
 * kernel disagree on a page), else `ok`.
 */
export function outcomeLabels(seen: Readonly<Record<string, number>>, costs: ProposalCosts | undefined, cut: boolean): OutcomeLabel[] {
  const labels = new Set<OutcomeLabel>();
  if (seen['dirty-without-buffers']) labels.add('crash');
  if (cut || seen['deadlock'] || (costs?.stuck.length ?? 0) > 0) labels.add('stuck');
  if (seen['lost-write']) labels.add('data lost');
  if (INCOHERENCE.some((id) => seen[id])) labels.add('incoherence');
  if (labels.size === 0) labels.add('ok');
  return OUTCOME_LABELS.filter((l) => labels.has(l));
}

/** The cost figures an expectation may name, and the check each names (`>0`, `0`). */
export function costValue(costs: ProposalCosts, key: string): number | undefined {
  const v = (costs as unknown as Record<string, unknown>)[key];
  if (typeof v === 'number') return v;
  if (Array.isArray(v)) return v.length;
  if (v === null) return 0;
  return undefined;
}

/** What differs between a row and its expectation (empty: it matches). */
export function mismatches(exp: VariantExpectation, seen: Readonly<Record<string, number>>, labels: readonly OutcomeLabel[], costs: ProposalCosts): string[] {
  const out: string[] = [];
  const ids = Object.keys(seen).sort();
  const want = [...exp.violations].sort();
  const extra = ids.filter((id) => !want.includes(id));
  const missing = want.filter((id) => !seen[id]);
  if (extra.length) out.push(`unexpected ${extra.join(', ')}`);
  if (missing.length) out.push(`missing ${missing.join(', ')}`);
  const wantLabels = OUTCOME_LABELS.filter((l) => exp.outcome.includes(l));
  if (wantLabels.join('+') !== labels.join('+')) out.push(`outcome ${labels.join('+')}, expected ${wantLabels.join('+')}`);
  for (const [key, check] of Object.entries(exp.costs ?? {})) {
    const v = costValue(costs, key);
    if (v === undefined) out.push(`no cost figure '${key}'`);
    else if (check === '>0' && !(v > 0)) out.push(`${key} is ${v}, expected > 0`);
    else if (check === '0' && v !== 0) out.push(`${key} is ${v}, expected 0`);
  }
  return out;
}
