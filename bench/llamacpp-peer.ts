// llama.cpp as a reference peer, through node-llama-cpp 3.22.1 (devDependency, prebuilt CPU binaries).
// Used by scripts/gen-fixtures.ts (golden tokens / logits) and by the benches (speed comparison).
//
// What node-llama-cpp exposes and how it is used here:
// - Tokenize: `model.tokenize(text, false)` = llama.cpp `common_tokenize(vocab, text, add_special=false,
//   parse_special=false)`. It never adds BOS (the SPM "▁" space prefix is still added); with BOS we prepend
//   `model.tokens.bos` when `model.tokens.shouldPrependBosToken` (tokenizer.ggml.add_bos_token), which is
//   what llama.cpp's add_special=true does for SPM/BPE vocabularies.
// - Greedy decode without logits: `sequence.evaluate(prompt, {temperature: 0, yieldEogToken: true})`.
//   temperature ≤ 0 makes the addon's sampler chain [greedy] only (no top-k / top-p / penalties unless
//   asked), so the token is llama.cpp's argmax (first max on ties). yieldEogToken keeps going past EOS.
// - Greedy decode with raw logits: `sequence.controlledEvaluate([...prompt, [last, {generateNext:
//   {token: true, logits: true}}]])`, then one token at a time. The addon copies
//   `llama_get_logits_ith()` (full vocab, pre-softmax, f32) into the candidate array, runs the (greedy)
//   chain, which does not modify logits, and returns all (token, logit) pairs as a Map sorted by logit.
//   Values are f32 widened to double, so Float32Array storage is exact.
// - Context options: `flashAttention: false` (the model default is "auto", which can turn FA on for CPU),
//   `experimentalKvCacheKeyType/ValueType: 'F32' | 'F16'` (llama_context_params.type_k / type_v; F16 is
//   the default), `threads` (with getLlama `maxThreads: 0` the number is used exactly), `batchSize`
//   (n_batch = n_ubatch), `contextSize`. Seed only matters for temperature > 0 (not used).

import { getLlama, LlamaLogLevel, type Llama, type LlamaContext, type LlamaModel, type Token } from 'node-llama-cpp';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface LlamaCppGreedyOptions {
  threads: number;
  ctx: number; // context size in tokens
  logits: boolean; // collect the full logits vector of every generated step
  kvF32?: boolean; // K and V cache in F32 (default F16, llama.cpp's default)
  batchSize?: number; // default min(ctx, 512)
}

export interface LlamaCppGreedyResult {
  tokens: number[]; // n generated token ids
  logits?: Float32Array[]; // logits[i]: the [vocab] vector from which tokens[i] was chosen (argmax)
  msPerToken: number; // mean wall time per generated token after the first (decode steps)
  promptMs: number; // wall time to evaluate the prompt and produce the first token
}

/** The exact context options used, so fixtures can record them. */
export interface LlamaCppContextSettings {
  contextSize: number;
  batchSize: number;
  threads: number;
  flashAttention: boolean | 'auto';
  kvCacheKeyType: string;
  kvCacheValueType: string;
}

let llamaPromise: Promise<Llama> | undefined;

function llama(): Promise<Llama> {
  llamaPromise ??= getLlama({
    gpu: false,
    build: 'never',
    logLevel: LlamaLogLevel.error,
    maxThreads: 0, // context `threads` is then the exact thread count
  });
  return llamaPromise;
}

/** Release the llama.cpp instance (call once at the end of a script). */
export async function closeLlamaCpp(): Promise<void> {
  if (!llamaPromise) return;
  const l = await llamaPromise;
  llamaPromise = undefined;
  await l.dispose();
}

/** node-llama-cpp version and the llama.cpp release its binaries were built from. */
export function llamaCppVersion(): { nodeLlamaCpp: string; llamaCpp: string; llamaCppRepo: string } {
  // package.json is not in the package's "exports": go up from the entry point (dist/index.js).
  const root = dirname(dirname(fileURLToPath(import.meta.resolve('node-llama-cpp'))));
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
  const infoPath = join(root, 'llama', 'llama.cpp.info.json');
  const info = JSON.parse(readFileSync(infoPath, 'utf8')) as { tag: string; llamaCppGithubRepo: string };
  return { nodeLlamaCpp: pkg.version, llamaCpp: info.tag, llamaCppRepo: info.llamaCppGithubRepo };
}

async function withModel<T>(modelPath: string, vocabOnly: boolean, fn: (m: LlamaModel) => Promise<T>): Promise<T> {
  const l = await llama();
  const model = await l.loadModel({ modelPath, gpuLayers: 0, vocabOnly, useMmap: true });
  try {
    return await fn(model);
  } finally {
    await model.dispose();
  }
}

function tokenizeWith(model: LlamaModel, text: string, addBos: boolean): number[] {
  const ids = Array.from(model.tokenize(text, false));
  if (addBos && model.tokens.bos != null && model.tokens.shouldPrependBosToken) ids.unshift(model.tokens.bos);
  return ids;
}

/** llama.cpp tokenization (parse_special = false). addBos prepends BOS when the vocab asks for it. */
export async function llamaCppTokenize(modelPath: string, text: string, addBos: boolean): Promise<number[]> {
  return withModel(modelPath, true, async (m) => tokenizeWith(m, text, addBos));
}

async function makeContext(model: LlamaModel, opts: LlamaCppGreedyOptions): Promise<LlamaContext> {
  const kv = opts.kvF32 ? 'F32' : 'F16';
  return model.createContext({
    contextSize: opts.ctx,
    batchSize: opts.batchSize ?? Math.min(opts.ctx, 512),
    threads: opts.threads,
    flashAttention: false,
    experimentalKvCacheKeyType: kv,
    experimentalKvCacheValueType: kv,
    sequences: 1,
    failedCreationRemedy: false,
  });
}

export function contextSettings(ctx: LlamaContext, threads: number): LlamaCppContextSettings {
  const typeName = (t: unknown): string => (typeof t === 'number' ? (['F32', 'F16'][t] ?? `type#${t}`) : String(t ?? 'F16'));
  return {
    contextSize: ctx.contextSize,
    batchSize: ctx.batchSize,
    threads,
    flashAttention: ctx.flashAttention,
    kvCacheKeyType: typeName(ctx.kvCacheKeyType),
    kvCacheValueType: typeName(ctx.kvCacheValueType),
  };
}

function logitsFromMap(m: Map<number, number>, model: LlamaModel): Float32Array {
  // The addon returns one pair per vocab entry (llama_vocab_n_tokens); check it is a full, dense set.
  const vocab = m.size;
  const out = new Float32Array(vocab).fill(Number.NaN);
  for (const [tok, v] of m) {
    if (tok < 0 || tok >= vocab) throw new Error(`llama.cpp logits: token id ${tok} outside [0, ${vocab}) (${model.filename ?? ''})`);
    out[tok] = v;
  }
  return out;
}

/**
 * Greedy decode of n tokens after `promptTokens` (give BOS explicitly if wanted).
 * `settings`, when given, receives the context options llama.cpp actually used.
 */
export async function llamaCppGreedy(
  modelPath: string,
  promptTokens: number[],
  n: number,
  opts: LlamaCppGreedyOptions,
  settings?: (s: LlamaCppContextSettings) => void,
): Promise<LlamaCppGreedyResult> {
  if (promptTokens.length === 0) throw new RangeError('llamaCppGreedy: empty prompt');
  if (n < 1) throw new RangeError('llamaCppGreedy: n must be ≥ 1');
  if (promptTokens.length + n > opts.ctx) throw new RangeError(`llamaCppGreedy: prompt + n exceeds ctx ${opts.ctx}`);
  return withModel(modelPath, false, async (model) => {
    const context = await makeContext(model, opts);
    try {
      settings?.(contextSettings(context, opts.threads));
      const seq = context.getSequence();
      const tokens: number[] = [];
      const logits: Float32Array[] = [];
      const t0 = performance.now();
      let tFirst = t0;
      if (opts.logits) {
        const gen = { generateNext: { token: true, logits: true } } as const;
        let input: Parameters<typeof seq.controlledEvaluate>[0] = [
          ...(promptTokens.slice(0, -1) as Token[]),
          [promptTokens[promptTokens.length - 1]! as Token, gen],
        ];
        for (let i = 0; i < n; i++) {
          const res = await seq.controlledEvaluate(input);
          const next = res[input.length - 1]?.next;
          if (next?.token == null || next.logits == null) throw new Error(`llama.cpp produced no token at step ${i}`);
          tokens.push(next.token);
          logits.push(logitsFromMap(next.logits, model));
          if (i === 0) tFirst = performance.now();
          input = [[next.token, gen]];
        }
      } else {
        for await (const tok of seq.evaluate(promptTokens as Token[], { temperature: 0, yieldEogToken: true })) {
          tokens.push(tok);
          if (tokens.length === 1) tFirst = performance.now();
          if (tokens.length >= n) break;
        }
        if (tokens.length < n) throw new Error(`llama.cpp stopped after ${tokens.length} of ${n} tokens`);
      }
      const tEnd = performance.now();
      return {
        tokens,
        ...(opts.logits ? { logits } : {}),
        promptMs: tFirst - t0,
        msPerToken: n > 1 ? (tEnd - tFirst) / (n - 1) : 0,
      };
    } finally {
      await context.dispose();
    }
  });
}
