// The shared architecture runner on llama variants: MHA f32, GQA q8_0, ReLU q4_0, f16, and an HF
// safetensors directory (which must give the same logits as its GGUF twin).
import { architectureRunner } from './runner.js';
import { flashLayoutCached, synthModelCached } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';

const base: SynthOptions = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 4, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 11, format: 'gguf' };
const prompt = [1, 300, 301, 302, 40, 41, 42];

architectureRunner([
  { name: 'llama f32 MHA', model: () => synthModelCached(base), prompt, steps: 12 },
  { name: 'llama q8_0 GQA', model: () => synthModelCached({ ...base, dtype: 'q8_0', heads: 8, kvHeads: 2, hidden: 128, ffn: 352, layers: 3 }), prompt, steps: 12 },
  { name: 'llama q4_0 ReLU', model: () => synthModelCached({ ...base, dtype: 'q4_0', act: 'relu', kvHeads: 2 }), prompt, steps: 12 },
  { name: 'llama f16', model: () => synthModelCached({ ...base, dtype: 'f16', kvHeads: 1 }), prompt, steps: 8 },
  { name: 'llama HF safetensors dir', model: () => synthModelCached({ ...base, format: 'safetensors' }), prompt, steps: 8 },
  { name: 'llama flash layout q8_0 in RAM', model: () => flashLayoutCached({ ...base, kvHeads: 2 }, 'q8_0'), prompt, steps: 8 },
]);
