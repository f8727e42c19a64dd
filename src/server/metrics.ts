// Counters and gauges for GET /metrics, rendered in the Prometheus text exposition format (0.0.4).
import type { KVPageStats } from './types.js';

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
}

export class Metrics {
  private requests = new Map<string, number>(); // `${endpoint}\0${status}` → count
  promptTokens = 0;
  completionTokens = 0;
  cancelled = 0;
  rejected = 0; // 429s
  lastTokensPerSecond = 0;
  lastRequestSeconds = 0;

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
    metric('flashlm_requests_rejected_total', 'counter', 'Requests refused with 429 because the queue was full.', [['', this.rejected]]);
    metric('flashlm_prompt_tokens_total', 'counter', 'Prompt tokens processed.', [['', this.promptTokens]]);
    metric('flashlm_tokens_generated_total', 'counter', 'Completion tokens generated.', [['', this.completionTokens]]);
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
    return `${out.join('\n')}\n`;
  }
}
