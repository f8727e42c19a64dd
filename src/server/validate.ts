// Request validation for /v1/completions and /v1/chat/completions: one pure function per endpoint
// from the parsed JSON body to a typed request, or a RequestError (400) naming the bad field. Unknown
// fields are ignored (clients send many OpenAI options that do not apply here).
import { RequestError } from './errors.js';

export interface Limits {
  ctx: number; // max_tokens ≤ ctx
  vocabSize: number; // token-id prompts: ids < vocabSize
}

export interface SamplingRequest {
  /** undefined: the endpoint's default (completions 16, chat: what the context leaves). */
  maxTokens: number | undefined;
  temperature: number; // 0 = greedy; default 1 (OpenAI's)
  topP: number; // default 1 (off)
  topK: number; // default 0 (off)
  seed: number | undefined; // undefined: a random seed per request
  stop: string[];
  stream: boolean;
  includeUsage: boolean; // stream_options.include_usage: a last chunk with usage
  model: string | undefined;
}

export interface CompletionRequest extends SamplingRequest {
  prompt: string | number[];
}

export type Role = 'system' | 'user' | 'assistant';
export interface ChatMessage {
  role: Role;
  content: string;
}

export interface ChatRequest extends SamplingRequest {
  messages: ChatMessage[];
}

const ROLES: readonly Role[] = ['system', 'user', 'assistant'];
const MAX_STOPS = 4;

function bad(param: string, message: string): never {
  throw new RequestError(`'${param}': ${message}`, 400, 'invalid_request_error', param);
}

const typeOf = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function asObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new RequestError(`the request body must be a JSON object, got ${typeOf(body)}`);
  }
  return body as Record<string, unknown>;
}

/** A number field in [min, max] (lower bound open when minOpen); null/absent → undefined. */
function num(o: Record<string, unknown>, k: string, min: number, max: number, minOpen = false): number | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) bad(k, `must be a number, got ${typeOf(v)}`);
  if (minOpen ? !(v > min) : v < min) bad(k, `must be ${minOpen ? '>' : '≥'} ${min}, got ${v}`);
  if (v > max) bad(k, `must be ≤ ${max}, got ${v}`);
  return v;
}

function int(o: Record<string, unknown>, k: string, min: number, max: number): number | undefined {
  const v = num(o, k, min, max);
  if (v !== undefined && !Number.isInteger(v)) bad(k, `must be an integer, got ${v}`);
  return v;
}

function bool(o: Record<string, unknown>, k: string): boolean | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') bad(k, `must be a boolean, got ${typeOf(v)}`);
  return v;
}

function sampling(o: Record<string, unknown>, lim: Limits): SamplingRequest {
  const model = o.model;
  if (model !== undefined && model !== null && typeof model !== 'string') bad('model', `must be a string, got ${typeOf(model)}`);
  if (o.n !== undefined && o.n !== null && o.n !== 1) bad('n', 'only n = 1 is supported');
  // chat's newer name for max_tokens; max_tokens wins when both are given
  const maxTokens = int(o, 'max_tokens', 1, lim.ctx) ?? int(o, 'max_completion_tokens', 1, lim.ctx);
  let stop: string[] = [];
  const s = o.stop;
  if (typeof s === 'string') stop = [s];
  else if (Array.isArray(s)) {
    if (s.length > MAX_STOPS) bad('stop', `at most ${MAX_STOPS} stop sequences, got ${s.length}`);
    for (const x of s) if (typeof x !== 'string') bad('stop', `must be a string or an array of strings, got an array with ${typeOf(x)}`);
    stop = s as string[];
  } else if (s !== undefined && s !== null) bad('stop', `must be a string or an array of strings, got ${typeOf(s)}`);
  if (stop.some((x) => x === '')) bad('stop', 'stop sequences must not be empty');
  let includeUsage = false;
  const so = o.stream_options;
  if (so !== undefined && so !== null) {
    if (typeof so !== 'object' || Array.isArray(so)) bad('stream_options', `must be an object, got ${typeOf(so)}`);
    includeUsage = bool(so as Record<string, unknown>, 'include_usage') ?? false;
  }
  return {
    maxTokens,
    temperature: num(o, 'temperature', 0, 2) ?? 1,
    topP: num(o, 'top_p', 0, 1, true) ?? 1,
    topK: int(o, 'top_k', 0, Number.MAX_SAFE_INTEGER) ?? 0,
    seed: int(o, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
    stop,
    stream: bool(o, 'stream') ?? false,
    includeUsage,
    model: typeof model === 'string' ? model : undefined,
  };
}

/** POST /v1/completions: prompt is a string, or one prompt as token ids (no batches). */
export function validateCompletionRequest(body: unknown, lim: Limits): CompletionRequest {
  const o = asObject(body);
  const p = o.prompt;
  let prompt: string | number[];
  if (typeof p === 'string') prompt = p;
  else if (Array.isArray(p) && p.length === 1 && typeof p[0] === 'string') prompt = p[0];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'number')) {
    for (const id of p as number[]) if (!Number.isInteger(id) || id < 0 || id >= lim.vocabSize) bad('prompt', `token id ${id} is not in [0, ${lim.vocabSize})`);
    prompt = p as number[];
  } else if (Array.isArray(p) && p.length > 1) bad('prompt', 'one prompt per request (a string or an array of token ids); batches are not supported');
  else if (p === undefined || p === null) bad('prompt', 'required');
  else bad('prompt', `must be a string or a non-empty array of token ids, got ${Array.isArray(p) ? 'an empty or mixed array' : typeOf(p)}`);
  if (prompt === '') bad('prompt', 'must not be empty');
  return { ...sampling(o, lim), prompt };
}

/** Message content: a string, or an array of {type: 'text', text} parts (joined). */
function content(v: unknown, i: number): string {
  const k = `messages[${i}].content`;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    return v.map((part, j) => {
      const q = part as { type?: unknown; text?: unknown } | null;
      if (!q || typeof q !== 'object' || q.type !== 'text' || typeof q.text !== 'string') bad(`${k}[${j}]`, 'only {"type": "text", "text": string} parts are supported');
      return q.text;
    }).join('');
  }
  return bad(k, `must be a string, got ${typeOf(v)}`);
}

/** POST /v1/chat/completions. */
export function validateChatRequest(body: unknown, lim: Limits): ChatRequest {
  const o = asObject(body);
  const ms = o.messages;
  if (ms === undefined || ms === null) bad('messages', 'required');
  if (!Array.isArray(ms)) bad('messages', `must be an array, got ${typeOf(ms)}`);
  if (ms.length === 0) bad('messages', 'must not be empty');
  const messages = ms.map((m: unknown, i): ChatMessage => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) bad(`messages[${i}]`, `must be an object, got ${typeOf(m)}`);
    const r = (m as Record<string, unknown>).role;
    if (typeof r !== 'string' || !ROLES.includes(r as Role)) bad(`messages[${i}].role`, `must be one of ${ROLES.join(', ')}, got ${typeof r === 'string' ? `'${r.slice(0, 40)}'` : typeOf(r)}`);
    return { role: r as Role, content: content((m as Record<string, unknown>).content, i) };
  });
  return { ...sampling(o, lim), messages };
}
