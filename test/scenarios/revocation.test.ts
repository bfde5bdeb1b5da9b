/**
 * The userspace revocation demos (scenarios/revocation.ts; rdma F1 to F4, G3, G5 to G7, H3;
 * user pains (d) 9 and 10): every case runs clean (revocation is legal, not a sanitizer
 * violation) with three applications side by side; the one that gives up never comes back,
 * the one that re-registers comes back after an error completion, and the one that listens
 * to the opt-in MR event does no worse, with fewer errors where the event comes in time.
 */
import test, { type ExecutionContext } from 'ava';
import { runScenario, type ScenarioDefinition, type ScenarioReport } from '../../scenarios/scenario.ts';
import { parseSets } from '../../scenarios/params.ts';
import {
  APP_BEHAVIOURS, REVOCATION_SCENARIOS, revokeDmabuf, revokeHoldoffTimeout, revokeMunmapHoldoff, type AppBehaviour,
} from '../../scenarios/revocation.ts';

function run(def: ScenarioDefinition, driver: string, sets: readonly string[] = [], seed = 1): ScenarioReport {
  const p = parseSets(sets, def.params ?? []);
  if ('error' in p) throw new Error(p.error);
  return runScenario(def, { seed, profile: def.defaultProfile, driver, params: p.values });
}

/** Each case runs once (with the three behaviours side by side) and is shared by the tests. */
const memo = new Map<string, ScenarioReport>();
function report(def: ScenarioDefinition, driver = def.defaultDriver): ScenarioReport {
  const key = `${def.name}/${driver}`;
  let r = memo.get(key);
  if (!r) memo.set(key, (r = run(def, driver)));
  return r;
}

interface LaneFigures {
  outOfService: number | 'never' | 'no revocation';
  errors: number;
  firstError: string;
  reregistrations: number;
  reconnects: number;
}

function lane(t: ExecutionContext, r: ScenarioReport, b: AppBehaviour): LaneFigures {
  const get = (k: string) => {
    const v = r.extra[`${b}: ${k}`];
    t.not(v, undefined, `figure '${b}: ${k}' in ${r.scenario}`);
    return v as number | string;
  };
  const oos = get('out of service (µs)');
  return {
    outOfService: typeof oos === 'number' ? oos : (oos as 'never' | 'no revocation'),
    errors: get('error completions') as number,
    firstError: get('first error') as string,
    reregistrations: get('re-registrations') as number,
    reconnects: get('reconnects') as number,
  };
}

const CASES: readonly [ScenarioDefinition, string][] = [
  [revokeDmabuf, 'pinned-importer'],
  [revokeDmabuf, 'dynamic-importer'],
  [revokeHoldoffTimeout, 'holdoff'],
  [revokeMunmapHoldoff, 'holdoff'],
];

test('the catalogue entry lists the three demos, each with the app.behaviour and app.reconnectNs parameters', (t) => {
  t.deepEqual(REVOCATION_SCENARIOS.map((d) => d.name), ['revoke-dmabuf', 'revoke-holdoff-timeout', 'revoke-munmap-holdoff']);
  for (const d of REVOCATION_SCENARIOS) {
    t.deepEqual((d.params ?? []).map((p) => p.key), ['app.behaviour', 'app.reconnectNs']);
    t.true(d.drivers.includes(d.defaultDriver));
  }
  const bad = parseSets(['app.behaviour=retry'], revokeDmabuf.params);
  t.true('error' in bad && /bad value for app\.behaviour/.test(bad.error));
});

for (const [def, driver] of CASES) {
  test(`${def.name} (${driver}): runs to the end with outcome ok and no violation; every behaviour has its figures`, (t) => {
    const r = report(def, driver);
    t.is(r.outcome.run, 'task-done', r.outcome.failure);
    t.true(r.outcome.ok, JSON.stringify(r.outcome));
    t.deepEqual(r.outcome.expected, []);
    t.deepEqual(r.outcome.seen, {}, r.violations.map((v) => `${v.id}: ${v.message}`).join('\n'));
    for (const b of APP_BEHAVIOURS) lane(t, r, b);
    t.true(r.narrative.some((l) => l.text.startsWith('comparison: ')));
  });
}

const REVOKING: readonly [ScenarioDefinition, string, string][] = [
  [revokeDmabuf, 'pinned-importer', 'IBV_WC_LOC_PROT_ERR'],
  [revokeHoldoffTimeout, 'holdoff', 'IBV_WC_WR_FLUSH_ERR'],
  [revokeMunmapHoldoff, 'holdoff', 'IBV_WC_LOC_PROT_ERR'],
];

for (const [def, driver, status] of REVOKING) {
  test(`${def.name} (${driver}): give-up never resumes; reregister resumes after an error completion (${status}); mr-event does no worse`, (t) => {
    const r = report(def, driver);
    const giveUp = lane(t, r, 'give-up');
    const rereg = lane(t, r, 'reregister');
    const event = lane(t, r, 'mr-event');
    t.is(giveUp.outOfService, 'never');
    t.true(giveUp.errors >= 1);
    t.is(giveUp.firstError, status);
    t.is(giveUp.reregistrations, 0);

    t.is(typeof rereg.outOfService, 'number', 'reregister is back in service');
    t.true(rereg.errors >= 1, 'after at least one error completion');
    t.is(rereg.firstError, status);
    t.true(rereg.reregistrations >= 1);
    t.true(rereg.reconnects >= 1, 'the QP was in ERROR: it reconnected');

    t.is(typeof event.outOfService, 'number', 'mr-event is back in service');
    t.true(event.errors <= rereg.errors, `mr-event saw ${event.errors} error completions, reregister ${rereg.errors}`);
    t.true((event.outOfService as number) <= (rereg.outOfService as number), `mr-event out of service ${event.outOfService} µs, reregister ${rereg.outOfService} µs`);
  });
}

test('revoke-dmabuf (pinned-importer): today\'s move fails with EBUSY; under the 2026 proposal the mr-event app re-registers before posting and avoids the error and the reconnect', (t) => {
  const r = report(revokeDmabuf, 'pinned-importer');
  t.is(r.extra['move today'], 'EBUSY');
  t.true(r.narrative.some((l) => /2026 REVOCABLE-IMPORTER PROPOSAL/.test(l.text)), 'labelled as the proposal');
  const event = lane(t, r, 'mr-event');
  const rereg = lane(t, r, 'reregister');
  t.is(event.errors, 0);
  t.is(event.reconnects, 0);
  t.is(event.reregistrations, 1);
  t.true((event.outOfService as number) < (rereg.outOfService as number));
  t.true(r.narrative.some((l) => /\[mr-event\] heard mr:revoked/.test(l.text)));
});

test('revoke-dmabuf (dynamic-importer): the same move under ODP is only a refault (rdma G3): no error completion, no re-registration, every app stays in service', (t) => {
  const r = report(revokeDmabuf, 'dynamic-importer');
  t.is(r.extra['move today'], 'ok');
  const lanes = APP_BEHAVIOURS.map((b) => lane(t, r, b));
  for (const l of lanes) {
    t.is(l.errors, 0);
    t.is(l.reregistrations, 0);
    t.is(typeof l.outOfService, 'number');
  }
  t.is(new Set(lanes.map((l) => l.outOfService)).size, 1, 'the three apps are alike: nothing to react to');
  t.true(r.figures.counters.faults >= 2 * lanes.length, 'each MR faulted in once at first use and once after the move');
});

test('revoke-holdoff-timeout: kswapd waited the whole holdoff timeout, then the MR was revoked; the event cannot save the WRITE in flight', (t) => {
  const r = report(revokeHoldoffTimeout, 'holdoff');
  t.is(r.extra['holdoff wait (µs)'], 10_000, 'the default holdoff.timeoutNs');
  t.true((r.extra['kswapd reclaimed (pages)'] as number) > 0);
  const event = lane(t, r, 'mr-event');
  const rereg = lane(t, r, 'reregister');
  t.is(event.errors, rereg.errors);
  t.is(event.outOfService, rereg.outOfService);
  t.true((rereg.outOfService as number) > 10_000, 'out of service for longer than the holdoff itself');
});

test('revoke-munmap-holdoff: the munmap waited for the WRITE in flight; mr-event heard mr:invalidated, found its buffer gone and replaced it with no error', (t) => {
  const r = report(revokeMunmapHoldoff, 'holdoff');
  t.true((r.extra['holdoff wait (µs)'] as number) > 0, 'the munmap came during a WRITE');
  const event = lane(t, r, 'mr-event');
  t.is(event.errors, 0);
  t.is(event.reconnects, 0);
  t.true(r.narrative.some((l) => /\[mr-event\] heard mr:invalidated .* unmapped/.test(l.text)));
});

test('app.behaviour=reregister alone gives the figures the side-by-side run gives it (the apps do not disturb each other)', (t) => {
  const alone = run(revokeMunmapHoldoff, 'holdoff', ['app.behaviour=reregister']);
  t.true(alone.outcome.ok);
  t.is(alone.extra['give-up: out of service (µs)'], undefined);
  t.deepEqual(lane(t, alone, 'reregister'), lane(t, report(revokeMunmapHoldoff, 'holdoff'), 'reregister'));
});

for (const [def, driver] of CASES) {
  test(`${def.name} (${driver}): same seed, identical JSON report`, (t) => {
    const again = run(def, driver);
    t.is(JSON.stringify(again), JSON.stringify(report(def, driver)));
  });
}
