/**
 * The last line of a trail: the likely cause, as the strategy and its step (the seams of
 * driver/umem-odp.ts, driver/umem-holdoff.ts and driver/umem-pinned.ts a driver author
 * overrides), not a file and line: stacks cost time, and paths would break byte-identical
 * output (issue 19, item 3).
 *
 * It is a reading of the violation (its checker, and the words of its message and trail
 * that tell two causes of one checker apart) against the role the strategy plays (ODP,
 * holdoff or pinned), so it says "likely": a user strategy may have put the bug elsewhere.
 *
 * @example
 *   likelyCause(v, 'odp', 'odp')  // "likely cause: odp, step fence (UmemOdp.fence: ...)"
 */
import type { Violation } from '../../sanitizer/index.ts';

export type StrategyRole = 'odp' | 'holdoff' | 'pinned';

interface Rule {
  /** Matches the message or any trail text. */
  when?: RegExp;
  step: string;
  why: string;
}

const RULES: Record<StrategyRole, Partial<Record<string, Rule[]>>> = {
  odp: {
    'notifier-contract': [
      { when: /set_seq/, step: 'setSeq', why: 'mmu_interval_set_seq not called, or not under the umem mutex (rule 26)' },
      { when: /check_retry/, step: 'commit', why: 'entries installed on mmu_interval_check_retry\'s word (rule 29)' },
      { when: /read_retry called without|read_retry.*without/, step: 'commit', why: 'mmu_interval_read_retry outside the umem mutex (rule 28)' },
      { when: /after dropping/, step: 'program', why: 'entries installed after the umem mutex was dropped (rule 28)' },
      { when: /rule 40|mmap lock/, step: 'fault', why: 'hmm_range_fault without the mmap lock (rule 40)' },
      { step: 'invalidate', why: 'the notifier protocol as the kernel WARNs about it' },
    ],
    'use-after-invalidate': [
      { when: /no sync|translation cache/, step: 'fence', why: 'the callback returned before a sync covered its zaps (C5, rule 11)' },
      { step: 'zap, fence', why: 'the device kept a translation after the callback returned: not zapped, or not fenced by a sync, before the return (C3-C5)' },
    ],
    'stale-translation': [
      { when: /read-only|more rights|may write/, step: 'program', why: 'device rights above the CPU PTE\'s (A4, D2)' },
      { when: /PROTECTION_VMA|PROTECTION_PAGE/, step: 'affects', why: 'an event skipped that changes what the device may do (C6, rule 22)' },
      { step: 'clamp', why: 'a translation the invalidation should have cleared survived it (rule 13), or a collision went unseen (commit, rule 28)' },
    ],
    'dma-to-freed-page': [{ step: 'fence', why: 'the page was freed while the device could still reach it (rule 11)' }],
    'lost-write': [{ step: 'unmapPages', why: 'pages the device could write not dirtied when dropped (C8)' }],
    'dirty-without-buffers': [{ step: 'unmapPages', why: 'set_page_dirty on a page whose buffers went (C8)' }],
    'dma-write-clean-page': [{ step: 'unmapPages', why: 'device writes into a page the kernel thinks is clean (C8)' }],
    'sleep-in-atomic': [{ step: 'mayBlock', why: 'sleeping in a non-blockable range (C2, rule 15)' }],
    deadlock: [
      { when: /mmput|exit_mmap|page-fault waits for .*umem_mutex/, step: 'putMm', why: 'the last mm reference dropped under the umem mutex (C10)' },
      { step: 'commit', why: 'a lock cycle through the umem mutex' },
    ],
    'lock-order': [{ step: 'fault', why: 'an allocation that may reclaim under the umem mutex (C10)' }],
    'fault-retry-storm': [{ step: 'buildRange', why: 'faults that never make progress (B3)' }],
    'shared-page-write': [{ step: 'program', why: 'a writable device entry where the CPU PTE is read-only (A4, D2)' }],
    'teardown-order': [{ step: 'release', why: 'deregistration fenced the device after removing the notifier (C9)' }],
  },
  holdoff: {
    'notifier-contract': [
      { when: /check_retry/, step: 'commit', why: 'entries installed on mmu_interval_check_retry\'s word (rule 29)' },
      { when: /set_seq/, step: 'invalidate', why: 'mmu_interval_set_seq not called under the mutex (rule 26)' },
      { step: 'commit', why: 'the rule-28 read_retry protocol of the mapping path' },
    ],
    'use-after-invalidate': [
      { when: /revoked|timeout/, step: 'revoke', why: 'the timeout path returned with the device unfenced (rule 11)' },
      { step: 'fence', why: 'the callback returned before a sync covered its zaps (rule 11)' },
    ],
    'stale-translation': [{ step: 'clamp', why: 'a translation the invalidation should have cleared survived it (rule 13)' }],
    'dma-to-freed-page': [{ step: 'revoke', why: 'the page was freed while the device could still reach it (rule 11)' }],
    'lost-write': [{ step: 'zap', why: 'pages the device could write not dirtied when zapped (C8)' }],
    'dirty-without-buffers': [{ step: 'zap', why: 'set_page_dirty on a page whose buffers went (C8)' }],
    'sleep-in-atomic': [{ step: 'invalidate', why: 'sleeping in a non-blockable range (C2)' }],
    deadlock: [{ step: 'commit', why: 'a lock cycle through the MR mutex' }],
    'lock-order': [{ step: 'fault', why: 'an allocation that may reclaim under the MR mutex' }],
    'holdoff-liveness': [{ step: 'holdOff', why: 'the invalidation did not wait for DMA in progress (rdma H3)' }],
    'shared-page-write': [{ step: 'commit', why: 'a writable device entry where the CPU PTE is read-only' }],
    'teardown-order': [{ step: 'dereg', why: 'the notifier removed, or the key used, before the device was fenced (C9)' }],
  },
  pinned: {
    'pinned-incoherence': [
      { when: /fault \(wp\)|CLEAR/, step: 'how (GUP seam: FOLL_GET or FOLL_PIN)', why: 'fork protects only FOLL_PIN pins (rules 57, 66, 67)' },
      { step: 'flags (GUP seam)', why: 'pinned MRs stop following the process (rdma H1)' },
    ],
    'lost-write': [{ step: 'release (GUP seam)', why: 'pages the device wrote unpinned without dirtying (rule 63)' }],
    'dirty-without-buffers': [{ step: 'release (GUP seam)', why: 'set_page_dirty after the buffers went (the 2018 ext4 crash)' }],
    'dma-write-clean-page': [{ step: 'release (GUP seam)', why: 'device writes into a page writeback cleaned (rule 63)' }],
    'shared-page-write': [{ step: 'flags (GUP seam)', why: 'a pin without FOLL_WRITE took the zero page or a COW-shared page (rules 54, 61)' }],
    'pin-leak': [{ step: 'release (GUP seam)', why: 'pins not given back at deregistration (rule 55)' }],
    'blocked-migration': [{ step: 'flags (GUP seam)', why: 'a long-term pin keeps the page from moving (rules 71-73)' }],
    'teardown-order': [{ step: 'dereg', why: 'the key used after deregistration returned (C9)' }],
  },
};

/** One line: the likely strategy step behind `v` (null when nothing on the list fits). */
export function likelyCause(v: Violation, role: StrategyRole, strategy: string): string | null {
  const rules = RULES[role][v.id];
  if (!rules) return null;
  const texts = [v.message, ...v.trail.map((e) => e.text)];
  const r = rules.find((x) => !x.when || texts.some((t) => x.when!.test(t)));
  return r ? `likely cause: ${strategy} (${role}), step ${r.step}: ${r.why}` : null;
}
