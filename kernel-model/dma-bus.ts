import type { PhysicalMemory } from './page-frames.ts';
import { PAGE_SIZE } from './constants.ts';

/**
 * The device's view of memory: read and write physical frames by number. The device
 * knows nothing else of Linux; the driver hands it frame numbers. A DMA access sets no
 * accessed or dirty bit anywhere (the NIC has no view of the CPU page tables), which is
 * why reclaim ages out pages busy only with DMA and why drivers must dirty pages themselves.
 */
export class DmaBus {
  constructor(private readonly phys: PhysicalMemory) {}

  get frames(): number {
    return this.phys.frames;
  }

  read(frame: number, offset: number, length: number): Uint8Array {
    this.check(frame, offset, length);
    return this.phys.read(frame, offset, length);
  }

  /** `read` without the copy: a snapshot the caller must not write into (PhysicalMemory.readShared). */
  readShared(frame: number, offset: number, length: number): Uint8Array {
    this.check(frame, offset, length);
    return this.phys.readShared(frame, offset, length);
  }

  write(frame: number, offset: number, bytes: Uint8Array): void {
    this.check(frame, offset, bytes.length);
    this.phys.write(frame, offset, bytes);
  }

  /** Whether the frame is currently allocated (a checker's question, not the device's). */
  allocated(frame: number): boolean {
    return this.phys.isAllocated(frame);
  }

  /** Allocation generation of a frame: differs once it was freed and handed out again. */
  generation(frame: number): number {
    return this.phys.generation[frame] ?? 0;
  }

  private check(frame: number, offset: number, length: number): void {
    if (!Number.isInteger(frame) || frame < 0 || frame >= this.phys.frames) throw new RangeError(`DMA to frame ${frame} outside physical memory`);
    if (offset < 0 || offset + length > PAGE_SIZE) throw new RangeError(`DMA access [${offset}, ${offset + length}) crosses a page`);
  }
}
