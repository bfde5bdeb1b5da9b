/**
 * What `--at` (and `--diff`) accept: a virtual time, the Nth trace record, or the Nth
 * violation the sanitizer reports.
 *
 *   29400        29400 ns (a bare number is nanoseconds)
 *   29.4us       also 29.4µs, 1.5ms, 2s, 800ns
 *   record:812   the state as trace record 812 is emitted (records are numbered from 0)
 *   violation    the first violation; violation:3 the third
 */
export type InstantSpec =
  | { kind: 'time'; ns: number; text: string }
  | { kind: 'record'; seq: number; text: string }
  | { kind: 'violation'; index: number; text: string };

const UNITS: Record<string, number> = { ns: 1, us: 1_000, 'µs': 1_000, ms: 1_000_000, s: 1_000_000_000 };

export const INSTANT_FORMS = "a time (29400, 800ns, 29.4us, 1.5ms, 2s), record:N (the Nth trace record, from 0) or violation[:N] (the Nth violation, from 1)";

export function parseInstant(text: string): InstantSpec | { error: string } {
  const s = text.trim();
  const v = /^violation(?::(\d+))?$/.exec(s);
  if (v) {
    const index = v[1] === undefined ? 1 : Number(v[1]);
    if (index < 1 || !Number.isSafeInteger(index)) return { error: `'${text}': violations are numbered from 1` };
    return { kind: 'violation', index, text: s };
  }
  const r = /^record:(\d+)$/.exec(s);
  if (r) {
    const seq = Number(r[1]);
    if (!Number.isSafeInteger(seq)) return { error: `'${text}': record number too large` };
    return { kind: 'record', seq, text: s };
  }
  const t = /^(\d+(?:\.\d+)?)(ns|us|µs|ms|s)?$/.exec(s);
  if (t) {
    const ns = Math.round(Number(t[1]) * (UNITS[t[2] ?? 'ns'] as number));
    if (!Number.isSafeInteger(ns)) return { error: `'${text}': time too large` };
    return { kind: 'time', ns, text: s };
  }
  return { error: `cannot parse '${text}' as an instant; expected ${INSTANT_FORMS}` };
}
