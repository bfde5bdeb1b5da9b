/**
 * `lab calibrate` (DESIGN "Costs and calibration"): every published figure is reproduced
 * by the model measured end to end, within 20% or inside the published range; assumed
 * parameters are listed apart. A change that breaks calibration fails here.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { calibrate, measureFault } from '../../scenarios/calibrate/index.ts';
import { CAPABILITY_PRESETS } from '../../device/index.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

test('lab calibrate --json: the ASPLOS 2017 NIC faults (4 KiB, 4 MiB) and NP-RDMA software faults are reproduced; assumed parameters listed apart', (t) => {
  const r = spawnSync(process.execPath, [join(REPO, 'bin', 'lab.js'), 'calibrate', '--json'], { encoding: 'utf8', cwd: REPO });
  t.is(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as ReturnType<typeof calibrate>;
  t.true(report.ok);
  t.is(report.calibrated.length, 4);
  for (const c of report.calibrated) {
    t.true(c.reproduced, `${c.figure}: model ${c.model} ns against ${JSON.stringify(c.published)}`);
    if (Array.isArray(c.published)) t.true(c.model >= c.published[0] && c.model <= c.published[1]);
    else t.true(Math.abs(c.model / c.published - 1) <= 0.2);
  }
  // Slope: a 4 MiB fault costs more than a 4 KiB one by the per-page work.
  t.true(report.calibrated[1]!.model - report.calibrated[0]!.model > 100_000);
  t.true(report.assumed.length > 10);
  t.true(report.assumed.every((a) => a.source.startsWith('assumed')));
  t.false(report.assumed.some((a) => a.key === 'cost.faultResumeNs' || a.key === 'cpu.inlineMissNs' || a.key === 'cpu.swapInIoNs'), 'calibrated parameters are not listed as assumed');
});

test('calibration catches a broken cost: without the resume command\'s share the NIC fault is far from 220 us and the report says so', (t) => {
  const r = calibrate({ faultResumeNs: 2_000 });
  t.false(r.ok);
  t.false(r.calibrated[0]!.reproduced);
  t.true(r.calibrated[0]!.model < 50_000);
  // An inline (rxe) miss pays no event-queue cost at all: the resume share does not touch it.
  t.true(r.calibrated[2]!.reproduced);
});

test('the NIC fault is charged by the device and the odp strategy: the driver work item counts', (t) => {
  const base = measureFault(CAPABILITY_PRESETS.mlx5, 4096);
  const more = measureFault(CAPABILITY_PRESETS.mlx5, 4096, false, {}, { odpFaultWorkNs: 110_000 });
  t.is(more - base, 100_000);
});
