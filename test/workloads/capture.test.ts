/**
 * scenarios/workloads/capture.ts on this machine: a command never shipped as a trace is
 * captured under strace (with the allocation logger when a C compiler is present), the
 * result parses, and it names the shell's fork and the child's exec. Without strace the
 * test is skipped, except under CI=true, where .ci/run installs strace and its absence is
 * a failure.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { capture, haveStrace } from '../../scenarios/workloads/capture.ts';
import { parseTrace } from '../../scenarios/workloads/trace-format.ts';
import { replayWorkload } from '../../scenarios/workloads/index.ts';

const strace = haveStrace();
const ci = process.env.CI === 'true';
const hasCc = spawnSync('cc', ['--version'], { stdio: 'ignore' }).status === 0;

if (!strace && ci) {
  test('capture needs strace (CI=true: .ci/run installs it; its absence fails)', (t) => {
    t.fail('strace is not installed: .ci/run should have installed it (apt-get install -y strace)');
  });
} else {
  (strace ? test : test.skip)('a new command is captured under strace -f -tt (+ the LD_PRELOAD allocation logger), parses, and replays', (t) => {
    const r = capture({
      command: ['/bin/sh', '-c', 'head -c 3000000 /dev/zero | gzip -1 > /dev/null; /usr/bin/python3 -c "b = [bytearray(200000) for _ in range(8)]; del b"'],
      stdio: 'ignore',
      maxBytes: 64 * 1024,
    });
    t.is(r.exitStatus, 0);
    t.is(r.allocLog, hasCc, 'the allocation logger runs exactly when a compiler is present');
    const tr = parseTrace(r.text);
    t.regex(tr.header.command!, /^\/bin\/sh -c /);
    t.regex(tr.header.versions!, /strace \d/);
    t.true(r.text.length <= 64 * 1024);
    const ops = tr.events.map((e) => e.op);
    for (const op of ['exec', 'fork', 'mmap', 'munmap', 'brk', 'exit_group']) t.true(ops.includes(op as never), `the capture has ${op}`);
    if (hasCc) t.true(tr.events.some((e) => e.op === 'malloc' && e.size >= 200000), "python's bytearrays are logged by the allocation logger");
    const report = replayWorkload(tr, { driver: 'pinned', cache: 'memory-hooks' });
    t.true(report.ok, report.failure ?? '');
    t.true(report.replayed > 0);
  });
}
