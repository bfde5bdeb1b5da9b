/**
 * The errno values the device's verbs-like calls return, negated as the kernel and the
 * rdma-core providers do (`-EINVAL`). The device may not import the kernel model's errno
 * table (the dependency rule), so it keeps the few it needs; the numbers are Linux's.
 */
export const EPERM = 1;
export const ENOENT = 2;
export const EIO = 5;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EFAULT = 14;
export const EBUSY = 16;
export const EINVAL = 22;
export const EOPNOTSUPP = 95;
