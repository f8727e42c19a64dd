// `flashlm synth`, `flashlm convert`, `flashlm inspect`.
import { synthModel, type SynthOptions } from '../engine/synth.js';
import { openModel } from '../formats/source.js';
import { convertModel } from '../formats/convert.js';
import { convertToFlashLayout } from '../formats/flash-layout.js';
import { flashInspectLines } from './flash-cmds.js';
import { formatMetaValue, readGGUF } from '../formats/gguf.js';
import { typeName } from '../formats/ggml-types.js';
import { isDirectory } from '../formats/fsutil.js';
import { ggufVocabMetadataFromHFDir } from '../tokenizer/index.js';
import { configFromMetadata } from '../model/llama.js';
import { fmtBytes, Progress } from './progress.js';
import { intFlag, parse, strFlag, UsageError } from './main.js';

export async function cmdSynth(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, {
    output: { type: 'string', short: 'o' }, layers: { type: 'string' }, hidden: { type: 'string' },
    ffn: { type: 'string' }, heads: { type: 'string' }, 'kv-heads': { type: 'string' }, vocab: { type: 'string' },
    ctx: { type: 'string' }, dtype: { type: 'string' }, act: { type: 'string' }, seed: { type: 'string' },
    format: { type: 'string' },
  });
  if (flags.help) {
    process.stdout.write('usage: flashlm synth -o OUT [--layers 2 --hidden 64 --ffn 192 --heads 4 --kv-heads 4 --vocab 512 --ctx 256 --dtype f32|f16|q8_0|q4_0 --act silu|relu --seed 1 --format gguf|safetensors]\n');
    return 0;
  }
  if (positionals.length) throw new UsageError(`synth takes no positional arguments (got '${positionals[0]}'); use -o OUT`);
  if (typeof flags.output !== 'string') throw new UsageError('synth needs -o OUT (a .gguf file, or a directory with --format safetensors)');
  const heads = intFlag(flags, 'heads', 4, 1, 1024);
  const o: SynthOptions = {
    layers: intFlag(flags, 'layers', 2, 1, 1024),
    hidden: intFlag(flags, 'hidden', 64, 2, 65536),
    ffn: intFlag(flags, 'ffn', 192, 1, 1 << 20),
    heads,
    kvHeads: intFlag(flags, 'kv-heads', heads, 1, 1024),
    vocab: intFlag(flags, 'vocab', 512, 260, 1 << 20),
    ctx: intFlag(flags, 'ctx', 256, 1, 1 << 20),
    dtype: strFlag(flags, 'dtype', 'f32', ['f32', 'f16', 'q8_0', 'q4_0'] as const),
    act: strFlag(flags, 'act', 'silu', ['silu', 'relu'] as const),
    seed: intFlag(flags, 'seed', 1, 0, 2 ** 32 - 1),
    format: strFlag(flags, 'format', 'gguf', ['gguf', 'safetensors'] as const),
  };
  const t0 = performance.now();
  synthModel(o, flags.output);
  process.stderr.write(`wrote ${flags.output} (${o.format}, ${o.dtype}) in ${(performance.now() - t0).toFixed(0)} ms\n`);
  return 0;
}

export async function cmdConvert(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, { output: { type: 'string', short: 'o' }, quant: { type: 'string' }, layout: { type: 'string' } });
  if (flags.help) {
    process.stdout.write('usage: flashlm convert SRC -o OUT.gguf --quant f32|f16|bf16|q8_0|q4_0 [--layout standard|flash]   (SRC: HF directory or GGUF)\n');
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('convert needs exactly one SRC (an HF model directory or a .gguf file)');
  if (typeof flags.output !== 'string') throw new UsageError('convert needs -o OUT.gguf');
  if (flags.quant === undefined) throw new UsageError('convert needs --quant f32|f16|bf16|q8_0|q4_0');
  const quant = strFlag(flags, 'quant', 'q8_0', ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const);
  const layout = strFlag(flags, 'layout', 'standard', ['standard', 'flash'] as const);
  const srcPath = positionals[0]!;
  const src = openModel(srcPath);
  try {
    const extraMetadata = src.kind === 'hf' ? ggufVocabMetadataFromHFDir(srcPath) : undefined;
    const bar = new Progress('converting');
    const t0 = performance.now();
    const onProgress = (d: number, t: number) => bar.update(d, t);
    if (layout === 'flash') convertToFlashLayout(src, flags.output, { quant, extraMetadata, onProgress });
    else convertModel(src, flags.output, { quant, extraMetadata, onProgress });
    bar.finish();
    process.stderr.write(`wrote ${flags.output} (${quant}, ${layout} layout) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  } finally {
    src.close();
  }
  return 0;
}

export async function cmdInspect(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, { json: { type: 'boolean' }, tensors: { type: 'boolean' } });
  if (flags.help) {
    process.stdout.write('usage: flashlm inspect MODEL [--tensors] [--json]\n');
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('inspect needs exactly one MODEL');
  const path = positionals[0]!;
  const src = openModel(path);
  try {
    const embd = src.tensors.find((t) => t.name === 'token_embd.weight');
    const cfg = configFromMetadata(src.metadata, embd?.dims[1]);
    const byType = new Map<string, { count: number; bytes: number }>();
    let total = 0;
    for (const t of src.tensors) {
      const k = typeName(t.type);
      const e = byType.get(k) ?? { count: 0, bytes: 0 };
      e.count++;
      e.bytes += t.bytes;
      total += t.bytes;
      byType.set(k, e);
    }
    const gguf = src.kind === 'gguf' && !isDirectory(path) ? readGGUF(path) : undefined;
    if (flags.json) {
      process.stdout.write(`${JSON.stringify({
        path, kind: src.kind, version: gguf?.version, alignment: gguf?.alignment, config: cfg,
        tensor_bytes: total, types: Object.fromEntries(byType),
        tensors: flags.tensors ? src.tensors.map((t) => ({ name: t.name, dims: t.dims, type: typeName(t.type), bytes: t.bytes })) : undefined,
      })}\n`);
      return 0;
    }
    const w = (s: string) => process.stdout.write(`${s}\n`);
    w(`${path}: ${src.kind === 'gguf' ? `GGUF v${gguf?.version}, alignment ${gguf?.alignment}` : 'HF safetensors directory'}`);
    w(`architecture  llama (${cfg.act === 'silu' ? 'SiLU' : 'ReLU'}-GLU FFN)`);
    w(`layers        ${cfg.nLayers}`);
    w(`hidden        ${cfg.dim}   ffn ${cfg.ffnDim}   vocab ${cfg.vocabSize}   context ${cfg.ctxLen}`);
    w(`heads         ${cfg.nHeads} (kv ${cfg.nKvHeads}${cfg.nKvHeads < cfg.nHeads ? ', grouped-query' : ''}), head dim ${cfg.headDim}, rope dim ${cfg.ropeDim}, rope theta ${cfg.ropeTheta}`);
    w(`rms eps       ${cfg.normEps}`);
    w(`tensors       ${src.tensors.length}, ${fmtBytes(total)}`);
    for (const [k, e] of byType) w(`  ${k.padEnd(6)} ${String(e.count).padStart(5)} tensors  ${fmtBytes(e.bytes)}`);
    const perLayer = src.tensors.filter((t) => t.name.startsWith('blk.0.')).reduce((s, t) => s + t.bytes, 0);
    const ffn0 = src.tensors.filter((t) => /^blk\.0\.ffn_(gate|up|down)\./.test(t.name)).reduce((s, t) => s + t.bytes, 0);
    w(`per layer     ${fmtBytes(perLayer)} (FFN ${fmtBytes(ffn0)}, ${perLayer ? ((100 * ffn0) / perLayer).toFixed(0) : 0}%)`);
    const kv16 = 2 * cfg.nLayers * cfg.nKvHeads * cfg.headDim * 2;
    w(`KV cache      ${fmtBytes(kv16)} per position (f16), ${fmtBytes(kv16 * cfg.ctxLen)} at full context`);
    w('metadata');
    for (const [k, kv] of src.metadata) w(`  ${k} = ${formatMetaValue(kv)}`);
    const flash = gguf ? flashInspectLines(gguf) : [];
    if (flash.length) {
      w('flash layout');
      for (const l of flash) w(`  ${l}`);
    }
    if (flags.tensors) {
      w('tensors');
      for (const t of src.tensors) w(`  ${t.name.padEnd(28)} ${typeName(t.type).padEnd(5)} [${t.dims.join(', ')}] ${fmtBytes(t.bytes)}`);
    }
  } finally {
    src.close();
  }
  return 0;
}
