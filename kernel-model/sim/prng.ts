import prand from 'pure-rand';

/**
 * One seeded generator per named sub-stream, so that adding a consumer of randomness
 * (a new component, a new preemption site) does not shift what every other component
 * draws. Streams are derived from the simulation seed and an FNV-1a hash of the name.
 *
 * @example
 *   const rng = new SeedSplitter(42).stream('preempt');
 *   rng.chance(0.25); rng.int(0, 9);
 */
export class SeedSplitter {
  private readonly streams = new Map<string, Rng>();
  constructor(readonly seed: number) {}

  stream(name: string): Rng {
    let rng = this.streams.get(name);
    if (!rng) {
      rng = new Rng((this.seed ^ fnv1a(name)) | 0);
      this.streams.set(name, rng);
    }
    return rng;
  }
}

export class Rng {
  private readonly gen: prand.RandomGenerator;
  constructor(seed: number) {
    // Not prand.xoroshiro128plus(seed): it sets the state to (-1, ~seed, seed, 0), so the
    // first draws of nearby seeds are nearly equal (seeds 1..50 all made the same first
    // preemption choice). Fill the whole 128-bit state from a splitmix32 of the seed.
    const next = splitmix32(seed);
    const state = [next(), next(), next(), next()];
    if (!state.some((w) => w !== 0)) state[0] = 1; // the one state xoroshiro cannot leave
    this.gen = prand.xoroshiro128plus.fromState(state);
  }
  /** Uniform integer in [lo, hi], both inclusive. */
  int(lo: number, hi: number): number {
    return prand.unsafeUniformIntDistribution(lo, hi, this.gen);
  }
  /** True with probability p (resolution 1e-6). */
  chance(p: number): boolean {
    if (p <= 0) return false;
    if (p >= 1) return true;
    return this.int(0, 999_999) < Math.round(p * 1_000_000);
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[this.int(0, items.length - 1)] as T;
  }
}

/** splitmix32: a 32-bit counter through an avalanche mix; one seed, a stream of words. */
function splitmix32(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x9e3779b9) | 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) | 0;
  };
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h | 0;
}
