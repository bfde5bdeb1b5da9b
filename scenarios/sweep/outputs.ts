import { join } from 'node:path';
import { indexHtml } from './html.ts';
import { buildPlots, renderSvg } from './plots.ts';
import { writeFileAtomic } from './results.ts';
import type { SweepSpec } from './spec.ts';
import { summarize, summaryCsv, summaryJson, type SweepSummary } from './summarize.ts';
import type { PointResult } from './worker.ts';

/**
 * Write the summaries of a complete result set into `dir`: summary.csv, summary.json,
 * the SVG plots and index.html. Returns the files written (names relative to `dir`).
 */
export async function writeOutputs(dir: string, spec: SweepSpec, results: readonly PointResult[]): Promise<{ files: string[]; summary: SweepSummary }> {
  const summary = summarize(spec, results);
  const files: string[] = [];
  const put = (name: string, text: string) => {
    writeFileAtomic(join(dir, name), text);
    files.push(name);
  };
  put('summary.csv', summaryCsv(summary));
  put('summary.json', summaryJson(summary));
  const plots = buildPlots(summary);
  for (const p of plots) put(p.file, await renderSvg(p.spec));
  put('index.html', indexHtml(summary, plots, spec.description));
  return { files, summary };
}
