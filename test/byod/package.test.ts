/**
 * The package face (issue 10 item 1), tested for real: `npm pack` the repository, install
 * the tarball into a fresh project outside it, and run a user strategy there through
 * `npx lab` (the bin shim registers tsx, now a dependency; the user's .ts file imports
 * `notifier-lab`). Bounded in time: npm uses its cache first (--prefer-offline).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './_fixtures.ts';

const run = (cmd: string, args: string[], cwd: string, timeout: number) =>
  spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout, env: { ...process.env, npm_config_loglevel: 'error', npm_config_fund: 'false', npm_config_audit: 'false' } });

test('npm pack, install into a fresh project outside the repository, npx lab runs the user strategy there', (t) => {
  t.timeout(420_000);
  const dir = mkdtempSync(join(tmpdir(), 'lab-pack-'));
  const pack = run('npm', ['pack', '--pack-destination', dir, '--silent'], REPO, 120_000);
  t.is(pack.status, 0, pack.stderr);
  const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  t.truthy(tgz);
  const proj = join(dir, 'proj');
  mkdirSync(proj);
  writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'my-driver', version: '1.0.0', private: true }));
  const install = run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, tgz!)], proj, 240_000);
  t.is(install.status, 0, install.stderr);
  writeFileSync(join(proj, 'mine.ts'), `
import { defineStrategy, odpStrategy, z } from 'notifier-lab';
export default defineStrategy({
  name: 'packed-odp', nic: 'faultable',
  params: z.object({ pages: z.number().int().min(1).default(2) }),
  strategy: (_p, env) => {
    const inner = odpStrategy({ batching: env.batching, batchingName: env.batchingName });
    return { name: 'packed-odp', regMr: (ctx, req) => inner.regMr(ctx, req) };
  },
});
`);
  const version = run('npx', ['--no-install', 'lab', '--version'], proj, 60_000);
  t.is(version.status, 0, version.stderr);
  t.is(version.stdout.trim(), '0.1.0');
  const r = run('npx', ['--no-install', 'lab', 'run', 'migration-meets-pin', '--driver', './mine.ts', '--set', 'strategy.pages=3'], proj, 120_000);
  t.is(r.status, 0, r.stdout.slice(-1500) + r.stderr);
  t.regex(r.stdout, /^== migration-meets-pin {2}\(profile linux-6\.x, driver packed-odp from mine\.ts in place of odp, seed 1\)/);
  t.regex(r.stdout, /outcome: ok/);
  t.is(r.stderr, '');
});
