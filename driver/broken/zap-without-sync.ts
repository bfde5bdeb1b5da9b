/**
 * Broken ODP driver: the invalidation zaps the device page table but never waits for a
 * sync, so the NIC's translation cache (and accesses already translated) keep using the
 * old entry after the callback returned.
 *
 * Real-world bug: rdma C5 and kernel rule 11 (the callback returns only after the device
 * can no longer use the zapped translations; the page may be freed the moment it returns).
 * Clearing the in-memory MTT is not enough on hardware with a translation cache: mlx5
 * waits for the UMR that clears the entries to complete, which is what fences the cache.
 * A driver that issues the zap and returns without that wait ("the flush is posted, it
 * will happen") lets the device keep reading and writing the old page for a while; the
 * classic form of this bug in IOMMU and GPU drivers is a deferred TLB flush.
 *
 * Caught by: use-after-invalidate (an access through a cached translation installed
 * before the callback returned; the message says it came from the translation cache).
 *
 * The change: the reference's `fence` step (of `UmemOdp.invalidate`) does nothing.
 */
import type { Co } from '../../kernel-model/index.ts';
import { UmemOdp } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class ZapWithoutSyncUmemOdp extends UmemOdp {
  protected override *fence(_event: number): Co {
    // BUG: no `yield* batcher.syncAfterZap(event)`: the translation cache still holds the entries (rdma C5).
  }
}

export function zapWithoutSyncStrategy(): OdpStrategy {
  return odpStrategy({ name: 'zap-without-sync' }, ZapWithoutSyncUmemOdp);
}
