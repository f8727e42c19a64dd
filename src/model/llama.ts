// Llama-family decoder (Llama 1/2, CodeLlama, Mistral-style GQA; SiLU-GLU or ReLU-GLU FFN).
// Config comes from GGUF metadata keys (`llama.*`), never from file names. Weights live in arenas
// (shared WebAssembly.Memory, ≤ 4 GiB each) grouped by layer; every buffer forward() touches is
// allocated once in makeState()/makeCache(), so forward() allocates nothing per token.
import type { GGUFKV } from '../formats/gguf.js';
import { rowBytes, typeName, TensorType } from '../formats/ggml-types.js';
import type { Arena, Compute, MatvecJob } from '../kernels/index.js';

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
  /** Sparse mode: low-rank predictor, active ⇔ (B·(A·x))_i > thr_i. */
  pred?: { a: Mat /* [rank × dim] */; b: Mat /* [ffn × rank] */; thr: number /* f32 [ffn] */; rank: number };
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

/** What the loader needs to know about one stored tensor. */
export interface TensorDesc {
  name: string;
  dims: number[]; // GGUF order: dims[0] = cols
  type: number;
  offset?: number; // absolute byte offset in the model file (GGUF); needed to stream all weights
}

export type ReadTensor = (name: string, dst: Uint8Array) => void;

export interface LoadOptions {
  /** KV cache context to reserve beside each layer (positions). */
  ctx: number;
  kvType: number; // TensorType.F16 (llama.cpp's default) or F32
  /** Largest arena, bytes; default 4 GiB − 64 KiB. Lower values exercise the multi-arena path. */
  maxArenaBytes?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Set for flash-layout files: each layer has `blk.N.ffn_bundle` instead of ffn_gate/up/down. */
  bundles?: BundleLayout;
  /** Hybrid mode: bundles stay on flash; each arena gets two FFN slots (alternating layers) that an
   * FFNSource fills before the layer's FFN runs. */
  streamFFN?: boolean;
  /** Naive mode: no weight is loaded; every layer (and the output layer, and one embedding row) is
   * read from flash into slots per token. Build it with planStreamAll(). */
  streamAll?: StreamPlan;
  /** Sparse mode: bundles stay on flash; each layer gets a DRAM neuron matrix region of `capacity`
   * records in its arena, and (predictors) its blk.N.pred_a / pred_b / pred_thr tensors. */
  sparse?: { capacity: number; predictors: boolean };
}

/** One O_DIRECT read of a streamed layer: file bytes [fileOffset, +bytes) land at slot + slotOffset. */
export interface Span {
  fileOffset: number; // 4096-aligned
  bytes: number; // multiple of 4096
  slotOffset: number; // 4096-aligned offset inside the slot
}

/** What one streamed piece (a layer, or the output layer) reads, and where each tensor lands. */
export interface StreamPiece {
  spans: Span[];
  bytes: number; // slot bytes (sum of span bytes)
  at: Map<string, number>; // tensor name → byte offset inside the slot
}

/** Naive mode: what each layer reads per token. Layer pieces share two slots per arena. */
export interface StreamPlan {
  layers: StreamPiece[];
  out: StreamPiece; // output_norm + output (token_embd when tied)
  embd: { fileOffset: number; rowBytes: number; slotBytes: number }; // one row read per token
  slotBytes: number; // largest layer piece: the size of each of an arena's two layer slots
}

const PAGE = 4096;
const down4k = (n: number) => Math.floor(n / PAGE) * PAGE;
const up4k = (n: number) => Math.ceil(n / PAGE) * PAGE;

/**
 * Groups a piece's tensors into maximal runs that are contiguous in the file (up to alignment
 * padding), one aligned read each; flash-layout files keep a layer's tensors together, so a layer
 * is one read. Tensors keep their in-page offset, so 32-byte GGUF alignment survives in the slot.
 */
function streamPiece(ts: TensorDesc[]): StreamPiece {
  const sorted = [...ts].sort((a, b) => a.offset! - b.offset!);
  const spans: Span[] = [];
  const at = new Map<string, number>();
  let slot = 0;
  let cur: { start: number; end: number; slot: number } | undefined;
  const close = () => {
    if (cur) spans.push({ fileOffset: cur.start, bytes: up4k(cur.end) - cur.start, slotOffset: cur.slot }), (slot += up4k(cur.end) - cur.start);
  };
  for (const t of sorted) {
    const end = t.offset! + matBytes(t);
    if (!cur || t.offset! > up4k(cur.end)) {
      close();
      cur = { start: down4k(t.offset!), end, slot };
    } else cur.end = Math.max(cur.end, end);
    at.set(t.name, cur.slot + (t.offset! - cur.start));
  }
  close();
  return { spans, bytes: slot, at };
}

/** Plans naive mode's per-token reads from the tensors' file offsets (GGUF files only). */
export function planStreamAll(cfg: LlamaConfig, tensors: TensorDesc[]): StreamPlan {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  for (const t of tensors) if (t.offset === undefined) throw new ModelConfigError(`streaming every weight needs file offsets; tensor '${t.name}' has none (use a GGUF file)`);
  const layers: StreamPiece[] = [];
  for (let l = 0; l < cfg.nLayers; l++) layers.push(streamPiece(tensors.filter((t) => t.name.startsWith(`blk.${l}.`))));
  const embd = byName.get('token_embd.weight');
  const norm = byName.get('output_norm.weight');
  if (!embd || !norm) throw new ModelConfigError(`model is missing tensor '${embd ? 'output_norm.weight' : 'token_embd.weight'}'`);
  const out = streamPiece([norm, byName.get('output.weight') ?? embd]);
  const rowBytes = rowBytes_(embd);
  return {
    layers, out, slotBytes: Math.max(...layers.map((p) => p.bytes)),
    embd: { fileOffset: embd.offset!, rowBytes, slotBytes: up4k(rowBytes) + PAGE },
  };
}

function rowBytes_(t: TensorDesc): number {
  return rowBytes(t.type as TensorType, t.dims[0]!);
}

/** Bytes of one FFN slot (a whole layer's records), rounded to 4 KiB for O_DIRECT. */
export function ffnSlotBytes(cfg: LlamaConfig, b: BundleLayout): number {
  return Math.ceil((cfg.ffnDim * b.recordBytes) / 4096) * 4096;
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

const ALIGN = 64;
const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;
const LAYER_TENSORS = ['attn_norm', 'attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_norm', 'ffn_gate', 'ffn_up', 'ffn_down'] as const;

const GGML_I8 = 24; // raw bytes: the type of a flash-layout bundle tensor [recordBytes × nFF]

function matBytes(t: TensorDesc): number {
  const rows = t.dims.slice(1).reduce((a, b) => a * b, 1);
  return (t.type === GGML_I8 ? t.dims[0]! : rowBytes(t.type as TensorType, t.dims[0]!)) * rows;
}

/** Bytes of per-arena scratch (activations) that makeState() allocates: see ArenaState. */
export function stateBytes(cfg: LlamaConfig, ctx: number, withLogits: boolean): number {
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  const wide = Math.max(cfg.dim, cfg.ffnDim, qDim);
  const f32 = (n: number) => align(4 * n);
  // xq holds the widest prepared activation: f32 copy is the largest format (4 B/elem) + slack.
  return f32(cfg.dim) * 3 + f32(wide) + f32(qDim) * 2 + f32(kvDim) * 2 + f32(cfg.ffnDim) * 2 +
    f32(cfg.nHeads * ctx) + (withLogits ? f32(cfg.vocabSize) : 0) + 4 * ALIGN;
}

export function kvBytesPerLayer(cfg: LlamaConfig, ctx: number, kvType: number): number {
  const el = kvType === TensorType.F32 ? 4 : 2;
  return 2 * align(ctx * cfg.nKvHeads * cfg.headDim * el);
}

function expectTensor(byName: Map<string, TensorDesc>, name: string, dims: number[]): TensorDesc {
  const t = byName.get(name);
  if (!t) throw new ModelConfigError(`model is missing tensor '${name}'`);
  const same = t.dims.length >= dims.length && dims.every((d, i) => t.dims[i] === d) && t.dims.slice(dims.length).every((d) => d === 1);
  if (!same) throw new ModelConfigError(`tensor '${name}' has shape [${t.dims}], expected [${dims}]`);
  if (dims.length === 1 && t.type !== TensorType.F32) {
    throw new ModelConfigError(`norm tensor '${name}' must be f32, is ${typeName(t.type)}`);
  }
  return t;
}

/**
 * Plans arenas by layer group and reads every tensor into them. Layer i's KV cache lives in the
 * same arena as its weights (the attention kernel reads both through one memory).
 */
export function loadWeights(
  cfg: LlamaConfig,
  tensors: TensorDesc[],
  read: ReadTensor,
  compute: Compute,
  opts: LoadOptions,
): LlamaWeights {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const { dim, ffnDim, vocabSize } = cfg;
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  const embd = expectTensor(byName, 'token_embd.weight', [dim, vocabSize]);
  const outNorm = expectTensor(byName, 'output_norm.weight', [dim]);
  const output = byName.has('output.weight') ? expectTensor(byName, 'output.weight', [dim, vocabSize]) : embd;
  const layerT: TensorDesc[][] = [];
  const B = opts.bundles;
  for (let l = 0; l < cfg.nLayers; l++) {
    const shapes: number[][] = [[dim], [dim, qDim], [dim, kvDim], [dim, kvDim], [qDim, dim], [dim], [dim, ffnDim], [dim, ffnDim], [ffnDim, dim]];
    if (B) {
      const attn = LAYER_TENSORS.slice(0, 6).map((n, i) => expectTensor(byName, `blk.${l}.${n}.weight`, shapes[i]!));
      const t = byName.get(`blk.${l}.ffn_bundle`);
      if (!t || t.type !== GGML_I8 || t.dims[0] !== B.recordBytes || t.dims[1] !== ffnDim) {
        throw new ModelConfigError(`flash-layout model: 'blk.${l}.ffn_bundle' missing or not [${B.recordBytes} × ${ffnDim}] bytes`);
      }
      const pred: TensorDesc[] = [];
      if (opts.sparse?.predictors) {
        const a = byName.get(`blk.${l}.pred_a`);
        const rank = a?.dims[1] ?? 0;
        if (!a || !(rank > 0)) throw new ModelConfigError(`sparse mode: predictor tensor 'blk.${l}.pred_a' missing (run: flashlm sparsify MODEL --calib CALIB)`);
        pred.push(expectTensor(byName, `blk.${l}.pred_a`, [dim, rank]), expectTensor(byName, `blk.${l}.pred_b`, [rank, ffnDim]));
        const thr = expectTensor(byName, `blk.${l}.pred_thr`, [ffnDim, 1]);
        if (thr.type !== TensorType.F32) throw new ModelConfigError(`'blk.${l}.pred_thr' must be f32`);
        pred.push(thr);
      }
      layerT.push([...attn, t, ...pred]);
    } else {
      layerT.push(LAYER_TENSORS.map((n, i) => expectTensor(byName, `blk.${l}.${n}.weight`, shapes[i]!)));
    }
  }
  const maxArena = opts.maxArenaBytes ?? 4 * 1024 ** 3 - 65536;
  const kvLayer = kvBytesPerLayer(cfg, opts.ctx, opts.kvType);
  const all = opts.streamAll;
  const sp = B ? opts.sparse : undefined;
  const stream = !!(B && (opts.streamFFN || sp));
  // streamed layers read into two slots per arena (alternating layers): the whole layer (naive) or
  // its FFN records (hybrid)
  const slot = all ? all.slotBytes : B && opts.streamFFN ? ffnSlotBytes(cfg, B) : 0;
  const matrixBytes = sp ? sp.capacity * B!.recordBytes + PAGE : 0;
  const scratch = stateBytes(cfg, opts.ctx, true) + 65536 + (slot ? 2 * (slot + PAGE) : 0); // + kernel-reserved first 64 KiB
  // streamed tensors are not loaded: a layer costs its resident part and KV
  const layerBytes = layerT.map((ts) => (all ? 0 : ts.reduce((s, t) => s + (stream && t.type === GGML_I8 ? 0 : align(matBytes(t))), 0)) + kvLayer + matrixBytes);
  const embBytes = all ? all.embd.slotBytes + PAGE : align(matBytes(embd));
  const outBytes = all ? all.out.bytes + PAGE : align(matBytes(outNorm)) + (output === embd ? 0 : align(matBytes(output)));

  // Greedy packing: [embd] [layers...] [output] in order, a new arena when the next piece won't fit.
  const groups: { bytes: number; pieces: (number | 'emb' | 'out')[] }[] = [];
  const place = (piece: number | 'emb' | 'out', bytes: number) => {
    if (bytes + scratch > maxArena) {
      throw new ModelConfigError(`tensor group ${piece} needs ${bytes} bytes, more than one arena (${maxArena})`);
    }
    let g = groups[groups.length - 1];
    if (!g || g.bytes + bytes > maxArena) groups.push((g = { bytes: scratch, pieces: [] }));
    g.bytes += bytes;
    g.pieces.push(piece);
  };
  place('emb', embBytes);
  layerBytes.forEach((b, l) => place(l, b));
  // A tied output matrix must share the embedding's arena; keep it there (naive reads it into its own slot).
  if (output === embd && !all) groups[0]!.pieces.push('out'), (groups[0]!.bytes += outBytes);
  else place('out', outBytes);
  const totalBytes = embBytes + outBytes + layerBytes.reduce((a, b) => a + b, 0);

  let done = 0;
  const shape = (t: TensorDesc, off: number): Mat => ({ off, type: t.type, rows: t.dims.slice(1).reduce((a, b) => a * b, 1), cols: t.dims[0]! });
  const loadMat = (arena: Arena, t: TensorDesc): Mat => {
    const bytes = matBytes(t);
    const off = arena.alloc(bytes, ALIGN);
    read(t.name, arena.u8(off, bytes));
    done += bytes;
    opts.onProgress?.(done, totalBytes);
    return shape(t, off);
  };
  const layers: LayerWeights[] = new Array(cfg.nLayers);
  let embArena: Arena | undefined;
  let embMat: Mat | undefined;
  let outArena: Arena | undefined;
  let outNormOff = 0;
  let outMat: Mat | undefined;
  let outSlot: number | undefined;
  for (const g of groups) {
    const arena = compute.createArena(g.bytes);
    const slots = slot ? [arena.alloc(slot, PAGE), arena.alloc(slot, PAGE)] : [];
    for (const p of g.pieces) {
      if (p === 'emb') {
        embArena = arena;
        embMat = all ? shape(embd, arena.alloc(all.embd.slotBytes, PAGE)) : loadMat(arena, embd);
      } else if (p === 'out') {
        outArena = arena;
        if (all) {
          outSlot = arena.alloc(all.out.bytes, PAGE);
          outNormOff = outSlot + all.out.at.get(outNorm.name)!;
          outMat = shape(output, outSlot + all.out.at.get(output.name)!);
        } else {
          outNormOff = loadMat(arena, outNorm).off;
          outMat = output === embd ? embMat! : loadMat(arena, output);
        }
      } else {
        const at = all?.layers[p]!.at;
        const m = layerT[p]!.map((t) =>
          at ? shape(t, slots[p % 2]! + at.get(t.name)!)
            : stream && t.type === GGML_I8 ? { off: sp ? arena.alloc(sp.capacity * B!.recordBytes, PAGE) : slots[p % 2]!, type: t.type, rows: 0, cols: 0 }
              : loadMat(arena, t));
        const base = {
          arena, attnNorm: m[0]!.off, wq: m[1]!, wk: m[2]!, wv: m[3]!, wo: m[4]!, ffnNorm: m[5]!.off, ...(slot ? { slot: slots[p % 2]! } : {}),
          ...(sp ? { matrix: m[6]!.off } : {}),
          ...(sp?.predictors ? { pred: { a: m[7]!, b: m[8]!, thr: m[9]!.off, rank: m[7]!.rows } } : {}),
        };
        if (B) {
          const bundle: Bundle = { off: m[6]!.off, n: ffnDim, recordBytes: B.recordBytes, type: B.type, gateOff: B.gateOff, upOff: B.upOff, downOff: B.downOff };
          const rows = (partOff: number): Mat => ({ off: bundle.off + partOff, type: B.type, rows: ffnDim, cols: dim });
          layers[p] = { ...base, gate: rows(B.gateOff), up: rows(B.upOff), down: rows(B.downOff), bundle };
        } else {
          layers[p] = { ...base, gate: m[6]!, up: m[7]!, down: m[8]! };
        }
      }
    }
  }
  return { embArena: embArena!, embd: embMat!, layers, outArena: outArena!, outNorm: outNormOff, output: outMat!, bytes: all ? 0 : totalBytes, ...(outSlot !== undefined ? { outSlot } : {}) };
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

export function makeState(cfg: LlamaConfig, w: LlamaWeights, ctx: number): RunState {
  const arenas = new Map<Arena, ArenaState>();
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  const wide = Math.max(cfg.dim, cfg.ffnDim, qDim);
  const all = [w.embArena, ...w.layers.map((l) => l.arena), w.outArena];
  for (const a of all) {
    if (arenas.has(a)) continue;
    const f = (n: number) => a.alloc(4 * n, ALIGN);
    const hb = f(cfg.ffnDim);
    arenas.set(a, {
      arena: a, x: f(cfg.dim), xb: f(cfg.dim), tmp: f(cfg.dim), xq: a.alloc(4 * wide + 4 * ALIGN, ALIGN),
      q: f(qDim), att: f(qDim), k: f(kvDim), v: f(kvDim), hb, hb2: f(cfg.ffnDim),
      scores: f(cfg.nHeads * ctx), logits: a === w.outArena ? f(cfg.vocabSize) : 0,
      hbF: a.f32(hb, cfg.ffnDim), mask: new Uint8Array(cfg.ffnDim),
    });
  }
  const o = arenas.get(w.outArena)!;
  return { arenas, logits: w.outArena.f32(o.logits, cfg.vocabSize) };
}

export interface KVCache {
  ctx: number; // positions reserved
  kvType: number;
  elBytes: number; // bytes per cached element: 4 (f32) or 2 (f16)
  k: number[]; // per layer: byte offset of [ctx × nKvHeads·headDim] keys in the layer's arena
  v: number[]; // per layer: same for values
  bytes: number;
}

export function makeCache(cfg: LlamaConfig, w: LlamaWeights, ctx: number, kvType: number): KVCache {
  const elBytes = kvType === TensorType.F32 ? 4 : 2;
  const n = ctx * cfg.nKvHeads * cfg.headDim * elBytes;
  const k: number[] = [];
  const v: number[] = [];
  for (const l of w.layers) {
    k.push(l.arena.alloc(n, ALIGN));
    v.push(l.arena.alloc(n, ALIGN));
  }
  return { ctx, kvType, elBytes, k, v, bytes: 2 * n * cfg.nLayers };
}

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
  att: { q: number; k: number; v: number; out: number; kvType: number; nHeads: number; nKvHeads: number; headDim: number; nPos: number; kvStride: number; scratch: number };
}

export function makePlans(cfg: LlamaConfig, w: LlamaWeights, st: RunState, cache: KVCache): { layers: LayerPlan[]; out: Proj } {
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
  c.storeKV(a, cache.kvType, s.k, cache.k[l]! + pos * kvDim * kvEl, kvDim);
  c.storeKV(a, cache.kvType, s.v, cache.v[l]! + pos * kvDim * kvEl, kvDim);
  P.att.nPos = pos + 1;
  c.attention(a, P.att);
  project(c, a, s.xq, P.wo);
  c.add(a, s.x, s.tmp, dim);
  return s;
}

/**
 * Sees each layer's FFN between the gate/up projections and the activation: xb = the FFN input
 * (normalized) [dim], hb = gate pre-activations G·x [ffnDim], hb2 = up projections U·x [ffnDim],
 * all f32 in the layer's arena (ArenaState offsets). For calibration; must not write.
 */
export type FFNProbe = (l: number, s: ArenaState) => void;

/**
 * h = act(g) ⊙ u over rows [0, n) of hb (gate pre-activations) and hb2 (up), into hb; with t > 0,
 * CATS-style sparsity (arXiv 2404.08763): h_i = 0 where |act(g_i)| < t. The mask is taken before
 * the kernel overwrites hb, and the kernel computes every h_i exactly as in the dense path, so t = 0
 * is bit-identical to no threshold.
 */
export function gatedAct(cfg: LlamaConfig, c: Compute, s: ArenaState, n: number, t: number): number {
  const { hbF, mask } = s;
  let dropped = 0;
  if (t > 0) {
    const relu = cfg.act === 'relu';
    for (let i = 0; i < n; i++) {
      const g = hbF[i]!;
      const v = relu ? (g > 0 ? g : 0) : Math.abs(g / (1 + Math.exp(-g)));
      const m = v < t ? 1 : 0;
      mask[i] = m;
      dropped += m;
    }
  }
  if (cfg.act === 'silu') c.siluMul(s.arena, s.hb, s.hb2, s.hb, n);
  else c.reluMul(s.arena, s.hb, s.hb2, s.hb, n);
  if (dropped) for (let i = 0; i < n; i++) if (mask[i]) hbF[i] = 0;
  return dropped;
}

/** Layer l's feed-forward block: h = act(G·x) ⊙ (U·x); y = D·h; residual added. */
function ffnBlock(cfg: LlamaConfig, w: LlamaWeights, plans: Plans, c: Compute, l: number, probe?: FFNProbe, thr?: Float32Array): void {
  const L = w.layers[l]!;
  const P = plans.layers[l]!;
  const s = P.s;
  const a = s.arena;
  c.rmsnorm(a, s.x, L.ffnNorm, s.xb, cfg.dim, cfg.normEps);
  project(c, a, s.xq, P.gateUp);
  probe?.(l, s);
  gatedAct(cfg, c, s, cfg.ffnDim, thr?.[l] ?? 0);
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
export function forward(cfg: LlamaConfig, w: LlamaWeights, st: RunState, plans: Plans, cache: KVCache, c: Compute, token: number, pos: number, probe?: FFNProbe, thr?: Float32Array): Float32Array {
  if (pos >= cache.ctx) throw new RangeError(`position ${pos} beyond the KV cache (${cache.ctx} positions)`);
  let s = embed(cfg, w, st, c, token);
  for (let l = 0; l < cfg.nLayers; l++) {
    s = attentionBlock(cfg, w, plans, cache, c, l, pos, s);
    ffnBlock(cfg, w, plans, c, l, probe, thr);
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
  src: FFNSource, stall: { ms: number }, probe?: FFNProbe, thr?: Float32Array,
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
    ffnBlock(cfg, w, plans, c, l, probe, thr);
  }
  if (all) await wait(n);
  src.prefetch(0, last); // the next token starts with layer 0: read it during the output layer
  return output(cfg, w, st, plans, c, s);
}
