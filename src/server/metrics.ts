// Counters and gauges for GET /metrics, rendered in the Prometheus text exposition format (0.0.4).
// Speeds are left to the scraper: tokens/s is rate(flashlm_tokens_generated_total[1m]) (a counter
// stays right across scrapes at any interval; a gauge of "current speed" would not), and
// flashlm_last_request_tokens_per_second is only the last request's own speed.
import type { KVPageStats, ServedPoolStats } from './types.js';

export interface GaugeSource {
  queueLength(): number;
  busy(): number; // requests running
  kv(): { used: number; reserved: number };
  flashBytesRead(): number;
  budget(): number | undefined;
  /** The paged KV pool, if the model has one. */
  kvPages?(): KVPageStats | undefined;
  /** Sparse mode's neuron cache hit rate, if any. */
  hitRate?(): number | undefined;
  /** The model's --memory ledger, if it keeps one. */
  pool?(): ServedPoolStats | undefined;
}

/** Why a request got 429 (QueueFullError.code). */
export type RejectCode = 'queue_full' | 'kv_pool_full';

export class Metrics {
  private requests = new Map<string, number>(); // `${endpoint}\0${status}` → count
  promptTokens = 0;
  completionTokens = 0;
  cancelled = 0;
  private rejects: Record<RejectCode, number> = { queue_full: 0, kv_pool_full: 0 };
  lastTokensPerSecond = 0;
  lastRequestSeconds = 0;

  /** A 429: both codes are always rendered (0 until one happens) so rate() works from the start. */
  countRejected(code: RejectCode): void {
    this.rejects[code]++;
  }

  /** 429s so far, all codes. */
  get rejected(): number {
    return this.rejects.queue_full + this.rejects.kv_pool_full;
  }

  countRequest(endpoint: string, status: number): void {
    const k = `${endpoint}\0${status}`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
  }

  /** A generation finished (any reason): tokens and its speed. `seconds`: from its start on the
   * model (prefill included) to its last token. */
  countGeneration(prompt: number, completion: number, seconds: number): void {
    this.promptTokens += prompt;
    this.completionTokens += completion;
    this.lastRequestSeconds = seconds;
    this.lastTokensPerSecond = seconds > 0 ? completion / seconds : 0;
  }

  render(g: GaugeSource): string {
    const out: string[] = [];
    const metric = (name: string, type: 'counter' | 'gauge', help: string, samples: [string, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) out.push(`${name}${labels} ${Number.isFinite(v) ? v : 0}`);
    };
    const esc = (s: string) => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
    metric('flashlm_requests_total', 'counter', 'HTTP requests answered, by endpoint and status code.',
      [...this.requests].sort().map(([k, v]) => {
        const [ep, st] = k.split('\0');
        return [`{endpoint="${esc(ep!)}",status="${st}"}`, v];
      }));
    metric('flashlm_requests_cancelled_total', 'counter', 'Requests whose client went away before the end (queued or running).', [['', this.cancelled]]);
    metric('flashlm_requests_rejected_total', 'counter', 'Requests refused with 429 (queue full), by code: kv_pool_full = the KV page pool was what kept them waiting, queue_full = every sequence slot was busy.',
      (['kv_pool_full', 'queue_full'] as const).map((c) => [`{code="${c}"}`, this.rejects[c]]));
    metric('flashlm_prompt_tokens_total', 'counter', 'Prompt tokens processed.', [['', this.promptTokens]]);
    metric('flashlm_tokens_generated_total', 'counter', 'Completion tokens generated (cancelled requests included); tokens/s = rate() of it.', [['', this.completionTokens]]);
    metric('flashlm_last_request_tokens_per_second', 'gauge', 'Completion tokens per second of the last finished request (prefill included).', [['', this.lastTokensPerSecond]]);
    metric('flashlm_last_request_seconds', 'gauge', 'Time the last finished request held the model.', [['', this.lastRequestSeconds]]);
    metric('flashlm_flash_read_bytes_total', 'counter', 'Bytes read from flash by the engine (0 in RAM mode).', [['', g.flashBytesRead()]]);
    metric('flashlm_queue_length', 'gauge', 'Requests waiting for the model.', [['', g.queueLength()]]);
    metric('flashlm_busy', 'gauge', 'Requests running on the model.', [['', g.busy()]]);
    const kv = g.kv();
    metric('flashlm_kv_positions_in_use', 'gauge', 'KV cache positions in pages held by running sequences.', [['', kv.used]]);
    metric('flashlm_kv_positions_reserved', 'gauge', 'KV cache positions one sequence may hold (context).', [['', kv.reserved]]);
    const pages = g.kvPages?.();
    if (pages) {
      metric('flashlm_kv_pages_used', 'gauge', 'KV cache pages holding entries of running sequences.', [['', pages.used]]);
      metric('flashlm_kv_pages_reserved', 'gauge', 'KV cache pages promised to running sequences, not allocated yet.', [['', pages.reserved]]);
      metric('flashlm_kv_pages_free', 'gauge', 'KV cache pages a new request may reserve.', [['', pages.free]]);
      metric('flashlm_kv_pages_total', 'gauge', 'KV cache pages in the pool.', [['', pages.pages]]);
      metric('flashlm_kv_page_size_tokens', 'gauge', 'Positions per KV cache page.', [['', pages.pageSize]]);
      metric('flashlm_kv_sequences', 'gauge', 'Sequences open in the KV cache.', [['', pages.sequences]]);
      metric('flashlm_kv_sequence_slots', 'gauge', 'Sequences that can be open at once.', [['', pages.slots]]);
    }
    const hit = g.hitRate?.();
    if (hit !== undefined) metric('flashlm_neuron_cache_hit_rate', 'gauge', 'Sparse mode: predicted neurons found in DRAM / all predicted, since load.', [['', hit]]);
    const mem = process.memoryUsage();
    metric('flashlm_resident_memory_bytes', 'gauge', 'Resident set size of the server process.', [['', mem.rss]]);
    metric('flashlm_peak_resident_memory_bytes', 'gauge', 'Peak resident set size of the server process.', [['', process.resourceUsage().maxRSS * 1024]]);
    const b = g.budget();
    if (b !== undefined) metric('flashlm_memory_budget_bytes', 'gauge', 'The --memory budget.', [['', b]]);
    const pool = g.pool?.();
    if (pool) {
      // the ledger is fixed after load except the KV bytes in use; it is what the budget was spent on
      metric('flashlm_memory_pool_charged_bytes', 'gauge', 'Bytes charged to the memory pool ledger against --memory, by part (runtime, weights, activations, pageTables, kvPages, slots, neuronCache, arenaReserved).',
        Object.entries(pool.parts).sort(([x], [y]) => (x < y ? -1 : 1)).map(([part, v]) => [`{part="${esc(part)}"}`, v]));
      metric('flashlm_memory_pool_charged_total_bytes', 'gauge', 'Sum of the bytes charged to the memory pool ledger.', [['', pool.charged]]);
      if (pool.budget !== null) metric('flashlm_memory_budget_left_bytes', 'gauge', 'The --memory budget minus everything charged to the pool.', [['', pool.budget - pool.charged]]);
      metric('flashlm_kv_bytes_in_use', 'gauge', 'Bytes of the KV page pool (charged as kvPages) held by running sequences: pages used x page bytes over all layers.', [['', pool.kvBytesInUse]]);
    }
    return `${out.join('\n')}\n`;
  }
}
