// A loaded model: source file → config → weights in arenas → KV cache → prefill / decodeOne / generate.
// The small verbs (prefill, decodeOne, sample) are what the CLI, the server and the tests drive.
import { openModel, type ModelSource } from '../formats/source.js';
import { readGGUF } from '../formats/gguf.js';
import { openFlashLayout } from '../formats/flash-layout.js';
import { runChecks, type RunChecks } from '../formats/checksum.js';
import { TensorType, typeName } from '../formats/ggml-types.js';
import { Compute } from '../kernels/index.js';
import { planBudget, RUNTIME_OVERHEAD_BYTES, sparseSlackBytes, type BudgetPlan } from '../memory/budget.js';
import {
  configFromMetadata, ffnSlotBytes, forward, forwardStreamed, kvBytesPerLayer, loadWeights, makeCache, makePlans, makeState, planStreamAll, PRED_TENSOR,
  activationBuffers, pageTableBytes, ACT_STEPS, KV_PAGE_SIZE, type KVPool,
  type BundleLayout, type FFNProbe, type Sparsity, type SparsityRule, type StreamPlan, type KVCache, type LlamaConfig, type LlamaWeights, type RunState,
} from '../model/llama.js';
import { tokenizerFromGGUF, tokenizerFromHFDir, type Tokenizer, type TokenizerInfo } from '../tokenizer/index.js';
import { Sampler, type SamplingOptions } from './sample.js';
import { planLiveness, type LivenessPlan } from '../memory/liveness.js';
import { MemoryPool } from '../memory/pool.js';
import { PagedKV, type Sequence } from './kv.js';
import { DirectReader, ioUringActive, threadpoolSize, type ReadFn } from '../flash/io.js';
import { WholeLayerSource } from '../flash/layer-source.js';
import { MatrixNeuronSource } from '../flash/neuron-source.js';
import { collapseThreshold } from '../flash/read-planner.js';
import {
  AllPredictor, forwardSparse, GatePredictor, LowRankPredictor, makeSparsePlans, type Predictor, type SparsePlan, type SparseStats,
} from '../model/sparse.js';
import { loadDiskProfile, profilePathFor, type DiskProfile } from '../flash/profile.js';

export class EngineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EngineError';
  }
}

export interface LoadModelOptions {
  threads?: number; // compute threads (main + workers), default 2
  /** KV positions to reserve; default min(training context, 4096). A function sees the config and
   * tokenizer first, so a caller can reserve exactly prompt + new tokens. */
  ctx?: number | ((cfg: LlamaConfig, tokenizer: Tokenizer) => number);
  kvType?: 'f16' | 'f32'; // KV cache element type; f16 as llama.cpp
  /** Paged KV cache: positions per page (default 16). */
  kvPageSize?: number;
  /** Sequences that may be open at once (page tables; default 4). */
  sequences?: number;
  /** Positions in the KV page pool shared by the sequences (default ctx: one full-length sequence;
   * 'budget': what --memory leaves after everything else, at most sequences × ctx, at least ctx). */
  kvPositions?: number | 'budget';
  maxArenaBytes?: number; // testing hook: smaller arenas force the multi-arena path
  /** DRAM budget in bytes (--memory). RAM mode must fit every weight, the KV cache, activations and
   * the runtime; otherwise load fails with a BudgetError that gives the numbers. */
  memory?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** ram: every weight in DRAM. hybrid: resident part in DRAM, each layer's whole FFN read from flash
   * (O_DIRECT) every token — the paper's "Hybrid" baseline; needs a flash-layout file. naive: every
   * weight read from flash every token (the paper's "Naive" baseline); any GGUF file. */
  mode?: 'ram' | 'hybrid' | 'naive' | 'sparse';
  /** hybrid/naive: reads in flight and the largest single read (bytes). */
  inFlight?: number;
  maxReadBytes?: number;
  /** Testing hook: the low-level read (fault injection); default fs.read. */
  readFn?: ReadFn;
  /** sparse: the file's low-rank predictors (default), or every neuron ('all': the dense FFN through
   * the sparse machinery, for tests). */
  predictor?: 'file' | 'all';
  /** Per-layer activation thresholds (model/llama.ts Sparsity): 'file': the file's
   * flashlm.sparse.threshold under its flashlm.sparse.rule (sparse mode's default); in
   * ram/hybrid/naive mode this is the oracle (exact gate, only the threshold's effect). Default:
   * none, except sparse mode with predictor 'file'. */
  thresholds?: 'file' | Float32Array;
  /** The rule of Float32Array thresholds: 'abs' (CATS |act(g)| < t dropped, default) or 'gate' (g < t dropped). */
  rule?: SparsityRule;
  /** sparse: neuron matrix rows per layer (default: what the --memory budget leaves, else all). */
  neuronCapacity?: number;
  /** sparse: rows per half of each arena's stream buffer, through which predicted neurons that do not
   * fit in the matrix are read and computed (default 1024 when the capacity is below the FFN width,
   * measured faster than 512 on CodeLlama-13B: README; 0 drops them instead, the old behaviour). */
  streamRows?: number;
  /** sparse: a neuron stays in DRAM while used in the last `window` tokens (default 5; 0 = no reuse). */
  window?: number;
  /** sparse: access-collapse gap in records (default 0 = off: on CodeLlama-13B every gap measured
   *  slower, README "Collapse, measured again"; 'auto': the disk profile's cost model decides). */
  collapseGap?: number | 'auto';
  /** sparse: what the neuron matrices keep between tokens ('ripple': linking-aligned, Ripple §5; default the window). */
  admission?: 'default' | 'ripple';
  /** sparse, collapse on: matrix rows per needed neuron freed (LRU) for gap records when the matrix is full (default 0). */
  gapRoom?: number;
  /** Flash-layout files: check the header digest at load, each resident tensor's digest as it is
   * loaded and each layer's weights the first time they are read from flash (default true). */
  verify?: boolean;
}

export interface TokenTimes {
  ioStallMs: number; // flash modes: time forward() waited for flash reads (I/O not hidden by compute)
  decodeIoStallMs: number; // the part of ioStallMs spent inside decodeAsync
  prefillMs: number;
  decodeMs: number; // total time inside decodeOne
  decoded: number; // tokens through decodeOne
  prefilled: number;
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens: number;
  stopOnEos?: boolean; // default true
  signal?: AbortSignal;
}

export interface GeneratedToken {
  id: number;
  bytes: Uint8Array; // this token's bytes (may be part of a multi-byte character)
}

export interface ReadPlan {
  inFlight: number;
  maxReadBytes: number;
  source: string; // 'options' | 'disk profile <file>' | 'defaults (no disk profile; run flashlm profile-disk)'
}

/**
 * Whole-layer reads are long and contiguous: use the profile's largest chunk size, with the reads in
 * flight that were best for it; without a saved profile, 1 MiB × 32 (DirectReader's defaults).
 * Measured on CodeLlama-13B hybrid at a 50% cap: the profile's overall best cell (128 KiB × 16,
 * 1851 MB/s for random reads) gave 903 MB/s and 0.200 tokens/s while computing, 1 MiB × 32 gave
 * 1358 MB/s and 0.279 tokens/s — per-read overhead competes with compute for the 2 cores.
 */
function tryProfile(path: string): DiskProfile | undefined {
  try {
    const p = loadDiskProfile(profilePathFor(path));
    return p.cells.length ? p : undefined;
  } catch {
    return undefined;
  }
}

function chooseReadPlan(path: string, o: LoadModelOptions): ReadPlan {
  if (o.inFlight !== undefined && o.maxReadBytes !== undefined) return { inFlight: o.inFlight, maxReadBytes: o.maxReadBytes, source: 'options' };
  let prof: DiskProfile | undefined;
  let file = '';
  try {
    file = profilePathFor(path);
    prof = loadDiskProfile(file);
  } catch {
    prof = undefined;
  }
  if (!prof || prof.cells.length === 0) {
    return { inFlight: o.inFlight ?? 32, maxReadBytes: o.maxReadBytes ?? 1 << 20, source: 'defaults (no disk profile; run flashlm profile-disk)' };
  }
  const biggest = Math.max(...prof.cells.map((c) => c.chunkBytes));
  const best = prof.cells.filter((c) => c.chunkBytes === biggest).reduce((a, b) => (b.mbps > a.mbps ? b : a));
  return { inFlight: o.inFlight ?? best.inFlight, maxReadBytes: o.maxReadBytes ?? best.chunkBytes, source: `disk profile ${file}` };
}

export class Model {
  readonly times: TokenTimes = { ioStallMs: 0, decodeIoStallMs: 0, prefillMs: 0, decodeMs: 0, decoded: 0, prefilled: 0 };
  /** hybrid/naive mode: the source reading weights from flash. */
  ffnSource: WholeLayerSource | undefined;
  private reader: DirectReader | undefined;
  /** Flash modes: whether reads go through io_uring (UV_USE_IO_URING=1 at process start). */
  ioUring = false;
  /** hybrid: read size and reads in flight, and where they came from. */
  readPlan: ReadPlan | undefined;
  /** Things the CLI should tell the user (e.g. O_DIRECT refused, buffered reads). */
  readonly warnings: string[] = [];
  private stall = { ms: 0 };
  /** sparse mode: the neuron matrices, predictor and counters. */
  sparse: {
    src: MatrixNeuronSource; pred: Predictor; sp: Sparsity; plans: SparsePlan[]; ids: Int32Array; stats: SparseStats;
    capacity: number; window: number; collapseGap: number;
  } | undefined;
  /** Per-layer activation thresholds applied in ram/hybrid/naive mode (the oracle), if any. */
  sparsity: Sparsity | undefined;
  private passes = 0; // forward passes (the window's clock)
  /** Calibration: sees every layer's FFN input and gate/up projections (see FFNProbe). */
  ffnProbe: FFNProbe | undefined;
  /** The --memory plan, when a budget was given. */
  plan: BudgetPlan | undefined;
  private pos = 0;
  private plans: ReturnType<typeof makePlans>;
  /** Paged KV cache: page allocator, page tables, open sequences (engine/kv.ts). */
  kv!: PagedKV;
  /** The --memory ledger (memory/pool.ts): every part charged once, KV pages lent on demand. */
  pool!: MemoryPool;
  /** Activation liveness plans per arena (layers only / the output arena, with logits); peak and
   * naive bytes summed over the arenas. */
  actPlan!: { layer: LivenessPlan; out: LivenessPlan; steps: readonly string[]; arenas: number; peakBytes: number; naiveBytes: number };
  private seq0: Sequence | undefined; // the plain verbs' sequence (prefill, decodeOne, generate without one)
  private cur: Sequence | undefined; // the sequence being computed under the step lock
  private lock: Promise<void> = Promise.resolve();

  private constructor(
    readonly path: string,
    readonly source: ModelSource,
    readonly cfg: LlamaConfig,
    readonly weights: LlamaWeights,
    readonly tokenizer: Tokenizer,
    readonly compute: Compute,
    readonly state: RunState,
    readonly kvPool: KVPool,
  ) {
    this.plans = makePlans(cfg, weights, state, kvPool);
  }

  static async load(path: string, opts: LoadModelOptions = {}): Promise<Model> {
    const source = openModel(path);
    let compute: Compute | undefined;
    try {
      // Flash-layout files keep the FFN as row-column bundles; in RAM mode they are loaded whole.
      let bundles: BundleLayout | undefined;
      let checks: RunChecks | undefined;
      let fl: ReturnType<typeof openFlashLayout> | undefined; // parsed once: records' file offsets, permutations
      if (source.kind === 'gguf' && source.metadata.has('flashlm.layout.version')) {
        const gguf = readGGUF(path);
        // a file edited after conversion fails here (header) or as its bytes are first loaded
        if (opts.verify ?? true) checks = runChecks(gguf);
        fl = openFlashLayout(gguf);
        const layout = fl;
        const part = (name: string) => {
          const i = layout.parts.indexOf(name);
          if (i < 0) throw new EngineError(`${path}: flash layout without a '${name}' part is not supported (parts: ${layout.parts.join(',')})`);
          return layout.partOffsets[i]!;
        };
        bundles = { recordBytes: fl.recordBytes, type: fl.dtype, gateOff: part('gate'), upOff: part('up'), downOff: part('down') };
      }
      const embd = source.tensors.find((t) => t.name === 'token_embd.weight');
      const cfg = configFromMetadata(source.metadata, embd?.dims[1]);
      for (const t of source.tensors) {
        if (bundles && t.name.endsWith('.ffn_bundle')) continue;
        if (![TensorType.F32, TensorType.F16, TensorType.BF16, TensorType.Q8_0, TensorType.Q4_0].includes(t.type as TensorType)) {
          throw new EngineError(`${path}: tensor '${t.name}' has type ${typeName(t.type)}, which flashlm cannot compute with (supported: f32, f16, bf16, q8_0, q4_0); convert it with \`flashlm convert\``);
        }
      }
      const tokenizer = source.kind === 'hf' ? tokenizerFromHFDir(path) : tokenizerFromGGUF(source.metadata);
      const ctx = typeof opts.ctx === 'function' ? opts.ctx(cfg, tokenizer) : opts.ctx ?? Math.min(cfg.ctxLen, 4096);
      if (!Number.isInteger(ctx) || ctx < 1) throw new EngineError(`context must be a positive integer, got ${ctx}`);
      if (ctx > cfg.ctxLen) throw new EngineError(`context ${ctx} is longer than the model's training context (${cfg.ctxLen})`);
      const kvType = opts.kvType === 'f32' ? TensorType.F32 : TensorType.F16;
      const hybrid = opts.mode === 'hybrid';
      const naive = opts.mode === 'naive';
      const sparse = opts.mode === 'sparse';
      if ((hybrid || sparse) && !bundles) {
        throw new EngineError(`--mode ${opts.mode} reads the FFN from a flash-layout file; ${path} is not one (make it with: flashlm convert SRC -o OUT.gguf --quant q8_0 --layout flash)`);
      }
      const filePred = sparse && (opts.predictor ?? 'file') === 'file';
      const predKind: unknown = source.metadata.get('flashlm.predictor.kind')?.value ?? 'lowrank';
      if (filePred && predKind !== 'lowrank' && predKind !== 'gate') throw new EngineError(`${path}: flashlm.predictor.kind '${String(predKind)}' is not lowrank or gate (made by a newer flashlm?)`);
      if (filePred && !source.tensors.some((t) => t.name === (predKind === 'gate' ? 'blk.0.pred_gate' : 'blk.0.pred_a'))) {
        throw new EngineError(`--mode sparse needs predictors in ${path}: calibrate and sparsify it first (flashlm calibrate MODEL --text DIR; flashlm sparsify MODEL --calib CALIB)`);
      }
      let thresholds: Sparsity | undefined;
      const thrOpt = opts.thresholds ?? (filePred ? 'file' : undefined);
      if (thrOpt === 'file') {
        const v = source.metadata.get('flashlm.sparse.threshold')?.value;
        if (!(v instanceof Float32Array) || v.length !== cfg.nLayers) throw new EngineError(`${path} has no per-layer sparsity thresholds (flashlm.sparse.threshold); run flashlm sparsify`);
        const rule: unknown = source.metadata.get('flashlm.sparse.rule')?.value ?? 'abs';
        if (rule !== 'abs' && rule !== 'gate') throw new EngineError(`${path}: flashlm.sparse.rule '${String(rule)}' is not abs or gate (made by a newer flashlm?)`);
        thresholds = { rule, t: v };
      } else if (thrOpt) {
        if (thrOpt.length !== cfg.nLayers) throw new EngineError(`thresholds: ${thrOpt.length} values for ${cfg.nLayers} layers`);
        thresholds = { rule: opts.rule ?? 'abs', t: thrOpt };
      }
      if (naive && source.kind !== 'gguf') {
        throw new EngineError(`--mode naive reads every weight from one GGUF file; ${path} is a directory (make a GGUF with: flashlm convert SRC -o OUT.gguf)`);
      }
      const streamAll: StreamPlan | undefined = naive ? planStreamAll(cfg, source.tensors) : undefined;
      // sparse: the stream buffer's rows per half (the final value below, once the capacity is known)
      let streamRows = sparse ? Math.min(cfg.ffnDim, opts.streamRows ?? 1024) : 0;
      if (!Number.isInteger(streamRows) || streamRows < 0) throw new EngineError(`stream rows must be an integer ≥ 0, got ${opts.streamRows}`);
      // paged KV pool and activation liveness plans (sizes the arenas and the budget)
      const pageSize = opts.kvPageSize ?? KV_PAGE_SIZE;
      const sequences = opts.sequences ?? 4;
      if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 4096) throw new EngineError(`KV page size must be an integer in [1, 4096], got ${pageSize}`);
      if (!Number.isInteger(sequences) || sequences < 1 || sequences > 4096) throw new EngineError(`sequences must be an integer in [1, 4096], got ${sequences}`);
      const fullPool = sequences * Math.ceil(ctx / pageSize) * pageSize; // every sequence at full length
      let kvPos = typeof opts.kvPositions === 'number' ? opts.kvPositions : opts.kvPositions === 'budget' && opts.memory === undefined ? fullPool : ctx;
      if (!Number.isInteger(kvPos) || kvPos < ctx) throw new EngineError(`KV pool of ${kvPos} positions cannot hold one sequence of ctx ${ctx}`);
      const actLayer = planLiveness(activationBuffers(cfg, ctx, false));
      const actOut = planLiveness(activationBuffers(cfg, ctx, true));
      const tableBytes = pageTableBytes(ctx, pageSize, sequences);
      // predictor tensors are resident only when sparse mode runs them (the loader skips them otherwise)
      const loaded = source.tensors.filter((t) => !PRED_TENSOR.test(t.name) || (sparse && filePred));
      const resident = naive ? 0 : loaded.filter((t) => !((hybrid || sparse) && t.name.endsWith('.ffn_bundle'))).reduce((s, t) => s + t.bytes, 0);
      let plan: BudgetPlan | undefined;
      if (opts.memory !== undefined) {
        const kv = kvBytesPerLayer(cfg, kvPos, kvType, pageSize) * cfg.nLayers;
        const arenas = Math.ceil((resident + kv) / (4 * 2 ** 30 - 2 ** 16)) + 1; // layer groups, +1 for packing slack
        const input = {
          budget: opts.memory, overhead: RUNTIME_OVERHEAD_BYTES, resident, ctx, kv,
          activations: (actOut.bytes + tableBytes + 65536) * arenas,
          // the slots streamed weights are read into: two per arena (alternating layers), and in
          // naive mode the output layer's and an embedding row's
          slots: hybrid ? 2 * arenas * ffnSlotBytes(cfg, bundles!)
            : streamAll ? 2 * arenas * (streamAll.slotBytes + 4096) + streamAll.out.bytes + streamAll.embd.slotBytes + 8192
              : sparse ? arenas * (2 * streamRows * bundles!.recordBytes + 4096) : 0,
          // sparse: the bookkeeping slack taken from the neuron cache below (without it a budget could
          // pass the plan and leave a negative capacity) + at least 16 rows per layer when the stream
          // buffer serves what does not fit, 64 without it (the predictor is cut to the capacity), + a
          // page of alignment each
          minNeuronCache: sparse ? sparseSlackBytes(cfg.nLayers, cfg.ffnDim) + cfg.nLayers * ((streamRows > 0 ? 16 : 64) * bundles!.recordBytes + 4096) : 0,
        };
        plan = planBudget(input);
        if (opts.kvPositions === 'budget' && plan.spare > 0) {
          // the spare budget becomes KV pages (RAM/hybrid/naive; sparse gives it to the neuron cache)
          const pageAll = kvBytesPerLayer(cfg, pageSize, kvType, pageSize) * cfg.nLayers;
          kvPos = Math.min(fullPool, Math.ceil(kvPos / pageSize) * pageSize + Math.floor((plan.spare - 64 * cfg.nLayers) / pageAll) * pageSize);
          plan = planBudget({ ...input, kv: kvBytesPerLayer(cfg, kvPos, kvType, pageSize) * cfg.nLayers });
        }
      }
      let capacity = 0;
      if (sparse) {
        const slack = sparseSlackBytes(cfg.nLayers, cfg.ffnDim);
        const fromBudget = plan ? Math.floor(((plan.neuronCache - slack) / cfg.nLayers - 4096) / bundles!.recordBytes) : cfg.ffnDim;
        capacity = Math.min(cfg.ffnDim, opts.neuronCapacity ?? fromBudget);
        if (!Number.isInteger(capacity) || capacity < 1) throw new EngineError(`neuron capacity ${capacity}: needs at least 1 row per layer`);
        if (capacity >= cfg.ffnDim) streamRows = 0; // every neuron fits: nothing to stream
      }
      compute = await Compute.create({ threads: opts.threads ?? 2 });
      const weights = loadWeights(cfg, source.tensors, (name, dst) => (source.readTensor(name, dst), checks?.tensor(name, dst)), compute, {
        ctx, kvType, maxArenaBytes: opts.maxArenaBytes, onProgress: opts.onProgress, bundles, streamFFN: hybrid, streamAll,
        kv: { positions: kvPos, pageSize, slots: sequences }, actBytes: actOut.bytes,
        ...(sparse ? { sparse: { capacity, predictors: filePred ? (predKind as 'lowrank' | 'gate') : false, streamRows } } : {}),
      });
      const state = makeState(cfg, weights, ctx, (b) => planLiveness(b));
      const cache = makeCache(cfg, weights, ctx, kvType, { positions: kvPos, pageSize, slots: sequences });
      const m = new Model(path, source, cfg, weights, tokenizer, compute, state, cache);
      m.plan = plan;
      const nArenas = state.arenas.size;
      m.actPlan = { layer: actLayer, out: actOut, steps: ACT_STEPS, arenas: nArenas, peakBytes: actLayer.bytes * (nArenas - 1) + actOut.bytes, naiveBytes: actLayer.naiveBytes * (nArenas - 1) + actOut.naiveBytes };
      // the ledger: what each part holds (the planner above already refused a budget too small)
      const pool = (m.pool = new MemoryPool(opts.memory));
      pool.charge('runtime', RUNTIME_OVERHEAD_BYTES);
      pool.charge('arenaReserved', 65536 * nArenas);
      pool.charge('weights', resident);
      pool.charge('activations', m.actPlan.peakBytes);
      pool.charge('pageTables', tableBytes * cache.tableBase.size);
      const slotArenas = new Set(weights.layers.map((L) => L.arena)).size;
      if (hybrid) pool.charge('slots', 2 * slotArenas * ffnSlotBytes(cfg, bundles!));
      if (streamAll) pool.charge('slots', 2 * slotArenas * streamAll.slotBytes + streamAll.out.bytes + streamAll.embd.slotBytes);
      if (sparse) pool.charge('neuronCache', cfg.nLayers * capacity * bundles!.recordBytes);
      if (sparse && streamRows) pool.charge('slots', slotArenas * 2 * streamRows * bundles!.recordBytes);
      m.kv = new PagedKV(weights, cache, pool.attachKV(cache.pages, pageSize, 2 * cache.pageBytes * cfg.nLayers), ctx, cfg.vocabSize);
      m.sparsity = sparse ? undefined : thresholds;
      if (hybrid || naive || sparse) {
        m.readPlan = chooseReadPlan(path, opts);
        // sparse mode reads single records: 512-byte alignment unless records are whole pages
        const align = sparse && bundles!.recordBytes % 4096 !== 0 ? 512 : 4096;
        m.reader = await DirectReader.open(path, { inFlight: m.readPlan.inFlight, maxReadBytes: m.readPlan.maxReadBytes, readFn: opts.readFn, align });
        if (m.reader.warning) m.warnings.push(m.reader.warning);
        // libuv reads UV_USE_IO_URING only when the process starts; after the probe read the ring exists if it is on.
        // Without it every read occupies a threadpool thread: fewer threads than reads in flight caps the queue depth.
        m.ioUring = ioUringActive();
        const pool = threadpoolSize();
        if (!m.ioUring && pool < m.readPlan.inFlight) {
          m.warnings.push(`only ${pool} of ${m.readPlan.inFlight} reads are really in flight (libuv threadpool of ${pool} threads): set UV_THREADPOOL_SIZE=${m.readPlan.inFlight} before node starts (the flashlm command does)`);
        }
        const slotOf = (l: number) => (l < cfg.nLayers
          ? { arena: weights.layers[l]!.arena, off: weights.layers[l]!.slot! }
          : { arena: weights.outArena, off: weights.outSlot! });
        if (sparse) {
          const layers = fl!.layers;
          let gap = opts.collapseGap ?? 0;
          if (gap === 'auto') {
            const prof = tryProfile(path);
            gap = prof ? collapseThreshold(prof, bundles!.recordBytes, { inFlight: m.readPlan.inFlight, maxReadBytes: m.readPlan.maxReadBytes }) : 0;
          }
          const window = opts.window ?? 5;
          const src = new MatrixNeuronSource(m.reader, weights.layers.map((L, l) => ({
            arena: L.arena, matrixOff: L.matrix!, fileOffset: layers[l]!.bundleOffset, perm: layers[l]!.perm, ...(L.stream !== undefined ? { streamOff: L.stream } : {}),
          })), { nFF: cfg.ffnDim, recordBytes: bundles!.recordBytes, capacity, window, collapseGap: gap, maxReadBytes: m.readPlan.maxReadBytes, admission: opts.admission, gapRoom: opts.gapRoom, streamRows });
          m.sparse = {
            src, pred: !filePred ? new AllPredictor(cfg.ffnDim) : predKind === 'gate' ? new GatePredictor(cfg, weights, state, thresholds!.rule) : new LowRankPredictor(cfg, weights, state),
            sp: thresholds ?? { rule: 'abs', t: new Float32Array(cfg.nLayers) }, plans: makeSparsePlans(cfg, weights, m.plans), ids: new Int32Array(cfg.ffnDim),
            stats: { predicted: 0, computed: 0, dropped: 0, stallMs: 0 }, capacity, window, collapseGap: gap,
          };
        } else if (streamAll) {
          const size = new Map(source.tensors.map((t) => [t.name, t.bytes]));
          const piece = (l: number) => (l < cfg.nLayers ? streamAll.layers[l]! : streamAll.out);
          // each tensor of a layer is checked the first time the layer arrives in its slot
          const check = checks && ((l: number, slot: Uint8Array) => {
            for (const [name, off] of piece(l).at) checks!.tensor(name, slot.subarray(off, off + size.get(name)!));
          });
          m.ffnSource = new WholeLayerSource(m.reader, slotOf, (l) => piece(l).spans, {
            slot: { arena: weights.embArena, off: weights.embd.off }, fileOffset: streamAll.embd.fileOffset, rowBytes: streamAll.embd.rowBytes,
          }, check);
        } else {
          const layers = fl!.layers;
          const bytes = ffnSlotBytes(cfg, bundles!);
          const records = cfg.ffnDim * bundles!.recordBytes;
          m.ffnSource = new WholeLayerSource(m.reader, slotOf, (l) => [{ fileOffset: layers[l]!.bundleOffset, bytes, slotOffset: 0 }], undefined,
            checks && ((l, slot) => checks!.bundle(l, slot.subarray(0, records))));
        }
      }
      return m;
    } catch (e) {
      source.close();
      await compute?.close();
      throw e;
    }
  }

  get position(): number {
    return this.pos;
  }

  get ctx(): number {
    return this.kv.maxPositions;
  }

  /** The KV view of the sequence being computed: a locked sequence step's, else the plain verbs'. */
  private get cache(): KVCache {
    return (this.cur ?? this.defaultSeq()).view;
  }

  private defaultSeq(): Sequence {
    if (!this.seq0 || this.seq0.isClosed) {
      const s = this.kv.tryOpen(this.ctx);
      if (!s) throw new EngineError(`the KV cache is taken by ${this.kv.sequences} open sequence(s): prefill/decodeOne need ${this.ctx} positions`);
      this.seq0 = s;
    }
    return this.seq0;
  }

  /** Opens a sequence of up to `positions` KV positions (prompt + new tokens), waiting first come
   * first served for pages and a page table; see engine/kv.ts. Close it when done. */
  openSequence(positions: number, signal?: AbortSignal): Promise<Sequence> {
    return this.kv.open(positions, signal);
  }

  /** Runs f with `seq` as the sequence being computed, one at a time (forward passes share the
   * activation buffers; flash modes await reads mid-pass). */
  private async withSeq(seq: Sequence, f: () => Promise<Float32Array>): Promise<Float32Array> {
    const prev = this.lock;
    let release!: () => void;
    this.lock = new Promise<void>((r) => (release = r));
    await prev;
    const saved = this.pos;
    this.cur = seq;
    this.pos = seq.pos;
    try {
      const logits = await f();
      seq.logits.set(logits); // the next sequence's step overwrites the shared logits
      return seq.logits;
    } finally {
      seq.pos = this.pos;
      this.cur = undefined;
      this.pos = saved;
      release();
    }
  }

  /** prefillAsync for an open sequence; returns the sequence's own logits [vocab]. */
  prefillSeq(seq: Sequence, tokens: number[]): Promise<Float32Array> {
    return this.withSeq(seq, () => this.prefillAsync(tokens));
  }

  /** decodeAsync for an open sequence. */
  decodeSeq(seq: Sequence, token: number): Promise<Float32Array> {
    return this.withSeq(seq, () => this.decodeAsync(token));
  }

  /** Resolves when no sequence step is running or queued. */
  async idle(): Promise<void> {
    let l: Promise<void>;
    do {
      l = this.lock;
      await l;
    } while (l !== this.lock);
  }

  /** Forget the sequence (the KV entries are simply overwritten from position 0). */
  reset(): void {
    this.pos = 0;
  }

  private step(token: number): Float32Array {
    if (this.ffnSource || this.sparse) throw new EngineError('internal: a flash-mode model runs through the async verbs (prefillAsync, decodeAsync, generate)');
    this.checkRoom();
    const logits = forward(this.cfg, this.weights, this.state, this.plans, this.cache, this.compute, token, this.pos, this.ffnProbe, this.sparsity);
    this.pos++;
    return logits;
  }

  private checkPrompt(tokens: number[]): void {
    if (tokens.length === 0) throw new EngineError('empty prompt');
    const room = this.cur?.maxPositions ?? this.ctx;
    if (this.pos + tokens.length > room) {
      throw new EngineError(`prompt of ${tokens.length} tokens does not fit the context (${room - this.pos} positions left; raise --ctx, up to the model's ${this.cfg.ctxLen})`);
    }
  }

  /** Checks there is room for position pos and makes sure its KV page is allocated. */
  private checkRoom(): void {
    const seq = this.cur ?? this.defaultSeq();
    if (this.pos >= seq.maxPositions) {
      throw new EngineError(`context full: ${seq.maxPositions} positions used (raise --ctx, up to the model's ${this.cfg.ctxLen})`);
    }
    seq.ensure(this.pos);
  }

  private async stepAsync(token: number): Promise<Float32Array> {
    if (this.sparse) {
      this.checkRoom();
      const z = this.sparse;
      const s0 = z.stats.stallMs;
      const logits = await forwardSparse(this.cfg, this.weights, this.state, this.plans, z.plans, this.cache, this.compute, token, this.pos,
        z.src, z.pred, z.sp, z.ids, z.stats, this.passes++);
      this.stall.ms += z.stats.stallMs - s0;
      this.times.ioStallMs = this.stall.ms;
      this.pos++;
      return logits;
    }
    if (!this.ffnSource) return this.step(token);
    this.checkRoom();
    const logits = await forwardStreamed(this.cfg, this.weights, this.state, this.plans, this.cache, this.compute, token, this.pos, this.ffnSource, this.stall, this.ffnProbe, this.sparsity);
    this.times.ioStallMs = this.stall.ms;
    this.pos++;
    return logits;
  }

  /** prefill() for every mode (hybrid reads from flash). */
  async prefillAsync(tokens: number[]): Promise<Float32Array> {
    this.checkPrompt(tokens);
    const t0 = performance.now();
    let logits!: Float32Array;
    for (const t of tokens) logits = await this.stepAsync(t);
    this.times.prefillMs += performance.now() - t0;
    this.times.prefilled += tokens.length;
    return logits;
  }

  /** decodeOne() for every mode. */
  async decodeAsync(token: number): Promise<Float32Array> {
    const t0 = performance.now();
    const s0 = this.stall.ms;
    const logits = await this.stepAsync(token);
    this.times.decodeMs += performance.now() - t0;
    this.times.decodeIoStallMs += this.stall.ms - s0;
    this.times.decoded++;
    return logits;
  }

  /** Feed prompt tokens; returns the logits after the last one (a view, valid until the next step). */
  prefill(tokens: number[]): Float32Array {
    this.checkPrompt(tokens);
    const t0 = performance.now();
    let logits!: Float32Array;
    for (const t of tokens) logits = this.step(t);
    this.times.prefillMs += performance.now() - t0;
    this.times.prefilled += tokens.length;
    return logits;
  }

  decodeOne(token: number): Float32Array {
    const t0 = performance.now();
    const logits = this.step(token);
    this.times.decodeMs += performance.now() - t0;
    this.times.decoded++;
    return logits;
  }

  /**
   * Generate after `prompt` (token ids, BOS included if wanted). Yields each new token as soon as it
   * is sampled; the async boundary lets a server interleave I/O between tokens.
   */
  async *generate(prompt: number[], o: GenerateOptions, seq?: Sequence): AsyncGenerator<GeneratedToken> {
    const sampler = new Sampler(this.cfg.vocabSize, o);
    let logits = seq ? await this.prefillSeq(seq, prompt) : await this.prefillAsync(prompt);
    for (let i = 0; i < o.maxTokens; i++) {
      if (o.signal?.aborted) return;
      const id = sampler.sample(logits);
      if ((o.stopOnEos ?? true) && (id === this.tokenizer.eos || (this.tokenizer as Partial<TokenizerInfo>).isEog?.(id))) return;
      yield { id, bytes: this.tokenizer.tokenBytes(id) };
      if (i + 1 < o.maxTokens) logits = seq ? await this.decodeSeq(seq, id) : await this.decodeAsync(id);
    }
  }

  /** Flash reads so far (all flash modes): bytes, read calls, summed read wall time, and sparse
   * mode's memory-management time (neuron-matrix bookkeeping and row copies); undefined in RAM mode. */
  flashStats(): { bytes: number; reads: number; ioMs: number; mmMs: number } | undefined {
    const s = this.sparse?.src.stats ?? this.ffnSource?.stats;
    if (!s) return undefined;
    return { bytes: s.bytes, reads: s.reads, ioMs: s.ioMs, mmMs: 'mmMs' in s ? s.mmMs : 0 };
  }

  /** Bytes this model holds in DRAM: weights, KV cache and activations, by part. */
  memory(): { weights: number; kv: number; arenas: number } {
    let arenas = 0;
    for (const s of this.state.arenas.keys()) arenas += s.capacity;
    return { weights: this.weights.bytes, kv: this.kvPool.bytes, arenas };
  }

  async close(): Promise<void> {
    await this.reader?.close();
    this.source.close();
    await this.compute.close();
  }
}
