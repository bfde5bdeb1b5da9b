import { MADV_PAGEOUT, PROFILES, Simulation, type Co } from '../../kernel-model/index.ts';
import { CPU_COST_SOURCES, DEFAULT_CPU_COSTS, type CpuCosts } from '../../kernel-model/index.ts';
import {
  CAPABILITY_PRESETS, COST_MODEL_SOURCES, DEFAULT_COSTS, Fabric, IBV_ACCESS_ON_DEMAND, IBV_WC_SUCCESS, type CostModel, type NicCapabilities,
} from '../../device/index.ts';
import { createRdmaNode, odpStrategy, pinnedStrategy } from '../../driver/index.ts';
import { ALL_ACCESS, P, connectRc, mapAnon, must, openApp, pattern, regOk, store } from '../app.ts';
import { rdmaWrite } from '../deferred-invalidation-reuse.ts';

/**
 * `lab calibrate` (DESIGN "Costs and calibration"): every published figure the cost model
 * is calibrated to, measured on the model end to end, beside its source. Only published
 * figures count as calibrated; the parameters whose default is assumed are listed apart.
 *
 * Each figure is measured the way its source measured it, as far as the model can:
 * - a NIC (mlx5, event-queue) minor page fault: an RDMA WRITE from a fresh ODP MR whose
 *   pages are resident on the CPU side but not yet mapped in the device, the message's
 *   whole SGE one fault; the figure is the requester's stall, from the faulting access to
 *   the queue running again (report, interrupt, the driver's work item, hmm_range_fault,
 *   the DMA mapping, the UMR, the resume);
 * - a software minor fault: the same on the rxe preset, which resolves misses inline;
 * - a software major fault: the same with the page swapped out first (MADV_PAGEOUT).
 */
export interface CalibrationRow {
  figure: string;
  source: string;
  /** A point figure (ns), or a published range [low, high]. */
  published: number | [number, number];
  model: number;
  /** model / published, for a point figure. */
  ratio: number | null;
  /** Within 20% of a point figure, or inside the range. */
  reproduced: boolean;
}

export interface AssumedParameter {
  key: string;
  value: number;
  source: string;
}

export interface CalibrationReport {
  calibrated: CalibrationRow[];
  /** Parameters whose default is assumed (no published figure). */
  assumed: AssumedParameter[];
  ok: boolean;
}

const ASPLOS = 'Lesokhin et al., "Page Fault Support for Network Controllers", ASPLOS 2017 (ConnectX-4; second-hand, rdma (c))';
const NPRDMA = 'NP-RDMA, arXiv 2310.11062 (2023)';
/** How close a point figure must be to count as reproduced. */
export const CALIBRATION_TOLERANCE = 0.2;

/**
 * The stall of one NIC fault taken by an RDMA WRITE of `bytes` from a fresh ODP MR on a
 * device with `caps`; with `swapped`, its page is swapped out first (a major fault).
 */
export function measureFault(caps: Partial<NicCapabilities>, bytes: number, swapped = false, costs: Partial<CostModel> = {}, cpuCosts: Partial<CpuCosts> = {}): number {
  const sim = new Simulation({ seed: 1 });
  const fabric = new Fabric(sim);
  const profile = PROFILES['linux-6.x'];
  const pages = Math.ceil(bytes / P);
  const frames = Math.max(16_384, 4 * pages + 4096);
  const host = createRdmaNode(sim, fabric, { name: 'host', kernel: { profile, frames, cpuCosts }, nic: { caps, costs }, device: { nonOdp: pinnedStrategy(), odp: odpStrategy() } });
  const peerNode = createRdmaNode(sim, fabric, { name: 'peer', kernel: { profile, frames }, nic: { costs }, device: { nonOdp: pinnedStrategy() } });
  const app = openApp(host, host.kernel.createProcess('app'));
  const peer = openApp(peerNode, peerNode.kernel.createProcess('sink'));
  let stall = -1;
  const main = app.p.spawnThread('calibrate', function* (): Co {
    const [qa] = connectRc(app, peer);
    const buf = yield* mapAnon(app, pages);
    // Registered before the pages exist: the registration snapshot maps nothing (rdma A4).
    const mr = must(yield* app.ctx.regMr(app.pd, buf, pages * P, ALL_ACCESS | IBV_ACCESS_ON_DEMAND), 'reg_mr');
    // The CPU writes them: resident on the CPU side, absent in the device (a minor NIC fault).
    yield* store(app, buf, pattern(1, pages * P));
    if (swapped) must(yield* app.p.madvise(buf, pages * P, MADV_PAGEOUT), 'madvise(PAGEOUT)');
    const dst = yield* mapAnon(peer, pages);
    const dmr = yield* regOk(peer, dst, pages * P);
    const before = qa.stats.faultStallNs;
    const faults = qa.stats.faults;
    const wc = yield* rdmaWrite(app, qa, 1, buf, mr.lkey, dst, dmr.rkey, bytes);
    if (wc.status !== IBV_WC_SUCCESS) throw new Error(`calibration WRITE completed with status ${wc.status}`);
    if (qa.stats.faults - faults !== 1) throw new Error(`calibration WRITE took ${qa.stats.faults - faults} faults, not 1`);
    stall = qa.stats.faultStallNs - before;
  });
  const out = sim.run({ task: main, untilNs: 10_000_000_000 });
  if (out.failure !== undefined) throw new Error(`calibration run failed: ${out.failure.split('\n')[0]}`);
  if (stall < 0) throw new Error(`calibration run did not finish (${out.reason})`);
  return stall;
}

function row(figure: string, source: string, published: number | [number, number], model: number): CalibrationRow {
  if (Array.isArray(published)) {
    return { figure, source, published, model, ratio: null, reproduced: model >= published[0] && model <= published[1] };
  }
  const ratio = model / published;
  return { figure, source, published, model, ratio, reproduced: Math.abs(ratio - 1) <= CALIBRATION_TOLERANCE };
}

/** Measure every calibrated figure on the model (with optional overrides of the defaults). */
export function calibrate(costs: Partial<CostModel> = {}, cpuCosts: Partial<CpuCosts> = {}): CalibrationReport {
  const mlx5 = CAPABILITY_PRESETS.mlx5;
  const rxe = CAPABILITY_PRESETS.rxe;
  const calibrated = [
    row('NIC minor page fault, 4 KiB message (mlx5)', ASPLOS, 220_000, measureFault(mlx5, 4096, false, costs, cpuCosts)),
    row('NIC minor page fault, 4 MiB message (mlx5)', ASPLOS, 350_000, measureFault(mlx5, 4 << 20, false, costs, cpuCosts)),
    row('software minor fault (rxe, resolved inline)', NPRDMA, [3_500, 5_700], measureFault(rxe, 4096, false, costs, cpuCosts)),
    row('software major fault (rxe, page swapped out)', NPRDMA, 60_000, measureFault(rxe, 4096, true, costs, cpuCosts)),
  ];
  const assumed: AssumedParameter[] = [];
  for (const k of Object.keys(DEFAULT_COSTS) as (keyof CostModel)[]) {
    const src = COST_MODEL_SOURCES[k];
    if (src.startsWith('assumed')) assumed.push({ key: `cost.${k}`, value: costs[k] ?? DEFAULT_COSTS[k], source: src });
  }
  for (const k of Object.keys(DEFAULT_CPU_COSTS) as (keyof CpuCosts)[]) {
    const src = CPU_COST_SOURCES[k];
    if (src.startsWith('assumed')) assumed.push({ key: `cpu.${k}`, value: cpuCosts[k] ?? DEFAULT_CPU_COSTS[k], source: src });
  }
  return { calibrated, assumed, ok: calibrated.every((r) => r.reproduced) };
}

const us = (ns: number) => `${(ns / 1000).toFixed(ns < 10_000 ? 2 : 1)} µs`;

/** The report as text: the calibrated table, then the assumed parameters apart. */
export function renderCalibration(r: CalibrationReport): string[] {
  const lines = ['calibrated figures (model beside source; reproduced: within 20%, or inside the published range)', ''];
  const cells = r.calibrated.map((c) => [
    c.figure,
    Array.isArray(c.published) ? `${us(c.published[0])} to ${us(c.published[1])}` : `about ${us(c.published)}`,
    us(c.model),
    c.ratio === null ? (c.reproduced ? 'inside' : 'outside') : `${c.ratio.toFixed(2)}x`,
    c.reproduced ? 'yes' : 'NO',
  ]);
  const head = ['figure', 'published', 'model', 'ratio', 'reproduced'];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const fmt = (c: string[]) => c.map((x, i) => x.padEnd(widths[i] as number)).join('  ').trimEnd();
  lines.push(fmt(head), ...cells.map(fmt), '');
  lines.push('sources:');
  for (const s of [...new Set(r.calibrated.map((c) => c.source))]) lines.push(`  ${s}`);
  lines.push('', `assumed (no published figure; not calibrated): ${r.assumed.length} parameters`);
  for (const a of r.assumed) lines.push(`  ${a.key.padEnd(30)} ${String(a.value).padStart(8)}  ${a.source}`);
  lines.push('', r.ok ? 'every published figure is reproduced' : 'NOT CALIBRATED: a published figure is not reproduced');
  return lines;
}
