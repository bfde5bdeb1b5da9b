/**
 * User modules for the bring-your-own-driver tests, written into a temporary directory
 * outside the repository (as a driver author's project would be), importing notifier-lab
 * by absolute path.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
const LAB = join(REPO, 'index.ts');

/** A faultable strategy: the reference ODP one under the user's name, with its own parameters. */
export const GOOD = `
import { defineStrategy, odpStrategy, z } from '${LAB}';
export default defineStrategy({
  name: 'my-odp', nic: 'faultable',
  params: z.object({ boom: z.boolean().default(false), pages: z.number().int().min(1).max(8).default(2) }),
  strategy: (p, env) => {
    const inner = odpStrategy({ batching: env.batching, batchingName: env.batchingName });
    return {
      name: 'my-odp',
      *regMr(ctx, req) {
        if (p.boom) throw new Error('boom from the user strategy');
        return yield* inner.regMr(ctx, req);
      },
    };
  },
});
export const alsoMine = defineStrategy({ name: 'my-holdoff', nic: 'non-faultable', strategy: () => { throw new Error('never built'); } });
export const notAStrategy = { a: 1 };
`;

/** A batching policy of the user's: a count policy under another name. */
export const POLICY = `
import { defineBatchPolicy, countBatching, z } from '${LAB}';
export const pairs = defineBatchPolicy({
  name: 'pairs', params: z.object({ size: z.number().int().min(1).max(64).default(2) }),
  policy: (p) => countBatching(p.size),
});
`;

export function userDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'lab-user-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

/** A wrong user strategy: the reference ODP one whose invalidation zaps without a sync (driver/broken/zap-without-sync.ts). */
export const ZAPPER = `
import { defineStrategy } from '${LAB}';
import { zapWithoutSyncStrategy } from '${join(REPO, 'driver', 'broken', 'zap-without-sync.ts')}';
export const zapper = defineStrategy({ name: 'my-zapper', nic: 'faultable', strategy: () => zapWithoutSyncStrategy() });
`;
