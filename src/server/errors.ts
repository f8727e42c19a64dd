// Server errors. A RequestError becomes an OpenAI-style error response:
// `{"error": {"message", "type", "param", "code"}}` with its HTTP status.

export class RequestError extends Error {
  constructor(
    message: string,
    readonly status = 400,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'RequestError';
  }
}

/** The scheduler's queue is full: 429 with Retry-After. `code` says why the request could not run
 * at once: all slots busy ('queue_full') or no room in the KV page pool ('kv_pool_full'). */
export class QueueFullError extends Error {
  constructor(readonly retryAfterSeconds: number, queued: number, readonly code: 'queue_full' | 'kv_pool_full' = 'queue_full') {
    super(`server busy: ${code === 'kv_pool_full' ? 'the KV cache budget is full and ' : ''}${queued} request(s) already waiting; retry after ${retryAfterSeconds} s`);
    this.name = 'QueueFullError';
  }
}

/** A request left the queue because its client went away (nothing is sent back). */
export class CancelledError extends Error {
  constructor() {
    super('request cancelled');
    this.name = 'CancelledError';
  }
}
