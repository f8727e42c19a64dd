// One engine run in its own child process, for the side-by-side benches: the child loads the model,
// decodes greedily from the given prompt ids and prints one EngineRun as JSON. Running each engine in
// a fresh process keeps one engine's memory (or page cache, which we drop) from helping the other, and
// lets the parent wrap the child in a cgroup memory limit.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export type FlashMode = 'ram' | 'hybrid' | 'naive' | 'sparse';

export interface EngineRun {
  engine: string; // 'llama.cpp' | 'flashlm'
  mode?: string; // flashlm mode
  tokens: number[];
  msPerToken: number; // mean decode step after the first token
  promptMs: number;
  loadMs: number;
  peakRssBytes: number;
  logits?: number[][]; // per step: [top1 id, logit, top2 id, logit] for margin analysis
  ioStallMsPerToken?: number; // decode steps: time waiting for reads compute did not hide
  bytesReadPerToken?: number;
  readsPerToken?: number;
  readMBps?: number; // flash bytes / summed read wall time
  memoryMsPerToken?: number; // sparse: neuron-matrix bookkeeping and copies
  budgetBytes?: number; // flashlm --memory
  sparse?: Record<string, number>; // sparse mode's counters per decode step
  capacity?: number; // sparse: neuron matrix rows per layer
  readPlan?: { inFlight: number; maxReadBytes: number; source: string }; // flash modes: the engine's read size and reads in flight
}

/** Outcome of one child: a run, or why it did not produce one (OOM kill, budget refused, crash). */
export interface ChildResult {
  run?: EngineRun;
  error?: string;
  cgroup?: { limit: number; peak: number; oomKills: number }; // from incg's stderr line
}

const INCG = fileURLToPath(new URL('../../../shared/tools/incg', import.meta.url)); // dist/bench → ../shared

export function dropCaches(): boolean {
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    return true;
  } catch {
    return false;
  }
}

export function top2(l: ArrayLike<number>): number[] {
  let a = -1, b = -1;
  for (let i = 0; i < l.length; i++) {
    if (a < 0 || l[i]! > l[a]!) (b = a), (a = i);
    else if (b < 0 || l[i]! > l[b]!) b = i;
  }
  return [a, l[a]!, b, l[b]!];
}

/** The median (mean of the middle two for an even count: the upper one alone flattered 2-run results). */
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export interface ChildArgs {
  engine: 'llama.cpp' | 'flashlm';
  model: string;
  prompt: number[];
  n: number;
  threads: number;
  mode: FlashMode;
  memory?: number; // flashlm --memory (bytes)
  load?: Record<string, unknown>; // more flashlm LoadModelOptions (JSON-safe: window, collapseGap, ...)
  /** flashlm: decode these tokens instead of the argmax (teacher forcing: the same sequence as another run) */
  force?: number[];
}

/** The child's work (called in the child process). */
export async function runChild(a: ChildArgs): Promise<EngineRun> {
  const t0 = performance.now();
  const { model, prompt, n, threads } = a;
  if (a.engine === 'llama.cpp') {
    const { llamaCppGreedy, closeLlamaCpp } = await import('./llamacpp-peer.js');
    const r = await llamaCppGreedy(model, prompt, n, { threads, ctx: prompt.length + n + 1, logits: true });
    await closeLlamaCpp();
    return {
      engine: a.engine, tokens: r.tokens, msPerToken: r.msPerToken, promptMs: r.promptMs, loadMs: performance.now() - t0 - r.promptMs - r.msPerToken * (n - 1),
      peakRssBytes: process.resourceUsage().maxRSS * 1024, logits: r.logits!.map(top2),
    };
  }
  const { Model } = await import('../src/engine/model.js');
  const { argmax } = await import('../src/engine/sample.js');
  const m = await Model.load(model, { threads, ctx: prompt.length + n + 1, mode: a.mode, memory: a.memory, ...(a.load ?? {}) });
  const loadMs = performance.now() - t0;
  const t1 = performance.now();
  let l = await m.prefillAsync(prompt);
  const tokens: number[] = [];
  const logits: number[][] = [];
  let tFirst = 0;
  let io0 = { bytes: 0, reads: 0, ms: 0, mm: 0 };
  const snapshot = (): Record<string, number> => (m.sparse ? { ...m.sparse.stats, ...m.sparse.src.stats } : {});
  let sp0: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    logits.push(top2(l));
    const t = a.force?.[i] ?? argmax(l);
    tokens.push(t);
    if (i === 0) {
      tFirst = performance.now();
      const s = m.flashStats();
      io0 = { bytes: s?.bytes ?? 0, reads: s?.reads ?? 0, ms: s?.ioMs ?? 0, mm: s?.mmMs ?? 0 };
      sp0 = snapshot();
    }
    if (i + 1 < n) l = await m.decodeAsync(t);
  }
  const tEnd = performance.now();
  const io = m.flashStats();
  const dec = m.times.decoded;
  const sp1 = snapshot();
  const sparse = m.sparse ? Object.fromEntries(Object.keys(sp1).map((k) => [k, (sp1[k]! - (sp0[k] ?? 0)) / Math.max(1, dec)])) : undefined;
  await m.close();
  return {
    engine: a.engine, mode: a.mode, tokens, msPerToken: (tEnd - tFirst) / (n - 1), promptMs: tFirst - t1, loadMs,
    peakRssBytes: process.resourceUsage().maxRSS * 1024, logits, budgetBytes: a.memory,
    // decode steps only (the prompt's passes start cold)
    ...(io && dec ? {
      ioStallMsPerToken: m.times.decodeIoStallMs / dec, bytesReadPerToken: (io.bytes - io0.bytes) / dec,
      readsPerToken: (io.reads - io0.reads) / dec, readMBps: (io.bytes - io0.bytes) / 1e3 / (io.ioMs - io0.ms),
      memoryMsPerToken: (io.mmMs - io0.mm) / dec,
    } : {}),
    ...(sparse ? { sparse, capacity: m.sparse!.capacity } : {}),
    ...(m.readPlan ? { readPlan: { ...m.readPlan } } : {}),
  };
}

/**
 * The environment of an engine child: flash reads through libuv's threadpool with 64 threads (what
 * bin/flashlm.cjs sets), or through io_uring with FLASHLM_IO=uring (its SQPOLL kernel thread then
 * competes with the kernels for the two cores; README "I/O path"). Both must be set at process start.
 */
export function ioEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (process.env.FLASHLM_IO === 'uring') env.UV_USE_IO_URING = '1';
  else { delete env.UV_USE_IO_URING; env.UV_THREADPOOL_SIZE ??= '64'; }
  return env;
}

/**
 * Runs `script --child ...` in a fresh node process (inside `incg capBytes` when capBytes > 0), after
 * dropping the page cache. Never throws for a failed child: the failure is part of the result.
 */
export function spawnChild(script: string, a: ChildArgs, capBytes: number): ChildResult {
  dropCaches();
  const args = [script, a.model, '--child', a.engine, '--tokens', a.prompt.join(','), '-n', String(a.n), '--threads', String(a.threads), '--mode', a.mode,
    ...(a.memory ? ['--memory', String(a.memory)] : []), ...(a.load ? ['--load', JSON.stringify(a.load)] : []), ...(a.force ? ['--force', a.force.join(',')] : [])];
  const cmd = capBytes ? [INCG, String(capBytes), process.execPath, ...args] : [process.execPath, ...args];
  const out = spawnSync(cmd[0]!, cmd.slice(1), {
    encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'pipe'],
    env: ioEnv(),
  });
  const res: ChildResult = {};
  const cg = /incg: limit (\d+) peak (\d+) oom_kills (\d+)/.exec(out.stderr);
  if (cg) res.cgroup = { limit: Number(cg[1]), peak: Number(cg[2]), oomKills: Number(cg[3]) };
  if (out.status === 0) {
    try {
      res.run = JSON.parse(out.stdout) as EngineRun;
    } catch {
      res.error = `unparsable child output: ${out.stdout.slice(0, 200)}`;
    }
  } else {
    const lines = out.stderr.split('\n').filter((x) => x.trim() && !x.startsWith('incg:'));
    const err = lines.find((x) => /Error/.test(x)) ?? lines[lines.length - 1] ?? '';
    res.error = `${a.engine}${a.engine === 'flashlm' ? ` ${a.mode}` : ''} exited with ${out.status ?? out.signal}${res.cgroup?.oomKills ? ' (OOM-killed)' : ''}: ${err.slice(0, 400)}`;
  }
  return res;
}

/** Parses the child's own command line (`--child ENGINE ...`) and runs it, printing JSON. */
export async function childMain(values: Record<string, string | boolean | undefined>, model: string): Promise<void> {
  const r = await runChild({
    engine: values.child as 'llama.cpp' | 'flashlm', model, prompt: String(values.tokens).split(',').map(Number), n: Number(values.n),
    threads: Number(values.threads), mode: (values.mode as FlashMode) ?? 'ram', memory: values.memory ? Number(values.memory) : undefined,
    load: values.load ? (JSON.parse(String(values.load)) as Record<string, unknown>) : undefined,
    force: values.force ? String(values.force).split(',').map(Number) : undefined,
  });
  process.stdout.write(JSON.stringify(r));
}
