import test from 'ava';
import { demo } from '../../driver/examples/snapshot-mirror.ts';

test('the README example strategy runs: correct, the sanitizer is silent and the NIC fails the write to the unmapped page', (t) => {
  const lines = demo();
  t.deepEqual(lines, ['RDMA WRITE 0: IBV_WC_SUCCESS', 'RDMA WRITE 1: IBV_WC_REM_ACCESS_ERR', 'sanitizer: no violations']);
});

test('the README example strategy without the sync after the zap: use-after-invalidate and dma-to-freed-page, with trails', (t) => {
  const text = demo({ skipSync: true }).join('\n');
  t.regex(text, /RDMA WRITE 1: IBV_WC_SUCCESS/);
  t.regex(text, /error use-after-invalidate/);
  t.regex(text, /error dma-to-freed-page/);
  t.regex(text, /syscall +munmap/);
});
