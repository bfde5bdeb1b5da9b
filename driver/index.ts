export { Dmirror, type MirrorEntry } from './dmirror.ts';
