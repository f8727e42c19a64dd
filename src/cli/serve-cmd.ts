// `flashlm serve MODEL`: the OpenAI-compatible HTTP server (src/server/) over a loaded model.
// Prints "listening on http://HOST:PORT" on stdout once it accepts connections; SIGINT/SIGTERM stop
// it (running requests are cancelled, the model is closed) and the command returns 0.
import { loadModel } from '../index.js';
import { startServer } from '../server/server.js';
import { describePlan } from '../memory/budget.js';
import { intFlag, parse, strFlag, UsageError } from './main.js';

const SERVE_OPTIONS = {
  port: { type: 'string' },
  host: { type: 'string' },
  memory: { type: 'string' },
  mode: { type: 'string' },
  'max-queue': { type: 'string' },
  ctx: { type: 'string' },
  threads: { type: 'string' },
  kv: { type: 'string' },
  window: { type: 'string' },
  'no-verify': { type: 'boolean' },
  sequences: { type: 'string' },
  'kv-positions': { type: 'string' },
  'kv-page-size': { type: 'string' },
} as const;

const USAGE = 'usage: flashlm serve MODEL [--port 8080] [--host 127.0.0.1] [--memory 8GB|50%] [--mode ram|hybrid|naive|sparse] [--max-queue 16] [--ctx N] [--threads N] [--kv f16|f32] [--window K] [--sequences 8] [--kv-positions N|budget] [--kv-page-size 16] [--no-verify] [--verbose]\n';

export async function cmdServe(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, SERVE_OPTIONS);
  if (flags.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('serve needs exactly one MODEL (a .gguf file or an HF model directory)');
  const port = intFlag(flags, 'port', 8080, 0, 65535);
  const host = flags.host === undefined ? '127.0.0.1' : String(flags.host);
  const maxQueue = intFlag(flags, 'max-queue', 16, 0, 1 << 20);
  const mode = strFlag(flags, 'mode', 'ram', ['ram', 'hybrid', 'naive', 'sparse'] as const);
  const kv = strFlag(flags, 'kv', 'f16', ['f16', 'f32'] as const);
  const opt = (k: string, lo: number, hi: number) => (flags[k] === undefined ? undefined : intFlag(flags, k, 0, lo, hi));
  // requests run at once up to --sequences, sharing a KV page pool: --kv-positions in all (default:
  // what --memory leaves after the weights, up to sequences × ctx; without --memory, sequences × ctx)
  const kvPositions = flags['kv-positions'] === undefined || flags['kv-positions'] === 'budget' ? 'budget' as const : intFlag(flags, 'kv-positions', 0, 1, 1 << 30);
  const lm = await loadModel(positionals[0]!, {
    memory: flags.memory === undefined ? undefined : String(flags.memory), mode, kv, verify: !flags['no-verify'],
    ctx: opt('ctx', 1, 1 << 22), threads: opt('threads', 1, 64), window: opt('window', 0, 1 << 20),
    sequences: intFlag(flags, 'sequences', 8, 1, 4096), kvPositions, kvPageSize: opt('kv-page-size', 1, 4096),
  });
  for (const w of lm.warnings) process.stderr.write(`flashlm: warning: ${w}\n`);
  if (lm.engine.plan && flags.verbose) process.stderr.write(`${describePlan(lm.engine.plan)}\n`);
  let srv;
  // the warm-up's few tokens take seconds on a model streamed from flash: say why nothing listens yet
  process.stderr.write('flashlm: warming up (4 tokens) before listening\n');
  try {
    srv = await startServer(lm, {
      port, host, maxQueue, log: flags.verbose ? (l) => process.stderr.write(`${l}\n`) : undefined, warmup: true,
    });
  } catch (e) {
    await lm.close();
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL') throw new UsageError(`cannot listen on ${host}:${port}: ${err.code}`);
    throw e;
  }
  for (const w of srv.warnings) process.stderr.write(`flashlm: warning: ${w}\n`);
  const k = lm.kvPages();
  process.stderr.write(`flashlm: ${lm.name}: ${mode} mode, ${lm.ctx} KV positions per request, KV pool ${k.pages} pages × ${k.pageSize} positions shared by up to ${k.slots} requests at once, chat template: ${srv.chatTemplate}, queue ≤ ${maxQueue}\n`);
  process.stdout.write(`listening on ${srv.url}\n`);
  const running = srv;
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await running.close();
  await lm.close();
  return 0;
}
