// `flashlm eval --ppl`: perplexity of a model (in any mode) over text files. Each file is split into
// chunks of ctx tokens (BOS + ctx − 1 tokens of text, KV reset between chunks) and every position
// after the first is scored: NLL = logsumexp(logits) − logits[next token]. The same procedure for
// every mode, so dense vs sparse figures compare like with like.
import { listTextFiles, readTextFiles } from '../formats/calibration.js';
import { Model, type LoadModelOptions } from './model.js';
import { fileSequences } from './calibrate.js';

export class EvalError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EvalError';
  }
}

export interface PerplexityOptions {
  files: string[]; // text files or directories (never the calibration text)
  ctx?: number; // chunk length in tokens (default 512, at most the model's context)
  maxTokens?: number; // stop after scoring this many tokens (default: all)
  load?: LoadModelOptions;
  onProgress?: (scored: number, total: number) => void;
  /** Called once the model is loaded, before the first pass (e.g. to attach an FFN probe). */
  onLoad?: (model: Model) => void;
}

export interface PerplexityResult {
  ppl: number;
  nll: number; // mean negative log-likelihood (nats per token)
  scored: number; // tokens scored
  chunks: number;
  files: string[];
  seconds: number;
  tokensPerS: number; // forward passes per second (scored + the chunk-initial BOS)
  model: Model; // closed; for its stats
}

/** log Σ exp(l) − l[target], in float64. */
export function tokenNLL(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return max + Math.log(sum) - logits[target]!;
}

export async function perplexity(modelPath: string, o: PerplexityOptions): Promise<PerplexityResult> {
  const files = listTextFiles(o.files);
  if (files.length === 0) throw new EvalError(`no text files found in ${o.files.join(', ')}`);
  const want = o.ctx ?? 512;
  const model = await Model.load(modelPath, { ...o.load, ctx: (cfg) => Math.min(want, cfg.ctxLen) });
  try {
    o.onLoad?.(model);
    const tok = model.tokenizer;
    const chunks = files.flatMap((f) => fileSequences(tok.encode(readTextFiles([f])[0]!.text), tok.bos >= 0 ? tok.bos : undefined, model.ctx));
    const total = Math.min(o.maxTokens ?? Infinity, chunks.reduce((s, c) => s + c.length - 1, 0));
    if (!(total > 0)) throw new EvalError(`the text gives no tokens to score (${files.length} file${files.length === 1 ? '' : 's'})`);
    let nll = 0;
    let scored = 0;
    let used = 0;
    const t0 = performance.now();
    let passes = 0;
    o.onProgress?.(0, total);
    for (const c of chunks) {
      if (scored >= total) break;
      used++;
      model.reset();
      for (let i = 0; i + 1 < c.length && scored < total; i++) {
        const logits = await model.prefillAsync([c[i]!]);
        passes++;
        nll += tokenNLL(logits, c[i + 1]!);
        scored++;
        o.onProgress?.(scored, total);
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    return { ppl: Math.exp(nll / scored), nll: nll / scored, scored, chunks: used, files, seconds, tokensPerS: passes / seconds, model };
  } finally {
    await model.close();
  }
}
