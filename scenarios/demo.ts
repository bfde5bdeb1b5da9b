import {
  Kernel, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, eventName, hex, errnoName,
  type NotifierStreamEvent, type TraceRecord,
} from '../kernel-model/index.ts';
import { Dmirror } from '../driver/index.ts';

/**
 * The foundation demo: a process maps memory, the reference mirror (lib/test_hmm's
 * dmirror) subscribes and faults it in, the process writes (COW of the zero page, which
 * the mirror sees as an invalidation), munmaps and exits. Returns the narrated lines.
 */
export function runDemo(seed = 1): { lines: string[]; ok: boolean } {
  const k = new Kernel({ seed });
  const p = k.createProcess('app');
  const lines: string[] = [];
  const us = (t: number) => (t / 1000).toFixed(3).padStart(9);
  const say = (t: number, text: string) => lines.push(`${us(t)} µs  ${text}`);
  const open = new Map<string, number>();
  k.notifier$.subscribe((e: NotifierStreamEvent) => {
    const key = `${e.range.start}-${e.range.end}-${e.range.event}`;
    if (e.phase === 'start') {
      open.set(key, e.time);
      say(e.time, `invalidate ${eventName(e.range.event).padEnd(15)} [${hex(e.range.start)}, ${hex(e.range.end)}) ${e.blockable ? 'blockable' : 'non-blockable'}, seq ${e.curSeq}`);
    } else {
      const began = open.get(key) ?? e.time;
      say(e.time, `  ${e.phase === 'end' ? 'ended' : '-EAGAIN'} ${eventName(e.range.event)} after ${((e.time - began) / 1000).toFixed(3)} µs`);
    }
  });
  k.sim.trace$.subscribe((r: TraceRecord) => {
    if (r.type === 'syscall-end') say(r.t, `${r.name}() = ${r.ret < 0 ? '-' + errnoName(r.ret) : r.name === 'mmap' ? hex(r.ret) : r.ret}`);
  });
  let ok = true;
  p.spawnThread('main', function* () {
    const len = 16 * 4096;
    const buf = yield* p.mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    const mirror = yield* Dmirror.open(k, p.mm);
    if (typeof mirror === 'number') throw new Error(`dmirror open: ${errnoName(mirror)}`);
    say(k.sim.now(), 'dmirror subscribed to the whole address space');
    const r = yield* mirror.read(buf, len);
    say(k.sim.now(), `device read ${len} bytes: faults=${mirror.faults}, mirror holds ${mirror.pt.size} pages (the zero page, read-only)`);
    yield* k.sim.sleep(10_000);
    const msg = new TextEncoder().encode('hello from the CPU');
    yield* p.store(buf, msg);
    say(k.sim.now(), `CPU stored ${msg.length} bytes at ${hex(buf)} (COW of the zero page)`);
    const back = yield* mirror.read(buf, msg.length);
    const text = typeof back === 'number' ? errnoName(back) : new TextDecoder().decode(back);
    say(k.sim.now(), `device reads "${text}" after refaulting (faults=${mirror.faults})`);
    ok = typeof r !== 'number' && text === 'hello from the CPU';
    yield* k.sim.sleep(10_000);
    yield* p.munmap(buf, len);
    say(k.sim.now(), `mirror holds ${mirror.pt.size} pages after munmap`);
    yield* p.exit();
  });
  const out = k.sim.run({ untilNs: 1e9 });
  if (out.reason === 'failed') {
    lines.push(`run failed (seed ${seed}): ${out.failure}`);
    ok = false;
  }
  return { lines, ok };
}
