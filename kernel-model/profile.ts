import { EINVAL } from './errno.ts';

/**
 * A kernel profile: the behaviour switches and the interfaces of one kernel release, so
 * each seed discussion can be shown on the kernel it was about, and shown fixed, without
 * a prototype using an interface its kernel lacked. Profiles are data, not code forks.
 */
export interface KernelProfile {
  name: ProfileName;
  release: string;
  /** Notifier callbacks run under RCU and may not sleep (before 3.7's SRCU). */
  atomicCallbacks: boolean;
  /** `invalidate_page` after the PTE is cleared, instead of start/end around the change. */
  invalidatePageAfterClear: boolean;
  /** Event types in the range (5.0). */
  eventTypes: boolean;
  /** The blockable flag and the non-blocking start (4.19). */
  blockableFlag: boolean;
  /** `mmu_interval_notifier` (5.5). */
  intervalNotifiers: boolean;
  /** `hmm_range_fault` with the current flags (5.7). */
  hmmRangeFault: boolean;
  /** FOLL_PIN, `pin_user_pages` and GUP_PIN_COUNTING_BIAS (5.6/5.7). */
  follPin: boolean;
  /** fork copies maybe-pinned anonymous pages early (5.9, has_pinned). */
  forkCopiesPinned: boolean;
  /** PageAnonExclusive and unsharing for read-only pins of anon pages (5.19). */
  anonExclusive: boolean;
  /** Read-only long-term pins unshare any COW mapping, incl. the zero page (6.2). */
  unshareAnyCow: boolean;
  /** Writable long-term pins of dirty-tracked file mappings are refused (6.5). */
  refuseLongtermFileWrite: boolean;
  /** ib_umem_get pins with FOLL_WRITE always, FOLL_FORCE for read-only MRs (before 6.2). */
  umemForceWrite: boolean;
  /**
   * mprotect to writable maps exclusive anonymous (and dirty shared) PTEs writable at once
   * (MM_CP_TRY_CHANGE_WRITABLE, can_change_pte_writable: 64fe24a3e05e, 6.0).
   */
  mprotectChangeWritable: boolean;
}

export type ProfileName = 'linux-3.0' | 'linux-4.18' | 'linux-5.8' | 'linux-6.x';

const base: KernelProfile = {
  name: 'linux-6.x', release: '6.16',
  atomicCallbacks: false, invalidatePageAfterClear: false, eventTypes: true, blockableFlag: true,
  intervalNotifiers: true, hmmRangeFault: true, follPin: true, forkCopiesPinned: true,
  anonExclusive: true, unshareAnyCow: true, refuseLongtermFileWrite: true, umemForceWrite: false,
  mprotectChangeWritable: true,
};

export const PROFILES: Readonly<Record<ProfileName, KernelProfile>> = {
  'linux-3.0': {
    ...base, name: 'linux-3.0', release: '3.0',
    atomicCallbacks: true, invalidatePageAfterClear: true, eventTypes: false, blockableFlag: false,
    intervalNotifiers: false, hmmRangeFault: false, follPin: false, forkCopiesPinned: false,
    anonExclusive: false, unshareAnyCow: false, refuseLongtermFileWrite: false, umemForceWrite: true,
    mprotectChangeWritable: false,
  },
  'linux-4.18': {
    ...base, name: 'linux-4.18', release: '4.18',
    eventTypes: false, blockableFlag: false, intervalNotifiers: false, hmmRangeFault: false,
    follPin: false, forkCopiesPinned: false, anonExclusive: false, unshareAnyCow: false,
    refuseLongtermFileWrite: false, umemForceWrite: true, mprotectChangeWritable: false,
  },
  'linux-5.8': {
    ...base, name: 'linux-5.8', release: '5.8',
    forkCopiesPinned: false, anonExclusive: false, unshareAnyCow: false,
    refuseLongtermFileWrite: false, umemForceWrite: true, mprotectChangeWritable: false,
  },
  'linux-6.x': base,
};

export const PROFILE_NAMES = Object.keys(PROFILES) as ProfileName[];

/** Look a profile up by name; an unknown name is an error naming the valid ones. */
export function profileByName(name: string): KernelProfile | { error: string } {
  const p = Object.hasOwn(PROFILES, name) ? (PROFILES as Record<string, KernelProfile>)[name] : undefined;
  if (!p) return { error: `unknown profile '${name}'; valid profiles: ${PROFILE_NAMES.join(', ')}` };
  return p;
}

/** The release that introduced each interface a profile may lack. */
export const INTRODUCED_IN = {
  intervalNotifiers: '5.5',
  eventTypes: '5.0',
  blockableFlag: '4.19',
  hmmRangeFault: '5.7',
  follPin: '5.6',
} as const;

/**
 * Refuse an interface the profile's kernel did not have: returns -EINVAL and records
 * why, naming the release that introduced it. Returns 0 when available.
 */
export function requireInterface(
  profile: KernelProfile,
  feature: keyof typeof INTRODUCED_IN,
  api: string,
  report: (message: string) => void,
): number {
  if (profile[feature]) return 0;
  report(`${api} does not exist in ${profile.name}: it was introduced in Linux ${INTRODUCED_IN[feature]}`);
  return -EINVAL;
}
