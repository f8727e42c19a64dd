// LinkingAlignedPolicy (Ripple §5 linking-aligned caching) against a naive reference: over seeded
// random token sequences with placement-clustered active sets, the resident set after every token
// must be exactly what the plain rule gives (window victims spared iff they lie strictly between two
// in-window neurons of one run of consecutive resident placement positions).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinkingAlignedPolicy, NeuronMatrix, WindowPolicy, type ArenaLike } from '../../src/flash/neuron-matrix.js';
import { mulberry32 } from '../../src/engine/sample.js';

function fakeArena(bytes: number): ArenaLike {
  const mem = new WebAssembly.Memory({ initial: Math.ceil((bytes + 2 * 65536) / 65536) });
  let top = 0;
  return {
    alloc(b: number, a = 64) { const off = Math.ceil(top / a) * a; top = off + b; return off; },
    u8: (off: number, len: number) => new Uint8Array(mem.buffer, off, len),
  };
}

/** Naive: the ids the linking-aligned rule evicts, from the resident set, last uses and placement. */
function naiveVictims(resident: Set<number>, lastUsed: Int32Array, token: number, window: number, perm: Int32Array, inv: Int32Array): Set<number> {
  const inWin = (id: number) => lastUsed[id]! >= token - window + 1;
  const out = new Set<number>();
  for (const id of resident) {
    if (inWin(id)) continue;
    const p = inv[id]!;
    let left = false, right = false;
    for (let q = p - 1; q >= 0 && resident.has(perm[q]!); q--) if (inWin(perm[q]!)) { left = true; break; }
    for (let q = p + 1; q < perm.length && resident.has(perm[q]!); q++) if (inWin(perm[q]!)) { right = true; break; }
    if (!(left && right)) out.add(id);
  }
  return out;
}

test('linking-aligned policy = naive reference over 200 random clustered tokens (windows 1, 2, 4)', () => {
  for (const window of [1, 2, 4]) {
    const nFF = 300;
    const r = mulberry32(100 + window);
    const perm = Int32Array.from({ length: nFF }, (_, i) => i).sort(() => r() - 0.5);
    const inv = new Int32Array(nFF);
    perm.forEach((id, p) => { inv[id] = p; });
    const m = new NeuronMatrix(fakeArena(nFF * 512 + 8192), { nFF, recordBytes: 512, capacity: nFF, policy: new LinkingAlignedPolicy(window, perm, inv) });
    const resident = new Set<number>();
    const lastUsed = new Int32Array(nFF).fill(-1);
    const miss = new Int32Array(nFF);
    let spared = 0;
    for (let t = 0; t < 200; t++) {
      // a few placement runs, with holes: what a co-activation placement's tokens look like
      const active = new Set<number>();
      for (let c = 0; c < 4; c++) {
        const s = Math.floor(r() * nFF), len = 5 + Math.floor(r() * 25);
        for (let p = s; p < Math.min(nFF, s + len); p++) if (r() < 0.8) active.add(perm[p]!);
      }
      const ids = [...active];
      const k = m.touch(ids, t, miss);
      for (const id of ids) lastUsed[id] = t;
      const want = naiveVictims(resident, lastUsed, t, window, perm, inv);
      const windowVictims = [...resident].filter((id) => lastUsed[id]! < t - window + 1).length;
      spared += windowVictims - want.size;
      const evicted = m.evict(t);
      assert.equal(evicted, want.size, `window ${window} token ${t}`);
      for (const id of want) resident.delete(id);
      m.append(miss.subarray(0, k), t);
      m.commit();
      for (const id of miss.subarray(0, k)) resident.add(id);
      m.check();
      assert.deepEqual([...m.ids.subarray(0, m.n)].sort((a, b) => a - b), [...resident].sort((a, b) => a - b), `window ${window} token ${t}`);
    }
    assert.ok(spared > 0, 'the policy spared some of the window\'s victims (else it equals the window policy)');
  }
});

test('one resident segment 0..19 with neurons 5 and 15 in the window: keeps 5..15 (the window policy keeps 5 and 15)', () => {
  const nFF = 50;
  const perm = Int32Array.from({ length: nFF }, (_, i) => i);
  const m1 = new NeuronMatrix(fakeArena(nFF * 512 + 8192), { nFF, recordBytes: 512, capacity: nFF, policy: new LinkingAlignedPolicy(1, perm, perm) });
  const m2 = new NeuronMatrix(fakeArena(nFF * 512 + 8192), { nFF, recordBytes: 512, capacity: nFF, policy: new WindowPolicy(1) });
  for (const m of [m1, m2]) {
    m.append(Array.from({ length: 20 }, (_, i) => i), 0);
    m.commit();
    m.touch([5, 15], 1);
    m.evict(1);
  }
  assert.deepEqual([...m1.ids.subarray(0, m1.n)].sort((a, b) => a - b), [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
  assert.deepEqual([...m2.ids.subarray(0, m2.n)].sort((a, b) => a - b), [5, 15]);
});
