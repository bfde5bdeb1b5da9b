/**
 * shared-page-write (error): the device wrote a page nobody may write in place: the shared
 * zero page, or an anonymous page shared copy-on-write (mapped by more than one page
 * table after fork, or a KSM page).
 *
 * Observed: each device write names its frame; the kernel's frame table says whether it is
 * the zero page (ZERO_PFN), and for an anonymous page its mapcount and PG_KSM, read when
 * the write happens.
 *
 * Why it is a bug: the zero page backs every never-written anonymous page of every process
 * (mm/memory.c do_anonymous_page maps it read-only for a read fault): a write there shows
 * up in all of them. A COW-shared page belongs to every process mapping it until a write
 * fault copies it (do_wp_page / wp_page_copy): a device write in place changes the other
 * processes' memory, which is what the COW break exists to prevent (kernel rules 57, 66;
 * the 2020 has_pinned thread). A write through a correct translation can never land here:
 * a write fault (hmm_range_fault with REQ_WRITE, GUP with FOLL_WRITE) breaks COW first,
 * and fork or KSM's write_protect_page invalidate writable device entries before the page
 * becomes shared. So the translation was writable when the CPU's was not.
 *
 * Other checkers may see the same write (stale-translation compares the device entry with
 * the CPU PTE; lost-write may miss it, the zero page having no owner to lose it); this one
 * reports it in its own right, once per (NIC, frame, translation).
 *
 * Not flagged: reads; pages shared MAP_SHARED (shmem, page cache), which are meant to be
 * written in place.
 */
import { PG_ANON, PG_KSM, ZERO_PFN } from '../kernel-model/index.ts';
import type { Checker, SanitizerContext } from './context.ts';
import { hex, violation } from './violation.ts';

export function createSharedPageWrite(ctx: SanitizerContext): Checker {
  const id = 'shared-page-write';
  const reported = new Set<string>();

  ctx.on(ctx.access$, id, (e) => {
    const a = e.access;
    const k = e.kernel;
    if (!a.write || !k || a.frame < 0 || a.frame >= k.phys.frames) return;
    const { phys } = k;
    let what: string;
    if (a.frame === ZERO_PFN) what = 'the shared zero page (ZERO_PFN), which backs every unwritten anonymous page';
    else if (!phys.isAllocated(a.frame) || !phys.has(a.frame, PG_ANON)) return;
    else if (phys.has(a.frame, PG_KSM)) what = `KSM page ${a.frame}, shared copy-on-write by every page table that maps it`;
    else if ((phys.mapcount[a.frame] ?? 0) > 1) what = `anonymous page ${a.frame}, shared copy-on-write by ${phys.mapcount[a.frame]} page tables`;
    else return;
    const dedupe = `${a.nic}:${a.frame}:${a.generation}`;
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    const where = e.va !== undefined ? ` (va ${hex(e.va)}${e.binding?.mmId != null ? ` of mm${e.binding.mmId}` : ''})` : '';
    const message = `${a.nic} wrote ${a.length} bytes at iova ${hex(a.iova)}${where} into ${what}: ` +
      'the device translation was writable where the CPU must copy before writing';
    ctx.emitViolation(violation(id, ctx.sim.now(), message, [ctx.trailInstall(ctx.install(a.nic, a.generation), e.binding, e.mr), ctx.trailAccess(e)]));
  });

  return { id };
}
