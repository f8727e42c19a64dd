// Pieces of the synth model generator shared by synth.ts and synth-vocab.ts: the options error and
// the seeded PRNG (specified in the header of synth.ts). Both are re-exported from synth.ts.

/** Invalid synth options; `option` names the offending field. */
export class SynthOptionsError extends Error {
  constructor(
    readonly option: string,
    detail: string,
  ) {
    super(`synth option '${option}': ${detail}`);
    this.name = 'SynthOptionsError';
  }
}

// ---------------------------------------------------------------------------------------------
// PRNG

function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h = Math.imul(h ^ (c & 0xff), 0x01000193);
    if (c > 0xff) h = Math.imul(h ^ (c >>> 8), 0x01000193);
  }
  return h >>> 0;
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k));

/** xoshiro128** seeded through splitmix32. */
export class SynthRng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(key: string) {
    let s = fnv1a32(key);
    const next = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) | 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform in (−1, 1), symmetric, 24 bits. */
  uniform(): number {
    return ((this.nextU32() >>> 8) + 0.5) * 2 ** -23 - 1;
  }

  /** Integer in [0, n). */
  below(n: number): number {
    return Math.floor(((this.nextU32() >>> 8) / 2 ** 24) * n);
  }
}
