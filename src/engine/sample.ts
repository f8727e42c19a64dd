// Token sampling: greedy, or temperature with top-k and top-p (nucleus), seeded for reproducibility.
// Order as llama.cpp's default chain: top-k → top-p → temperature → draw.

export interface SamplingOptions {
  temperature?: number; // ≤ 0 means greedy (default 0)
  topK?: number; // 0 = off (default 40 when sampling)
  topP?: number; // 1 = off (default 0.95 when sampling)
  seed?: number; // default: fixed 0 so runs are reproducible unless asked otherwise
}

export class SamplingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SamplingError';
  }
}

export function argmax(x: Float32Array): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v > bv) (bv = v), (best = i);
  }
  return best;
}

/** mulberry32: small, fast, good enough for sampling (and seeded test data); 32-bit state. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Sampler {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  private readonly rand: () => number;
  private idx: Int32Array; // candidate ids [vocab], reused
  private prob: Float64Array; // candidate probabilities [vocab], reused

  constructor(vocab: number, o: SamplingOptions = {}) {
    this.temperature = o.temperature ?? 0;
    this.topK = o.topK ?? 40;
    this.topP = o.topP ?? 0.95;
    if (!(this.temperature >= 0) || !Number.isFinite(this.temperature)) throw new SamplingError(`temperature must be ≥ 0, got ${o.temperature}`);
    if (!Number.isInteger(this.topK) || this.topK < 0) throw new SamplingError(`top-k must be an integer ≥ 0, got ${o.topK}`);
    if (!(this.topP > 0 && this.topP <= 1)) throw new SamplingError(`top-p must be in (0, 1], got ${o.topP}`);
    this.rand = mulberry32(o.seed ?? 0);
    this.idx = new Int32Array(vocab);
    this.prob = new Float64Array(vocab);
  }

  sample(logits: Float32Array): number {
    if (this.temperature <= 0) return argmax(logits);
    const n = logits.length;
    const idx = this.idx;
    for (let i = 0; i < n; i++) idx[i] = i;
    // Candidates sorted by logit, descending. Partial sort would be faster for small k; vocab is ≤ 256k,
    // and sampling is a tiny share of a token's time next to the forward pass.
    const k = this.topK > 0 ? Math.min(this.topK, n) : n;
    const order = Array.from(idx.subarray(0, n)).sort((a, b) => logits[b]! - logits[a]!).slice(0, k);
    const max = logits[order[0]!]!;
    // top-p on the untempered distribution (llama.cpp applies temperature after top-p)
    let keep = k;
    if (this.topP < 1) {
      let sum = 0;
      for (let i = 0; i < k; i++) sum += (this.prob[i] = Math.exp(logits[order[i]!]! - max));
      let acc = 0;
      for (let i = 0; i < k; i++) {
        acc += this.prob[i]! / sum;
        if (acc >= this.topP) {
          keep = i + 1;
          break;
        }
      }
    }
    for (let i = 0; i < keep; i++) this.prob[i] = Math.exp((logits[order[i]!]! - max) / this.temperature);
    let mass = 0;
    for (let i = 0; i < keep; i++) mass += this.prob[i]!;
    let r = this.rand() * mass;
    for (let i = 0; i < keep; i++) {
      r -= this.prob[i]!;
      if (r <= 0) return order[i]!;
    }
    return order[keep - 1]!;
  }
}
