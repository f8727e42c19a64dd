import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  SynthOptionsError, synthModel, synthTensorData, synthTensorSpecs, synthTokenizerJSON, synthVocab, SynthRng,
  validateSynthOptions, type SynthOptions, type SynthVocab,
} from '../../src/engine/synth.js';
import { metaF32, metaStr, metaU32, readGGUF, readTensorData } from '../../src/formats/gguf.js';
import { TensorType } from '../../src/formats/ggml-types.js';
import { f32ToF16, quantize } from '../../src/formats/quant.js';
import { openSafetensors } from '../../src/formats/safetensors.js';
import { openModel } from '../../src/formats/source.js';

// compiled to dist/test/engine/: the repo root is three levels up
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const GOLDEN = path.join(ROOT, 'test', 'fixtures', 'golden');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'flashlm-synth-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let nTmp = 0;
const tmpPath = (ext: string): string => path.join(tmp, `m${nTmp++}${ext}`);

const BASE: SynthOptions = {
  layers: 2, hidden: 64, ffn: 96, heads: 4, kvHeads: 2, vocab: 300, ctx: 64, dtype: 'f32', act: 'silu', seed: 7, format: 'gguf',
};

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function tensorDataSha256(file: string): string {
  const f = readGGUF(file);
  const h = createHash('sha256');
  for (const t of f.tensors) {
    const buf = new Uint8Array(t.bytes);
    readTensorData(file, t, buf);
    h.update(buf);
  }
  return h.digest('hex');
}

function dirHashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of fs.readdirSync(dir).sort()) out[f] = sha256(fs.readFileSync(path.join(dir, f)));
  return out;
}

// --- reference tokenizers over the synth vocab -------------------------------------------------

const SP = '\u2581';

function utf8Bytes(s: string): number[] {
  return [...new TextEncoder().encode(s)];
}

/** llama.cpp's SPM algorithm: merge the adjacent pair whose concatenation is the highest-scoring
 * token (leftmost on ties); symbols that are not tokens fall back to their bytes. */
function spmEncode(v: SynthVocab, text: string): number[] {
  if (text === '') return [];
  const id = new Map(v.tokens.map((t, i) => [t, i]));
  const syms = [...(' ' + text).replaceAll(' ', SP)];
  for (;;) {
    let best = -1;
    let bestScore = -Infinity;
    for (let i = 0; i + 1 < syms.length; i++) {
      const t = id.get(syms[i]! + syms[i + 1]!);
      if (t !== undefined && v.scores[t]! > bestScore) [best, bestScore] = [i, v.scores[t]!];
    }
    if (best < 0) break;
    syms.splice(best, 2, syms[best]! + syms[best + 1]!);
  }
  return syms.flatMap((s) => id.get(s) ?? utf8Bytes(s).map((b) => 3 + b));
}

/** HF tokenizers' BPE over tokenizer.json: normalizer, byte fallback, lowest-rank merge first. */
function bpeEncode(tj: ReturnType<typeof tokenizerJSONShape>, text: string): number[] {
  if (text === '') return [];
  const syms: string[] = [];
  for (const ch of SP + text.replaceAll(' ', SP)) {
    if (tj.vocab[ch] !== undefined) syms.push(ch);
    else for (const b of utf8Bytes(ch)) syms.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  }
  for (;;) {
    let best = -1;
    let bestRank = Infinity;
    for (let i = 0; i + 1 < syms.length; i++) {
      const r = tj.rank.get(`${syms[i]} ${syms[i + 1]}`);
      if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
    }
    if (best < 0) break;
    syms.splice(best, 2, syms[best]! + syms[best + 1]!);
  }
  return syms.map((s) => tj.vocab[s]!);
}

function tokenizerJSONShape(json: unknown) {
  const m = (json as { model: { vocab: Record<string, number>; merges: string[]; byte_fallback: boolean } }).model;
  return { vocab: m.vocab, rank: new Map(m.merges.map((s, i) => [s, i])), byteFallback: m.byte_fallback };
}

// --- tests -----------------------------------------------------------------------------------

describe('synth PRNG', () => {
  it('is deterministic per key and uniform in (-1, 1)', () => {
    const a = new SynthRng('k');
    const b = new SynthRng('k');
    const c = new SynthRng('other');
    let sum = 0;
    let sq = 0;
    let same = 0;
    for (let i = 0; i < 20000; i++) {
      const x = a.uniform();
      assert.equal(x, b.uniform());
      if (x === c.uniform()) same++;
      assert.ok(x > -1 && x < 1);
      sum += x;
      sq += x * x;
    }
    assert.ok(same < 5);
    assert.ok(Math.abs(sum / 20000) < 0.02);
    assert.ok(Math.abs(sq / 20000 - 1 / 3) < 0.02);
  });
});

describe('synthModel options', () => {
  const bad: [Partial<SynthOptions>, string][] = [
    [{ hidden: 60 }, 'heads'], // head dim 15 is odd
    [{ hidden: 66 }, 'heads'], // not a multiple of 4 heads
    [{ heads: 4, kvHeads: 3 }, 'kvHeads'],
    [{ hidden: 12, heads: 4 }, 'heads'], // odd head dim
    [{ dtype: 'q4_0', hidden: 48, heads: 4, kvHeads: 2 }, 'hidden'],
    [{ dtype: 'q8_0', ffn: 100 }, 'ffn'],
    [{ dtype: 'q8_0', format: 'safetensors' }, 'dtype'],
    [{ vocab: 100 }, 'vocab'],
    [{ layers: 0 }, 'layers'],
    [{ seed: -1 }, 'seed'],
    [{ seed: 1.5 }, 'seed'],
    [{ dtype: 'bf16' as never }, 'dtype'],
    [{ act: 'gelu' as never }, 'act'],
    [{ format: 'onnx' as never }, 'format'],
    [{ gains: { nope: 1 } as never }, 'gains'],
  ];
  for (const [patch, option] of bad) {
    it(`rejects ${JSON.stringify(patch)} naming '${option}'`, () => {
      const o = { ...BASE, ...patch };
      assert.throws(() => validateSynthOptions(o), (e: unknown) => e instanceof SynthOptionsError && e.option === option && e.name === 'SynthOptionsError');
      const out = tmpPath('.gguf');
      assert.throws(() => synthModel(o, out), SynthOptionsError);
      assert.equal(fs.existsSync(out), false);
    });
  }
  it('accepts block-aligned quantized shapes', () => {
    validateSynthOptions({ ...BASE, dtype: 'q4_0', hidden: 64, ffn: 96 });
  });
});

describe('synth vocabulary', () => {
  const v = synthVocab(512);
  it('has the SentencePiece layout', () => {
    assert.equal(v.tokens.length, 512);
    assert.deepEqual(v.tokens.slice(0, 3), ['<unk>', '<s>', '</s>']);
    assert.deepEqual([...v.types.slice(0, 3)], [2, 3, 3]);
    for (let b = 0; b < 256; b++) {
      assert.equal(v.tokens[3 + b], `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
      assert.equal(v.types[3 + b], 6);
    }
    assert.equal(v.tokens[259], SP);
    assert.equal(new Set(v.tokens).size, 512);
    for (let i = 259; i < 512; i++) {
      assert.equal(v.types[i], 1);
      assert.ok(!/[<> ]/.test(v.tokens[i]!), v.tokens[i]);
      if (i > 259) assert.ok(v.scores[i]! < v.scores[i - 1]!);
    }
    assert.ok(v.tokens.includes(`${SP}the`));
  });
  it('gives every multi-character token exactly one split, and one merge', () => {
    const normal = new Set(v.tokens.slice(259));
    const multi = v.tokens.slice(259).filter((t) => t.length > 1);
    assert.equal(v.merges.length, multi.length);
    for (const t of multi) {
      let splits = 0;
      for (let k = 1; k < t.length; k++) if (normal.has(t.slice(0, k)) && normal.has(t.slice(k))) splits++;
      assert.equal(splits, 1, t);
    }
    const order = v.merges.map(([a, b]) => v.tokens.indexOf(a + b));
    assert.deepEqual(order, [...order].sort((x, y) => x - y)); // merge rank order = score order
  });
  it('is deterministic and builds larger vocabularies', () => {
    assert.deepEqual(synthVocab(512), v);
    const big = synthVocab(3000);
    assert.equal(big.tokens.length, 3000);
    assert.equal(new Set(big.tokens).size, 3000);
  });
  it('SPM (scores) and HF BPE (merges in tokenizer.json) tokenize alike', () => {
    const tj = tokenizerJSONShape(synthTokenizerJSON(v));
    assert.equal(tj.byteFallback, true);
    const rng = new SynthRng('test/strings');
    const alphabet = [...'etaoinshrdlu  .,;()THE0123<>é\n日'];
    for (let n = 0; n < 300; n++) {
      let s = '';
      const len = 1 + rng.below(24);
      for (let i = 0; i < len; i++) s += alphabet[rng.below(alphabet.length)];
      assert.deepEqual(bpeEncode(tj, s), spmEncode(v, s), JSON.stringify(s));
    }
  });
  it('matches llama.cpp tokenization recorded in the golden fixture', () => {
    const fx = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'synth-vocab512-tokenize.json'), 'utf8')) as {
      vocab: number; cases: { text: string; withBos: number[]; noBos: number[] }[];
    };
    assert.equal(fx.vocab, 512);
    const tj = tokenizerJSONShape(synthTokenizerJSON(v));
    for (const c of fx.cases) {
      assert.deepEqual(spmEncode(v, c.text), c.noBos, `SPM ${JSON.stringify(c.text)}`);
      assert.deepEqual(bpeEncode(tj, c.text), c.noBos, `BPE ${JSON.stringify(c.text)}`);
      assert.deepEqual(c.withBos, [1, ...c.noBos]);
    }
  });
});

describe('synthModel GGUF', () => {
  it('is deterministic: same options → identical bytes; another seed → other weights', () => {
    const a = tmpPath('.gguf');
    const b = tmpPath('.gguf');
    const c = tmpPath('.gguf');
    synthModel(BASE, a);
    synthModel(BASE, b);
    synthModel({ ...BASE, seed: 8 }, c);
    assert.equal(sha256(fs.readFileSync(a)), sha256(fs.readFileSync(b)));
    assert.notEqual(tensorDataSha256(a), tensorDataSha256(c));
    assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')), []);
  });

  for (const dtype of ['f32', 'f16', 'q8_0', 'q4_0'] as const) {
    it(`writes a readable llama GGUF (${dtype})`, () => {
      const o: SynthOptions = { ...BASE, dtype, act: dtype === 'f16' ? 'relu' : 'silu' };
      const p = tmpPath('.gguf');
      const res = synthModel(o, p);
      const f = readGGUF(p);
      assert.equal(metaStr(f, 'general.architecture'), 'llama');
      assert.equal(metaU32(f, 'llama.block_count'), 2);
      assert.equal(metaU32(f, 'llama.embedding_length'), 64);
      assert.equal(metaU32(f, 'llama.feed_forward_length'), 96);
      assert.equal(metaU32(f, 'llama.attention.head_count'), 4);
      assert.equal(metaU32(f, 'llama.attention.head_count_kv'), 2);
      assert.equal(metaU32(f, 'llama.rope.dimension_count'), 16);
      assert.equal(metaU32(f, 'llama.context_length'), 64);
      assert.equal(metaU32(f, 'llama.vocab_size'), 300);
      assert.equal(metaF32(f, 'llama.rope.freq_base'), 10000);
      assert.equal(metaF32(f, 'llama.attention.layer_norm_rms_epsilon'), Math.fround(1e-5));
      assert.equal(metaStr(f, 'flashlm.activation'), o.act);
      assert.equal(metaStr(f, 'tokenizer.ggml.model'), 'llama');
      assert.equal(metaU32(f, 'tokenizer.ggml.bos_token_id'), 1);
      assert.equal(metaU32(f, 'tokenizer.ggml.eos_token_id'), 2);
      assert.equal(metaU32(f, 'tokenizer.ggml.unknown_token_id'), 0);
      assert.equal(f.metadata.get('tokenizer.ggml.add_bos_token')?.value, true);
      const toks = f.metadata.get('tokenizer.ggml.tokens')!.value as string[];
      assert.deepEqual(toks, synthVocab(300).tokens);
      assert.equal((f.metadata.get('tokenizer.ggml.scores')!.value as Float32Array).length, 300);
      assert.equal((f.metadata.get('tokenizer.ggml.token_type')!.value as Int32Array)[3], 6);

      const specs = synthTensorSpecs(o);
      assert.equal(res.tensors, specs.length);
      assert.deepEqual(f.tensors.map((t) => t.name), specs.map((s) => s.name));
      const mType = { f32: TensorType.F32, f16: TensorType.F16, q8_0: TensorType.Q8_0, q4_0: TensorType.Q4_0 }[dtype];
      for (const t of f.tensors) {
        const s = specs.find((x) => x.name === t.name)!;
        assert.equal(t.type, s.kind === 'norm' ? TensorType.F32 : mType, t.name);
        assert.deepEqual(t.dims, s.kind === 'norm' ? [64] : [s.cols, s.rows], t.name);
      }
      assert.deepEqual(f.tensorByName.get('blk.0.attn_k.weight')!.dims, [64, 32]);
      assert.deepEqual(f.tensorByName.get('blk.1.ffn_down.weight')!.dims, [96, 64]);
      assert.deepEqual(f.tensorByName.get('output.weight')!.dims, [64, 300]);

      // stored bytes are the f32 recipe encoded in the dtype
      for (const name of ['token_embd.weight', 'blk.1.attn_q.weight', 'blk.0.ffn_norm.weight']) {
        const t = f.tensorByName.get(name)!;
        const got = new Uint8Array(t.bytes);
        readTensorData(p, t, got);
        const x = synthTensorData(o, name);
        let want: Uint8Array;
        if (t.type === TensorType.F32) want = new Uint8Array(x.buffer);
        else if (t.type === TensorType.F16) want = new Uint8Array(Uint16Array.from(x, (v) => f32ToF16(v)).buffer);
        else want = quantize(t.type, x);
        assert.equal(sha256(got), sha256(want), name);
      }
    });
  }

  it('uses the same f32 weights for every dtype of one seed, at sane scales', () => {
    const a = synthTensorData(BASE, 'blk.0.ffn_up.weight');
    assert.deepEqual(synthTensorData({ ...BASE, dtype: 'q8_0' }, 'blk.0.ffn_up.weight'), a);
    const rms = Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);
    assert.ok(Math.abs(rms - 1 / Math.sqrt(64)) < 0.01, `rms ${rms}`);
    const norm = synthTensorData(BASE, 'output_norm.weight');
    for (const v of norm) {
      assert.ok(v >= 0.79 && v <= 1.21);
      assert.equal(v * 128, Math.round(v * 128)); // exact in f16 / bf16
    }
    const emb = synthTensorData(BASE, 'token_embd.weight');
    const erms = Math.sqrt(emb.reduce((s, v) => s + v * v, 0) / emb.length);
    assert.ok(Math.abs(erms - 1) < 0.02, `embedding rms ${erms}`);
  });
});

describe('synthModel safetensors', () => {
  it('writes an HF directory, deterministically, with Q/K rows in HF order', () => {
    const o: SynthOptions = { ...BASE, format: 'safetensors', dtype: 'f16' };
    const d1 = tmpPath('');
    const d2 = tmpPath('');
    synthModel(o, d1);
    synthModel(o, d2);
    synthModel(o, d2); // overwrite in place
    assert.deepEqual(dirHashes(d1), dirHashes(d2));
    assert.deepEqual(Object.keys(dirHashes(d1)), ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const cfg = JSON.parse(fs.readFileSync(path.join(d1, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.model_type, 'llama');
    assert.equal(cfg.num_key_value_heads, 2);
    assert.equal(cfg.hidden_act, 'silu');
    assert.equal(cfg.torch_dtype, 'float16');
    const tj = JSON.parse(fs.readFileSync(path.join(d1, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
    assert.equal(Object.keys(tj.model.vocab).length, 300);

    const st = openSafetensors(d1);
    const read = (name: string): Float32Array => {
      const t = st.tensors.get(name)!;
      assert.equal(t.dtype, 'F16', name);
      const buf = Buffer.alloc(t.bytes);
      const fd = fs.openSync(t.file, 'r');
      fs.readSync(fd, buf, 0, t.bytes, t.offset);
      fs.closeSync(fd);
      const h = new Uint16Array(buf.buffer, buf.byteOffset, t.bytes / 2);
      return Float32Array.from(h, (x) => x); // compare f16 bit patterns as numbers
    };
    const f16bits = (x: Float32Array): Float32Array => Float32Array.from(x, (v) => f32ToF16(v));
    assert.equal(st.tensors.size, synthTensorSpecs(o).length);
    for (const s of synthTensorSpecs(o)) {
      const t = st.tensors.get(s.hfName);
      assert.ok(t, s.hfName);
      assert.deepEqual(t.shape, s.kind === 'norm' ? [s.cols] : [s.rows, s.cols]);
    }
    // non-permuted tensors are stored as they are
    assert.deepEqual(read('model.layers.0.mlp.down_proj.weight'), f16bits(synthTensorData(o, 'blk.0.ffn_down.weight')));
    // llama.cpp's convert permutation applied to the HF rows gives back the GGUF rows
    for (const [hf, gg, heads] of [
      ['model.layers.1.self_attn.q_proj.weight', 'blk.1.attn_q.weight', 4],
      ['model.layers.1.self_attn.k_proj.weight', 'blk.1.attn_k.weight', 2],
    ] as const) {
      const h = read(hf);
      const g = f16bits(synthTensorData(o, gg));
      const cols = 64;
      const rows = h.length / cols;
      const hd = rows / heads;
      const permuted = new Float32Array(h.length);
      for (let r = 0; r < rows; r++) {
        // convert_hf_to_gguf permute: reshape(heads, 2, hd/2, cols).swapaxes(1, 2)
        const head = Math.floor(r / hd);
        const within = r % hd;
        const j = Math.floor(within / (hd / 2));
        const i = within % (hd / 2);
        const dst = head * hd + 2 * i + j;
        permuted.set(h.subarray(r * cols, (r + 1) * cols), dst * cols);
      }
      assert.deepEqual(permuted, g, hf);
    }
  });
});

describe('synth HF directory seen through openModel', () => {
  for (const dtype of ['f32', 'f16'] as const) {
    it(`gives the same tensors and llama.* metadata as the GGUF (${dtype})`, () => {
      const o: SynthOptions = { ...BASE, dtype, act: 'relu' };
      const g = tmpPath('.gguf');
      const d = tmpPath('');
      synthModel(o, g);
      synthModel({ ...o, format: 'safetensors' }, d);
      const a = openModel(g);
      const b = openModel(d);
      try {
        assert.equal(b.kind, 'hf');
        for (const [k, kv] of a.metadata) {
          if (!k.startsWith('llama.') && k !== 'general.architecture' && k !== 'flashlm.activation') continue;
          const bv = b.metadata.get(k)?.value;
          // FLOAT32 values: the HF side may hold the f64 from config.json (rounded when written)
          assert.deepEqual(typeof bv === 'number' ? Math.fround(bv) : bv, kv.value, k);
        }
        const byName = new Map(b.tensors.map((t) => [t.name, t]));
        for (const t of a.tensors) {
          const u = byName.get(t.name);
          assert.ok(u, t.name);
          assert.deepEqual(u.dims, t.dims, t.name);
          const x = new Uint8Array(t.bytes);
          const y = new Uint8Array(u.bytes);
          a.readTensor(t.name, x);
          b.readTensor(t.name, y);
          if (t.type === u.type) assert.equal(sha256(y), sha256(x), t.name);
          else {
            // norms: F32 in GGUF, the model dtype (F16) in HF; the synth norm values are exact in f16
            assert.equal(t.type, TensorType.F32);
            assert.equal(u.type, TensorType.F16);
            const xf = new Float32Array(x.buffer);
            const yh = new Uint16Array(y.buffer);
            assert.deepEqual(Uint16Array.from(xf, (v) => f32ToF16(v)), yh, t.name);
          }
        }
      } finally {
        a.close();
        b.close();
      }
    });
  }
});

describe('golden fixtures', () => {
  const files = fs.existsSync(GOLDEN) ? fs.readdirSync(GOLDEN).filter((f) => /^[A-Z]-.*\.json$/.test(f)) : [];
  it('are present', () => assert.ok(files.length >= 2, `golden models in ${GOLDEN}`));
  for (const file of files) {
    it(`${file}: synth regenerates the same tensors; records are consistent`, () => {
      const fx = JSON.parse(fs.readFileSync(path.join(GOLDEN, file), 'utf8')) as {
        synth: SynthOptions; tensorDataSha256: string; prompt: { text: string; tokens: number[] };
        greedy: { n: number; tokens: number[]; margins: number[]; minMargin: number };
        logits?: { shape: [number, number]; f32le: string }; top5?: { steps: [number, number][][] };
      };
      const p = tmpPath('.gguf');
      synthModel(fx.synth, p);
      assert.equal(tensorDataSha256(p), fx.tensorDataSha256, 'synth output changed: regenerate fixtures (npm run fixtures)');
      fs.rmSync(p);
      const v = synthVocab(fx.synth.vocab);
      assert.deepEqual(fx.prompt.tokens, [1, ...spmEncode(v, fx.prompt.text)]);
      assert.equal(fx.greedy.tokens.length, fx.greedy.n);
      assert.equal(fx.greedy.margins.length, fx.greedy.n);
      assert.ok(fx.greedy.minMargin >= 0.01);
      if (fx.logits) {
        const [n, vocab] = fx.logits.shape;
        const buf = Buffer.from(fx.logits.f32le, 'base64');
        assert.equal(buf.length, n * vocab * 4);
        const all = new Float32Array(buf.buffer, buf.byteOffset, n * vocab);
        for (let s = 0; s < n; s++) {
          const row = all.subarray(s * vocab, (s + 1) * vocab);
          let arg = 0;
          for (let i = 1; i < vocab; i++) if (row[i]! > row[arg]!) arg = i;
          assert.equal(arg, fx.greedy.tokens[s], `step ${s}`);
        }
      }
      if (fx.top5) {
        fx.top5.steps.forEach((st, s) => {
          assert.equal(st[0]![0], fx.greedy.tokens[s]);
          assert.ok(Math.abs(st[0]![1] - st[1]![1] - fx.greedy.margins[s]!) < 1e-4);
        });
      }
    });
  }
});
