// flashlm as a library: `import { loadModel } from 'flashlm'`.
//
//   const lm = await loadModel('model.gguf', { memory: '8GB', mode: 'hybrid' });
//   for await (const { id, text } of lm.generate('def fib(n):', { maxTokens: 64 })) process.stdout.write(text);
//   await lm.close();
//
// A thin, typed layer over engine/Model: options checked up front (typed errors), text pieces that are
// UTF-8 safe across tokens, end-of-generation tokens (eos, eot, ...) ending a generation, several
// generations at once (each its own sequence in the paged KV cache: its own page table and pages,
// taken as it grows and returned when it ends; a generation that finds the pool full waits for room,
// or fails with KVBudgetError when asked to), and close() that waits for a step in flight.
import { basename, join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Model, type LoadModelOptions } from './engine/model.js';
import { KVWaitCancelledError, Sequence } from './engine/kv.js';
import { KVBudgetError, type PageStats } from './memory/pages.js';
import type { PoolStats } from './memory/pool.js';
import { Sampler } from './engine/sample.js';
import { BudgetError, parseMemory } from './memory/budget.js';
import { fileSize } from './formats/fsutil.js';
import { isFile, readJSONFile, readSmallFile } from './formats/json-file.js';
import type { TokenizerInfo } from './tokenizer/index.js';
import { Utf8Pieces } from './server/text.js';

export { EngineError } from './engine/model.js';
export { SamplingError } from './engine/sample.js';
export { BudgetError } from './memory/budget.js';
export { FormatError, UnsupportedError, NotFoundError } from './formats/errors.js';
export { ChecksumError } from './formats/checksum.js';
export { ModelConfigError } from './model/llama.js';
export { FlashIOError, FlashAlignmentError } from './flash/io.js';
export { WriteError } from './formats/errors.js';
export { ArenaFullError } from './kernels/index.js';
export { KVBudgetError, type PageStats } from './memory/pages.js';
export { PoolFullError, type PoolStats, type PoolPart } from './memory/pool.js';
export { KVWaitCancelledError } from './engine/kv.js';
export { startServer, type ServerOptions, type RunningServer } from './server/server.js';
export { validateCompletionRequest, validateChatRequest, type CompletionRequest, type ChatRequest } from './server/validate.js';
export { RequestError, QueueFullError } from './server/errors.js';
export type { ServedModel } from './server/types.js';

/** A bad option passed to loadModel or generate (types, ranges). */
export class OptionsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OptionsError';
  }
}

/** Kept for compatibility: generations no longer exclude each other (each has its own KV pages). */
export class ModelBusyError extends Error {
  constructor() {
    super('the model is busy');
    this.name = 'ModelBusyError';
  }
}

export class ModelClosedError extends Error {
  constructor() {
    super('the model is closed');
    this.name = 'ModelClosedError';
  }
}

/** The prompt plus the tokens asked for do not fit the KV positions reserved at load (ctx). */
export class ContextLengthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ContextLengthError';
  }
}

export type Mode = 'ram' | 'hybrid' | 'naive' | 'sparse';

export interface LoadOptions {
  /** DRAM budget: bytes, or a string like '8GB', '7.5GiB', '50%' (of the model file). The load
   * fails early (BudgetError, with the numbers) when the model cannot run within it. */
  memory?: number | string;
  /** ram (default): all weights in DRAM; hybrid: FFN read from flash every token (flash-layout file);
   * naive: every weight from flash; sparse: predicted neurons from flash (sparsified file). */
  mode?: Mode;
  /** sparse: a neuron stays in DRAM while used in the last `window` tokens (default 5). */
  window?: number;
  threads?: number; // compute threads, default 2
  /** KV positions reserved (prompt + generated tokens of one request); default min(model's, 4096). */
  ctx?: number;
  kv?: 'f16' | 'f32';
  /** Generations that may run at once (KV page tables; default 4). */
  sequences?: number;
  /** Positions in the KV page pool that the generations share: a number (at least ctx), or
   * 'budget' (what `memory` leaves, up to sequences × ctx). Default: ctx (one full-length generation). */
  kvPositions?: number | 'budget';
  /** Positions per KV page (default 16). */
  kvPageSize?: number;
  /** flash-layout files: check SHA-256 digests as data arrives (default true). */
  verify?: boolean;
  /** Jinja chat template overriding the model's (GGUF tokenizer.chat_template / HF tokenizer_config.json). */
  chatTemplate?: string;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface GenerateOptions {
  /** New tokens at most; default: what the context leaves after the prompt. */
  maxTokens?: number;
  temperature?: number; // ≤ 0 greedy (default 0)
  topK?: number; // default 40 when sampling; 0 = off
  topP?: number; // default 0.95 when sampling; 1 = off
  seed?: number; // default 0 (reproducible)
  /** String prompts: prepend BOS (default: the vocabulary's add_bos_token). */
  addBos?: boolean;
  /** String prompts: recognise special tokens written in the text, e.g. '<s>' (default false). */
  parseSpecial?: boolean;
  /** End at an end-of-generation token (eos, eot, ...; default true). The token is not yielded. */
  stopOnEog?: boolean;
  signal?: AbortSignal;
  /** When the KV pool cannot hold prompt + maxTokens now: 'wait' (default) until other generations
   * return pages, or 'error' (KVBudgetError at the first iteration). */
  onKVFull?: 'wait' | 'error';
  /** A sequence from tryOpenSequence() to run in (a server's admission control); closed at the end. */
  sequence?: { close(): void };
}

export interface TokenPiece {
  id: number;
  /** This token's text. '' while the token ends inside a multi-byte character; the token that
   * completes the character carries all of it, so joining the pieces gives valid text. */
  text: string;
}

/** stop: end-of-generation token; length: maxTokens reached; abort: the signal fired. */
export type FinishReason = 'stop' | 'length' | 'abort';

export interface Generation extends AsyncIterable<TokenPiece> {
  readonly promptTokens: number;
  /** Set when the iteration has ended. */
  readonly finishReason: FinishReason | undefined;
}

const MODES: readonly Mode[] = ['ram', 'hybrid', 'naive', 'sparse'];

function intOpt(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new OptionsError(`${name} must be an integer in [${min}, ${max}], got ${String(v)}`);
  return v;
}

/** The model's chat template: GGUF tokenizer.chat_template, or an HF directory's tokenizer_config.json
 * chat_template (a string, or a list of named templates: 'default' is used) / chat_template.jinja. */
function findChatTemplate(m: Model): string | undefined {
  const v = m.source.metadata.get('tokenizer.chat_template')?.value;
  if (typeof v === 'string') return v;
  if (m.source.kind !== 'hf') return undefined;
  const cfgPath = join(m.path, 'tokenizer_config.json');
  if (isFile(cfgPath)) {
    const cfg = readJSONFile(cfgPath, 64 << 20) as { chat_template?: unknown } | null;
    const ct = cfg && typeof cfg === 'object' ? cfg.chat_template : undefined;
    if (typeof ct === 'string') return ct;
    if (Array.isArray(ct)) {
      const d = ct.find((t) => t && typeof t === 'object' && (t as { name?: unknown }).name === 'default') as { template?: unknown } | undefined;
      if (typeof d?.template === 'string') return d.template;
    }
  }
  const jinja = join(m.path, 'chat_template.jinja');
  if (isFile(jinja)) return new TextDecoder().decode(readSmallFile(jinja, 16 << 20));
  return undefined;
}

export class LanguageModel {
  /** A name for the model (its file or directory name). */
  readonly name: string;
  readonly chatTemplate: string | undefined;
  /** Spellings of the BOS / EOS tokens, as chat templates expect them ('' when there is none). */
  readonly bosToken: string;
  readonly eosToken: string;
  private running = 0;
  private closed = false;

  /** @internal use loadModel() */
  constructor(readonly engine: Model, readonly budget: number | undefined, chatTemplate: string | undefined) {
    this.name = basename(engine.path).replace(/\.gguf$/i, '');
    this.chatTemplate = chatTemplate ?? findChatTemplate(engine);
    const tok = engine.tokenizer as Partial<TokenizerInfo>;
    this.bosToken = engine.tokenizer.bos >= 0 && tok.piece ? tok.piece(engine.tokenizer.bos) : '';
    this.eosToken = engine.tokenizer.eos >= 0 && tok.piece ? tok.piece(engine.tokenizer.eos) : '';
  }

  get ctx(): number {
    return this.engine.ctx;
  }

  get vocabSize(): number {
    return this.engine.cfg.vocabSize;
  }

  get addBos(): boolean {
    return this.engine.tokenizer.addBos;
  }

  /** Things worth telling a user (flash reads without io_uring, O_DIRECT refused, ...). */
  get warnings(): readonly string[] {
    return this.engine.warnings;
  }

  get busy(): boolean {
    return this.running > 0;
  }

  /** Generations running now. */
  get generations(): number {
    return this.running;
  }

  /** KV positions: in use by running generations (their pages × page size) and per generation (ctx). */
  kv(): { used: number; reserved: number } {
    const s = this.engine.kv.stats();
    return { used: s.used * s.pageSize, reserved: this.engine.ctx };
  }

  /** The paged KV pool: pages used / reserved / free, sequences open and waiting. */
  kvPages(): PageStats & { slots: number; waiting: number } {
    return this.engine.kv.stats();
  }

  /** A sequence of up to `positions` for generate({ sequence }), if the KV pool has room now
   * (undefined otherwise). For a server's admission control: nothing waits. */
  tryOpenSequence(positions: number): Sequence | undefined {
    if (this.closed) throw new ModelClosedError();
    return this.engine.kv.tryOpen(positions);
  }

  /** Calls f whenever KV pages or page tables come back; returns the unsubscribe function. */
  onKVRelease(f: () => void): () => void {
    return this.engine.kv.onRelease(f);
  }

  /** The --memory ledger: bytes charged per part, their sum, the budget and the KV bytes in use. */
  memoryPool(): PoolStats {
    return this.engine.pool.stats();
  }

  /** Sparse mode: predicted neurons already resident / all predicted, since load (undefined in other modes). */
  neuronCacheHitRate(): number | undefined {
    const s = this.engine.sparse?.src.stats;
    return s && s.hits + s.needed > 0 ? s.hits / (s.hits + s.needed) : undefined;
  }

  /** Bytes read from flash since load (0 in RAM mode). */
  flashBytesRead(): number {
    return this.engine.flashStats()?.bytes ?? 0;
  }

  tokenize(text: string, o: { addBos?: boolean; parseSpecial?: boolean } = {}): number[] {
    if (typeof text !== 'string') throw new OptionsError(`tokenize: text must be a string, got ${typeof text}`);
    return this.engine.tokenizer.encode(text, o);
  }

  detokenize(ids: readonly number[]): string {
    this.checkIds(ids);
    return this.engine.tokenizer.decode([...ids]);
  }

  private checkIds(ids: readonly number[]): void {
    if (!Array.isArray(ids)) throw new OptionsError('token ids must be an array of integers');
    const v = this.vocabSize;
    for (const id of ids) if (!Number.isInteger(id) || id < 0 || id >= v) throw new OptionsError(`token id ${String(id)} is not in [0, ${v})`);
  }

  private isEog(id: number): boolean {
    const tok = this.engine.tokenizer as Partial<TokenizerInfo>;
    return tok.isEog ? tok.isEog(id) : id === this.engine.tokenizer.eos;
  }

  /**
   * Generates after `prompt` (text, tokenized with BOS as the vocabulary says, or token ids used as
   * given). Options are checked here, so a bad one throws before any work; the work starts when the
   * iteration does. Each generation starts from an empty KV cache.
   */
  generate(prompt: string | readonly number[], o: GenerateOptions = {}): Generation {
    if (this.closed) throw new ModelClosedError();
    let ids: number[];
    if (typeof prompt === 'string') ids = this.tokenize(prompt, { addBos: o.addBos, parseSpecial: o.parseSpecial });
    else {
      this.checkIds(prompt);
      ids = [...prompt];
    }
    if (ids.length === 0) throw new OptionsError('empty prompt (no tokens)');
    const room = this.ctx - ids.length;
    if (room < 1) throw new ContextLengthError(`prompt of ${ids.length} tokens leaves no room in the context of ${this.ctx} positions (load with a larger ctx)`);
    const maxTokens = intOpt('maxTokens', o.maxTokens, 0) ?? room;
    if (maxTokens > room) throw new ContextLengthError(`prompt (${ids.length} tokens) + maxTokens ${maxTokens} exceed the context of ${this.ctx} positions`);
    if (o.seed !== undefined && !Number.isSafeInteger(o.seed)) throw new OptionsError(`seed must be an integer, got ${String(o.seed)}`);
    if (o.sequence !== undefined) {
      if (!(o.sequence instanceof Sequence) || o.sequence.isClosed) throw new OptionsError('sequence must be an open sequence from tryOpenSequence()');
      if (o.sequence.maxPositions < ids.length + maxTokens) throw new ContextLengthError(`the sequence holds ${o.sequence.maxPositions} positions; prompt (${ids.length}) + maxTokens ${maxTokens} need more`);
    }
    new Sampler(1, o); // throws SamplingError for bad temperature / topK / topP
    const st: { finish: FinishReason | undefined } = { finish: undefined };
    const it = this.run(ids, maxTokens, o, st);
    return Object.defineProperties(it, {
      promptTokens: { value: ids.length, enumerable: true },
      finishReason: { get: () => st.finish, enumerable: true },
    }) as AsyncGenerator<TokenPiece> & Generation;
  }

  private async *run(ids: number[], maxTokens: number, o: GenerateOptions, st: { finish: FinishReason | undefined }): AsyncGenerator<TokenPiece> {
    const signal = o.signal;
    let seq = o.sequence as Sequence | undefined; // checked in generate()
    try {
      if (this.closed) throw new ModelClosedError();
      if (!seq) {
        const need = ids.length + maxTokens;
        if (o.onKVFull === 'error') {
          seq = this.engine.kv.tryOpen(need);
          if (!seq) {
            const k = this.engine.kv.stats();
            throw new KVBudgetError(`KV budget full: ${need} positions need ${Math.ceil(need / k.pageSize)} pages, ${k.free} of ${k.pages} free, ${k.sequences} of ${k.slots} sequences open`, Math.ceil(need / k.pageSize), k.free);
          }
        } else seq = await this.engine.openSequence(need, signal);
      }
    } catch (e) {
      seq?.close();
      if (e instanceof KVWaitCancelledError) {
        st.finish = 'abort';
        return;
      }
      throw e;
    }
    this.running++;
    const inner = this.engine.generate(ids, {
      maxTokens, temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed, signal, stopOnEos: false,
    }, seq);
    const utf = new Utf8Pieces();
    let held: TokenPiece[] = []; // tokens whose character is not complete yet
    let n = 0;
    try {
      while (!signal?.aborted) {
        if (this.closed) throw new ModelClosedError();
        const r = await inner.next();
        if (r.done) break;
        if ((o.stopOnEog ?? true) && this.isEog(r.value.id)) {
          st.finish = 'stop';
          break;
        }
        n++;
        held.push({ id: r.value.id, text: utf.push(r.value.bytes) });
        if (!utf.pending) {
          for (const p of held) yield p;
          held = [];
        }
        // In RAM mode a step never waits for I/O: give timers and sockets a turn between tokens
        // (a server must see disconnects and flush streamed tokens while generating).
        await nextTurn();
      }
      st.finish ??= signal?.aborted ? 'abort' : n >= maxTokens ? 'length' : 'stop';
      if (held.length) {
        held[held.length - 1]!.text += utf.end();
        for (const p of held) yield p;
      }
    } finally {
      await inner.return(undefined);
      seq.close(); // pages, reservation and page table back to the pool at once
      this.running--;
    }
  }

  /** Releases the weights, KV cache, worker threads and file handles. Waits for a step in flight;
   * a generation still being iterated then fails with ModelClosedError. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.engine.idle(); // a step in flight finishes; the generations then see ModelClosedError
    await this.engine.close();
  }
}

/** Loads a GGUF file or an HF safetensors directory. */
export async function loadModel(path: string, opts: LoadOptions = {}): Promise<LanguageModel> {
  if (typeof path !== 'string' || path === '') throw new OptionsError('loadModel needs a model path (a .gguf file or an HF model directory)');
  if (opts.mode !== undefined && !MODES.includes(opts.mode)) throw new OptionsError(`mode must be one of ${MODES.join('|')}, got ${String(opts.mode)}`);
  if (opts.kv !== undefined && opts.kv !== 'f16' && opts.kv !== 'f32') throw new OptionsError(`kv must be f16 or f32, got ${String(opts.kv)}`);
  if (opts.chatTemplate !== undefined && typeof opts.chatTemplate !== 'string') throw new OptionsError('chatTemplate must be a string');
  let memory: number | undefined;
  if (typeof opts.memory === 'string') memory = parseMemory(opts.memory, fileSize(path));
  else if (opts.memory !== undefined) {
    if (typeof opts.memory !== 'number' || !Number.isSafeInteger(opts.memory) || opts.memory <= 0) throw new BudgetError(`memory must be a positive number of bytes or a string like '8GB' / '50%', got ${String(opts.memory)}`);
    memory = opts.memory;
  }
  const lo: LoadModelOptions = {
    memory, mode: opts.mode ?? 'ram', threads: intOpt('threads', opts.threads, 1, 64), ctx: intOpt('ctx', opts.ctx, 1, 1 << 22),
    window: intOpt('window', opts.window, 0, 1 << 20), kvType: opts.kv, verify: opts.verify, onProgress: opts.onProgress,
    sequences: intOpt('sequences', opts.sequences, 1, 4096), kvPageSize: intOpt('kvPageSize', opts.kvPageSize, 1, 4096),
    kvPositions: opts.kvPositions === 'budget' ? 'budget' : intOpt('kvPositions', opts.kvPositions, 1, 1 << 30),
  };
  const engine = await Model.load(path, lo);
  return new LanguageModel(engine, memory, opts.chatTemplate);
}
