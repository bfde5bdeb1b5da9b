/**
 * Broken ODP driver: event filtering that skips every MIGRATE event, not only its own.
 *
 * Real-world bug: hazard H6, wrong event filtering (kernel rule 22). An author who reads
 * lib/test_hmm.c's "ignore invalidation callbacks for device private pages since the
 * invalidation is handled as part of the migration process" as "MIGRATE never concerns
 * me" drops the owner test. But a MIGRATE started by another device (a GPU moving the
 * MR's pages into its memory with migrate_vma_setup) replaces the pages: the old ones are
 * freed at migrate_vma_finalize while the NIC still translates to them.
 *
 * Caught by: the device's accesses hit frames the CPU no longer maps (test/driver/
 * odp-migrate.test.ts); the data the peer receives is not the process's.
 *
 * The change: the reference's `affects` step (of `UmemOdp.invalidate`) says no to every
 * MIGRATE (it runs after set_seq, so the sequence protocol itself stays intact).
 */
import { MmuNotifyEvent, type MmuNotifierRange } from '../../kernel-model/index.ts';
import { UmemOdp } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class SkipEveryMigrateUmemOdp extends UmemOdp {
  protected override affects(range: MmuNotifierRange): boolean {
    // BUG: only MIGRATE events whose owner is this device may be skipped (rule 22).
    return range.event !== MmuNotifyEvent.MIGRATE;
  }
}

export function skipEveryMigrateStrategy(): OdpStrategy {
  return odpStrategy({ name: 'skip-every-migrate' }, SkipEveryMigrateUmemOdp);
}
