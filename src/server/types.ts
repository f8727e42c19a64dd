// What the server needs from a model: a small structural interface, so the server can be tested with
// a fake and does not depend on the engine. LanguageModel (src/index.ts) implements it.

export interface ServedPiece {
  id: number;
  text: string; // UTF-8 safe piece (see server/text.ts Utf8Pieces)
}

export interface ServedGeneration extends AsyncIterable<ServedPiece> {
  readonly finishReason: 'stop' | 'length' | 'abort' | undefined;
}

/** A sequence opened in the model's paged KV cache for one request (see ServedModel.tryOpenSequence). */
export interface ServedSequence {
  close(): void; // returns its pages; idempotent
}

/** The paged KV pool's state, for /metrics and admission. */
export interface KVPageStats {
  pageSize: number; // positions per page
  pages: number;
  used: number; // pages holding KV entries
  reserved: number; // promised to running sequences, not allocated yet
  free: number; // what a new request may reserve
  sequences: number; // open
  slots: number; // sequences that can be open at once
}

/** The model's --memory ledger (memory/pool.ts PoolStats), for /metrics. */
export interface ServedPoolStats {
  budget: number | null; // bytes; null = no --memory given
  charged: number; // Σ parts
  parts: Readonly<Record<string, number>>; // bytes charged to each part (runtime, weights, kvPages, ...)
  kvBytesInUse: number; // used KV pages × bytes of a page over all layers
}

export interface ServedGenerateOptions {
  maxTokens: number;
  /** Run in this sequence (opened by the scheduler); generate closes it at the end. */
  sequence?: ServedSequence;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  signal?: AbortSignal;
}

export interface ServedModel {
  readonly name: string;
  readonly ctx: number; // KV positions per sequence (prompt + completion)
  readonly vocabSize: number;
  readonly addBos: boolean;
  readonly chatTemplate: string | undefined;
  readonly bosToken: string;
  readonly eosToken: string;
  /** Model memory budget in bytes (--memory), for /metrics; undefined when none was given. */
  readonly budget: number | undefined;
  tokenize(text: string, o?: { addBos?: boolean; parseSpecial?: boolean }): number[];
  /** One sequence from an empty KV cache; must yield to the event loop between tokens. */
  generate(prompt: readonly number[], o: ServedGenerateOptions): ServedGeneration;
  kv(): { used: number; reserved: number };
  flashBytesRead(): number;
  /** Paged KV cache (optional; without it requests run one at a time): a sequence of up to
   * `positions` if the pool has room now, else undefined. Must not wait. */
  tryOpenSequence?(positions: number): ServedSequence | undefined;
  /** Calls f when pages or sequence slots come back. */
  onKVRelease?(f: () => void): () => void;
  kvPages?(): KVPageStats;
  /** Sparse mode: predicted neurons already in DRAM / all predicted, since load (undefined otherwise). */
  neuronCacheHitRate?(): number | undefined;
  /** The memory pool's ledger (what each part holds against --memory), if the model keeps one. */
  memoryPool?(): ServedPoolStats | undefined;
}
