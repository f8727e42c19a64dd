import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { convertModel, targetType, type QuantName } from '../../src/formats/convert.js';
import { UnsupportedError } from '../../src/formats/errors.js';
import { GGUFValueType, readGGUF, readTensorData, type GGUFKV, type TensorInfo } from '../../src/formats/gguf.js';
import { TensorType } from '../../src/formats/ggml-types.js';
import { permuteQKRows } from '../../src/formats/hf.js';
import { dequantize, quantize } from '../../src/formats/quant.js';
import { writeSafetensors } from '../../src/formats/safetensors.js';
import { openModel, type ModelSource } from '../../src/formats/source.js';

const { F32, F16, BF16, Q8_0, Q4_0 } = TensorType;
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

interface Dims { hidden: number; heads: number; kvHeads: number; ffn: number; layers: number; vocab: number }
const SMALL: Dims = { hidden: 64, heads: 4, kvHeads: 2, ffn: 96, layers: 2, vocab: 48 };

function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}
function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'flashlm-conv-'));
}

/** Writes an HF Llama dir; returns the f32 values (HF layout) as stored (after dtype rounding). */
function makeHF(dir: string, D: Dims, o: { dtype?: 'F32' | 'BF16'; tie?: boolean; seed?: number } = {}): Map<string, Float32Array> {
  fs.mkdirSync(dir, { recursive: true });
  const hd = D.hidden / D.heads;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: D.hidden, intermediate_size: D.ffn,
    num_hidden_layers: D.layers, num_attention_heads: D.heads, num_key_value_heads: D.kvHeads, rms_norm_eps: 1e-5,
    rope_theta: 10000, max_position_embeddings: 128, vocab_size: D.vocab, hidden_act: 'silu', tie_word_embeddings: o.tie ?? false,
  }));
  const shapes: [string, number[]][] = [['model.embed_tokens.weight', [D.vocab, D.hidden]]];
  for (let l = 0; l < D.layers; l++) {
    const p = `model.layers.${l}.`;
    shapes.push([`${p}input_layernorm.weight`, [D.hidden]], [`${p}self_attn.q_proj.weight`, [D.heads * hd, D.hidden]],
      [`${p}self_attn.k_proj.weight`, [D.kvHeads * hd, D.hidden]], [`${p}self_attn.v_proj.weight`, [D.kvHeads * hd, D.hidden]],
      [`${p}self_attn.o_proj.weight`, [D.hidden, D.heads * hd]], [`${p}post_attention_layernorm.weight`, [D.hidden]],
      [`${p}mlp.gate_proj.weight`, [D.ffn, D.hidden]], [`${p}mlp.up_proj.weight`, [D.ffn, D.hidden]], [`${p}mlp.down_proj.weight`, [D.hidden, D.ffn]]);
  }
  shapes.push(['model.norm.weight', [D.hidden]]);
  if (!o.tie) shapes.push(['lm_head.weight', [D.vocab, D.hidden]]);
  const dtype = o.dtype ?? 'F32';
  const type = dtype === 'F32' ? F32 : BF16;
  const r = rand(o.seed ?? 5);
  const values = new Map<string, Float32Array>();
  const tensors = shapes.map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const scale = shape.length === 1 ? 0 : name.includes('embed') || name.includes('lm_head') ? 1 : 1 / Math.sqrt(shape[1]!);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = shape.length === 1 ? 0.8 + 0.4 * r() : (r() + r() + r() - 1.5) * 2 * scale;
    const data = quantize(type, v);
    values.set(name, dequantize(type, data, n));
    return { name, dtype, shape, data };
  });
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return values;
}

function tensorF32(file: string, t: TensorInfo): Float32Array {
  const b = new Uint8Array(t.bytes);
  readTensorData(file, t, b);
  return dequantize(t.type, b, t.dims.reduce((a, c) => a * c, 1));
}

/** HF values of GGUF tensor `name`, Q/K rows permuted to GGUF order. */
function ggufOrder(values: Map<string, Float32Array>, D: Dims, name: string): Float32Array {
  const hfName = name === 'token_embd.weight' ? 'model.embed_tokens.weight' : name === 'output.weight' ? 'lm_head.weight'
    : name === 'output_norm.weight' ? 'model.norm.weight' : name.replace(/^blk\.(\d+)\.(\w+)\.weight$/, (_, l: string, p: string) => `model.layers.${l}.${({
      attn_norm: 'input_layernorm', attn_q: 'self_attn.q_proj', attn_k: 'self_attn.k_proj', attn_v: 'self_attn.v_proj',
      attn_output: 'self_attn.o_proj', ffn_norm: 'post_attention_layernorm', ffn_gate: 'mlp.gate_proj', ffn_up: 'mlp.up_proj',
      ffn_down: 'mlp.down_proj' } as Record<string, string>)[p]}.weight`);
  const v = values.get(hfName)!;
  const nHead = name.endsWith('attn_q.weight') ? D.heads : name.endsWith('attn_k.weight') ? D.kvHeads : 0;
  if (!nHead) return v;
  const out = new Uint8Array(v.byteLength);
  permuteQKRows(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), out, v.length / D.hidden, D.hidden * 4, nHead);
  return new Float32Array(out.buffer);
}

const TOK_KV: GGUFKV[] = [{ key: 'tokenizer.ggml.model', type: GGUFValueType.STRING, value: 'llama' }];

test('HF dir → GGUF for every output type: metadata, types, dims, values', () => {
  const dir = tmpDir();
  const hf = path.join(dir, 'hf');
  const values = makeHF(hf, SMALL);
  const src = openModel(hf);
  const expectType: Record<QuantName, number> = { f32: F32, f16: F16, bf16: BF16, q8_0: Q8_0, q4_0: Q4_0 };
  for (const quant of ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const) {
    const out = path.join(dir, `m-${quant}.gguf`);
    const progress: [number, number][] = [];
    convertModel(src, out, { quant, extraMetadata: TOK_KV, onProgress: (d, t) => progress.push([d, t]) });
    const g = readGGUF(out);
    assert.equal(g.alignment, 32);
    assert.ok(!g.metadata.has('general.alignment'));
    for (const [k, kv] of src.metadata) assert.deepEqual(g.metadata.get(k)?.value, kv.value, k);
    assert.equal(g.metadata.get('tokenizer.ggml.model')?.value, 'llama');
    const ftype = g.metadata.get('general.file_type')!;
    assert.equal(ftype.type, GGUFValueType.UINT32);
    assert.equal(ftype.value, { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 }[quant]);
    assert.equal(g.metadata.get('general.quantization_version')?.value, quant.startsWith('q') ? 2 : undefined);
    assert.deepEqual(g.tensors.map((t) => [t.name, t.dims]), src.tensors.map((t) => [t.name, t.dims]));
    const total = g.tensors.reduce((s, t) => s + t.bytes, 0);
    assert.deepEqual(progress[0], [0, total]);
    assert.deepEqual(progress.at(-1), [total, total]);
    assert.ok(progress.every(([d, t], i) => t === total && (i === 0 || d >= progress[i - 1]![0])));
    for (const t of g.tensors) {
      const want = t.dims.length === 1 ? F32 : quant === 'q4_0' && t.name === 'output.weight' ? Q8_0 : expectType[quant];
      assert.equal(t.type, want, `${quant} ${t.name}`);
      const x = ggufOrder(values, SMALL, t.name);
      // exactly what our (ggml-exact) quantizer makes of the permuted source values
      assert.deepEqual(tensorF32(out, t), dequantize(t.type, quantize(t.type, x), x.length), `${quant} ${t.name}`);
    }
  }
  src.close();
});

test('q4_0 with tied embeddings keeps token_embd at q8_0; rows that are not whole blocks fall back to f16', () => {
  const dir = tmpDir();
  makeHF(path.join(dir, 'hf'), SMALL, { tie: true });
  const src = openModel(path.join(dir, 'hf'));
  convertModel(src, path.join(dir, 'o.gguf'), { quant: 'q4_0' });
  const types = Object.fromEntries(readGGUF(path.join(dir, 'o.gguf')).tensors.map((t) => [t.name, t.type]));
  assert.equal(types['token_embd.weight'], Q8_0);
  assert.equal(types['blk.0.ffn_up.weight'], Q4_0);
  assert.equal(types['output.weight'], undefined);
  src.close();
  assert.equal(targetType({ name: 'blk.0.ffn_up.weight', dims: [48, 8] }, 'q8_0', false), F16);
  assert.equal(targetType({ name: 'blk.0.ffn_up.weight', dims: [48, 8] }, 'bf16', false), BF16);
  assert.equal(targetType({ name: 'blk.0.attn_norm.weight', dims: [48] }, 'q4_0', false), F32);
  assert.throws(() => targetType({ name: 'x', dims: [32, 1] }, 'q5_0' as QuantName, false), RangeError);
});

test('GGUF → GGUF: same type copies bytes, re-quantization goes through f32', () => {
  const dir = tmpDir();
  makeHF(path.join(dir, 'hf'), SMALL, { dtype: 'BF16' });
  const hf = openModel(path.join(dir, 'hf'));
  const q8 = path.join(dir, 'q8.gguf'), f32 = path.join(dir, 'f32.gguf');
  convertModel(hf, q8, { quant: 'q8_0', extraMetadata: TOK_KV });
  convertModel(hf, f32, { quant: 'f32' });
  hf.close();

  // q8_0 → q8_0: byte-identical tensors, metadata kept
  const s1 = openModel(q8);
  const q8b = path.join(dir, 'q8b.gguf');
  convertModel(s1, q8b, { quant: 'q8_0', alignment: 64 });
  const a = readGGUF(q8), b = readGGUF(q8b);
  assert.equal(b.alignment, 64);
  assert.equal(b.metadata.get('general.alignment')?.value, 64);
  assert.equal(b.metadata.get('tokenizer.ggml.model')?.value, 'llama');
  assert.equal(b.metadata.get('general.file_type')?.value, 7);
  for (const t of a.tensors) {
    const u = b.tensorByName.get(t.name)!;
    assert.equal(u.offset % 64, 0);
    const x = new Uint8Array(t.bytes), y = new Uint8Array(u.bytes);
    readTensorData(q8, t, x);
    readTensorData(q8b, u, y);
    assert.deepEqual(y, x, t.name);
  }
  // q8_0 → q4_0 re-quantizes the dequantized q8_0 values; f32 GGUF → q8_0 equals HF → q8_0
  const q4 = path.join(dir, 'q4.gguf');
  convertModel(s1, q4, { quant: 'q4_0' });
  s1.close();
  const c = readGGUF(q4);
  assert.equal(c.metadata.get('general.file_type')?.value, 2);
  for (const t of c.tensors) {
    const from = tensorF32(q8, a.tensorByName.get(t.name)!);
    assert.deepEqual(tensorF32(q4, t), dequantize(t.type, quantize(t.type, from), from.length), t.name);
  }
  const s2 = openModel(f32);
  const q8c = path.join(dir, 'q8c.gguf');
  convertModel(s2, q8c, { quant: 'q8_0', extraMetadata: TOK_KV });
  s2.close();
  assert.deepEqual(fs.readFileSync(q8c), fs.readFileSync(q8));
});

/** An in-memory ModelSource (tensors generated on read). */
function fakeSource(tensors: { name: string; dims: number[]; type: number }[], fill: (name: string, i: number) => number,
  failOn?: string): ModelSource {
  const infos: TensorInfo[] = tensors.map((t) => {
    const n = t.dims.reduce((a, b) => a * b, 1);
    const bytes = t.type === F32 ? n * 4 : t.type === F16 || t.type === BF16 ? n * 2 : t.type === Q8_0 ? (n / 32) * 34 : (n / 32) * 18;
    return { ...t, offset: 0, bytes };
  });
  return {
    path: '/fake/model', kind: 'gguf',
    metadata: new Map([['general.architecture', { key: 'general.architecture', type: GGUFValueType.STRING, value: 'llama' }],
      ['general.alignment', { key: 'general.alignment', type: GGUFValueType.UINT32, value: 16 }]]),
    tensors: infos,
    readTensor(name, dst, off = 0) {
      if (name === failOn) throw new Error(`read failed: ${name}`);
      const t = infos.find((x) => x.name === name)!;
      const n = t.dims.reduce((a, b) => a * b, 1);
      const v = Float32Array.from({ length: n }, (_, i) => fill(name, i));
      dst.set(t.type === F32 ? new Uint8Array(v.buffer) : quantize(t.type, v), off);
    },
    close() {},
  };
}

test('large tensors are converted in chunks, with progress after each', () => {
  const dir = tmpDir();
  const src = fakeSource([{ name: 'big.weight', dims: [1024, 2560], type: F32 }, { name: 'n', dims: [7], type: F16 }],
    (_, i) => Math.sin(i) * 3);
  const calls: number[] = [];
  const out = path.join(dir, 'big.gguf');
  convertModel(src, out, { quant: 'q8_0', onProgress: (d) => calls.push(d) });
  assert.ok(calls.length >= 4, `${calls.length} progress calls`);
  const g = readGGUF(out);
  assert.equal(g.alignment, 32); // the source's general.alignment is not copied
  const t = g.tensorByName.get('big.weight')!;
  assert.equal(t.type, Q8_0);
  const x = Float32Array.from({ length: 1024 * 2560 }, (_, i) => Math.sin(i) * 3);
  assert.deepEqual(tensorF32(out, t), dequantize(Q8_0, quantize(Q8_0, x), x.length));
  assert.deepEqual([...tensorF32(out, g.tensorByName.get('n')!)], [...dequantize(F16, quantize(F16, Float32Array.from({ length: 7 }, (_, i) => Math.sin(i) * 3)), 7)]);
});

test('failures leave no output and no temp file', () => {
  const dir = tmpDir();
  const out = path.join(dir, 'o.gguf');
  const bad = fakeSource([{ name: 'a', dims: [32, 2], type: F32 }, { name: 'b', dims: [32], type: 3 /* q4_1 */ }], () => 1);
  assert.throws(() => convertModel(bad, out, { quant: 'f16' }), UnsupportedError);
  const failing = fakeSource([{ name: 'a', dims: [32, 2], type: F32 }, { name: 'b', dims: [32, 4], type: F32 }], () => 1, 'b');
  assert.throws(() => convertModel(failing, out, { quant: 'q8_0' }), /read failed: b/);
  assert.throws(() => convertModel(failing, out, { quant: 'q3' as QuantName }), RangeError);
  assert.throws(() => convertModel(failing, '/fake/model', { quant: 'f32' }), /source/);
  assert.deepEqual(fs.readdirSync(dir), []);
});

// ---------------------------------------------------------------------------------------------
// llama.cpp (node-llama-cpp, a devDependency) loads the output and computes what HF's Llama does

/** Naive HF-semantics Llama forward (rotate-half RoPE on HF-ordered weights): logits at the last position. */
function hfForward(v: Map<string, Float32Array>, D: Dims, tokens: number[], eps: number, theta: number): Float32Array {
  const hd = D.hidden / D.heads, group = D.heads / D.kvHeads;
  const mv = (w: Float32Array, x: Float64Array, rows: number) => {
    const cols = x.length, y = new Float64Array(rows);
    for (let r = 0; r < rows; r++) { let s = 0; for (let c = 0; c < cols; c++) s += w[r * cols + c]! * x[c]!; y[r] = s; }
    return y;
  };
  const norm = (x: Float64Array, w: Float32Array) => {
    let ss = 0;
    for (const a of x) ss += a * a;
    const k = 1 / Math.sqrt(ss / x.length + eps);
    return x.map((a, i) => a * k * w[i]!);
  };
  const rope = (q: Float64Array, nh: number, pos: number) => {
    for (let h = 0; h < nh; h++) for (let i = 0; i < hd / 2; i++) {
      const t = pos * Math.pow(theta, (-2 * i) / hd), a = q[h * hd + i]!, b = q[h * hd + i + hd / 2]!;
      q[h * hd + i] = a * Math.cos(t) - b * Math.sin(t);
      q[h * hd + i + hd / 2] = a * Math.sin(t) + b * Math.cos(t);
    }
  };
  const K: Float64Array[][] = [], V: Float64Array[][] = [];
  let x = new Float64Array(D.hidden);
  for (let pos = 0; pos < tokens.length; pos++) {
    x = Float64Array.from(v.get('model.embed_tokens.weight')!.subarray(tokens[pos]! * D.hidden, (tokens[pos]! + 1) * D.hidden));
    for (let l = 0; l < D.layers; l++) {
      const p = (s: string) => v.get(`model.layers.${l}.${s}.weight`)!;
      const h = norm(x, p('input_layernorm'));
      const q = mv(p('self_attn.q_proj'), h, D.heads * hd), k = mv(p('self_attn.k_proj'), h, D.kvHeads * hd);
      rope(q, D.heads, pos);
      rope(k, D.kvHeads, pos);
      (K[l] ??= []).push(k);
      (V[l] ??= []).push(mv(p('self_attn.v_proj'), h, D.kvHeads * hd));
      const att = new Float64Array(D.heads * hd);
      for (let hh = 0; hh < D.heads; hh++) {
        const kh = Math.floor(hh / group);
        const s = K[l]!.map((kk) => { let d = 0; for (let i = 0; i < hd; i++) d += q[hh * hd + i]! * kk[kh * hd + i]!; return d / Math.sqrt(hd); });
        const m = Math.max(...s), e = s.map((a) => Math.exp(a - m)), z = e.reduce((a, b) => a + b, 0);
        for (let t = 0; t < e.length; t++) for (let i = 0; i < hd; i++) att[hh * hd + i]! += (e[t]! / z) * V[l]![t]![kh * hd + i]!;
      }
      const o = mv(p('self_attn.o_proj'), att, D.hidden);
      x = x.map((a, i) => a + o[i]!);
      const h2 = norm(x, p('post_attention_layernorm'));
      const g = mv(p('mlp.gate_proj'), h2, D.ffn), u = mv(p('mlp.up_proj'), h2, D.ffn);
      const dn = mv(p('mlp.down_proj'), g.map((a, i) => (a / (1 + Math.exp(-a))) * u[i]!), D.hidden);
      x = x.map((a, i) => a + dn[i]!);
    }
  }
  return Float32Array.from(mv(v.get('lm_head.weight')!, norm(x, v.get('model.norm.weight')!), D.vocab));
}

// Measured: relative RMS error f32 2e-7, bf16 3e-3, q8_0 1.7e-2, q4_0 0.15; with the Q/K permutation
// disabled, f32 gives 0.46.
test('llama.cpp loads converted files and its logits match an HF-semantics forward pass', async (t) => {
  let nlc: typeof import('node-llama-cpp');
  try {
    nlc = await import('node-llama-cpp');
  } catch (e) {
    t.skip(`node-llama-cpp unavailable: ${(e as Error).message}`);
    return;
  }
  const vocabFile = path.join(ROOT, 'test/fixtures/vocab/ggml-vocab-llama-spm.gguf');
  const tok = [...readGGUF(vocabFile).metadata.values()].filter((kv) => kv.key.startsWith('tokenizer.'));
  const D: Dims = { hidden: 64, heads: 4, kvHeads: 2, ffn: 128, layers: 2, vocab: 32000 };
  const dir = tmpDir();
  const values = makeHF(path.join(dir, 'hf'), D, { dtype: 'BF16', seed: 9 });
  const src = openModel(path.join(dir, 'hf'));
  const tokens = [1, 450, 4996, 17354, 1701];
  const ref = hfForward(values, D, tokens, 1e-5, 10000);
  const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.error });
  try {
    for (const [quant, tol] of [['f32', 1e-5], ['bf16', 0.01], ['q8_0', 0.04], ['q4_0', 0.25]] as const) {
      const out = path.join(dir, `${quant}.gguf`);
      convertModel(src, out, { quant, extraMetadata: tok });
      const model = await llama.loadModel({ modelPath: out, gpuLayers: 0 });
      const ctx = await model.createContext({ contextSize: 32, batchSize: 32, threads: 1, flashAttention: false,
        experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', sequences: 1 });
      const seq = ctx.getSequence();
      const gen = { generateNext: { token: true, logits: true } } as const;
      const input = [...tokens.slice(0, -1), [tokens.at(-1)!, gen]] as Parameters<typeof seq.controlledEvaluate>[0];
      const res = await seq.controlledEvaluate(input);
      const m = res.at(-1)?.next?.logits;
      assert.ok(m, 'no logits');
      const got = new Float32Array(D.vocab);
      for (const [id, val] of m) got[id] = val;
      let se = 0, sr = 0;
      for (let i = 0; i < D.vocab; i++) { se += (got[i]! - ref[i]!) ** 2; sr += ref[i]! ** 2; }
      const rel = Math.sqrt(se / sr);
      assert.ok(rel < tol, `${quant}: relative RMS error of llama.cpp logits vs reference ${rel.toExponential(2)} ≥ ${tol}`);
      await ctx.dispose();
      await model.dispose();
    }
  } finally {
    src.close();
    await llama.dispose();
  }
});
