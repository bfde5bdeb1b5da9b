/**
 * pin-leak (error): GUP pins (or FOLL_GET references, what pre-5.6 kernels pinned with)
 * taken from an mm that had MRs are still held once the verbs context is released after
 * the mm is gone: the mm has exited and no MR of it is registered any more.
 *
 * Observed: `gup`/`gup-release` records (which frames, from which mm), the binding stream
 * (registrations and deregistrations of that mm's MRs) and the mm's state (exited).
 * Checked when the last MR of an exited mm is deregistered, when an mm whose MRs are all
 * gone exits, and at `finish()`.
 *
 * Why it is a bug: nobody can release those pages any more. They stay allocated and
 * unmovable forever, charged to no one (pinned_vm went with the mm), and a later pin count
 * of 1024 references makes them look pinned to the rest of MM.
 *
 * Not flagged: pins while any MR of the mm is still registered (the verbs context is
 * alive), pins from mms that never had an MR (a test's own GUP calls, O_DIRECT), and pins of
 * a live mm (the process may still release them).
 */
import type { Kernel } from '../kernel-model/index.ts';
import type { Checker, SanitizerContext } from './context.ts';
import { PinLedger } from './pin-ledger.ts';
import { hex, violation } from './violation.ts';

export function createPinLeak(ctx: SanitizerContext): Checker {
  const id = 'pin-leak';
  const ledger = new PinLedger(ctx);
  const reported = new Set<string>();
  const deregs = new Map<string, { time: number; key: number; nic: string }>();

  function gone(k: Kernel, mm: number): boolean {
    const m = ctx.mmOf(k, mm);
    return m !== undefined && (m.exited || m.users <= 0);
  }

  function check(k: Kernel, mm: number, why: string): void {
    if (!ctx.everBoundMm(k, mm) || ctx.bindingsOfMm(k, mm).length > 0 || !gone(k, mm)) return;
    const refs = ledger.fromMm(k, mm);
    if (refs.length === 0) return;
    const dedupe = `${ctx.kernelIndex(k)}:${mm}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const pins = refs.filter((g) => g.pin).length;
    const frames = refs.slice(0, 8).map((g) => `${g.frame}@${hex(g.addr)}`).join(', ');
    const last = deregs.get(dedupe);
    const message = `${refs.length} GUP reference(s) (${pins} pin(s)) taken from mm${mm} are still held after its MRs were ` +
      `deregistered and the mm is gone (${why}): frames ${frames}${refs.length > 8 ? ', ...' : ''}`;
    const firsts = refs.slice(0, 4).map((g) => ({
      time: g.time, kind: 'gup', task: g.task,
      text: `${g.pin ? 'pin' : 'get'}_user_pages${g.longterm ? ' (FOLL_LONGTERM)' : ''} of ${hex(g.addr)} of mm${mm} -> frame ${g.frame} [${ctx.taskName(g.task)}]`,
    }));
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [
      ...firsts,
      last ? { time: last.time, kind: 'dereg', text: `last MR of mm${mm} deregistered (${last.nic} key ${hex(last.key)})` } : null,
      { time: ctx.sim.now(), kind: 'check', text: why },
    ]));
  }

  ctx.onRecords(['gup', 'gup-release', 'syscall-end'], id, (r) => {
    if (r.type === 'gup') ledger.take(r);
    else if (r.type === 'gup-release') ledger.release(r);
    else if (r.type === 'syscall-end' && r.name === 'exit') {
      // The process has left the table by now: check every mm whose MRs were all deregistered.
      for (const k of ctx.kernels) for (const mm of exitedCandidates(k)) check(k, mm, 'the mm exited after its MRs were deregistered');
    }
  });

  function exitedCandidates(k: Kernel): number[] {
    const out: number[] = [];
    for (const key of deregs.keys()) {
      const [ki, mm] = key.split(':').map(Number);
      if (ki === ctx.kernelIndex(k) && mm !== undefined) out.push(mm);
    }
    return out;
  }

  ctx.on(ctx.binding$, id, ({ event, binding: b }) => {
    if (event !== 'dereg' || !b.kernel || b.mmId === null) return;
    deregs.set(`${ctx.kernelIndex(b.kernel)}:${b.mmId}`, { time: ctx.sim.now(), key: b.key, nic: b.nic });
    check(b.kernel, b.mmId, 'the verbs context released its last MR of an exited mm');
  });

  return {
    id,
    finish() {
      for (const k of ctx.kernels) for (const mm of exitedCandidates(k)) check(k, mm, 'end of run');
    },
  };
}
