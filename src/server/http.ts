// node:http helpers: a bounded body reader and JSON / error / SSE writers that never throw at a
// client that has gone away.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { CancelledError, RequestError } from './errors.js';

export const MAX_BODY_BYTES = 1 << 20; // 1 MiB

/**
 * Reads the body, at most `limit` bytes. A larger body is drained (so the client can read the 413
 * instead of a reset while it is still sending) up to 8 × limit; beyond that the socket is closed.
 */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooBig = () => new RequestError(`request body larger than ${limit} bytes`, 413);
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > 8 * limit) {
      reject(tooBig());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        if (size > 8 * limit) req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => (over ? reject(tooBig()) : resolve(Buffer.concat(chunks))));
    req.on('error', () => reject(new CancelledError()));
    req.on('close', () => {
      if (!req.complete) reject(new CancelledError()); // client went away mid-body (no-op after end)
    });
  });
}

/** Bad JSON is the client's error (400), whatever JSON.parse says. */
/** Request bodies nest a few levels (messages → content parts); deeper is refused before JSON.parse,
 * which would otherwise spend ~1 s of event loop on a 1 MiB body of nested arrays. */
const MAX_REQUEST_DEPTH = 64;

/** Index of the bracket that opens level max + 1 outside strings, or −1 (one linear scan). */
function depthOver(text: string, max: number): number {
  let depth = 0;
  let inStr = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inStr) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inStr = false;
    } else if (c === 0x22) inStr = true;
    else if (c === 0x5b || c === 0x7b) { if (++depth > max) return i; }
    else if (c === 0x5d || c === 0x7d) depth--;
  }
  return -1;
}

export function parseJSON(buf: Buffer): unknown {
  const text = buf.toString('utf8');
  if (text.trim() === '') throw new RequestError('empty request body: expected a JSON object');
  const deep = depthOver(text, MAX_REQUEST_DEPTH);
  if (deep >= 0) throw new RequestError(`request body nested deeper than ${MAX_REQUEST_DEPTH} levels (at character ${deep})`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new RequestError(`invalid JSON in the request body: ${(e as Error).message}`);
  }
}

export function sendJSON(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const s = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(s)), ...headers });
  res.end(s);
}

export function sendText(res: ServerResponse, status: number, text: string, contentType: string): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(text)) });
  res.end(text);
}

export function errorBody(message: string, type: string, param: string | null = null, code: string | null = null): { error: Record<string, unknown> } {
  return { error: { message, type, param, code } };
}

export function sendError(res: ServerResponse, e: RequestError, headers: Record<string, string> = {}): void {
  sendJSON(res, e.status, errorBody(e.message, e.type, e.param), e.status === 413 ? { Connection: 'close', ...headers } : headers);
}

/** Server-sent events as OpenAI streams them: `data: <json>\n\n` ... `data: [DONE]\n\n`. */
export class SSE {
  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive',
      'X-Accel-Buffering': 'no', // reverse proxies: do not buffer the stream
    });
    res.flushHeaders();
  }

  send(data: unknown): void {
    if (!this.res.destroyed) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  done(): void {
    if (!this.res.destroyed) this.res.end('data: [DONE]\n\n');
  }
}
