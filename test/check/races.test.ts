import test from 'ava';
import { PAGE_SIZE, mmuIntervalNotifierRemove, type Co } from '../../kernel-model/index.ts';
import { HoldoffUmem, holdoffStrategy, odpStrategy, pinnedStrategy, type UmemStrategy } from '../../driver/index.ts';
import { zapWithoutSyncStrategy } from '../../driver/broken/index.ts';
import { renderCheck, runCheck, type CheckSubject } from '../../scenarios/check/check.ts';
import { TEARDOWN_RACES } from '../../scenarios/check/races.ts';

const subject = (name: string, nic: CheckSubject['nic'], like: CheckSubject['like'], strategy: () => UmemStrategy): CheckSubject => ({
  name, nic, like, ref: name, strategy,
});

for (const [name, nic, like, make] of [
  ['odp', 'faultable', 'odp', () => odpStrategy()],
  ['holdoff', 'non-faultable', 'holdoff', () => holdoffStrategy({ holdoffTimeoutNs: 10_000_000 })],
  ['pinned', 'non-faultable', 'pinned', () => pinnedStrategy()],
] as const) {
  test(`the reference ${name} strategy passes every teardown race (rdma C9: dereg fences the device before the memory goes)`, (t) => {
    const r = runCheck(subject(name, nic, like, make), { runs: 0, seed: 1, only: ['race'] });
    t.is(r.rows.length, TEARDOWN_RACES.length);
    t.true(r.ok, renderCheck(r).join('\n'));
    const skipped = r.rows.filter((row) => row.result === 'skipped').map((row) => row.check);
    t.deepEqual(skipped, nic === 'faultable' ? [] : ['race:dereg-during-fault']);
  });
}

/**
 * A holdoff MR whose dereg destroys the key and removes the notifier but never syncs (the
 * README's snapshot mirror had this): a transfer already translated outlives ib_dereg_mr
 * (rdma C9) and reaches a page the process has unmapped and the kernel freed.
 */
class UnfencedDeregUmem extends HoldoffUmem {
  override *dereg(): Co<number> {
    this.ctx.device.nic.destroyMr(this.mr); // no revoke + sync: in-flight accesses go on
    if (this.notifier.inserted) yield* mmuIntervalNotifierRemove(this.notifier);
    return 0;
  }
}

const unfencedDereg = (): UmemStrategy => holdoffStrategy({ name: 'unfenced-dereg', holdoffTimeoutNs: 10_000_000 }, UnfencedDeregUmem);

test('race:dereg-during-write catches a dereg that does not fence: teardown-order first (the device used the MR after its notifier was removed), with the removal in the trail (rdma C9)', (t) => {
  const r = runCheck(subject('unfenced-dereg', 'non-faultable', 'holdoff', unfencedDereg), { runs: 0, seed: 1, only: ['race:dereg-during-write'] });
  t.false(r.ok);
  const row = r.rows[0]!;
  t.is(row.check, 'race:dereg-during-write');
  t.is(row.result, 'fail');
  // Since issue 19, teardown-order sees the use after the notifier went before the page is
  // freed (dma-to-freed-page follows).
  t.is(row.violation?.id, 'teardown-order');
  t.true(row.violation!.trail.some((e) => e.kind === 'notifier-remove' || e.kind === 'dereg'));
  t.is(row.replay, 'npx lab check unfenced-dereg --only race:dereg-during-write');
  const text = renderCheck(r).join('\n');
  t.regex(text, /race:dereg-during-write +fail +teardown-order/);
  t.regex(text, /replay: npx lab check unfenced-dereg --only race:dereg-during-write/);
  t.regex(text, /verdict: 1 finding in 1 checks/);
});

test('the fuzz check catches an invalidation that zaps without a sync (rdma C5) and shrinks it, with its trail and replay line', (t) => {
  const r = runCheck(subject('zws', 'faultable', 'odp', () => zapWithoutSyncStrategy()), { runs: 30, seed: 1, only: ['fuzz'] });
  t.false(r.ok);
  const row = r.rows[0]!;
  t.is(row.violation?.id, 'use-after-invalidate');
  t.true(row.violation!.trail.some((e) => e.kind === 'callback'));
  t.is(row.replay, 'npx lab check zws --only fuzz --runs 30 --seed 1');
  t.regex(row.detail, /shrunk to \d+ commands/);
});

test('teardown races keep their pages in the MR: each race names a command that tears down MR 0 of the owner', (t) => {
  for (const race of TEARDOWN_RACES) {
    const cmds = race.commands(2);
    t.true(cmds.some((c) => (c.op === 'dereg' || c.op === 'reg') && c.node === 1), race.name);
    t.true(cmds.some((c) => c.op === 'post'), race.name);
  }
  t.is(PAGE_SIZE, 4096);
});
