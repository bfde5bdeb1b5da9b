// Types of bin/dist.js (plain JavaScript, so that the `lab` shim needs no transform).
export const ROOT: string;
export const DIST: string;
export const SOURCE_DIRS: string[];
export const SOURCE_FILES: string[];
export const ENTRIES: Record<'lab' | 'main' | 'sweep-worker', string>;
export function newestSource(root?: string): number;
export function freshDist(entry: 'lab' | 'main' | 'sweep-worker'): string | null;
