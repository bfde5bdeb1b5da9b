/**
 * The tutorial's wrong turn (README, "Prototype your driver"): the fault-around strategy
 * with its invalidation's `fence` step dropped "because the zap is posted anyway". The
 * zap clears the device page table, but the NIC's translation cache and accesses already
 * translated keep using the old pages until a sync completes (rdma C5); the callback
 * returns and the kernel frees them (kernel rule 11). `lab check` says so, exit 1:
 *
 *   npx lab check ./driver/examples/forgot-the-fence.ts
 */
import type { Co } from '../../kernel-model/index.ts';
import { defineStrategy, odpStrategy } from '../index.ts';
import { FaultAroundUmemOdp } from './fault-around.ts';

export class ForgotTheFenceUmemOdp extends FaultAroundUmemOdp {
  protected override *fence(_event: number): Co {
    // WRONG: returns without waiting for the sync that fences the zaps.
  }
}

export default defineStrategy({
  name: 'forgot-the-fence',
  nic: 'faultable',
  description: 'fault-around without the sync after the zap (wrong on purpose)',
  strategy: (_params, env) => odpStrategy({ name: 'forgot-the-fence', batching: env.batching, batchingName: env.batchingName }, ForgotTheFenceUmemOdp),
});
