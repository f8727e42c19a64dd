import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FormatError, NotFoundError, UnsupportedError } from '../../src/formats/errors.js';
import { GGUFValueType, GGUFWriter } from '../../src/formats/gguf.js';
import { TensorType } from '../../src/formats/ggml-types.js';
import { ggufTensorName, permuteQKRows } from '../../src/formats/hf.js';
import { dequantize, quantize } from '../../src/formats/quant.js';
import { writeSafetensors } from '../../src/formats/safetensors.js';
import { openModel } from '../../src/formats/source.js';

// ---------------------------------------------------------------------------------------------
// a tiny HF Llama directory

const TINY = { hidden: 16, heads: 4, kvHeads: 2, ffn: 32, layers: 2, vocab: 64 };
const HD = TINY.hidden / TINY.heads;

function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** HF tensor names and shapes of the tiny model. */
function tinyShapes(tie = false): [string, number[]][] {
  const { hidden: d, ffn: f, heads, kvHeads, vocab, layers } = TINY;
  const out: [string, number[]][] = [['model.embed_tokens.weight', [vocab, d]]];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`;
    out.push([`${p}input_layernorm.weight`, [d]], [`${p}self_attn.q_proj.weight`, [heads * HD, d]],
      [`${p}self_attn.k_proj.weight`, [kvHeads * HD, d]], [`${p}self_attn.v_proj.weight`, [kvHeads * HD, d]],
      [`${p}self_attn.o_proj.weight`, [d, heads * HD]], [`${p}post_attention_layernorm.weight`, [d]],
      [`${p}mlp.gate_proj.weight`, [f, d]], [`${p}mlp.up_proj.weight`, [f, d]], [`${p}mlp.down_proj.weight`, [d, f]]);
  }
  out.push(['model.norm.weight', [d]]);
  if (!tie) out.push(['lm_head.weight', [vocab, d]]);
  return out;
}

interface TinyOpts {
  dtype?: 'F32' | 'F16' | 'BF16'; tie?: boolean; config?: Record<string, unknown>;
  drop?: string[]; extra?: { name: string; dtype: string; shape: number[]; data: Uint8Array }[]; shards?: number;
}

/** Writes a tiny HF model dir; returns the f32 values of every HF tensor (before dtype rounding). */
function makeTinyHF(dir: string, o: TinyOpts = {}): Map<string, Float32Array> {
  fs.mkdirSync(dir, { recursive: true });
  const dtype = o.dtype ?? 'F32';
  const type = { F32: TensorType.F32, F16: TensorType.F16, BF16: TensorType.BF16 }[dtype];
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: TINY.hidden, intermediate_size: TINY.ffn,
    num_hidden_layers: TINY.layers, num_attention_heads: TINY.heads, num_key_value_heads: TINY.kvHeads,
    rms_norm_eps: 1e-5, rope_theta: 500000, max_position_embeddings: 256, vocab_size: TINY.vocab,
    hidden_act: 'silu', tie_word_embeddings: o.tie ?? false, torch_dtype: 'float32', rope_scaling: null, ...o.config,
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const r = rand(42);
  const values = new Map<string, Float32Array>();
  const tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[] = [];
  for (const [name, shape] of tinyShapes(o.tie)) {
    if (o.drop?.includes(name)) continue;
    const n = shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = shape.length === 1 ? 1 + (r() - 0.5) * 0.2 : (r() - 0.5) * 0.5;
    values.set(name, v);
    tensors.push({ name, dtype, shape, data: quantize(type, v) });
  }
  tensors.push(...(o.extra ?? []));
  const shards = o.shards ?? 1;
  if (shards === 1) {
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  } else {
    const wm: Record<string, string> = {};
    const per = Math.ceil(tensors.length / shards);
    for (let s = 0; s < shards; s++) {
      const file = `model-0000${s + 1}-of-0000${shards}.safetensors`;
      const part = tensors.slice(s * per, (s + 1) * per);
      for (const t of part) wm[t.name] = file;
      writeSafetensors(path.join(dir, file), part, { format: 'pt' });
    }
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: wm }));
  }
  return values;
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'flashlm-src-'));
}

function readF32(src: ReturnType<typeof openModel>, name: string): Float32Array {
  const t = src.tensors.find((x) => x.name === name)!;
  const b = new Uint8Array(t.bytes);
  src.readTensor(name, b);
  return dequantize(t.type, b, t.bytes / (t.type === TensorType.F32 ? 4 : 2));
}

/** Expected GGUF-ordered rows, written independently of permuteQKRows: numpy's
 *  w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols), spelled out by index. */
function manualPermute(w: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  const hd = rows / nHead;
  const out = new Float32Array(w.length);
  let k = 0;
  for (let a = 0; a < nHead; a++) {
    for (let b = 0; b < hd / 2; b++) { // swapped axes: (head, half-index, pair) in output order
      for (let c = 0; c < 2; c++) {
        const srcRow = a * hd + c * (hd / 2) + b; // reshape(n_head, 2, hd/2): [a][c][b]
        for (let x = 0; x < cols; x++) out[k++] = w[srcRow * cols + x]!;
      }
    }
  }
  return out;
}

test('HF dir: metadata from config.json, GGUF names and dims, tensor order', () => {
  const dir = path.join(tmpDir(), 'Tiny-Llama-v1');
  makeTinyHF(dir);
  const src = openModel(dir);
  assert.equal(src.kind, 'hf');
  const meta = Object.fromEntries([...src.metadata].map(([k, kv]) => [k, [kv.type, kv.value]]));
  const U = GGUFValueType.UINT32, F = GGUFValueType.FLOAT32, S = GGUFValueType.STRING;
  assert.deepEqual(meta, {
    'general.architecture': [S, 'llama'], 'general.name': [S, 'Tiny-Llama-v1'],
    'llama.context_length': [U, 256], 'llama.embedding_length': [U, 16], 'llama.block_count': [U, 2],
    'llama.feed_forward_length': [U, 32], 'llama.attention.head_count': [U, 4], 'llama.attention.head_count_kv': [U, 2],
    'llama.rope.dimension_count': [U, 4], 'llama.rope.freq_base': [F, 500000],
    'llama.attention.layer_norm_rms_epsilon': [F, Math.fround(1e-5)], 'llama.vocab_size': [U, 64], 'flashlm.activation': [S, 'silu'],
  });
  const names = src.tensors.map((t) => t.name);
  assert.equal(names[0], 'token_embd.weight');
  assert.deepEqual(names.slice(1, 10), ['attn_norm', 'attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_norm', 'ffn_gate', 'ffn_up', 'ffn_down']
    .map((p) => `blk.0.${p}.weight`));
  assert.deepEqual(names.slice(-2), ['output_norm.weight', 'output.weight']);
  assert.equal(names.length, 1 + 9 * 2 + 2);
  const dims = Object.fromEntries(src.tensors.map((t) => [t.name, t.dims]));
  assert.deepEqual(dims['token_embd.weight'], [16, 64]);
  assert.deepEqual(dims['blk.1.attn_k.weight'], [16, 8]);
  assert.deepEqual(dims['blk.1.attn_output.weight'], [16, 16]);
  assert.deepEqual(dims['blk.0.ffn_down.weight'], [32, 16]);
  assert.deepEqual(dims['blk.0.ffn_norm.weight'], [16]);
  assert.ok(src.tensors.every((t) => t.type === TensorType.F32));
  src.close();
  assert.throws(() => src.readTensor('token_embd.weight', new Uint8Array(4096)), /closed/);
});

test('HF dir: Q/K rows permuted as llama.cpp (q: heads, k: kv heads), the rest unchanged', () => {
  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    const dir = tmpDir();
    const values = makeTinyHF(dir, { dtype, shards: 3 });
    const src = openModel(dir);
    const type = { F32: TensorType.F32, F16: TensorType.F16, BF16: TensorType.BF16 }[dtype];
    assert.ok(src.tensors.every((t) => t.type === type));
    const stored = (hf: string) => dequantize(type, quantize(type, values.get(hf)!), values.get(hf)!.length);
    for (let l = 0; l < TINY.layers; l++) {
      const p = `model.layers.${l}.self_attn.`;
      assert.deepEqual(readF32(src, `blk.${l}.attn_q.weight`), manualPermute(stored(`${p}q_proj.weight`), TINY.heads * HD, TINY.hidden, TINY.heads));
      assert.deepEqual(readF32(src, `blk.${l}.attn_k.weight`), manualPermute(stored(`${p}k_proj.weight`), TINY.kvHeads * HD, TINY.hidden, TINY.kvHeads));
      assert.deepEqual(readF32(src, `blk.${l}.attn_v.weight`), stored(`${p}v_proj.weight`));
      assert.deepEqual(readF32(src, `blk.${l}.ffn_down.weight`), stored(`model.layers.${l}.mlp.down_proj.weight`));
    }
    assert.deepEqual(readF32(src, 'token_embd.weight'), stored('model.embed_tokens.weight'));
    assert.deepEqual(readF32(src, 'output.weight'), stored('lm_head.weight'));
    // dstOffset
    const t = src.tensors.find((x) => x.name === 'blk.0.attn_q.weight')!;
    const a = new Uint8Array(t.bytes), b = new Uint8Array(t.bytes + 5);
    src.readTensor(t.name, a);
    src.readTensor(t.name, b, 5);
    assert.deepEqual(b.subarray(5), a);
    assert.throws(() => src.readTensor(t.name, b, 6), RangeError);
    src.close();
  }
});

test('permutation makes GGUF interleaved RoPE equal HF rotate-half RoPE (attention scores agree)', () => {
  const hd = 8, nHead = 2, cols = 6, rows = nHead * hd;
  const r = rand(3);
  const wq = Float32Array.from({ length: rows * cols }, () => r() - 0.5);
  const wk = Float32Array.from({ length: rows * cols }, () => r() - 0.5);
  const x1 = Array.from({ length: cols }, () => r() - 0.5), x2 = Array.from({ length: cols }, () => r() - 0.5);
  const perm = (w: Float32Array) => {
    const out = new Uint8Array(w.byteLength);
    permuteQKRows(new Uint8Array(w.buffer), out, rows, cols * 4, nHead);
    return new Float32Array(out.buffer);
  };
  const matvec = (w: Float32Array, x: number[]) => Array.from({ length: rows }, (_, i) => x.reduce((s, v, c) => s + v * w[i * cols + c]!, 0));
  const theta = (i: number, pos: number) => pos * Math.pow(10000, (-2 * i) / hd);
  const ropeHF = (v: number[], pos: number) => { // rotate_half: pairs (i, i + hd/2)
    const o = [...v];
    for (let h = 0; h < nHead; h++) for (let i = 0; i < hd / 2; i++) {
      const a = v[h * hd + i]!, b = v[h * hd + i + hd / 2]!, t = theta(i, pos);
      o[h * hd + i] = a * Math.cos(t) - b * Math.sin(t);
      o[h * hd + i + hd / 2] = a * Math.sin(t) + b * Math.cos(t);
    }
    return o;
  };
  const ropeGGUF = (v: number[], pos: number) => { // ggml normal mode: pairs (2i, 2i+1)
    const o = [...v];
    for (let h = 0; h < nHead; h++) for (let i = 0; i < hd / 2; i++) {
      const a = v[h * hd + 2 * i]!, b = v[h * hd + 2 * i + 1]!, t = theta(i, pos);
      o[h * hd + 2 * i] = a * Math.cos(t) - b * Math.sin(t);
      o[h * hd + 2 * i + 1] = a * Math.sin(t) + b * Math.cos(t);
    }
    return o;
  };
  const scores = (q: number[], k: number[]) => Array.from({ length: nHead }, (_, h) => {
    let s = 0;
    for (let i = 0; i < hd; i++) s += q[h * hd + i]! * k[h * hd + i]!;
    return s;
  });
  const hf = scores(ropeHF(matvec(wq, x1), 5), ropeHF(matvec(wk, x2), 2));
  const gg = scores(ropeGGUF(matvec(perm(wq), x1), 5), ropeGGUF(matvec(perm(wk), x2), 2));
  for (let h = 0; h < nHead; h++) assert.ok(Math.abs(hf[h]! - gg[h]!) < 1e-9, `head ${h}: ${hf[h]} vs ${gg[h]}`);
});

test('HF names map to GGUF names', () => {
  assert.equal(ggufTensorName('model.embed_tokens.weight'), 'token_embd.weight');
  assert.equal(ggufTensorName('model.layers.12.self_attn.o_proj.weight'), 'blk.12.attn_output.weight');
  assert.equal(ggufTensorName('model.layers.3.post_attention_layernorm.weight'), 'blk.3.ffn_norm.weight');
  assert.equal(ggufTensorName('model.layers.3.mlp.gate_proj.weight'), 'blk.3.ffn_gate.weight');
  assert.equal(ggufTensorName('lm_head.weight'), 'output.weight');
  assert.equal(ggufTensorName('model.norm.weight'), 'output_norm.weight');
  assert.equal(ggufTensorName('model.layers.3.self_attn.q_proj.bias'), undefined);
  assert.equal(ggufTensorName('model.layers.03.mlp.up_proj.weight'), undefined);
  assert.equal(ggufTensorName('model.layers.1.mlp.experts.0.weight'), undefined);
});

test('HF dir: tied embeddings, Mistral, relu, head_dim, extraMetadata, skipped inv_freq', () => {
  const dir = tmpDir();
  makeTinyHF(dir, {
    tie: true, config: { architectures: ['MistralForCausalLM'], model_type: 'mistral', hidden_act: 'relu', sliding_window: 4096 },
    extra: [{ name: 'model.layers.0.self_attn.rotary_emb.inv_freq', dtype: 'F32', shape: [2], data: new Uint8Array(8) }],
  });
  const src = openModel(path.join(dir, 'config.json'), {
    extraMetadata: [{ key: 'tokenizer.ggml.model', type: GGUFValueType.STRING, value: 'llama' }],
  });
  assert.ok(!src.tensors.some((t) => t.name === 'output.weight'));
  assert.equal(src.metadata.get('flashlm.activation')?.value, 'relu');
  assert.equal(src.metadata.get('tokenizer.ggml.model')?.value, 'llama');
  assert.equal(src.metadata.get('general.architecture')?.value, 'llama');
  src.close();

  const d2 = tmpDir(); // head_dim given and ≠ hidden / heads: shapes follow it, key/value_length written
  fs.mkdirSync(d2, { recursive: true });
  const hd = 6;
  fs.writeFileSync(path.join(d2, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2,
    head_dim: hd, max_position_embeddings: 16, vocab_size: 4, tie_word_embeddings: true,
  }));
  const z = (shape: number[]) => ({ dtype: 'F32', shape, data: new Uint8Array(shape.reduce((a, b) => a * b, 4)) });
  writeSafetensors(path.join(d2, 'model.safetensors'), [
    ['model.embed_tokens.weight', [4, 8]], ['model.layers.0.input_layernorm.weight', [8]], ['model.layers.0.self_attn.q_proj.weight', [2 * hd, 8]],
    ['model.layers.0.self_attn.k_proj.weight', [2 * hd, 8]], ['model.layers.0.self_attn.v_proj.weight', [2 * hd, 8]],
    ['model.layers.0.self_attn.o_proj.weight', [8, 2 * hd]], ['model.layers.0.post_attention_layernorm.weight', [8]],
    ['model.layers.0.mlp.gate_proj.weight', [8, 8]], ['model.layers.0.mlp.up_proj.weight', [8, 8]], ['model.layers.0.mlp.down_proj.weight', [8, 8]],
    ['model.norm.weight', [8]],
  ].map(([name, shape]) => ({ name: name as string, ...z(shape as number[]) })));
  const s2 = openModel(d2);
  assert.equal(s2.metadata.get('llama.rope.dimension_count')?.value, hd);
  assert.equal(s2.metadata.get('llama.attention.key_length')?.value, hd);
  assert.equal(s2.metadata.get('llama.rope.freq_base')?.value, 10000);
  assert.equal(s2.metadata.get('llama.attention.layer_norm_rms_epsilon')?.value, Math.fround(1e-6));
  assert.equal(s2.metadata.get('llama.attention.head_count_kv')?.value, 2);
  s2.close();
});

test('HF dir: config and tensor errors', () => {
  const expectFormat = (fn: () => unknown, field: RegExp) => assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${String(e)}`);
    assert.match(e.field, field);
    return true;
  });
  const mk = (o: TinyOpts) => {
    const d = tmpDir();
    makeTinyHF(d, o);
    return d;
  };
  expectFormat(() => openModel(mk({ drop: ['model.layers.1.mlp.up_proj.weight'] })), /tensor 'model\.layers\.1\.mlp\.up_proj\.weight'/);
  expectFormat(() => openModel(mk({ drop: ['lm_head.weight'] })), /lm_head/);
  expectFormat(() => openModel(mk({ extra: [{ name: 'model.layers.2.mlp.up_proj.weight', dtype: 'F32', shape: [1], data: new Uint8Array(4) }] })),
    /tensor 'model\.layers\.2\.mlp\.up_proj\.weight'/);
  expectFormat(() => openModel(mk({ extra: [{ name: 'model.layers.0.self_attn.q_proj.bias', dtype: 'F32', shape: [1], data: new Uint8Array(4) }] })),
    /q_proj\.bias/);
  expectFormat(() => openModel(mk({ config: { intermediate_size: 31 } })), /tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' shape/);
  expectFormat(() => openModel(mk({ config: { hidden_size: 0 } })), /^hidden_size$/);
  expectFormat(() => openModel(mk({ config: { num_hidden_layers: 1.5 } })), /^num_hidden_layers$/);
  expectFormat(() => openModel(mk({ config: { vocab_size: undefined } })), /^vocab_size$/);
  expectFormat(() => openModel(mk({ config: { num_key_value_heads: 3 } })), /^num_key_value_heads$/);
  expectFormat(() => openModel(mk({ config: { rms_norm_eps: 'x' } })), /^rms_norm_eps$/);
  expectFormat(() => openModel(mk({ config: { tie_word_embeddings: 1 } })), /^tie_word_embeddings$/);
  assert.throws(() => openModel(mk({ config: { rope_scaling: { type: 'linear', factor: 2 } } })), UnsupportedError);
  assert.throws(() => openModel(mk({ config: { architectures: ['GPT2LMHeadModel'] } })), UnsupportedError);
  assert.throws(() => openModel(mk({ config: { model_type: 'qwen2' } })), UnsupportedError);
  assert.throws(() => openModel(mk({ config: { hidden_act: 'gelu' } })), UnsupportedError);
  assert.throws(() => openModel(mk({ config: { attention_bias: true } })), UnsupportedError);
  const d = mk({});
  const i32 = { name: 'model.embed_tokens.weight', dtype: 'I32', shape: [64, 16], data: new Uint8Array(64 * 16 * 4) };
  const tensors = [...makeTinyHF(d)].filter(([n]) => n !== i32.name)
    .map(([name, v]) => ({ name, dtype: 'F32', shape: tinyShapes().find(([n]) => n === name)![1], data: new Uint8Array(v.buffer) }));
  writeSafetensors(path.join(d, 'model.safetensors'), [i32, ...tensors]);
  assert.throws(() => openModel(d), UnsupportedError);
  fs.writeFileSync(path.join(d, 'config.json'), '{');
  expectFormat(() => openModel(d), /^config$/);
  fs.rmSync(path.join(d, 'config.json'));
  assert.throws(() => openModel(d), NotFoundError);
  assert.throws(() => openModel(path.join(d, 'missing')), NotFoundError);
  const src = openModel(mk({}));
  expectFormat(() => src.readTensor('blk.9.attn_q.weight', new Uint8Array(4)), /blk\.9/);
  src.close();
});

test('GGUF file source: metadata, tensors and readTensor straight from the file', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'm.gguf');
  const w = new GGUFWriter(file);
  w.addKV('general.architecture', GGUFValueType.STRING, 'llama');
  w.addKV('llama.block_count', GGUFValueType.UINT32, 1);
  const a = new Float32Array([1, 2, 3, 4]);
  const q = quantize(TensorType.Q8_0, Float32Array.from({ length: 64 }, (_, i) => i / 10));
  w.addTensor('a', [4], TensorType.F32);
  w.addTensor('q', [32, 2], TensorType.Q8_0);
  w.beginData();
  w.writeData(new Uint8Array(a.buffer));
  w.writeData(q);
  w.finish();
  const src = openModel(file, { extraMetadata: [{ key: 'x.y', type: GGUFValueType.UINT8, value: 3 }] });
  assert.equal(src.kind, 'gguf');
  assert.equal(src.metadata.get('llama.block_count')?.value, 1);
  assert.equal(src.metadata.get('x.y')?.value, 3);
  assert.deepEqual(src.tensors.map((t) => [t.name, t.dims, t.type, t.bytes]), [['a', [4], 0, 16], ['q', [32, 2], 8, 68]]);
  const b = new Uint8Array(70);
  src.readTensor('q', b, 2);
  assert.deepEqual(b.subarray(2), q);
  assert.throws(() => src.readTensor('nope', b), FormatError);
  src.close();
  fs.writeFileSync(path.join(dir, 'bad.gguf'), 'not a gguf file at all');
  assert.throws(() => openModel(path.join(dir, 'bad.gguf')), FormatError);
});
