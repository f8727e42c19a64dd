// What the server needs from a model: a small structural interface, so the server can be tested with
// a fake and does not depend on the engine. LanguageModel (src/index.ts) implements it.

export interface ServedPiece {
  id: number;
  text: string; // UTF-8 safe piece (see server/text.ts Utf8Pieces)
}

export interface ServedGeneration extends AsyncIterable<ServedPiece> {
  readonly finishReason: 'stop' | 'length' | 'abort' | undefined;
}

export interface ServedGenerateOptions {
  maxTokens: number;
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
}
