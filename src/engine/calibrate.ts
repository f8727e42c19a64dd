// `flashlm calibrate`: runs the dense model over real text and records, per layer and token, the FFN
// input and every neuron's activation magnitude code (formats/calibration.ts). Everything sparse
// mode needs is derived from that file: per-layer thresholds for a target sparsity (CATS-style on
// |SiLU(gate·x)|), activation frequencies (neuron-matrix sizing) and the predictors' training data.
import { readGGUF } from '../formats/gguf.js';
import { isFlashLayout, openFlashLayout } from '../formats/flash-layout.js';
import {
  activationCode, codeThreshold, listTextFiles, modelIdentity, readTextFiles, toF16, writeCalibration,
  type CalibrationLayer, type CalibrationMeta,
} from '../formats/calibration.js';
import { Model, type LoadModelOptions } from './model.js';
import { mulberry32 } from './sample.js';

export class CalibrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CalibrationError';
  }
}

/** Fewer tokens than this cannot train a rank-r predictor or place a threshold meaningfully. */
export const MIN_CALIBRATION_TOKENS = 64;

export interface CalibrateOptions {
  files: string[]; // text files (real text; never the text you evaluate on)
  tokens: number; // calibration tokens to collect
  seqLen?: number; // tokens per sequence (BOS + text; KV reset between sequences), default 256
  /** At most this many sequences from one file (spreads the sample over many files), default 2. */
  perFile?: number;
  seed?: number; // file order shuffle, default 1
  out: string;
  load?: LoadModelOptions; // threads, mode, memory...
  onProgress?: (doneTokens: number, totalTokens: number) => void;
}

export interface CalibrateResult {
  out: string;
  tokens: number;
  sequences: number;
  seconds: number;
  textTokens: number; // tokens in the files read (before the per-file cap)
  meta: CalibrationMeta;
  /** per layer: the fraction of (token, neuron) activations exactly 0 (ReLU) and the thresholds for 50/70/90% sparsity */
  layers: { zeroFrac: number; t50: number; t70: number; t90: number }[];
}

/**
 * Splits one file's token ids into sequences of at most seqLen tokens, each BOS + a slice of the
 * text (a tail shorter than 8 tokens is dropped: it adds little).
 */
export function fileSequences(ids: number[], bos: number | undefined, seqLen: number): number[][] {
  const body = bos === undefined ? seqLen : seqLen - 1;
  const text = bos !== undefined && ids[0] === bos ? ids.slice(1) : ids;
  const out: number[][] = [];
  for (let i = 0; i < text.length; i += body) {
    const c = text.slice(i, i + body);
    if (c.length >= 8) out.push(bos === undefined ? c : [bos, ...c]);
  }
  return out;
}

/** Seeded Fisher-Yates shuffle (calibration picks files in a reproducible random order). */
export function shuffled<T>(xs: T[], seed: number): T[] {
  const a = [...xs];
  const r = mulberry32(seed);
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** The activation-magnitude threshold that makes `sparsity` of the (token, neuron) pairs inactive. */
export function thresholdForSparsity(hist: ArrayLike<number>, sparsity: number): { code: number; threshold: number; achieved: number } {
  let total = 0;
  for (let c = 0; c < 256; c++) total += hist[c]!;
  if (sparsity <= 0 || total === 0) return { code: 0, threshold: 0, achieved: 0 };
  let below = 0;
  for (let c = 0; c < 256; c++) {
    // inactive = code < c; the first c where that reaches the target
    if (below / total >= sparsity) return { code: c, threshold: codeThreshold(c), achieved: below / total };
    below += hist[c]!;
  }
  return { code: 256, threshold: Infinity, achieved: 1 };
}

export async function calibrate(modelPath: string, o: CalibrateOptions): Promise<CalibrateResult> {
  const seqLen = o.seqLen ?? 256;
  if (!Number.isInteger(o.tokens) || o.tokens < MIN_CALIBRATION_TOKENS) throw new CalibrationError(`--tokens ${o.tokens}: calibration needs at least ${MIN_CALIBRATION_TOKENS} tokens (a few thousand are better)`);
  if (!Number.isInteger(seqLen) || seqLen < 16) throw new CalibrationError(`--seq-len ${seqLen}: needs at least 16`);
  if (o.files.length === 0) throw new CalibrationError('calibration needs text: pass --text FILE... (real text, not the text you will evaluate on)');
  const files = shuffled(listTextFiles(o.files), o.seed ?? 1);
  if (files.length === 0) throw new CalibrationError(`no text files found in ${o.files.join(', ')}`);
  const perFile = o.perFile ?? 2;
  const model = await Model.load(modelPath, { ...o.load, ctx: (cfg) => Math.min(seqLen, cfg.ctxLen) });
  try {
    const { cfg, tokenizer: tok } = model;
    const L = model.ctx; // sequence length actually used (≤ the model's training context)
    // read and tokenize files only until the sample is complete
    const seqs: number[][] = [];
    const used: string[] = [];
    let got = 0;
    let available = 0;
    for (const f of files) {
      if (got >= o.tokens) break;
      const { text } = readTextFiles([f])[0]!;
      const fs = fileSequences(tok.encode(text), tok.bos >= 0 ? tok.bos : undefined, L);
      available += fs.reduce((a, c) => a + c.length, 0);
      if (fs.length) used.push(f);
      for (const c of fs.slice(0, perFile)) {
        if (got >= o.tokens) break;
        const take = c.slice(0, o.tokens - got);
        seqs.push(take);
        got += take.length;
      }
    }
    if (got < o.tokens) {
      throw new CalibrationError(`the text gives ${got} usable tokens (${files.length} file${files.length === 1 ? '' : 's'}, at most ${perFile} sequences of ${L} from each); calibration needs ${o.tokens} (--tokens): add more text or lower --tokens (at least ${MIN_CALIBRATION_TOKENS})`);
    }
    const n = o.tokens;
    const { dim, ffnDim: ffn, nLayers } = cfg;
    const layers: CalibrationLayer[] = Array.from({ length: nLayers }, () => ({
      x: new Uint16Array(n * dim), code: new Uint8Array(n * ffn), hist: new Float64Array(256),
    }));
    let k = 0; // calibration token index
    const relu = cfg.act === 'relu';
    // a placed flash file (flashlm place) holds its FFN rows in placement order: row p of the gate
    // output is neuron perm[p], and codes are stored by neuron id (what predictors and place index)
    const g0 = readGGUF(modelPath);
    const perms = isFlashLayout(g0) ? openFlashLayout(g0).layers.map((L) => (isIdentity(L.perm) ? undefined : L.perm)) : [];
    model.ffnProbe = (l, s) => {
      const L = layers[l]!;
      toF16(s.arena.f32(s.xb, dim), L.x, k * dim);
      const g = s.arena.f32(s.hb, ffn);
      const base = k * ffn;
      const perm = perms[l];
      for (let i = 0; i < ffn; i++) {
        const z = g[i]!;
        const v = relu ? (z > 0 ? z : 0) : Math.abs(z / (1 + Math.exp(-z)));
        const c = activationCode(v);
        L.code[base + (perm ? perm[i]! : i)] = c;
        L.hist[c]!++;
      }
    };
    const t0 = performance.now();
    o.onProgress?.(0, n);
    for (const seq of seqs) {
      model.reset();
      for (const t of seq) {
        await model.prefillAsync([t]);
        k++;
        o.onProgress?.(k, n);
      }
    }
    model.ffnProbe = undefined;
    const meta: CalibrationMeta = {
      modelIdentity: modelIdentity(g0), tokens: n, seqLen: L, files: used, act: cfg.act, nLayers, dim, ffn,
    };
    writeCalibration(o.out, meta, layers);
    return {
      out: o.out, tokens: n, sequences: seqs.length, seconds: (performance.now() - t0) / 1000, textTokens: available, meta,
      layers: layers.map((L) => {
        const total = n * ffn;
        return {
          zeroFrac: L.hist[0]! / total, t50: thresholdForSparsity(L.hist, 0.5).threshold,
          t70: thresholdForSparsity(L.hist, 0.7).threshold, t90: thresholdForSparsity(L.hist, 0.9).threshold,
        };
      }),
    };
  } finally {
    await model.close();
  }
}

function isIdentity(perm: ArrayLike<number>): boolean {
  for (let i = 0; i < perm.length; i++) if (perm[i] !== i) return false;
  return true;
}
