// Llama weights loader: plans arenas by layer group and reads tensors into them (RAM mode), or
// leaves streamed parts on flash and reserves what they are read into: two slots per arena
// (hybrid: a layer's FFN records; naive: a whole layer), or a neuron matrix per layer (sparse).
// Split from llama.ts (same architecture) to keep files small; llama.ts re-exports all of it.
import { rowBytes, typeName, TensorType } from '../formats/ggml-types.js';
import type { Arena, Compute } from '../kernels/index.js';
import { ModelConfigError, type Bundle, type BundleLayout, type LayerWeights, type LlamaConfig, type LlamaWeights, type Mat } from './llama.js';

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
  sparse?: { capacity: number; /** the file's predictors: low-rank (pred_a/b/thr), a gate copy (pred_gate/thr) or none */ predictors: false | 'lowrank' | 'gate'; /** rows per half of each arena's stream buffer (0: none) */ streamRows?: number };
  /** Paged KV pool beside each layer (see makeCache): positions in all pages (default ctx), page
   * size (default KV_PAGE_SIZE) and page tables per arena (sequences at once, default 1). */
  kv?: { positions: number; pageSize: number; slots: number };
  /** Activation bytes per arena (default stateBytes(): every buffer on its own; the engine passes
   * its liveness plan's peak). */
  actBytes?: number;
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
/** Sparse mode's predictor tensors (formats/predictors.ts): loaded only by sparse mode with file predictors. */
export const PRED_TENSOR = /^blk\.\d+\.pred_(a|b|thr|gate)$/;
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
  // a sparse-mode predictor (blk.N.pred_*, stored before each bundle) is not a weight of the dense pass
  for (let l = 0; l < cfg.nLayers; l++) layers.push(streamPiece(tensors.filter((t) => t.name.startsWith(`blk.${l}.`) && !PRED_TENSOR.test(t.name))));
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

/** Positions per KV page (vLLM's default block size). */
export const KV_PAGE_SIZE = 16;

/** Bytes of one layer's K and V pages holding `positions` (rounded up to whole pages). */
export function kvBytesPerLayer(cfg: LlamaConfig, positions: number, kvType: number, pageSize = KV_PAGE_SIZE): number {
  const el = kvType === TensorType.F32 ? 4 : 2;
  return 2 * align(Math.ceil(positions / pageSize) * pageSize * cfg.nKvHeads * cfg.headDim * el);
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
      if (opts.sparse?.predictors === 'lowrank') {
        const a = byName.get(`blk.${l}.pred_a`);
        const rank = a?.dims[1] ?? 0;
        if (!a || !(rank > 0)) throw new ModelConfigError(`sparse mode: predictor tensor 'blk.${l}.pred_a' missing (run: flashlm sparsify MODEL --calib CALIB)`);
        // h = A·x lands in the attention scratch ([qDim]); sparsify and readPredictorMeta keep rank ≤
        // dim. A larger rank from a damaged file was a RangeError in LowRankPredictor's constructor.
        if (rank > Math.min(dim, qDim)) throw new ModelConfigError(`sparse mode: predictor tensor 'blk.${l}.pred_a' has rank ${rank}, more than the model's width ${Math.min(dim, qDim)}`);
        pred.push(expectTensor(byName, `blk.${l}.pred_a`, [dim, rank]), expectTensor(byName, `blk.${l}.pred_b`, [rank, ffnDim]));
      } else if (opts.sparse?.predictors === 'gate') {
        pred.push(expectTensor(byName, `blk.${l}.pred_gate`, [dim, ffnDim]));
      }
      if (opts.sparse?.predictors) {
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
  const kv = opts.kv ?? { positions: opts.ctx, pageSize: KV_PAGE_SIZE, slots: 1 };
  const kvLayer = kvBytesPerLayer(cfg, kv.positions, opts.kvType, kv.pageSize);
  const all = opts.streamAll;
  const sp = B ? opts.sparse : undefined;
  const stream = !!(B && (opts.streamFFN || sp));
  // streamed layers read into two slots per arena (alternating layers): the whole layer (naive) or
  // its FFN records (hybrid)
  const slot = all ? all.slotBytes : B && opts.streamFFN ? ffnSlotBytes(cfg, B) : 0;
  const matrixBytes = sp ? sp.capacity * B!.recordBytes + PAGE : 0;
  const tables = align(kv.slots * Math.ceil(opts.ctx / kv.pageSize) * 4); // page tables (makeCache)
  // sparse: each arena's stream buffer, two halves of streamRows records (neurons that do not fit a matrix)
  const streamBytes = sp?.streamRows ? 2 * sp.streamRows * B!.recordBytes : 0;
  const scratch = (opts.actBytes ?? stateBytes(cfg, opts.ctx, true)) + tables + 65536 + (slot ? 2 * (slot + PAGE) : 0) + (streamBytes ? streamBytes + PAGE : 0); // + kernel-reserved first 64 KiB
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
    const streamOff = streamBytes ? arena.alloc(streamBytes, PAGE) : undefined;
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
          ...(streamOff !== undefined ? { stream: streamOff } : {}),
          ...(sp?.predictors === 'lowrank' ? { pred: { a: m[7]!, b: m[8]!, thr: m[9]!.off, rank: m[7]!.rows } } : {}),
          ...(sp?.predictors === 'gate' ? { predGate: { w: m[7]!, thr: m[8]!.off } } : {}),
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

