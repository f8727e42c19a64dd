// Sparse mode's forward pass ("LLM in a flash" §3): per layer, a low-rank predictor guesses from
// the FFN input which neurons will be active, flash/ makes those neurons' row-column bundles
// resident in the layer's DRAM neuron matrix (reading only the missing ones), and the FFN runs over
// the matrix's rows [0, n) with the sparsity threshold applied (Sparsity: CATS |act(g)| < t or gate g < t). Neurons the
// window kept resident but the predictor did not name are computed too (they are in DRAM already,
// and the threshold decides their fate exactly). Row order does not change the result.
import type { Compute, MatvecJob } from '../kernels/index.js';
import {
  attentionBlock, checkToken, embed, gatedAct, output,
  type ArenaState, type KVCache, type LlamaConfig, type LlamaWeights, type Plans, type RunState, type Sparsity, type SparsityRule,
} from './llama.js';

/** The rows of a layer's neuron matrix to compute over (records at off + r·recordBytes, r < n). */
export interface NeuronRows {
  off: number; // arena byte offset of row 0
  n: number;
  /** [≥ n] rows whose contribution must be dropped (1): records a collapsed read passed through */
  skip?: Uint8Array;
}

/** What model/ asks of flash/ in sparse mode (flash/neuron-source.ts implements it). */
export interface NeuronSource {
  /** Makes neurons ids[0..count) of layer l resident (reading what is missing) and resolves to the
   * rows to compute over; `token` counts forward passes (windowing). */
  ensure(l: number, ids: Int32Array, count: number, token: number): Promise<NeuronRows>;
  /** After ensure(l): the next chunk of the ids that did not fit in the matrix, read into a stream
   * buffer (n = 0: none left); valid until the call after next. Their contributions add up. */
  next(l: number): Promise<NeuronRows>;
  /** Rows per layer: more neurons than this cannot be resident at once. */
  readonly capacity: number;
  /** Most neurons per layer and token that ensure() + next() serve (the predictor's cap). */
  readonly maxNeurons: number;
}

/** Chooses the candidate neurons of layer l from its FFN input (s.xb). */
export interface Predictor {
  /** Writes candidate neuron ids into out[0..k) and returns k ≤ max (when more qualify, the most
   * likely ones are kept: the neuron matrix cannot hold more than `max` rows). */
  predict(c: Compute, l: number, s: ArenaState, out: Int32Array, max: number): number;
}

/** Every neuron (the dense baseline through the sparse machinery: threshold 0 + all = dense). */
export class AllPredictor implements Predictor {
  constructor(private readonly ffn: number) {}
  predict(_c: Compute, _l: number, _s: ArenaState, out: Int32Array, max: number): number {
    const k = Math.min(this.ffn, max);
    for (let i = 0; i < k; i++) out[i] = i;
    return k;
  }
}

/**
 * The stored low-rank predictors (blk.N.pred_a / pred_b / pred_thr): h = A·x [rank], s = B·h [ffn],
 * active ⇔ s_i > thr_i. Scratch: h goes into the layer's `att` buffer ([qDim] ≥ rank, free between
 * the attention block and the FFN) and s into `hb2` ([ffnDim], overwritten by the FFN afterwards).
 */
export class LowRankPredictor implements Predictor {
  private readonly jobs: { a: MatvecJob[]; b: MatvecJob[]; thr: Float32Array; s: Float32Array }[];
  private readonly margins: Float32Array; // [ffnDim] scratch: score − threshold of the candidates

  constructor(private readonly cfg: LlamaConfig, private readonly w: LlamaWeights, st: RunState) {
    this.margins = new Float32Array(cfg.ffnDim);
    const qDim = cfg.nHeads * cfg.headDim;
    this.jobs = w.layers.map((L, l) => {
      const p = L.pred;
      if (!p) throw new Error(`internal: layer ${l} has no predictor`);
      if (p.rank > qDim) throw new RangeError(`predictor rank ${p.rank} > ${qDim} (scratch)`);
      const s = st.arenas.get(L.arena)!;
      return {
        a: [{ type: p.a.type, w: p.a.off, rows: p.rank, cols: cfg.dim, xq: s.xq, y: s.att }],
        b: [{ type: p.b.type, w: p.b.off, rows: cfg.ffnDim, cols: p.rank, xq: s.xq, y: s.hb2 }],
        thr: L.arena.f32(p.thr, cfg.ffnDim),
        s: L.arena.f32(s.hb2, cfg.ffnDim),
      };
    });
  }

  predict(c: Compute, l: number, s: ArenaState, out: Int32Array, max: number): number {
    const j = this.jobs[l]!;
    const p = this.w.layers[l]!.pred!;
    const a = s.arena;
    c.prepareX(a, p.a.type, s.xb, s.xq, this.cfg.dim);
    c.matvec(a, j.a);
    c.prepareX(a, p.b.type, s.att, s.xq, p.rank);
    c.matvec(a, j.b);
    return keepAbove(j.s, j.thr, out, max, this.margins);
  }
}

/**
 * Writes the ids i with score[i] > thr[i] into out and returns how many; when more than `max`
 * qualify, keeps the `max` with the largest margin score − thr (ties by id). margins: scratch [ffn].
 */
function keepAbove(sc: Float32Array, thr: Float32Array, out: Int32Array, max: number, margins: Float32Array): number {
  let k = 0;
  for (let i = 0; i < sc.length; i++) if (sc[i]! > thr[i]!) out[k++] = i;
  if (k <= max) return k;
  // more candidates than rows: keep the `max` with the largest margin over their cutoff
  const m = margins.subarray(0, k);
  for (let i = 0; i < k; i++) m[i] = sc[out[i]!]! - thr[out[i]!]!;
  m.sort(); // ascending
  const cut = m[k - max]!;
  let above = 0; // strictly above the cut are kept first, ties fill up to max
  for (let i = 0; i < k; i++) if (sc[out[i]!]! - thr[out[i]!]! > cut) above++;
  let ties = max - above;
  let n = 0;
  for (let i = 0; i < k; i++) {
    const id = out[i]!;
    const d = sc[id]! - thr[id]!;
    if (d > cut || (d === cut && ties-- > 0)) out[n++] = id;
  }
  return n;
}

/**
 * The stored gate-copy predictors (blk.N.pred_gate, a q4_0/q8_0/f32 copy of W_gate, and pred_thr):
 * ĝ = W̃·x [ffn] into `hb2` (overwritten by the FFN afterwards), then the sparsity rule's own score
 * — |act(ĝ)| for 'abs', ĝ for 'gate' — against the per-neuron cutoff. The score is computed in
 * place over hb2 (ffn floats per layer: ~14k exp() at 13B shapes, ~0.1 ms).
 */
export class GatePredictor implements Predictor {
  private readonly jobs: { job: MatvecJob[]; type: number; thr: Float32Array; s: Float32Array }[];
  private readonly margins: Float32Array;

  constructor(private readonly cfg: LlamaConfig, w: LlamaWeights, st: RunState, private readonly rule: SparsityRule) {
    this.margins = new Float32Array(cfg.ffnDim);
    this.jobs = w.layers.map((L, l) => {
      const p = L.predGate;
      if (!p) throw new Error(`internal: layer ${l} has no gate predictor`);
      const s = st.arenas.get(L.arena)!;
      return {
        job: [{ type: p.w.type, w: p.w.off, rows: cfg.ffnDim, cols: cfg.dim, xq: s.xq, y: s.hb2 }],
        type: p.w.type,
        thr: L.arena.f32(p.thr, cfg.ffnDim),
        s: L.arena.f32(s.hb2, cfg.ffnDim),
      };
    });
  }

  predict(c: Compute, l: number, s: ArenaState, out: Int32Array, max: number): number {
    const j = this.jobs[l]!;
    c.prepareX(s.arena, j.type, s.xb, s.xq, this.cfg.dim);
    c.matvec(s.arena, j.job);
    const g = j.s;
    if (this.rule === 'abs') {
      if (this.cfg.act === 'silu') for (let i = 0; i < g.length; i++) { const v = g[i]!; g[i] = Math.abs(v / (1 + Math.exp(-v))); }
      else for (let i = 0; i < g.length; i++) if (!(g[i]! > 0)) g[i] = 0;
    }
    return keepAbove(g, j.thr, out, max, this.margins);
  }
}

/** Per layer: the FFN jobs over the neuron matrix; rows/offsets are set per token (no allocation). */
export interface SparsePlan {
  gateUp: { type: number; jobs: MatvecJob[] };
  downT: { type: number; w: number; rows: number; cols: number; rowStride: number; h: number; y: number };
}

export function makeSparsePlans(cfg: LlamaConfig, w: LlamaWeights, plans: Plans): SparsePlan[] {
  return w.layers.map((L, l) => {
    const b = L.bundle;
    if (!b || L.matrix === undefined) throw new Error(`internal: layer ${l} has no neuron matrix`);
    const s = plans.layers[l]!.s;
    const job = (partOff: number, y: number): MatvecJob => ({ type: b.type, w: L.matrix! + partOff, rows: 0, cols: cfg.dim, xq: s.xq, y, rowStride: b.recordBytes });
    return {
      gateUp: { type: b.type, jobs: [job(b.gateOff, s.hb), job(b.upOff, s.hb2)] },
      downT: { type: b.type, w: L.matrix + b.downOff, rows: 0, cols: cfg.dim, rowStride: b.recordBytes, h: s.hb, y: s.tmp },
    };
  });
}

/** Counters for --stats: what the predictor asked for and what the FFN kept. */
export interface SparseStats {
  predicted: number; // candidate neurons, summed over layers and tokens
  computed: number; // matrix rows the FFN ran over
  dropped: number; // of those, under the threshold
  stallMs: number; // waiting for neuron reads
}

/**
 * One token in sparse mode. `sparsity` holds the per-layer activation thresholds and their rule; `ids` is scratch
 * [ffnDim]. The reads for layer l happen after its attention block and predictor, while no
 * compute is pending (speculative prefetch of layer l+1 comes later).
 */
export async function forwardSparse(
  cfg: LlamaConfig, w: LlamaWeights, st: RunState, plans: Plans, sp: SparsePlan[], cache: KVCache, c: Compute,
  token: number, pos: number, src: NeuronSource, pred: Predictor, sparsity: Sparsity, ids: Int32Array, stats: SparseStats, pass: number,
): Promise<Float32Array> {
  if (pos >= cache.ctx) throw new RangeError(`position ${pos} beyond the KV cache (${cache.ctx} positions)`);
  checkToken(cfg, token);
  let s = embed(cfg, w, st, c, token);
  for (let l = 0; l < cfg.nLayers; l++) {
    s = attentionBlock(cfg, w, plans, cache, c, l, pos, s);
    const L = w.layers[l]!;
    const a = s.arena;
    c.rmsnorm(a, s.x, L.ffnNorm, s.xb, cfg.dim, cfg.normEps);
    const k = pred.predict(c, l, s, ids, src.maxNeurons);
    stats.predicted += k;
    const t0 = performance.now();
    let rows = await src.ensure(l, ids, k, pass);
    stats.stallMs += performance.now() - t0;
    let first = true;
    for (;;) {
      if (rows.n > 0) {
        const P = sp[l]!;
        const b = L.bundle!;
        for (const j of P.gateUp.jobs) j.rows = rows.n;
        P.gateUp.jobs[0]!.w = rows.off + b.gateOff;
        P.gateUp.jobs[1]!.w = rows.off + b.upOff;
        if (first) c.prepareX(a, P.gateUp.type, s.xb, s.xq, cfg.dim); // xq stays valid across chunks
        first = false;
        c.matvec(a, P.gateUp.jobs);
        stats.dropped += gatedAct(cfg, c, s, rows.n, sparsity.t[l]!, sparsity.rule, rows.skip);
        P.downT.rows = rows.n;
        P.downT.w = rows.off + b.downOff;
        c.matvecT(a, P.downT);
        c.add(a, s.x, s.tmp, cfg.dim);
        stats.computed += rows.n;
      }
      // the matrix's rows, then the chunks that did not fit (each read while the previous computes)
      const t1 = performance.now();
      rows = await src.next(l);
      stats.stallMs += performance.now() - t1;
      if (rows.n === 0) break;
    }
  }
  return output(cfg, w, st, plans, c, s);
}
