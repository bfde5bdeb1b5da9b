import { Kernel, Simulation, type KernelOptions } from '../kernel-model/index.ts';
import { Fabric, Nic, type NicOptions } from '../device/index.ts';
import { IbDevice, type IbDeviceOptions } from './ib-device.ts';

/** One machine: a kernel, its NIC on a shared fabric, and the driver's device. */
export interface RdmaNode {
  kernel: Kernel;
  nic: Nic;
  device: IbDevice;
}

/**
 * Build a node on a shared simulation and fabric. Nodes built on the same fabric can
 * reach each other; a single node uses loopback.
 *
 * @example
 *   const sim = new Simulation({ seed: 1 }); const fabric = new Fabric(sim);
 *   const a = createRdmaNode(sim, fabric, { name: 'a', device: { nonOdp: pinnedStrategy(), odp: odpStrategy() } });
 */
export function createRdmaNode(
  sim: Simulation,
  fabric: Fabric,
  opts: { name: string; kernel?: Omit<KernelOptions, 'sim'>; nic?: Omit<NicOptions, 'name' | 'fabric'>; device: IbDeviceOptions },
): RdmaNode {
  const kernel = new Kernel({ ...opts.kernel, sim, node: opts.name });
  const nic = new Nic(sim, kernel.dmaBus, { ...opts.nic, name: `${opts.name}-nic`, fabric });
  const device = new IbDevice(kernel, nic, { ...opts.device, name: `${opts.name}-ib` });
  return { kernel, nic, device };
}
