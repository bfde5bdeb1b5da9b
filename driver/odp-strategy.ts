import { EINVAL, requireInterface, type Co } from '../kernel-model/index.ts';
import type { Nic } from '../device/index.ts';
import { SyncBatcher, noBatching, type BatchPolicy } from './batching/index.ts';
import { SIZE_MAX } from './ib-device.ts';
import type { IbUcontext } from './ib-ucontext.ts';
import type { IbUmem, RegMrRequest, UmemStrategy } from './umem.ts';
import { IbUmemOdp, defaultUmemOdp, umemOdpFactory, type UmemOdpClass, type UmemOdpFactory } from './umem-odp.ts';
import { regImplicitOdpMr } from './implicit-odp.ts';
import { regUcontextOdpMr } from './umem-odp-ucontext.ts';

/** The ODP strategy, with the sync batcher it uses on each NIC (for stats). */
export interface OdpStrategy extends UmemStrategy {
  readonly batchingName: string;
  batcherFor(nic: Nic): SyncBatcher;
}

/**
 * The ODP registration strategy (DESIGN "Driver"): explicit ODP MRs with an interval
 * notifier each, and implicit ODP MRs (addr 0, length SIZE_MAX) with lazily created 1 GiB
 * children. Invalidations zap, then wait in the batcher for the sync covering them; the
 * default policy gives each invalidation its own sync, as mlx5 does. `core` builds each
 * explicit MR's UmemOdp (default: UmemOdp; a driver author's subclass, or a factory, goes
 * here). `name` is the strategy's name, which its MRs carry into bindings, violations and
 * reports (default 'odp').
 *
 * @example
 *   const node = createRdmaNode(sim, fabric, { name: 'a', device: { nonOdp: pinnedStrategy(), odp: odpStrategy() } });
 *   class FaultAround extends UmemOdp { protected override buildRange(a: OdpMapAttempt) { ... } }
 *   const mine = odpStrategy({ name: 'fault-around' }, FaultAround);
 */
export function odpStrategy(
  opts: { name?: string; batching?: BatchPolicy; batchingName?: string } = {}, core: UmemOdpFactory | UmemOdpClass = defaultUmemOdp,
): OdpStrategy {
  const name = opts.name ?? 'odp';
  const factory = umemOdpFactory(core);
  const policy = opts.batching ?? noBatching();
  const batchingName = opts.batchingName ?? (opts.batching ? 'custom' : 'none');
  const batchers = new WeakMap<Nic, SyncBatcher>();
  const batcherFor = (nic: Nic): SyncBatcher => {
    let b = batchers.get(nic);
    if (!b) batchers.set(nic, (b = new SyncBatcher(nic.sim, nic, batchingName, policy)));
    return b;
  };
  return {
    name,
    batchingName,
    batcherFor,
    *regMr(ctx: IbUcontext, req: RegMrRequest): Co<IbUmem | number> {
      const batcher = batcherFor(ctx.device.nic);
      const { profile, sim } = ctx.device.kernel;
      if (requireInterface(profile, 'odp', 'ibv_reg_mr(IBV_ACCESS_ON_DEMAND)', (m) => sim.emit({ type: 'interface-refused', api: 'ib_umem_odp_get', message: m })) < 0) return -EINVAL;
      // 3.19 to 5.4: the per-ucontext notifier protocol (umem-odp-ucontext.ts), for the
      // reference driver; a driver author's own UmemOdp needs interval notifiers (5.5).
      if (profile.odpNotifier === 'ucontext' && core === defaultUmemOdp) return yield* regUcontextOdpMr(ctx, req, batcher);
      if (req.addr === 0 && req.length === SIZE_MAX) return yield* regImplicitOdpMr(ctx, req, batcher, name);
      return yield* IbUmemOdp.reg(ctx, req, batcher, factory, name);
    },
  };
}
