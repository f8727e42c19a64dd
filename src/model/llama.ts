// Llama-family decoder (Llama 1/2, CodeLlama, Mistral-style GQA; SiLU-GLU or ReLU-GLU FFN).
// Config comes from GGUF metadata keys (`llama.*`), never from file names. Weights live in arenas
// (shared WebAssembly.Memory, ≤ 4 GiB each) grouped by layer; every buffer forward() touches is
// allocated once in makeState()/makeCache(), so forward() allocates nothing per token.
import type { GGUFKV } from '../formats/gguf.js';
import { rowBytes, TensorType } from '../formats/ggml-types.js';
import type { Arena, Compute, MatvecJob } from '../kernels/index.js';
import type { KVCache, KVPool } from './llama-kv.js';

export class ModelConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelConfigError';
  }
}

export interface LlamaConfig {
  dim: number; // hidden size (embedding_length)
  nLayers: number;
  nHeads: number;
  nKvHeads: number; // < nHeads for grouped-query attention
  headDim: number; // dim / nHeads
  ffnDim: number; // feed_forward_length (neurons per FFN)
  vocabSize: number;
  ctxLen: number; // training context length
  normEps: number;
  ropeTheta: number;
  ropeDim: number; // rotated dims per head (= headDim for llama)
  act: 'silu' | 'relu';
}

function metaNum(meta: Map<string, GGUFKV>, key: string, dflt?: number): number {
  const kv = meta.get(key);
  if (kv === undefined) {
    if (dflt !== undefined) return dflt;
    throw new ModelConfigError(`model metadata is missing '${key}'`);
  }
  const v = kv.value;
  const n = typeof v === 'bigint' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new ModelConfigError(`metadata '${key}' is not a number`);
  return n;
}

export function configFromMetadata(meta: Map<string, GGUFKV>, vocabFromTensor?: number): LlamaConfig {
  const arch = meta.get('general.architecture')?.value;
  if (arch !== 'llama') {
    throw new ModelConfigError(`unsupported architecture '${String(arch)}' (flashlm supports: llama)`);
  }
  const dim = metaNum(meta, 'llama.embedding_length');
  const nHeads = metaNum(meta, 'llama.attention.head_count');
  const nKvHeads = metaNum(meta, 'llama.attention.head_count_kv', nHeads);
  const toks = meta.get('tokenizer.ggml.tokens')?.value as unknown[] | undefined;
  const vocabSize = metaNum(meta, 'llama.vocab_size', vocabFromTensor ?? toks?.length ?? 0);
  const act = meta.get('flashlm.activation')?.value ?? 'silu';
  const cfg: LlamaConfig = {
    dim,
    nLayers: metaNum(meta, 'llama.block_count'),
    nHeads,
    nKvHeads,
    headDim: dim / nHeads,
    ffnDim: metaNum(meta, 'llama.feed_forward_length'),
    vocabSize,
    ctxLen: metaNum(meta, 'llama.context_length', 2048),
    normEps: metaNum(meta, 'llama.attention.layer_norm_rms_epsilon', 1e-5),
    ropeTheta: metaNum(meta, 'llama.rope.freq_base', 10000),
    ropeDim: metaNum(meta, 'llama.rope.dimension_count', dim / nHeads),
    act: act === 'relu' ? 'relu' : 'silu',
  };
  const bad = (what: string) => new ModelConfigError(`invalid model config: ${what}`);
  for (const k of ['dim', 'nLayers', 'nHeads', 'nKvHeads', 'ffnDim', 'vocabSize', 'ctxLen', 'ropeDim'] as const) {
    const v = cfg[k];
    if (!Number.isInteger(v) || v <= 0 || v > 1 << 24) throw bad(`${k} = ${v}`);
  }
  if (!Number.isInteger(cfg.headDim) || cfg.headDim % 2 !== 0) throw bad(`head dim ${cfg.headDim} (dim ${dim} / heads ${nHeads})`);
  if (nHeads % nKvHeads !== 0) throw bad(`heads ${nHeads} not a multiple of kv heads ${nKvHeads}`);
  if (cfg.ropeDim > cfg.headDim || cfg.ropeDim % 2 !== 0) throw bad(`rope dim ${cfg.ropeDim}`);
  if (act !== 'silu' && act !== 'relu') throw bad(`activation '${String(act)}'`);
  // found by the fuzzer: these gave NaN logits instead of an error
  if (!(cfg.normEps > 0 && cfg.normEps < 1)) throw bad(`rms norm epsilon ${cfg.normEps}`);
  if (!(cfg.ropeTheta > 0)) throw bad(`rope freq base ${cfg.ropeTheta}`);
  // heads whose size is not dim / heads (HF head_dim, GGUF key_length) are not supported: refuse
  // rather than compute with the wrong head size
  const kl = metaNum(meta, 'llama.attention.key_length', cfg.headDim);
  const vl = metaNum(meta, 'llama.attention.value_length', cfg.headDim);
  if (kl !== cfg.headDim || vl !== cfg.headDim) {
    throw new ModelConfigError(`unsupported attention head size: key/value length ${kl}/${vl}, but embedding ${dim} / heads ${nHeads} = ${cfg.headDim}`);
  }
  return cfg;
}

/** A weight matrix [rows × cols] in GGML row layout at byte offset `off` of an arena. */
export interface Mat {
  off: number;
  type: number;
  rows: number;
  cols: number;
}

export interface LayerWeights {
  arena: Arena;
  attnNorm: number; // f32 [dim]
  wq: Mat; // [nHeads·headDim × dim]
  wk: Mat; // [nKvHeads·headDim × dim]
  wv: Mat; // [nKvHeads·headDim × dim]
  wo: Mat; // [dim × nHeads·headDim]
  ffnNorm: number; // f32 [dim]
  gate: Mat; // [ffnDim × dim] (unused when `bundle` is set)
  up: Mat; // [ffnDim × dim]
  down: Mat; // [dim × ffnDim]
  /** Flash layout: the FFN as ffnDim row-column bundles [gate row | up row | down column]. */
  bundle?: Bundle;
  /** Streamed modes: arena offset of the slot flash reads fill for this layer (shared with the
   * layers two before and after it in the same arena). */
  slot?: number;
  /** Sparse mode: arena offset (4 KiB aligned) of the neuron matrix region [capacity × recordBytes]. */
  matrix?: number;
  /** Sparse mode: arena offset of the arena's stream buffer [2 × streamRows × recordBytes] (shared by its layers). */
  stream?: number;
  /** Sparse mode: low-rank predictor, active ⇔ (B·(A·x))_i > thr_i. */
  pred?: { a: Mat /* [rank × dim] */; b: Mat /* [ffn × rank] */; thr: number /* f32 [ffn] */; rank: number };
  /** Sparse mode: gate-copy predictor, active ⇔ score(W̃·x)_i > thr_i (score: the sparsity rule's). */
  predGate?: { w: Mat /* [ffn × dim], q4_0/q8_0/f32 */; thr: number /* f32 [ffn] */ };
}

/** One layer's FFN stored as records (see formats/flash-layout.ts). Row order does not change y. */
export interface Bundle {
  off: number; // byte offset of record 0 in the layer's arena
  n: number; // records (neurons)
  recordBytes: number;
  type: number; // GGML type of each part (dim elements)
  gateOff: number; // byte offset of the gate part within a record
  upOff: number;
  downOff: number;
}

/** How a flash-layout file stores its FFN (from flashlm.* metadata). */
export interface BundleLayout {
  recordBytes: number;
  type: number;
  gateOff: number;
  upOff: number;
  downOff: number;
}

export interface LlamaWeights {
  embArena: Arena;
  embd: Mat; // [vocab × dim]; one row is dequantized per token
  layers: LayerWeights[];
  outArena: Arena;
  outNorm: number; // f32 [dim]
  output: Mat; // [vocab × dim] (may alias embd when tied and in the same arena)
  bytes: number; // weight bytes resident
  outSlot?: number; // naive mode: arena offset (outArena) of the output layer's slot
}

/** What model/ asks of flash/: make layer l's FFN records readable in its slot. */
export interface FFNSource {
  /** Start reading layer l into its slot unless it is there or on its way; never evicts `busy`. */
  prefetch(l: number, busy: number): void;
  /** Resolves when layer l's records are in its slot. */
  ready(l: number): Promise<void>;
  /** Naive mode: the slot holds all of layer l's weights (awaited before attention), layer nLayers
   * is the output layer, and embedRow reads one embedding row, resolving to its offset in embArena. */
  readonly allWeights?: boolean;
  embedRow?(token: number): Promise<number>;
}

export * from './llama-load.js';

const ALIGN = 64; // bytes: activation buffers (v128 loads and cache lines)

/** Names of the activation buffers (see ArenaState). */
export type ActName = 'x' | 'xb' | 'tmp' | 'xq' | 'q' | 'att' | 'k' | 'v' | 'hb' | 'hb2' | 'scores' | 'logits';

/** The steps of one layer (then the output layer) that activation lifetimes refer to. */
export const ACT_STEPS = ['attn_norm', 'qkv', 'rope+store', 'attention', 'wo', 'attn_add', 'ffn_norm', 'predictor', 'gate_up', 'act', 'down', 'ffn_add', 'out_norm', 'out_proj'] as const;

/** One activation buffer: bytes, and the ACT_STEPS indices it is live in (inclusive ranges). */
export interface ActBuffer { name: ActName; bytes: number; live: [number, number][] }

/** Where each buffer sits (byte offsets from the arena's activation block) and the block's size. */
export interface ActLayout { offsets: Record<ActName, number>; bytes: number }

/**
 * The activation buffers of one arena and their lifetimes over a layer's steps (ACT_STEPS), for a
 * liveness plan: buffers never live at the same step may share memory. Written from the code
 * below: attentionBlock (steps 0–5), ffnBlock / forwardSparse (6–11, the sparse predictor writes
 * att and hb2 at step 7 while xb must survive until gate_up), output (12–13). The calibration probe
 * reads xb, hb and hb2 at gate_up. x (residual) and logits (read by the caller after forward
 * returns) are live throughout. A layer ends (ffn_add) before the next one starts, so lifetimes
 * never wrap across layers.
 */
export function activationBuffers(cfg: LlamaConfig, ctx: number, withLogits: boolean): ActBuffer[] {
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  const wide = Math.max(cfg.dim, cfg.ffnDim, qDim);
  const all: [number, number][] = [[0, ACT_STEPS.length - 1]];
  return [
    { name: 'x', bytes: 4 * cfg.dim, live: all },
    { name: 'xb', bytes: 4 * cfg.dim, live: [[0, 1], [6, 8], [12, 13]] },
    { name: 'xq', bytes: 4 * wide + 4 * ALIGN, live: [[1, 1], [4, 4], [7, 8], [10, 10], [13, 13]] },
    { name: 'q', bytes: 4 * qDim, live: [[1, 3]] },
    { name: 'k', bytes: 4 * kvDim, live: [[1, 2]] },
    { name: 'v', bytes: 4 * kvDim, live: [[1, 2]] },
    { name: 'scores', bytes: 4 * cfg.nHeads * ctx, live: [[3, 3]] },
    { name: 'att', bytes: 4 * qDim, live: [[3, 4], [7, 7]] },
    { name: 'tmp', bytes: 4 * cfg.dim, live: [[4, 5], [10, 11]] },
    { name: 'hb', bytes: 4 * cfg.ffnDim, live: [[8, 10]] },
    { name: 'hb2', bytes: 4 * cfg.ffnDim, live: [[7, 9]] },
    { name: 'logits', bytes: withLogits ? 4 * cfg.vocabSize : 0, live: all },
  ];
}

/** Every buffer on its own, in ActBuffer order (the layout without reuse). */
export function sequentialLayout(bufs: ActBuffer[]): ActLayout {
  const offsets = {} as Record<ActName, number>;
  let off = 0;
  for (const b of bufs) {
    offsets[b.name] = off;
    off += Math.ceil(b.bytes / ALIGN) * ALIGN;
  }
  return { offsets, bytes: off };
}

/** Activation buffers of one arena (byte offsets). Shapes in elements, all f32 unless noted. */
export interface ArenaState {
  arena: Arena;
  x: number; // [dim] residual stream
  xb: number; // [dim] normalized input of a block
  tmp: number; // [dim] output of wo / down before the residual add
  xq: number; // prepared activation (f32/f16/bf16/q8_0 blocks) of up to max(dim, ffn, qDim) elements
  q: number; // [nHeads·headDim]
  att: number; // [nHeads·headDim] attention output
  k: number; // [nKvHeads·headDim]
  v: number; // [nKvHeads·headDim]
  hb: number; // [ffnDim] gate output, then act(gate)·up
  hb2: number; // [ffnDim] up output
  scores: number; // [nHeads × ctx] attention probabilities
  logits: number; // [vocab] (output arena only, else 0)
  hbF: Float32Array; // view of hb [ffnDim] (thresholding runs in JS over it)
  mask: Uint8Array; // [ffnDim] JS memory: 1 = activation under the threshold (dropped)
}

export interface RunState {
  arenas: Map<Arena, ArenaState>;
  logits: Float32Array; // view on the output arena's logits [vocab]
}

/**
 * Allocates each arena's activation buffers as one block laid out by `layout` (default: every buffer
 * on its own; the engine passes a liveness plan from memory/ that overlaps buffers whose lifetimes
 * do not intersect, see activationBuffers). Allocated once: forward() allocates nothing per token.
 */
export function makeState(cfg: LlamaConfig, w: LlamaWeights, ctx: number, layout: (bufs: ActBuffer[]) => ActLayout = sequentialLayout): RunState {
  const arenas = new Map<Arena, ArenaState>();
  const all = [w.embArena, ...w.layers.map((l) => l.arena), w.outArena];
  for (const a of all) {
    if (arenas.has(a)) continue;
    const out = a === w.outArena;
    const lay = layout(activationBuffers(cfg, ctx, out));
    const base = a.alloc(lay.bytes, ALIGN);
    const o = (n: ActName) => base + lay.offsets[n];
    const hb = o('hb');
    arenas.set(a, {
      arena: a, x: o('x'), xb: o('xb'), tmp: o('tmp'), xq: o('xq'), q: o('q'), att: o('att'), k: o('k'), v: o('v'), hb, hb2: o('hb2'),
      scores: o('scores'), logits: out ? o('logits') : 0,
      hbF: a.f32(hb, cfg.ffnDim), mask: new Uint8Array(cfg.ffnDim),
    });
  }
  const o = arenas.get(w.outArena)!;
  return { arenas, logits: w.outArena.f32(o.logits, cfg.vocabSize) };
}

export * from './llama-kv.js';

/** A projection: one input vector, several weight matrices; jobs grouped by weight type. */
interface Proj {
  x: number; // input activation offset (f32)
  n: number; // input length
  groups: { type: number; jobs: MatvecJob[] }[];
}

function makeProj(s: ArenaState, x: number, n: number, mats: [Mat, number][], rowStride?: number): Proj {
  const groups: Proj['groups'] = [];
  for (const [m, y] of mats) {
    let g = groups.find((gr) => gr.type === m.type);
    if (!g) groups.push((g = { type: m.type, jobs: [] }));
    g.jobs.push({ type: m.type, w: m.off, rows: m.rows, cols: m.cols, xq: s.xq, y, ...(rowStride ? { rowStride } : {}) });
  }
  return { x, n, groups };
}

/** @internal shared with model/sparse.ts */
export function project(c: Compute, a: Arena, xq: number, p: Proj): void {
  for (const g of p.groups) {
    c.prepareX(a, g.type, p.x, xq, p.n);
    c.matvec(a, g.jobs);
  }
}

/** Prebuilt per-layer work lists, so forward() builds no objects per token. */
export interface LayerPlan {
  s: ArenaState;
  qkv: Proj;
  wo: Proj;
  gateUp: Proj;
  down: Proj;
  /** Bundled FFN: y = Σ_i h_i · down_i over the records (see Bundle). */
  downT?: { type: number; w: number; rows: number; cols: number; rowStride: number; h: number; y: number };
  /** k, v, pageTable, pageSize and nPos are set per call from the sequence's KVCache */
  att: { q: number; k: number; v: number; out: number; kvType: number; nHeads: number; nKvHeads: number; headDim: number; nPos: number; kvStride: number; scratch: number; pageTable: number; pageSize: number };
}

export function makePlans(cfg: LlamaConfig, w: LlamaWeights, st: RunState, cache: KVPool | KVCache): { layers: LayerPlan[]; out: Proj } {
  const qDim = cfg.nHeads * cfg.headDim;
  const layers = w.layers.map((L, l) => {
    const s = st.arenas.get(L.arena)!;
    return {
      s,
      qkv: makeProj(s, s.xb, cfg.dim, [[L.wq, s.q], [L.wk, s.k], [L.wv, s.v]]),
      wo: makeProj(s, s.att, qDim, [[L.wo, s.tmp]]),
      gateUp: makeProj(s, s.xb, cfg.dim, [[L.gate, s.hb], [L.up, s.hb2]], L.bundle?.recordBytes),
      down: makeProj(s, s.hb, cfg.ffnDim, L.bundle ? [] : [[L.down, s.tmp]]),
      downT: L.bundle && {
        type: L.bundle.type, w: L.bundle.off + L.bundle.downOff, rows: L.bundle.n, cols: cfg.dim,
        rowStride: L.bundle.recordBytes, h: s.hb, y: s.tmp,
      },
      att: {
        q: s.q, k: cache.k[l]!, v: cache.v[l]!, out: s.att, kvType: cache.kvType, nHeads: cfg.nHeads,
        nKvHeads: cfg.nKvHeads, headDim: cfg.headDim, nPos: 0, kvStride: cfg.nKvHeads * cfg.headDim, scratch: s.scores,
        pageTable: 0, pageSize: cache.pageSize,
      },
    };
  });
  const o = st.arenas.get(w.outArena)!;
  return { layers, out: makeProj(o, o.xb, cfg.dim, [[w.output, o.logits]]) };
}

/** @internal shared with model/sparse.ts */
export function moveResidual(cfg: LlamaConfig, from: ArenaState, to: ArenaState): void {
  if (from === to) return;
  to.arena.f32(to.x, cfg.dim).set(from.arena.f32(from.x, cfg.dim));
}

export type Plans = ReturnType<typeof makePlans>;

/** @internal shared with model/sparse.ts */
export function checkToken(cfg: LlamaConfig, token: number): void {
  if (!(token >= 0 && token < cfg.vocabSize)) throw new RangeError(`token id ${token} outside vocab [0, ${cfg.vocabSize})`);
}

/** Dequantizes the embedding row at arena offset `rowOff` (default: row `token` of the resident table). */
/** @internal shared with model/sparse.ts */
export function embed(cfg: LlamaConfig, w: LlamaWeights, st: RunState, c: Compute, token: number, rowOff?: number): ArenaState {
  checkToken(cfg, token);
  const s = st.arenas.get(w.embArena)!;
  c.dequantRow(s.arena, w.embd.type, rowOff ?? w.embd.off + token * rowBytes(w.embd.type as TensorType, cfg.dim), s.x, cfg.dim);
  return s;
}

/** Layer l's attention block (residual added); returns the layer's arena state. */
/** @internal shared with model/sparse.ts */
export function attentionBlock(cfg: LlamaConfig, w: LlamaWeights, plans: Plans, cache: KVCache, c: Compute, l: number, pos: number, prev: ArenaState): ArenaState {
  const { dim, headDim } = cfg;
  const kvDim = cfg.nKvHeads * headDim;
  const kvEl = cache.elBytes;
  const L = w.layers[l]!;
  const P = plans.layers[l]!;
  moveResidual(cfg, prev, P.s);
  const s = P.s;
  const a = s.arena;
  c.rmsnorm(a, s.x, L.attnNorm, s.xb, dim, cfg.normEps);
  project(c, a, s.xq, P.qkv);
  c.rope(a, s.q, cfg.nHeads, headDim, pos, cfg.ropeTheta, cfg.ropeDim);
  c.rope(a, s.k, cfg.nKvHeads, headDim, pos, cfg.ropeTheta, cfg.ropeDim);
  // the position's row inside its page; the page comes from the sequence's page table
  const pi = Math.floor(pos / cache.pageSize);
  const page = cache.tables[l]![pi]!;
  if (!(page >= 0)) throw new RangeError(`internal: no KV page for position ${pos} (page table entry ${pi})`);
  const row = page * cache.pageBytes + (pos - pi * cache.pageSize) * kvDim * kvEl;
  c.storeKV(a, cache.kvType, s.k, cache.k[l]! + row, kvDim);
  c.storeKV(a, cache.kvType, s.v, cache.v[l]! + row, kvDim);
  const att = P.att;
  att.k = cache.k[l]!;
  att.v = cache.v[l]!;
  att.pageTable = cache.table[l]!;
  att.pageSize = cache.pageSize;
  att.nPos = pos + 1;
  c.attention(a, att);
  project(c, a, s.xq, P.wo);
  c.add(a, s.x, s.tmp, dim);
  return s;
}

/**
 * Per-layer activation sparsity: which FFN neurons are dropped (their h_i = 0), layer l at t[l].
 *  'abs'  (CATS, arXiv 2404.08763): |act(g_i)| < t (t = 0: none). For SiLU this keeps a band of
 *         negative g (|SiLU| peaks at 0.278 near g = −1.28) as well as g above a cutoff.
 *  'gate' the gate pre-activation itself: g_i < t (t = −∞: none). One half-line, so a linear
 *         predictor of g can learn it; drops every negative contribution when t ≥ 0.
 */
export type SparsityRule = 'abs' | 'gate';
export interface Sparsity { rule: SparsityRule; t: Float32Array /* [nLayers] */ }

/**
 * Sees each layer's FFN between the gate/up projections and the activation: xb = the FFN input
 * (normalized) [dim], hb = gate pre-activations G·x [ffnDim], hb2 = up projections U·x [ffnDim],
 * all f32 in the layer's arena (ArenaState offsets). For calibration; must not write.
 */
export type FFNProbe = (l: number, s: ArenaState) => void;

/**
 * h = act(g) ⊙ u over rows [0, n) of hb (gate pre-activations) and hb2 (up), into hb, with
 * threshold t under `rule` (see Sparsity) dropping neurons: h_i = 0. The mask is taken before the
 * kernel overwrites hb, and the kernel computes every h_i exactly as in the dense path, so "no
 * threshold" (abs: t = 0, gate: t = −∞) is bit-identical to the dense path.
 */
export function gatedAct(cfg: LlamaConfig, c: Compute, s: ArenaState, n: number, t: number, rule: SparsityRule = 'abs', skip?: Uint8Array): number {
  const { hbF, mask } = s;
  let dropped = 0;
  // skip: rows flagged by the caller (gap records of collapsed reads) count as dropped whatever their activation
  if (rule === 'gate' && t > -Infinity) {
    for (let i = 0; i < n; i++) {
      const m = hbF[i]! < t || (skip && skip[i]) ? 1 : 0;
      mask[i] = m;
      dropped += m;
    }
  } else if (rule === 'abs' && t > 0) {
    const relu = cfg.act === 'relu';
    for (let i = 0; i < n; i++) {
      const g = hbF[i]!;
      const v = relu ? (g > 0 ? g : 0) : Math.abs(g / (1 + Math.exp(-g)));
      const m = v < t || (skip && skip[i]) ? 1 : 0;
      mask[i] = m;
      dropped += m;
    }
  } else if (skip) {
    for (let i = 0; i < n; i++) dropped += mask[i] = skip[i] ? 1 : 0;
  }
  if (cfg.act === 'silu') c.siluMul(s.arena, s.hb, s.hb2, s.hb, n);
  else c.reluMul(s.arena, s.hb, s.hb2, s.hb, n);
  if (dropped) for (let i = 0; i < n; i++) if (mask[i]) hbF[i] = 0;
  return dropped;
}

/** Layer l's feed-forward block: h = act(G·x) ⊙ (U·x); y = D·h; residual added. */
function ffnBlock(cfg: LlamaConfig, w: LlamaWeights, plans: Plans, c: Compute, l: number, probe?: FFNProbe, sp?: Sparsity): void {
  const L = w.layers[l]!;
  const P = plans.layers[l]!;
  const s = P.s;
  const a = s.arena;
  c.rmsnorm(a, s.x, L.ffnNorm, s.xb, cfg.dim, cfg.normEps);
  project(c, a, s.xq, P.gateUp);
  probe?.(l, s);
  if (sp) gatedAct(cfg, c, s, cfg.ffnDim, sp.t[l]!, sp.rule);
  else gatedAct(cfg, c, s, cfg.ffnDim, 0);
  if (P.downT) c.matvecT(a, P.downT);
  else project(c, a, s.xq, P.down);
  c.add(a, s.x, s.tmp, cfg.dim);
}

/** @internal shared with model/sparse.ts */
export function output(cfg: LlamaConfig, w: LlamaWeights, st: RunState, plans: Plans, c: Compute, s: ArenaState): Float32Array {
  const o = st.arenas.get(w.outArena)!;
  moveResidual(cfg, s, o);
  c.rmsnorm(o.arena, o.x, w.outNorm, o.xb, cfg.dim, cfg.normEps);
  project(c, o.arena, o.xq, plans.out);
  return st.logits;
}

/**
 * One token through the network at position `pos` (KV for positions < pos must be in `cache`).
 * Returns the logits view [vocab] (overwritten by the next call).
 */
export function forward(cfg: LlamaConfig, w: LlamaWeights, st: RunState, plans: Plans, cache: KVCache, c: Compute, token: number, pos: number, probe?: FFNProbe, sp?: Sparsity): Float32Array {
  if (pos >= cache.ctx) throw new RangeError(`position ${pos} beyond the KV cache (${cache.ctx} positions)`);
  let s = embed(cfg, w, st, c, token);
  for (let l = 0; l < cfg.nLayers; l++) {
    s = attentionBlock(cfg, w, plans, cache, c, l, pos, s);
    ffnBlock(cfg, w, plans, c, l, probe, sp);
  }
  return output(cfg, w, st, plans, c, s);
}

/**
 * forward() with weights streamed from flash: layer l+1 is read while layer l computes. Hybrid: only
 * the FFN records, so layer l's attention also runs while its own records arrive. Naive
 * (src.allWeights): every layer, the output layer (id nLayers) and the embedding row. `stall.ms`
 * accumulates the time spent waiting for reads (the I/O the compute could not hide).
 */
export async function forwardStreamed(
  cfg: LlamaConfig, w: LlamaWeights, st: RunState, plans: Plans, cache: KVCache, c: Compute, token: number, pos: number,
  src: FFNSource, stall: { ms: number }, probe?: FFNProbe, sp?: Sparsity,
): Promise<Float32Array> {
  if (pos >= cache.ctx) throw new RangeError(`position ${pos} beyond the KV cache (${cache.ctx} positions)`);
  const n = cfg.nLayers;
  const all = !!src.allWeights;
  const last = all ? n : n - 1; // naive reads the output layer too
  const wait = async (l: number) => {
    const t0 = performance.now();
    await src.ready(l);
    stall.ms += performance.now() - t0;
  };
  src.prefetch(0, -1);
  let s: ArenaState;
  if (all) {
    checkToken(cfg, token);
    const t0 = performance.now();
    const off = await src.embedRow!(token);
    stall.ms += performance.now() - t0;
    s = embed(cfg, w, st, c, token, off);
  } else s = embed(cfg, w, st, c, token);
  for (let l = 0; l < n; l++) {
    if (l + 1 <= last) src.prefetch(l + 1, l);
    if (all) await wait(l);
    s = attentionBlock(cfg, w, plans, cache, c, l, pos, s);
    if (!all) await wait(l);
    ffnBlock(cfg, w, plans, c, l, probe, sp);
  }
  if (all) await wait(n);
  src.prefetch(0, last); // the next token starts with layer 0: read it during the output layer
  return output(cfg, w, st, plans, c, s);
}
