/**
 * Broken ODP driver: the fault path allocates memory with GFP_KERNEL while it holds the
 * umem mutex.
 *
 * Real-world bug: mlx5, 2025 (2ed25aa7, "IB/mlx5: Fix potential deadlock in MR
 * deregistration"): a `kzalloc(GFP_KERNEL)` under `umem_mutex` may enter direct reclaim,
 * reclaim invalidates, and `mlx5_ib_invalidate_range` takes `umem_mutex` again. mlx5's own
 * fault path builds its translation list with `MLX5_IB_UPD_XLT_ATOMIC`
 * (`mlx5r_umr_create_xlt` then allocates with GFP_ATOMIC) for exactly this reason; the
 * companion change 3f5f6321 primes `fs_reclaim -> umem_mutex` in `ib_init_umem_odp` so
 * that lockdep reports the pattern the first time, without needing the rare reclaim.
 *
 * Caught by: lock-order (fs_reclaim taken while holding the umem mutex, after
 * `fs_reclaim -> umem_odp.umem_mutex` was seen at registration). Under memory pressure
 * the same pattern really deadlocks: reclaim, run by the fault worker that holds the
 * mutex, invalidates this MR and waits for the mutex it owns (deadlock).
 *
 * The change: the reference `UmemOdp.program` preceded by a GFP_KERNEL page allocation
 * (a staging page for the translation update) made under the mutex.
 */
import { GFP_KERNEL, allocPages, freePages, type Co, type HmmRange } from '../../kernel-model/index.ts';
import { UmemOdp, type OdpMapMode } from '../umem-odp.ts';
import { odpStrategy, type OdpStrategy } from '../odp-strategy.ts';

export class AllocUnderUmemMutexUmemOdp extends UmemOdp {
  protected override *program(range: HmmRange, mode: OdpMapMode): Co<number> {
    const { kernel } = this.owner.ctx.device;
    // BUG: an allocation that may reclaim, under the lock the invalidate callback takes
    // (mlx5 allocates this with GFP_ATOMIC: MLX5_IB_UPD_XLT_ATOMIC).
    const staging = yield* allocPages(kernel, GFP_KERNEL);
    if (staging < 0) return staging;
    try {
      return yield* super.program(range, mode);
    } finally {
      freePages(kernel, staging);
    }
  }
}

export function allocUnderUmemMutexStrategy(): OdpStrategy {
  return odpStrategy({}, (owner, start, end, first, name) => new AllocUnderUmemMutexUmemOdp(owner, start, end, first, name));
}
