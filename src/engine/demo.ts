// The demo's embedded model: a small deterministic random Llama (GQA, q8_0, with a vocab), generated
// on first use into the cache directory, so `npx flashlm demo` works offline on a fresh machine.
import { join } from 'node:path';
import { cacheDir, pathExists } from '../formats/fsutil.js';
import { synthModel, type SynthOptions } from './synth.js';

export const DEMO_SYNTH: SynthOptions = {
  layers: 4, hidden: 256, ffn: 704, heads: 8, kvHeads: 4, vocab: 1024, ctx: 512,
  dtype: 'q8_0', act: 'silu', seed: 42, format: 'gguf',
};

/** Path of the demo model, generating it if absent. The name carries a version to regenerate on change. */
export async function ensureDemoModel(): Promise<{ path: string; created: boolean }> {
  const path = join(cacheDir(), 'demo-v1.gguf');
  if (pathExists(path)) return { path, created: false };
  synthModel(DEMO_SYNTH, path);
  return { path, created: true };
}
