// A ReLU synth model with PLANTED co-activation clusters, shuffled on flash: the test bed where a
// co-activation placement must show its effect (real SiLU models have weak structure; Ripple itself
// reports +10–14% on Llama-2/Mistral).
//
// Layer l's gate row of neuron i is α·c_{l,k} + √(1−α²)·g_i, where k = cluster(l, i), c_{l,k} is a
// random centroid row and g_i the synth model's own random gate row (both std gains.ffn/√D per
// element, so gate·x keeps the synth scale). Members of a cluster therefore have gate values that
// rise and fall together (correlation ≈ α²), so at a sparse threshold they are active for the same
// tokens. Cluster membership is a seeded random shuffle of the neuron ids: with the identity
// placement the members lie scattered over the layer's records, and a placement that finds the
// clusters puts each one in a contiguous run. Everything else is the plain synth model (same seed).
import { GGUFValueType as VT, GGUFWriter } from '../formats/gguf.js';
import { TensorType } from '../formats/ggml-types.js';
import { openModel } from '../formats/source.js';
import { SynthOptionsError, SynthRng, synthModel, type SynthOptions } from './synth.js';

export interface PlantOptions {
  /** clusters per layer; ffn must be a multiple (default 32) */
  clusters?: number;
  /** α: weight of the cluster centroid in each gate row, in [0, 1] (default 0.9) */
  coherence?: number;
  seed?: number;
}

export interface PlantedModel {
  path: string;
  /** per layer, neuron id → cluster [ffn] */
  clusterOf: Int32Array[];
}

/** Cluster of each neuron id per layer (deterministic in the seed): sizes ffn/clusters, ids shuffled. */
export function plantedClusters(o: SynthOptions, p: PlantOptions = {}): Int32Array[] {
  const K = p.clusters ?? 32;
  if (!Number.isInteger(K) || K < 1 || o.ffn % K) throw new SynthOptionsError('clusters', `${K} must divide ffn ${o.ffn}`);
  return Array.from({ length: o.layers }, (_, l) => {
    const rng = new SynthRng(`flashlm-planted/${p.seed ?? 1}/${l}/shuffle`);
    const ids = Int32Array.from({ length: o.ffn }, (_, i) => i);
    for (let i = o.ffn - 1; i > 0; i--) {
      const j = rng.below(i + 1);
      const x = ids[i]!; ids[i] = ids[j]!; ids[j] = x;
    }
    const of = new Int32Array(o.ffn);
    const size = o.ffn / K;
    ids.forEach((id, q) => { of[id] = Math.floor(q / size); });
    return of;
  });
}

/**
 * Writes the planted model to `out` (f32 GGUF, standard layout; convert it with --layout flash).
 * `base` is where the plain synth model is written first (the caller removes it).
 */
export function plantedClusterModel(o: SynthOptions, p: PlantOptions, base: string, out: string): PlantedModel {
  if (o.dtype !== 'f32' || o.format !== 'gguf') throw new SynthOptionsError('dtype', 'planted-cluster models are written as f32 GGUF (quantize with convert)');
  const alpha = p.coherence ?? 0.9;
  if (!(alpha >= 0 && alpha <= 1)) throw new SynthOptionsError('coherence', `${alpha} not in [0, 1]`);
  const clusterOf = plantedClusters(o, p);
  synthModel(o, base);
  const src = openModel(base);
  const w = new GGUFWriter(out);
  try {
    for (const kv of src.metadata.values()) w.addKV(kv.key, kv.type, kv.value, kv.arrayType);
    w.addKV('flashlm.synth.planted', VT.STRING, JSON.stringify({ clusters: p.clusters ?? 32, coherence: alpha, seed: p.seed ?? 1 }));
    for (const t of src.tensors) w.addTensor(t.name, t.dims, t.type);
    w.beginData();
    const D = o.hidden;
    const std = (o.gains?.ffn ?? 1) / Math.sqrt(D);
    const amp = Math.sqrt(3) * std;
    const beta = Math.sqrt(1 - alpha * alpha);
    for (const t of src.tensors) {
      const buf = new Uint8Array(t.bytes);
      src.readTensor(t.name, buf);
      const m = /^blk\.(\d+)\.ffn_gate\.weight$/.exec(t.name);
      if (m && t.type === TensorType.F32) {
        const l = Number(m[1]);
        const g = new Float32Array(buf.buffer, buf.byteOffset, t.bytes / 4); // [ffn × D] row-major
        const K = p.clusters ?? 32;
        const rng = new SynthRng(`flashlm-planted/${p.seed ?? 1}/${l}/centroids`);
        const c = new Float32Array(K * D);
        for (let i = 0; i < c.length; i++) c[i] = rng.uniform() * amp;
        const of = clusterOf[l]!;
        for (let i = 0; i < o.ffn; i++) {
          const k = of[i]!;
          for (let d = 0; d < D; d++) g[i * D + d] = alpha * c[k * D + d]! + beta * g[i * D + d]!;
        }
      }
      w.writeData(buf);
    }
    w.finish();
  } catch (e) {
    w.abort();
    throw e;
  } finally {
    src.close();
  }
  return { path: out, clusterOf };
}
