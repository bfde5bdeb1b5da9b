/**
 * Memory-region and QP access flags, with the values of rdma-core's `enum ibv_access_flags`
 * (rdma A1). Local read is always granted and has no bit.
 */
export const IBV_ACCESS_LOCAL_WRITE = 1;
export const IBV_ACCESS_REMOTE_WRITE = 2;
export const IBV_ACCESS_REMOTE_READ = 4;
export const IBV_ACCESS_REMOTE_ATOMIC = 8;
export const IBV_ACCESS_MW_BIND = 16;
export const IBV_ACCESS_ZERO_BASED = 32;
export const IBV_ACCESS_ON_DEMAND = 64;
export const IBV_ACCESS_HUGETLB = 128;
export const IBV_ACCESS_FLUSH_GLOBAL = 256;
export const IBV_ACCESS_FLUSH_PERSISTENT = 512;

/** Every access bit the device understands (up to FLUSH_PERSISTENT). */
export const IBV_ACCESS_SUPPORTED_MASK = 1023;

/**
 * `ib_access_writable` (rdma A6): the write-class bits. An MR with any of them may be
 * mapped read-write by the device; one without them only read-only.
 */
export function accessWritable(access: number): boolean {
  return (access & (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC | IBV_ACCESS_MW_BIND)) !== 0;
}
