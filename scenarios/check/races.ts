/**
 * The named teardown races of `lab check`: deregistration (and re-registration) landing
 * while the device still works on the MR. Each is a short command list in the fuzzer's
 * language (scenarios/fuzz/commands.ts), run in its world (two nodes, preemption on) at a
 * few offsets between the work and the teardown and at a few simulation seeds, so the
 * teardown hits the work early, in the middle and late. With the calibrated CPU costs the
 * kernel's own free (zap and flush, over 2 µs) outlasts the at most one page of DMA an
 * unfenced dereg leaves in flight, so such a dereg is caught by teardown-order (the device
 * used the MR after its notifier went) rather than by the freed page. Rules at stake: rdma C9 (dereg
 * stops the hardware before the memory goes: revoke, sync, then release) and kernel rule 11
 * (once a callback or a dereg returns, the pages may be reused).
 *
 * Node 0 process 0 is the requester; node 1 process 0 owns the target MR 0 (slot 0, pages
 * 1-6, registered at set-up), as in every fuzz run.
 */
import type { Command } from '../fuzz/commands.ts';

export interface TeardownRace {
  /** The check's name (`lab check --only race:NAME`). */
  name: string;
  /** What races what, in one line. */
  summary: string;
  /** Only for a NIC that takes page faults (the race needs a device fault in flight). */
  faultableOnly?: boolean;
  /** The command list with the teardown `d` µs after the work starts. */
  commands(d: number): Command[];
}

/** Offsets (µs) between the start of the work and the teardown: before, during, around the end of a 6-page transfer. */
export const RACE_OFFSETS_US: readonly number[] = [0, 1, 2, 4, 8];
/** Simulation seeds per offset (they move the preemption points). */
export const RACE_SEEDS: readonly number[] = [1, 2, 3];

const REQ = { node: 0, proc: 0 } as const;
const OWNER = { node: 1, proc: 0 } as const;

function transfer(verb: 'write' | 'read', at: number): Command {
  return { ...REQ, thread: 0, at, op: 'post', verb, mr: 0, peerMr: 0, page: 0, pages: 6 };
}

function deregDuring(verb: 'write' | 'read'): (d: number) => Command[] {
  // The owner deregisters the target while the requester's transfer is in flight, and the
  // requester deregisters its own source/sink MR at the same moment; each then unmaps the
  // buffer at once (legal: once dereg returns the pages are the process's again, rdma C9)
  // and maps fresh memory there, which may reuse the freed frames.
  return (d) => [
    transfer(verb, 0),
    { ...OWNER, thread: 0, at: d, op: 'dereg', mr: 0 },
    { ...OWNER, thread: 0, at: d, op: 'munmap', slot: 0, first: 0, pages: 8 },
    { ...OWNER, thread: 0, at: d, op: 'mmap', slot: 0, pages: 8, kind: 'anon', prot: 'rw' },
    { ...OWNER, thread: 0, at: d, op: 'store', slot: 0, page: 2, byte: 0x5a },
    { ...REQ, thread: 1, at: d, op: 'dereg', mr: 0 },
    { ...REQ, thread: 1, at: d, op: 'munmap', slot: 0, first: 0, pages: 8 },
    { ...REQ, thread: 1, at: d, op: 'mmap', slot: 0, pages: 8, kind: 'anon', prot: 'rw' },
    { ...REQ, thread: 1, at: d, op: 'store', slot: 0, page: 3, byte: 0x5b },
  ];
}

export const TEARDOWN_RACES: readonly TeardownRace[] = [
  {
    name: 'dereg-during-write',
    summary: 'ibv_dereg_mr of the target (and the source) while an RDMA WRITE into it is in flight',
    commands: deregDuring('write'),
  },
  {
    name: 'dereg-during-read',
    summary: 'ibv_dereg_mr of the source (and the sink) while an RDMA READ from it is in flight',
    commands: deregDuring('read'),
  },
  {
    name: 'dereg-during-fault',
    summary: 'ibv_dereg_mr while the NIC is faulting the target\'s pages in (they were dropped with MADV_DONTNEED)',
    faultableOnly: true,
    commands: (d) => [
      { ...OWNER, thread: 0, at: 0, op: 'madvise', slot: 0, first: 0, pages: 8, advice: 'dontneed' },
      transfer('write', 5),
      { ...OWNER, thread: 1, at: 5 + d, op: 'dereg', mr: 0 },
      { ...OWNER, thread: 1, at: 5 + d, op: 'munmap', slot: 0, first: 0, pages: 8 },
      { ...OWNER, thread: 1, at: 5 + d, op: 'mmap', slot: 0, pages: 8, kind: 'anon', prot: 'rw' },
      { ...OWNER, thread: 1, at: 5 + d, op: 'store', slot: 0, page: 2, byte: 0x5b },
    ],
  },
  {
    name: 'dereg-during-invalidation',
    summary: 'ibv_dereg_mr while a munmap of the MR\'s range is invalidating it, with a transfer in flight',
    commands: (d) => [
      transfer('write', 0),
      { ...OWNER, thread: 0, at: 1, op: 'munmap', slot: 0, first: 0, pages: 8 },
      { ...OWNER, thread: 1, at: 1 + d, op: 'dereg', mr: 0 },
      { ...OWNER, thread: 0, at: 30 + d, op: 'mmap', slot: 0, pages: 8, kind: 'anon', prot: 'rw' },
      { ...OWNER, thread: 0, at: 31 + d, op: 'store', slot: 0, page: 2, byte: 0x5c },
    ],
  },
  {
    name: 'rereg-while-draining',
    summary: 'the same range registered again (a new MR) and the old MR deregistered while a transfer into the old one drains',
    commands: (d) => [
      transfer('write', 0),
      { ...OWNER, thread: 0, at: d, op: 'reg', mr: 2, slot: 0, first: 1, pages: 6, write: true },
      { ...OWNER, thread: 1, at: d, op: 'dereg', mr: 0 },
      { ...REQ, thread: 0, at: d + 10, op: 'post', verb: 'write', mr: 0, peerMr: 2, page: 0, pages: 6 },
      { ...OWNER, thread: 1, at: d, op: 'munmap', slot: 0, first: 2, pages: 1 },
      { ...OWNER, thread: 0, at: d + 40, op: 'store', slot: 0, page: 3, byte: 0x5d },
    ],
  },
];

export function teardownRace(name: string): TeardownRace | undefined {
  return TEARDOWN_RACES.find((r) => r.name === name);
}
