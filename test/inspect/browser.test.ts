/**
 * The time-travel page in a real browser: Debian's chromium, headless, driven by
 * playwright-core. The page must work from a file with the network off (every request
 * other than the file itself is refused and counted), move to the first violation with the
 * keyboard and with the slider, and show in its state panel the stale translation that
 * violation reports. Under CI=true a missing browser fails; elsewhere the test is skipped
 * with the reason in its title.
 */
import test from 'ava';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { scenarioByName, type ScenarioDefinition } from '../../scenarios/index.ts';
import { buildHtmlPage, type PageData } from '../../scenarios/inspect/index.ts';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];
const present = existsSync(CHROMIUM);
const ci = process.env.CI === 'true';
const browserTest = present || ci ? test : test.skip;
const title = present || ci
  ? 'the time-travel page of deferred-invalidation-reuse shows, at its first violation, the stale translation it reports (seed 004)'
  : `browser test skipped: ${CHROMIUM} not found (apt-get install -y chromium; .ci/run installs it)`;

browserTest(title, async (t) => {
  t.true(existsSync(CHROMIUM), `${CHROMIUM} is missing under CI=true: .ci/run should have installed it`);
  const def = scenarioByName('deferred-invalidation-reuse') as ScenarioDefinition;
  const page = buildHtmlPage({ kind: 'scenario', name: def.name, def, seed: 1, profile: def.defaultProfile, driver: def.defaultDriver, params: {} });
  const dir = mkdtempSync(join(tmpdir(), 'notifier-lab-browser-'));
  const file = join(dir, 'page.html');
  writeFileSync(file, page.html);
  const data = JSON.parse(/<script type="application\/json" id="data">([\s\S]*?)<\/script>/.exec(page.html)![1]!) as PageData;
  const first = data.violations[0]!;
  t.is(first.id, 'stale-translation');
  // What the violation reports: which NIC, key, page and address, and the frame the device maps.
  const m = /^(\S+) key (0x[0-9a-f]+) \((\S+)\) page (\d+) at (0x[0-9a-f]+) of mm(\d+): the device maps frame (\d+) (read-write|read-only)/.exec(first.message);
  t.truthy(m, first.message);
  const [, nic, key, strategy, index, va, mm, frame, perm] = m!;
  const firstSnap = data.snaps.findIndex((s) => s[2] === 1);
  t.true(firstSnap > 0);

  const context = await chromium.launchPersistentContext(join(dir, 'profile'), { executablePath: CHROMIUM, headless: true, args: FLAGS });
  try {
    const refused: string[] = [];
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith('file:')) return route.continue();
      refused.push(url);
      return route.abort();
    });
    const tab = await context.newPage();
    const errors: string[] = [];
    tab.on('pageerror', (e) => errors.push(e.message));
    await tab.goto(pathToFileURL(file).href);
    await tab.waitForSelector('body[data-ready="true"]');
    t.is(await tab.getAttribute('body', 'data-instant'), '0');

    const expectStale = async (how: string) => {
      t.is(await tab.getAttribute('body', 'data-instant'), String(firstSnap), how);
      const vmsg = await tab.textContent('#vmsg');
      t.true(vmsg?.includes(`violation 1 [error] stale-translation: ${first.message}`), `${how}: ${vmsg}`);
      const stale = await tab.locator('#state .stale').allTextContents();
      t.true(stale.some((l) => l.includes(`STALE: ${nic} key ${key} (${strategy}) page ${index} at ${va} of mm${mm}`)), `${how}: ${stale.join(' | ')}`);
      const state = (await tab.textContent('#state')) ?? '';
      t.true(state.includes(`device maps: frame ${frame} ${perm}`), how);
      t.true(state.includes(`frame ${frame}: refcount`), `${how}: the page the device points at`);
      t.regex(state, /CPU maps: +nothing \(PTE none\)/, how);
    };

    // Keyboard navigation between violations.
    await tab.keyboard.press(']');
    await expectStale('after ]');
    await tab.keyboard.press('n');
    t.true((await tab.textContent('#vmsg'))?.startsWith('violation 2 '));
    await tab.keyboard.press('[');
    await expectStale('after n then [');

    // The slider: back to the start, then moved to the first violation's instant.
    await tab.locator('#slider').focus();
    await tab.keyboard.press('Home');
    t.is(await tab.getAttribute('body', 'data-instant'), '0');
    t.is((await tab.textContent('#vmsg')) ?? '', '');
    await tab.locator('#slider').fill(String(firstSnap));
    await expectStale('slider');

    t.deepEqual(errors, []);
    t.deepEqual(refused, [], 'the page fetched nothing from the network');
  } finally {
    await context.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
