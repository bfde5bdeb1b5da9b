/**
 * A device that shares the CPU page tables, as IOMMU SVA does (intel-svm, arm-smmu-v3-sva,
 * amd iommu_v2): no mirror, no interval notifier, no sequence protocol. The IOMMU walks the
 * process's page table itself on an IOTLB miss and caches the translation; the only thing
 * the driver must do is drop cached translations whenever the CPU flushes its TLB. That is
 * the one callback such a subscriber implements, `arch_invalidate_secondary_tlbs` (kernel
 * rule 38; with `invalidate_range_start/end` it is refused, rule 3), which the kernel calls
 * from the architecture's TLB flush since 6.6 (x86 `flush_tlb_mm_range`, arm64
 * `__flush_tlb_range_nosync`; kernel-model/tlb.ts), before any unmapped page is freed.
 * `release` tears the address space down (the PASID's translations go).
 *
 * Run it: npx tsx driver/examples/sva-iotlb.ts
 */
import {
  EFAULT, Kernel, MAP_ANONYMOUS, MAP_PRIVATE, MmuNotifier, PAGE_SIZE, PROT_READ, PROT_WRITE, PTE_PROTNONE, PTE_WRITE,
  hex, mmuNotifierRegister, mmuNotifierUnregister, pteFrame, pteHas, ptePresent, vpn, type Co, type MmStruct,
} from '../../kernel-model/index.ts';

interface IotlbEntry {
  frame: number;
  write: boolean;
}

/** One bound address space (a PASID) and its IOTLB. */
export class SvaIotlb {
  /** Cached translations, by virtual page number. */
  readonly iotlb = new Map<number, IotlbEntry>();
  /** Every invalidation received, as [start, end) (for tests and the demo). */
  readonly invalidations: [number, number][] = [];
  readonly notifier: MmuNotifier;
  misses = 0;

  constructor(readonly kernel: Kernel, readonly mm: MmStruct, readonly name = 'sva-iotlb') {
    this.notifier = new MmuNotifier(name, {
      // Under the page-table lock: drop the cached entries and return, never sleep.
      archInvalidateSecondaryTlbs: (_sub, _mm, start, end) => {
        this.invalidations.push([start, end]);
        for (const v of [...this.iotlb.keys()]) if (v * PAGE_SIZE >= start && v * PAGE_SIZE < end) this.iotlb.delete(v);
      },
      release: () => {
        this.iotlb.clear();
      },
    });
  }

  /** iommu_sva_bind_device: subscribe to the mm. */
  *bind(): Co<number> {
    return yield* mmuNotifierRegister(this.notifier, this.mm);
  }

  *unbind(): Co {
    yield* mmuNotifierUnregister(this.notifier, this.mm);
    this.iotlb.clear();
  }

  /**
   * The IOMMU's translation: an IOTLB hit, or a walk of the CPU page table that caches what
   * it finds. A missing or too weak PTE is a page request (-EFAULT here: this device does
   * not ask the kernel to fault pages in).
   */
  translate(addr: number, write: boolean): number {
    const v = vpn(addr);
    const hit = this.iotlb.get(v);
    if (hit && (!write || hit.write)) return hit.frame;
    this.misses++;
    const pte = this.mm.pageTable.get(v);
    if (!ptePresent(pte) || pteHas(pte, PTE_PROTNONE)) return -EFAULT;
    const w = pteHas(pte, PTE_WRITE);
    if (write && !w) return -EFAULT;
    const frame = pteFrame(pte);
    this.iotlb.set(v, { frame, write: w });
    return frame;
  }

  /** A DMA read of `length` bytes at `addr` (within one page), or -EFAULT. */
  dmaRead(addr: number, length: number): Uint8Array | number {
    const f = this.translate(addr, false);
    if (f < 0) return f;
    return this.kernel.dmaBus.read(f, addr % PAGE_SIZE, length);
  }

  /** A DMA write of `bytes` at `addr` (within one page): 0 or -EFAULT. */
  dmaWrite(addr: number, bytes: Uint8Array): number {
    const f = this.translate(addr, true);
    if (f < 0) return f;
    this.kernel.dmaBus.write(f, addr % PAGE_SIZE, bytes);
    return 0;
  }
}

/** The demo: a device reads a page, the process unmaps it, the device's next read faults. */
export function demo(log: (line: string) => void = console.log): void {
  const k = new Kernel({ seed: 1 });
  const p = k.createProcess('app');
  p.spawnThread('main', function* () {
    const a = (yield* p.mmap(0, 4 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)) as number;
    yield* p.store(a, new Uint8Array([42]));
    const sva = new SvaIotlb(k, p.mm);
    yield* sva.bind();
    const first = sva.dmaRead(a, 1);
    log(`device read ${hex(a)}: ${typeof first === 'number' ? first : first[0]} (IOTLB holds ${sva.iotlb.size} entry)`);
    yield* p.munmap(a, PAGE_SIZE);
    log(`munmap: arch_invalidate_secondary_tlbs ${sva.invalidations.map(([s, e]) => `[${hex(s)}, ${hex(e)})`).join(', ')}; IOTLB holds ${sva.iotlb.size}`);
    const again = sva.dmaRead(a, 1);
    log(`device read ${hex(a)} again: ${again === -EFAULT ? '-EFAULT (page request: nothing mapped)' : String(again)}`);
    yield* sva.unbind();
  });
  k.sim.run();
}

if (import.meta.url === `file://${process.argv[1]}`) demo();
