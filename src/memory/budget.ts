// The DRAM budget (`--memory`): parsing, and the plan that splits it into resident weights, KV cache,
// activations, fixed runtime overhead and (flash modes) the FFN neuron cache. The planner fails early,
// with the numbers, when the budget cannot hold the parts that must be resident.

export class BudgetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BudgetError';
  }
}

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/**
 * "7GB", "7.5GiB", "512MB", "123456789" (bytes) or "50%" (of `percentOf`, normally the model file's
 * size). Decimal units are powers of 1000 and binary ones (KiB, MiB, GiB) powers of 1024, as in
 * `df -H` / `df -h`.
 */
export function parseMemory(text: string, percentOf?: number): number {
  const s = text.trim().toLowerCase();
  const pct = /^(\d+(?:\.\d+)?)\s*%$/.exec(s);
  if (pct) {
    if (percentOf === undefined) throw new BudgetError(`--memory ${text}: a percentage needs a model to be a percentage of`);
    const p = Number(pct[1]);
    if (!(p > 0 && p <= 1000)) throw new BudgetError(`--memory ${text}: percentage must be in (0, 1000]`);
    return Math.floor((percentOf * p) / 100);
  }
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/.exec(s);
  const unit = m ? UNITS[m[2]!] : undefined;
  if (!m || unit === undefined) {
    throw new BudgetError(`--memory ${text}: expected a size like 8GB, 7.5GiB, 512MB, or a percentage like 50%`);
  }
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new BudgetError(`--memory ${text}: out of range`);
  return bytes;
}

export function fmtGB(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : `${(n / 1e6).toFixed(1)} MB`;
}

/** What must fit, in bytes. */
export interface BudgetInput {
  budget: number; // --memory
  overhead: number; // Node + V8 + code + thread stacks (measured; see RUNTIME_OVERHEAD_BYTES)
  resident: number; // weights that stay in DRAM (all weights in RAM mode)
  kv: number; // KV cache for the reserved context
  activations: number; // activation buffers (per arena)
  /** Buffers that streamed weights are read into (hybrid/naive: two layer slots per arena). */
  slots?: number;
  /** Smallest useful FFN neuron cache (sparse mode); 0 otherwise. */
  minNeuronCache: number;
  /** Context the KV figure is for, so the error can suggest a shorter one. */
  ctx: number;
}

export interface BudgetPlan extends Omit<BudgetInput, 'minNeuronCache' | 'ctx' | 'slots'> {
  slots: number; // flash read slots
  neuronCache: number; // what is left for the neuron cache (flash modes), ≥ minNeuronCache
  spare: number; // budget − everything planned (RAM mode keeps it unused)
}

/**
 * Node 20 + V8 heap + flashlm's code + one worker thread, measured as the peak RSS of a run on the
 * 3.8 MB demo model minus its arenas: ~69 MB. Rounded up for headroom (GC timing varies).
 */
export const RUNTIME_OVERHEAD_BYTES = 96 * 2 ** 20;

export function planBudget(i: BudgetInput): BudgetPlan {
  const slots = i.slots ?? 0;
  const must = i.overhead + i.resident + i.kv + i.activations + slots + i.minNeuronCache;
  if (must > i.budget) {
    const short = must - i.budget;
    const tips: string[] = [];
    if (i.kv > short) tips.push(`a shorter --ctx (KV cache is ${fmtGB(i.kv)} for ${i.ctx} positions)`);
    tips.push('a smaller --quant (q4_0 halves q8_0)');
    if (i.minNeuronCache === 0 && slots === 0) tips.push('a flash mode (--mode hybrid|naive) so weights stay on disk');
    throw new BudgetError(
      `--memory ${fmtGB(i.budget)} is ${fmtGB(short)} too small: needs ${fmtGB(must)} = ` +
      `resident weights ${fmtGB(i.resident)} + KV cache ${fmtGB(i.kv)} + activations ${fmtGB(i.activations)} + ` +
      `runtime ${fmtGB(i.overhead)}${slots ? ` + flash read slots ${fmtGB(slots)}` : ''}${i.minNeuronCache ? ` + minimum neuron cache ${fmtGB(i.minNeuronCache)}` : ''}; ` +
      `try ${tips.join(', or ')}`,
    );
  }
  const left = i.budget - (i.overhead + i.resident + i.kv + i.activations + slots);
  const neuronCache = i.minNeuronCache > 0 ? left : 0;
  return {
    budget: i.budget, overhead: i.overhead, resident: i.resident, kv: i.kv, activations: i.activations, slots,
    neuronCache, spare: left - neuronCache,
  };
}

export function describePlan(p: BudgetPlan): string {
  const row = (k: string, v: number) => `  ${k.padEnd(18)} ${fmtGB(v).padStart(10)}  ${((100 * v) / p.budget).toFixed(1).padStart(5)}%`;
  return [
    `memory plan for --memory ${fmtGB(p.budget)}:`,
    row('resident weights', p.resident),
    row('KV cache', p.kv),
    row('activations', p.activations),
    row('runtime (Node/V8)', p.overhead),
    ...(p.slots ? [row('flash read slots', p.slots)] : []),
    row('neuron cache', p.neuronCache),
    row('unused', p.spare),
  ].join('\n');
}

/**
 * Sparse mode's share of the neuron-cache budget kept for JS-heap bookkeeping outside the arenas
 * (matrix ids/rowOf/lastUsed/scratch ≈ 17 B per row + 12 B per neuron, planner arrays) and the
 * reader's queues, bytes: measured over budget by 4–14 MiB on a 40-layer synth model without it
 * (bench/memory-cap.ts); CodeLlama-13B at a 50% cap peaked 35 MB over a 16 MiB fixed part (V8 heap
 * growth under per-token planning), hence 64 MiB + 48 B per neuron.
 */
export function sparseSlackBytes(nLayers: number, ffnDim: number): number {
  return 64 * 2 ** 20 + nLayers * ffnDim * 48;
}
