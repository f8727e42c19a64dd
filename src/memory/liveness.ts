// Liveness plan for activation buffers: buffers whose lifetimes never intersect share memory.
//
// The caller (model/) describes each buffer of one forward pass by its size and the steps it is live
// in (inclusive [first, last] step ranges; several ranges when a buffer is reused, e.g. the
// normalized input of the attention block and later of the FFN). Offsets are assigned greedily,
// largest buffer first, each at the lowest aligned offset that does not overlap a buffer already
// placed whose lifetime intersects its own (the "greedy by size" planner of TFLite's arena
// allocator). The result is exact for the description: two buffers live at the same step never
// share a byte. Peak = the end of the highest placed buffer; naive = every buffer on its own.

export class LivenessError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LivenessError';
  }
}

/** One buffer: `bytes` long, live during steps [a, b] (inclusive) of each range. */
export interface LiveBuffer<N extends string = string> {
  name: N;
  bytes: number;
  live: readonly (readonly [number, number])[];
}

export interface LivenessPlan<N extends string = string> {
  offsets: Record<N, number>; // byte offset of each buffer from the start of the block
  bytes: number; // peak: bytes of the block that holds every buffer
  naiveBytes: number; // the same buffers laid out one after the other (each aligned)
  buffers: readonly LiveBuffer<N>[];
  align: number;
}

const up = (n: number, a: number) => Math.ceil(n / a) * a;

function intersects(x: LiveBuffer, y: LiveBuffer): boolean {
  for (const [a0, a1] of x.live) for (const [b0, b1] of y.live) if (a0 <= b1 && b0 <= a1) return true;
  return false;
}

export function planLiveness<N extends string>(buffers: readonly LiveBuffer<N>[], align = 64): LivenessPlan<N> {
  if (!(align > 0) || (align & (align - 1)) !== 0) throw new LivenessError(`alignment ${align} is not a power of two`);
  const names = new Set<string>();
  for (const b of buffers) {
    if (names.has(b.name)) throw new LivenessError(`buffer '${b.name}' listed twice`);
    names.add(b.name);
    if (!Number.isSafeInteger(b.bytes) || b.bytes < 0) throw new LivenessError(`buffer '${b.name}': bad size ${b.bytes}`);
    if (b.live.length === 0) throw new LivenessError(`buffer '${b.name}' is never live`);
    for (const [a, z] of b.live) if (!(Number.isInteger(a) && Number.isInteger(z) && a <= z)) throw new LivenessError(`buffer '${b.name}': bad live range [${a}, ${z}]`);
  }
  // largest first; ties by name so the plan does not depend on the input order
  const order = [...buffers].sort((x, y) => y.bytes - x.bytes || (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  const placed: { b: LiveBuffer<N>; off: number; end: number }[] = [];
  const offsets = {} as Record<N, number>;
  let peak = 0;
  for (const b of order) {
    const size = up(b.bytes, align);
    // intervals taken by conflicting buffers, by start offset
    const taken = placed.filter((p) => intersects(p.b, b)).sort((x, y) => x.off - y.off);
    let off = 0;
    for (const t of taken) {
      if (off + size <= t.off) break; // fits in the gap before t
      off = Math.max(off, up(t.end, align));
    }
    placed.push({ b, off, end: off + size });
    offsets[b.name] = off;
    peak = Math.max(peak, off + size);
  }
  const naiveBytes = buffers.reduce((s, b) => s + up(b.bytes, align), 0);
  return { offsets, bytes: peak, naiveBytes, buffers, align };
}

/** Every buffer at its own offset, in the given order (the layout without reuse). */
export function sequentialPlan<N extends string>(buffers: readonly LiveBuffer<N>[], align = 64): LivenessPlan<N> {
  const offsets = {} as Record<N, number>;
  let off = 0;
  for (const b of buffers) {
    offsets[b.name] = off;
    off += up(b.bytes, align);
  }
  return { offsets, bytes: off, naiveBytes: off, buffers, align };
}

/** Checks a plan: no two buffers that are live at the same step overlap. Returns the first clash. */
export function findClash<N extends string>(p: LivenessPlan<N>): [N, N] | undefined {
  const bs = p.buffers;
  for (let i = 0; i < bs.length; i++) {
    for (let j = i + 1; j < bs.length; j++) {
      const x = bs[i]!, y = bs[j]!;
      if (x.bytes === 0 || y.bytes === 0 || !intersects(x, y)) continue;
      const xo = p.offsets[x.name], yo = p.offsets[y.name];
      if (xo < yo + y.bytes && yo < xo + x.bytes) return [x.name, y.name];
    }
  }
  return undefined;
}

/** A table for --verbose: each buffer's offset, size and live steps; then peak vs naive. */
export function describeLiveness(p: LivenessPlan, steps?: readonly string[]): string {
  const kb = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
  const lines = [`activation plan (per arena; buffers live in disjoint steps share memory):`];
  const byOff = [...p.buffers].sort((a, b) => p.offsets[a.name] - p.offsets[b.name] || b.bytes - a.bytes);
  for (const b of byOff) {
    const live = b.live.map(([a, z]) => (steps ? (a === z ? steps[a] ?? a : `${steps[a] ?? a}..${steps[z] ?? z}`) : `${a}..${z}`)).join(', ');
    lines.push(`  ${b.name.padEnd(7)} @ ${String(p.offsets[b.name]).padStart(8)}  ${kb(b.bytes).padStart(11)}  live: ${live}`);
  }
  const saved = p.naiveBytes > 0 ? (100 * (1 - p.bytes / p.naiveBytes)).toFixed(1) : '0.0';
  lines.push(`  peak ${kb(p.bytes)} vs naive sum ${kb(p.naiveBytes)} (${saved}% less)`);
  return lines.join('\n');
}
