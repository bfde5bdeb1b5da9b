/**
 * Linux errno values. Kernel-model calls return them negated, as the kernel does
 * (`-EINVAL`), or a non-negative result; they never throw for bad input.
 */
export const EPERM = 1;
export const ENOENT = 2;
export const EINTR = 4;
export const EIO = 5;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const ESRCH = 3;
export const EBUSY = 16;
export const EEXIST = 17;
export const EINVAL = 22;
export const ENOSPC = 28;
export const EAGAIN = 11;
export const EOVERFLOW = 75;
export const EOPNOTSUPP = 95;
export const ENODEV = 19;
export const ENOSYS = 38;
export const EMLINK = 31;

const NAMES: Record<number, string> = {
  [EPERM]: 'EPERM', [ENOENT]: 'ENOENT', [EINTR]: 'EINTR', [EIO]: 'EIO', [ENOMEM]: 'ENOMEM',
  [EFAULT]: 'EFAULT', [EACCES]: 'EACCES', [ESRCH]: 'ESRCH', [EBUSY]: 'EBUSY', [EEXIST]: 'EEXIST', [EINVAL]: 'EINVAL',
  [ENOSPC]: 'ENOSPC', [EAGAIN]: 'EAGAIN', [EOVERFLOW]: 'EOVERFLOW', [EOPNOTSUPP]: 'EOPNOTSUPP', [ENODEV]: 'ENODEV', [ENOSYS]: 'ENOSYS',
  [EMLINK]: 'EMLINK',
};

/** `-EINVAL` -> "EINVAL"; a non-negative value is returned as its decimal text. */
export function errnoName(ret: number): string {
  if (ret >= 0) return String(ret);
  return NAMES[-ret] ?? `E${-ret}`;
}

export function isErr(ret: number): boolean {
  return ret < 0;
}
