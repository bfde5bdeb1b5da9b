/**
 * The trace: every observable step of a run as a typed record, stamped with virtual
 * time and a sequence number. Records are built with a fixed key order so that
 * `serializeTrace` is byte-identical for the same seed and code.
 */
export type TraceRecord = { seq: number; t: number; task: number | null } & TraceBody;

export type TraceBody =
  | { type: 'task-spawn'; id: number; name: string; kind: TaskKind; pid: number | null; node: string | null }
  | { type: 'task-exit'; id: number }
  | { type: 'task-switch'; to: number }
  | { type: 'preempt'; site: string; delay: number }
  | { type: 'syscall-begin'; pid: number; name: string; args: string; node: string }
  | { type: 'syscall-end'; pid: number; name: string; ret: number; node: string }
  | { type: 'fault'; mm: number; addr: number; write: boolean; kind: string; ret: number; node: string }
  | { type: 'page-alloc'; frame: number; node: string }
  | { type: 'page-free'; frame: number; node: string }
  | { type: 'lock-acquire'; lock: string; mode: 'excl' | 'shared' }
  | { type: 'lock-release'; lock: string }
  | { type: 'lock-contend'; lock: string; owner: number | null }
  | { type: 'might-sleep'; what: string; context: string }
  | { type: 'deadlock'; tasks: number[]; locks: string[] }
  | { type: 'lock-order'; first: string; second: string; chain: string[] }
  | { type: 'invalidate-start'; mm: number; start: number; end: number; event: string; blockable: boolean; curSeq: number }
  | { type: 'invalidate-end'; mm: number; start: number; end: number; event: string }
  | { type: 'invalidate-eagain'; mm: number; start: number; end: number; event: string }
  | { type: 'callback-start'; sub: string; op: string; start: number; end: number; event: string }
  | { type: 'callback-return'; sub: string; op: string; ret: string }
  | { type: 'notifier-warn'; sub: string; message: string }
  /** A driver-side obligation of the notifier protocol not met (rules 26-28); judged by the sanitizer. */
  | { type: 'notifier-contract'; sub: string; message: string }
  /** A call the profile's kernel did not have, refused with -EINVAL. */
  | { type: 'interface-refused'; api: string; message: string }
  | { type: 'note'; text: string }
  | { type: 'dirty-without-buffers'; frame: number; caller: string; node: string }
  | { type: 'writeback'; file: number; index: number; frame: number; node: string }
  | { type: 'migrate'; frame: number; to: number; reason: string; ret: number; node: string }
  | { type: 'reclaim'; frame: number; outcome: string; node: string }
  | { type: 'oom-reap'; mm: number; start: number; end: number; ret: number }
  | { type: 'real-timer'; api: string }
  | { type: 'limit'; reason: string }
  /** A batching worker is about to issue the device sync that fences these tasks' sync requests. */
  | { type: 'sync-batch'; nic: string; requesters: number[] }
  /**
   * A check the model makes against a race took its racy branch (each check was added when
   * the fuzzer found that race): `fn` names the kernel function whose check it models,
   * `what` what it met, `frame` the page (-1: none). The fuzz regression corpus's witnesses
   * look for these (test/fuzz/corpus-witnesses.ts): an entry must still reach its race.
   * `mm` and `addr` name the mapping, where the check is about one.
   */
  | { type: 'race-guard'; node: string; fn: string; what: string; frame: number; mm?: number; addr?: number }
  // ---- for the sanitizer (appended): facts the other records do not carry -------------
  /** A CPU store put `length` bytes (within one page) at `addr` of mm `mm`; they are now in `frame`. */
  | { type: 'cpu-store'; node: string; mm: number; addr: number; frame: number; offset: number; length: number }
  /** pwrite(2) put `length` bytes at byte `offset` of file `file` into its page cache. */
  | { type: 'file-write'; node: string; file: number; offset: number; length: number }
  /** GUP took a reference on each frame (`pin`: FOLL_PIN, else FOLL_GET) for pages from `addr` of mm `mm`. */
  | { type: 'gup'; node: string; mm: number; addr: number; frames: number[]; pin: boolean; longterm: boolean; write: boolean }
  /** GUP references given back (unpin_user_pages, or put_page of FOLL_GET pages). */
  | { type: 'gup-release'; node: string; frames: number[]; pin: boolean }
  /** An interval subscriber entered mm `mm` for [start, last], with the lock it declared. */
  | { type: 'interval-insert'; node: string; sub: string; mm: number; start: number; last: number; lock: string | null }
  /** An interval subscriber left (mmu_interval_notifier_remove returned). */
  | { type: 'interval-remove'; node: string; sub: string; mm: number; start: number; last: number }
  /** mmu_interval_read_retry: its answer, and whether the lock declared at insert was held. */
  | { type: 'read-retry'; node: string; sub: string; mm: number; notifierSeq: number; retry: boolean; lock: string | null; locked: boolean }
  /** mmu_interval_check_retry (rule 29): its answer, a hint only (whether the declared lock was held). */
  | { type: 'check-retry'; node: string; sub: string; mm: number; notifierSeq: number; retry: boolean; lock: string | null; locked: boolean }
  /** A large-folio step (huge-memory.ts, hugetlb.ts): a THP faulted, a PMD split, a collapse, a COW copy, a folio split. */
  | { type: 'thp'; op: string; mm: number; addr: number; frame: number; node: string }
  /**
   * A step only a kernel variant under study takes (kernel-model/variant.ts): the flag set,
   * a page kept because flagged, a DMA-idle wait begun or ended, writeback skipping a
   * GUP-referenced page, a release that no longer dirties.
   */
  | { type: 'proposal'; node: string; what: 'flag-set' | 'kept-flagged' | 'dma-idle-wait' | 'dma-idle-done' | 'writeback-skipped' | 'release-not-dirtied'; frame: number; caller: string };

export type TaskKind = 'user' | 'kthread' | 'worker' | 'script' | 'device';

/** One line of JSON per record; same records, same bytes. */
export function serializeTrace(records: readonly TraceRecord[]): string {
  let out = '';
  for (const r of records) out += JSON.stringify(r) + '\n';
  return out;
}
