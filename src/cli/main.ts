// flashlm command line: dispatch, flag parsing and the one-line error policy.
// User errors (bad flags, missing files, bad model files, budget/context problems) print one line
// "flashlm: ..." and exit 1; --verbose adds the stack. Anything else is a bug and shows its stack.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { cmdConvert, cmdInspect, cmdSynth } from './commands.js';
import { cmdDemo, cmdRun } from './run.js';
import { cmdVerify } from './flash-cmds.js';
import { cmdProfileDisk } from './profile-disk.js';
import { cmdCalibrate } from './calibrate-cmd.js';
import { cmdEval } from './eval-cmd.js';
import { cmdSparsify } from './sparsify-cmd.js';
import { cmdServe } from './serve-cmd.js';
import { cmdPlace } from './place-cmd.js';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Error names that are the user's problem, not ours: no stack trace unless --verbose. */
const USER_ERRORS = new Set([
  'UsageError', 'FormatError', 'UnsupportedError', 'NotFoundError', 'ModelConfigError', 'EngineError',
  'SamplingError', 'SynthOptionsError', 'BudgetError', 'FlashIOError', 'FlashAlignmentError', 'DiskProfileError', 'TokenizerError', 'ArenaFullError', 'ConvertError', 'ChecksumError', 'CalibrationError', 'EvalError',
  'SparsifyError', 'CalibrationMismatchError', 'PredictorFormatError', 'PredictorError',
  'OptionsError', 'ContextLengthError', 'PlacementError', 'PlacementFormatError', 'CoactivationError', 'WriteError',
]);

const HELP = `flashlm — run LLMs bigger than DRAM from Node.js

usage: flashlm <command> [options]

commands:
  demo                          generate (once, cached) a tiny embedded model and run it
  run MODEL (-p TEXT | --tokens 1,2,3) [-n N] [--temp T --top-k K --top-p P --seed S] [--memory 8GB|50%] [--json]
                                generate text; MODEL is a GGUF file or an HF safetensors directory
  convert SRC -o OUT.gguf --quant f32|f16|bf16|q8_0|q4_0 [--layout standard|flash]
                                write a llama.cpp-loadable GGUF from an HF directory or a GGUF;
                                --layout flash bundles each FFN neuron's rows for reading from flash
  verify MODEL                  check a flash-layout file's per-tensor / per-block checksums
  profile-disk [--file F] [--json] [--plot out.svg]
                                O_DIRECT random-read bandwidth and IOPS vs chunk size and reads in
                                flight; saved for the flash engine's cost model
  calibrate MODEL --text FILE|DIR... [--tokens N] [-o OUT]
                                record FFN activations over real text (for sparse mode)
  eval MODEL --ppl FILE|DIR... [--mode M] [--json]
                                perplexity over text (any mode)
  sparsify MODEL --calib CALIB.gguf [--sparsity 0.6] [--predictor lowrank|gate] [--rank 256] [--recall 0.97] [--pred-type q8_0|f32|q4_0] [-o OUT]
                                add per-layer activation thresholds and low-rank predictors to a
                                flash-layout MODEL (default OUT: MODEL, replaced atomically)
  place MODEL --calib CALIB.gguf [-o OUT] [--sparsity S]
                                Ripple placement: co-activated FFN neurons next to each other on
                                flash (fewer, longer reads in sparse mode)
  serve MODEL [--port 8080] [--host 127.0.0.1] [--memory X] [--mode M] [--max-queue 16] [--ctx N]
                                OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions,
                                /v1/models, /health, /metrics); one request at a time, the rest queue
  inspect MODEL                 architecture, shapes, dtypes, sizes
  synth -o OUT [--layers L --hidden D --ffn F --heads H --kv-heads K --vocab V --ctx C
        --dtype f32|f16|q8_0|q4_0 --act silu|relu --seed S --format gguf|safetensors]
                                write a deterministic random Llama model (with a vocab)

common options: --threads N (default 2), --verbose, -h/--help
`;

export type Flags = Record<string, string | boolean | undefined>;

export function parse(argv: string[], options: ParseArgsConfig['options']): { flags: Flags; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args: argv, options: { ...options, verbose: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true, strict: true,
    });
    return { flags: values as Flags, positionals };
  } catch (e) {
    // node's messages are multi-line and mention parseArgs internals; keep the first sentence
    throw new UsageError((e as Error).message.split('\n')[0]!.replace(/\. To specify.*$/, ''));
  }
}

/** An integer flag that has no default (undefined when absent), checked like intFlag. */
export function optIntFlag(flags: Flags, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  return flags[name] === undefined ? undefined : intFlag(flags, name, 0, min, max);
}

export function intFlag(flags: Flags, name: string, dflt: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = flags[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (typeof v !== 'string' || !/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer in [${min}, ${max}], got '${String(v)}'`);
  }
  return n;
}

export function numFlag(flags: Flags, name: string, dflt: number, min = -Infinity, max = Infinity): number {
  const v = flags[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be a number in [${min}, ${max}], got '${String(v)}'`);
  }
  return n;
}

export function strFlag<T extends string>(flags: Flags, name: string, dflt: T, allowed: readonly T[]): T {
  const v = flags[name];
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || !allowed.includes(v as T)) {
    throw new UsageError(`--${name} must be one of ${allowed.join('|')}, got '${String(v)}'`);
  }
  return v as T;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const verbose = rest.includes('--verbose');
  try {
    switch (cmd) {
      case 'run':
        return await cmdRun(rest);
      case 'demo':
        return await cmdDemo(rest);
      case 'convert':
        return await cmdConvert(rest);
      case 'inspect':
        return await cmdInspect(rest);
      case 'synth':
        return await cmdSynth(rest);
      case 'verify':
        return await cmdVerify(rest);
      case 'profile-disk':
        return await cmdProfileDisk(rest);
      case 'calibrate':
        return await cmdCalibrate(rest);
      case 'eval':
        return await cmdEval(rest);
      case 'sparsify':
        return await cmdSparsify(rest);
      case 'serve':
        return await cmdServe(rest);
      case 'place':
        return await cmdPlace(rest);
      case undefined:
      case 'help':
      case '-h':
      case '--help':
        process.stdout.write(HELP);
        return cmd === undefined ? 1 : 0;
      default:
        throw new UsageError(`unknown command '${cmd}' (try: flashlm --help)`);
    }
  } catch (e) {
    const err = e as Error;
    if (USER_ERRORS.has(err?.name)) {
      process.stderr.write(`flashlm: ${err.message}\n`);
      if (verbose && err.stack) process.stderr.write(`${err.stack}\n`);
      return 1;
    }
    process.stderr.write(`flashlm: internal error: ${err?.stack ?? String(e)}\n`);
    return 2;
  }
}

export { HELP };
