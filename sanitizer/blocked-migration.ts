/**
 * blocked-migration (warning): a page the device holds a reference to made a migration
 * (NUMA balancing, compaction, long-term-pin placement) fail.
 *
 * Observed: failed `migrate` records; the frame's state right after (references beyond
 * its mappings and the page cache's); which device entries translate it (the page tables
 * of every MR each NIC of that kernel installed into); which GUP references from an mm with
 * MRs are outstanding on it (gup records, for addresses inside a registered MR).
 *
 * Why a warning: a pinned page legitimately cannot move (kernel rules 71-73; H11, H12):
 * it is the price of pinning, made visible. With a mirroring driver it points at a bug: a
 * driver that takes page references in its mirror (the 2011 "take a reference, zap later
 * from a worker" design) blocks migration and compaction although the notifier told it to
 * let go.
 *
 * Not flagged: failures with no device involvement (no device entry and no GUP reference
 * from an MR's mm on the frame, or no reference beyond mappings and page cache), e.g. a
 * test's own pin, or a migration that lost a race.
 */
import type { Kernel } from '../kernel-model/index.ts';
import type { Checker, SanitizerContext } from './context.ts';
import { PinLedger } from './pin-ledger.ts';
import type { TrailEntry } from './violation.ts';
import { hex, violation } from './violation.ts';

export function createBlockedMigration(ctx: SanitizerContext): Checker {
  const id = 'blocked-migration';
  const ledger = new PinLedger(ctx);
  const reported = new Set<string>();

  function deviceEntries(k: Kernel, frame: number): TrailEntry[] {
    const out: TrailEntry[] = [];
    for (const nic of ctx.nics) {
      if (ctx.kernelOfNic(nic.name) !== k) continue;
      for (const key of ctx.keysOfNic(nic.name)) {
        const mr = nic.mrByKey(key);
        if (!mr) continue;
        mr.pageTable.forEachPresent((index, f, _perm, generation) => {
          if (f !== frame || out.length >= 4) return;
          const b = ctx.binding(nic.name, key);
          const inst = ctx.install(nic.name, generation);
          out.push(ctx.trailInstall(inst, b, mr) ?? { time: ctx.sim.now(), kind: 'install', text: `${nic.name} key ${hex(key)} page ${index} -> frame ${frame}` });
        });
      }
    }
    return out;
  }

  ctx.onRecords(['gup', 'gup-release', 'migrate'], id, (r) => {
    if (r.type === 'gup') ledger.take(r);
    else if (r.type === 'gup-release') ledger.release(r);
    if (r.type !== 'migrate' || r.ret >= 0) return;
    // The record names its node; older producers without one fall back to the migrating
    // task's kernel, else every kernel where the frame is held by a device.
    const own = ctx.kernelByNode(r.node) ?? ctx.kernelOfTask(r.task);
    for (const k of own ? [own] : ctx.kernels) {
      const f = r.frame;
      if (f <= 0 || f >= k.phys.frames || !k.phys.isAllocated(f)) continue;
      const extra = k.phys.refcount[f]! - k.phys.mapcount[f]! - ((k.phys.mappingFile[f] ?? -1) >= 0 ? 1 : 0);
      const entries = extra > 0 ? deviceEntries(k, f) : [];
      const refs = ledger.on(k, f).filter((g) => ctx.bindingsOfMm(k, g.mm).some((b) => b.addr <= g.addr + 4095 && g.addr < b.addr + b.length));
      if (entries.length === 0 && refs.length === 0) continue;
      const dedupe = `${ctx.kernelIndex(k)}:${f}:${k.phys.generation[f]}`;
      if (reported.has(dedupe)) continue;
      reported.add(dedupe);
      const why = refs.some((g) => g.pin) ? 'it is pinned for an MR' : refs.length > 0 ? 'an MR holds GUP references to it' : 'the device translates it and something holds extra references';
      const message = `migration (${r.reason}) of frame ${f} failed with ${r.ret}: ${why}`;
      ctx.emitViolation(violation(id, ctx.sim.now(), message, [
        ...refs.slice(0, 2).map((g) => ({
          time: g.time, kind: 'gup', task: g.task,
          text: `${g.pin ? 'pin' : 'get'}_user_pages of ${hex(g.addr)} of mm${g.mm} -> frame ${f} [${ctx.taskName(g.task)}]`,
        })),
        ...entries,
        ctx.trailSyscall(ctx.syscallOf(r.task)),
        { time: r.t, kind: 'migrate', task: r.task, text: `migrate_pages(frame ${f}, ${r.reason}) = ${r.ret} [${ctx.taskName(r.task)}]` },
      ]));
    }
  });

  return { id };
}
