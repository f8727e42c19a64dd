// Test helpers: fixture paths (tests run from dist/test, fixtures live in test/fixtures) and a cache
// of synth models keyed by their options, so a suite generates each tiny model once.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { synthModel, type SynthOptions } from '../src/engine/synth.js';
import { openModel } from '../src/formats/source.js';
import { convertToFlashLayout } from '../src/formats/flash-layout.js';
import { Model, type LoadModelOptions } from '../src/engine/model.js';
import { argmax } from '../src/engine/sample.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/test/ → repo root

export function fixturePath(...parts: string[]): string {
  return join(ROOT, 'test', 'fixtures', ...parts);
}

export function testDir(name: string): string {
  const d = join(tmpdir(), `flashlm-test-${process.pid}`, name);
  mkdirSync(d, { recursive: true });
  return d;
}

/** Path of a synth model with these options, generated on first use (per process). */
export async function synthModelCached(o: SynthOptions): Promise<string> {
  const key = createHash('sha256').update(JSON.stringify(o)).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), 'flashlm-test-models');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, o.format === 'safetensors' ? `synth-${key}` : `synth-${key}.gguf`);
  if (!existsSync(path)) synthModel(o, path);
  return path;
}

/** A synth model converted to the flash layout (FFN as row-column bundles), generated once. */
export async function flashLayoutCached(o: SynthOptions, quant: 'f32' | 'q8_0' | 'q4_0' | 'f16'): Promise<string> {
  const src = await synthModelCached(o);
  const out = src.replace(/\.gguf$/, `.flash-${quant}.gguf`);
  if (!existsSync(out)) {
    const m = openModel(src);
    try {
      convertToFlashLayout(m, out, { quant });
    } finally {
      m.close();
    }
  }
  return out;
}

export interface GreedyRun {
  tokens: number[];
  logits: Float32Array[]; // logits[i]: the [vocab] vector tokens[i] was chosen from
  arenas: number;
  model: Model; // closed; for its stats
}

/** Load `path`, feed `prompt`, decode `steps` tokens greedily (async verbs: every mode), close. */
export async function greedyRun(path: string, prompt: number[], steps: number, opts: LoadModelOptions = {}): Promise<GreedyRun> {
  const m = await Model.load(path, { ctx: prompt.length + steps, ...opts });
  try {
    let l = await m.prefillAsync(prompt);
    const tokens: number[] = [];
    const logits: Float32Array[] = [];
    for (let i = 0; i < steps; i++) {
      logits.push(l.slice());
      tokens.push(argmax(l));
      if (i + 1 < steps) l = await m.decodeAsync(tokens[i]!);
    }
    return { tokens, logits, arenas: m.state.arenas.size, model: m };
  } finally {
    await m.close();
  }
}
