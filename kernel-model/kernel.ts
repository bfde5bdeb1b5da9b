import { Subject, type Observable } from 'rxjs';
import { Simulation, type SimulationOptions } from './sim/index.ts';
import { PROFILES, type KernelProfile } from './profile.ts';
import { PhysicalMemory, PG_LOCKED, PG_SWAPCACHE } from './page-frames.ts';
import { MmStruct } from './mm.ts';
import { MMAP_BASE, MMAP_RND_PAGES, PAGE_SIZE } from './constants.ts';
import type { MmuNotifierRange } from './mmu-notifier-range.ts';
import { DmaBus } from './dma-bus.ts';
import { File } from './file.ts';
import { Lru } from './lru.ts';
import { SwapArea } from './swap.ts';
import { Process } from './process.ts';
import type { PageoutHook } from './madvise.ts';
import { reclaimRange } from './vmscan.ts';
import { TransparentHugepage } from './huge-memory.ts';
import { HugetlbPool } from './hugetlb.ts';
import { cpuCosts, type CpuCosts } from './cpu-costs.ts';

/** What flows on the notifier stream: every invalidation, as it starts and ends. */
export interface NotifierStreamEvent {
  time: number;
  mm: number;
  range: MmuNotifierRange;
  /** start: callbacks about to run; end: range ended; eagain: a non-blocking start failed. */
  phase: 'start' | 'end' | 'eagain';
  blockable: boolean;
  /** The interval sequence `S` the subscribers saw (rule 24); 0 with no interval tree. */
  curSeq: number;
}

export interface KernelOptions extends SimulationOptions {
  profile?: KernelProfile;
  /** Physical memory in 4 KiB frames (default 64 Ki frames = 256 MiB). */
  frames?: number;
  /** Reuse the most recently freed frame first (surfaces use-after-free quickly). Default true. */
  reuseFreedFirst?: boolean;
  /** Provide an existing simulation (several kernels, one per node, share one engine). */
  sim?: Simulation;
  /** A name for this node in traces (default 'node0'). */
  node?: string;
  /**
   * randomize_va_space: each new mm's mmap_base drawn from the seed, up to MMAP_RND_PAGES
   * pages below MMAP_BASE (arch_pick_mmap_layout and arch_mmap_rnd, arch/x86/mm/mmap.c).
   * Off by default, so addresses are the same in every run.
   */
  randomizeVaSpace?: boolean;
  /** Overrides of the CPU-side cost model (cpu-costs.ts). */
  cpuCosts?: Partial<CpuCosts>;
}

/**
 * One machine's kernel: physical memory, address spaces, files, and the notifier
 * stream. Several kernels (nodes) may share one Simulation.
 *
 * @example
 *   const k = new Kernel({ seed: 1 });
 *   const p = k.createProcess('app');
 *   k.sim.spawn('main', function* () { const a = yield* p.mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS); });
 *   k.sim.run();
 */
export class Kernel {
  readonly sim: Simulation;
  readonly profile: KernelProfile;
  readonly phys: PhysicalMemory;
  readonly dmaBus: DmaBus;
  readonly lru = new Lru();
  readonly swap: SwapArea;
  readonly node: string;
  readonly randomizeVaSpace: boolean;
  /** The CPU-side cost model (cpu-costs.ts): virtual time kernel paths spend. */
  readonly cpuCosts: CpuCosts;
  /** MADV_PAGEOUT's handler: reclaim of the range, ignoring references. */
  pageout: PageoutHook = reclaimRange;
  /**
   * Seeded fault injection where the real kernel can fail: a fatal signal interrupting a
   * GUP wait (-EINTR). Allocation failure is `phys.allocFailureRate`.
   */
  readonly faultInjection = { signalRate: 0 };
  /** The page allocator's min watermark in frames (undefined: 1/64 of memory, page-alloc.ts). */
  watermarkMin: number | undefined = undefined;
  readonly processes = new Map<number, Process>();
  /** /sys/kernel/mm/transparent_hugepage (huge-memory.ts). */
  readonly transparentHugepage = new TransparentHugepage();
  /** The 2 MiB hugetlb pool (/proc/sys/vm/nr_hugepages, hugetlb.ts). */
  readonly hugetlb: HugetlbPool;
  private readonly files = new Map<number, File>();
  private readonly notifierSubject = new Subject<NotifierStreamEvent>();
  /** Every invalidation of every mm of this kernel, reactively. */
  readonly notifier$: Observable<NotifierStreamEvent> = this.notifierSubject.asObservable();
  private nextMmId = 1;
  private nextPid = 100;
  private nextFileId = 1;

  constructor(opts: KernelOptions = {}) {
    this.sim = opts.sim ?? new Simulation(opts);
    this.profile = opts.profile ?? PROFILES['linux-6.x'];
    this.node = opts.node ?? 'node0';
    this.randomizeVaSpace = opts.randomizeVaSpace ?? false;
    this.cpuCosts = cpuCosts(opts.cpuCosts);
    this.phys = new PhysicalMemory(this.sim, opts.frames ?? 65536, opts.reuseFreedFirst ?? true, this.node);
    this.phys.pinTracking = this.profile.follPin;
    this.dmaBus = new DmaBus(this.phys);
    this.hugetlb = new HugetlbPool(this.phys);
    this.swap = new SwapArea((f) => {
      this.phys.clear(f, PG_SWAPCACHE);
      this.phys.put(f);
    }, (f) => !this.phys.has(f, PG_LOCKED));
  }

  newMm(): MmStruct {
    const mm = new MmStruct(this, this.nextMmId++);
    if (this.randomizeVaSpace) mm.mmapBase = MMAP_BASE - this.sim.rng(`aslr:${this.node}`).int(0, MMAP_RND_PAGES - 1) * PAGE_SIZE;
    return mm;
  }

  /** A new process with an empty address space (and no threads until it spawns some). */
  createProcess(name: string, mm: MmStruct = this.newMm()): Process {
    const p = new Process(this, this.nextPid++, name, mm);
    this.processes.set(p.pid, p);
    return p;
  }

  /** A regular file of `size` bytes, all holes; `contents` pre-fills the disk. */
  createFile(name: string, size: number, contents?: Uint8Array): File {
    const f = new File(this.nextFileId++, name, size);
    if (contents) {
      for (let off = 0; off < contents.length; off += 4096) {
        const page = new Uint8Array(4096);
        page.set(contents.subarray(off, off + 4096));
        f.disk.set(off / 4096, page);
      }
    }
    this.files.set(f.id, f);
    return f;
  }

  /** The shmem object behind a MAP_SHARED|MAP_ANONYMOUS mapping. */
  createShmem(size: number): File {
    const f = new File(this.nextFileId++, `shmem#${this.nextFileId - 1}`, size, true);
    this.files.set(f.id, f);
    return f;
  }

  /** Every file and shmem object, in creation order. */
  allFiles(): File[] {
    return [...this.files.values()];
  }

  fileById(id: number): File | undefined {
    return this.files.get(id);
  }

  /** Publish an invalidation phase on the notifier stream (cheap when nobody listens). */
  publishNotifier(ev: Omit<NotifierStreamEvent, 'time'>): void {
    if (!this.notifierSubject.observed) return;
    this.notifierSubject.next({ time: this.sim.now(), ...ev });
  }
}
