// Disk faults at the engine level (issue 7 item 2), in every streamed mode: hybrid and naive
// (WholeLayerSource: whole layers prefetched into alternating slots) and sparse (MatrixNeuronSource:
// missing neurons read into the neuron matrix; with window 0 every token reads, with window 5 only
// the first). Faults come from test/flash/faulty-disk.ts through Model.load's readFn seam. The
// 'sparse stream' cases force a neuron matrix far smaller than the predicted set (24 rows of 192), so
// most neurons go through the double-buffered stream buffer (MatrixNeuronSource.next(): a chunk read
// while the previous computes, and the first chunk's read running alongside the matrix's reads).
//   - EINTR / EAGAIN / short reads are retried: exactly the tokens of a run without faults.
//   - EIO on a read, or the file truncated under a loaded model: the generation stops with a
//     FlashIOError naming the file and the failing read's offset and length; when it arrives no read
//     is in flight, no prefetch is held and the neuron matrices are consistent; the SAME model then
//     generates the fault-free tokens again.
//   - O_DIRECT refused: one warning, buffered reads, the same tokens.
// Reads are capped at 16 KiB with 4 in flight so that each layer takes several reads, concurrently.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Model, type LoadModelOptions } from '../../src/engine/model.js';
import { mulberry32 } from '../../src/engine/sample.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { FlashIOError } from '../../src/flash/io.js';
import { readGGUF } from '../../src/formats/gguf.js';
import { flashLayoutCached, testDir } from '../helpers.js';
import { FaultyDisk, type ReadCall } from '../flash/faulty-disk.js';

const o: SynthOptions = { layers: 3, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 21, format: 'gguf' };
const prompt = [1, 300, 301, 302, 303];
const N = 6; // tokens per generation
const io = { maxReadBytes: 16 << 10, inFlight: 4 };

interface ModeCase {
  name: string;
  opts: LoadModelOptions;
  /** Layers of the synth model (default o.layers). */
  layers?: number;
  /** Reads for the next token may be issued before it is asked for (the layer-0 prefetch at the end of a pass). */
  prefetch: boolean;
  /** Every generation reads (false: sparse with a window keeps every neuron after the first token).
   * False also gives each injected fault a fresh model: the reads of a later generation must be the
   * ones counted on the first (with a window and a small matrix they depend on what the window kept). */
  readsEveryGeneration: boolean;
  /** Neurons stream through the stream buffer (capacity far below the predicted set). */
  stream?: boolean;
}

// 192 neurons predicted per layer, 24 matrix rows: 168 stream through 11 chunks of 16 rows
const streamed = { mode: 'sparse', predictor: 'all', neuronCapacity: 24, streamRows: 16, ...io } as const;

const MODES: ModeCase[] = [
  { name: 'hybrid', opts: { mode: 'hybrid', ...io }, prefetch: true, readsEveryGeneration: true },
  // an even layer count: the last layer's slot is not layer 0's, so each pass ends by prefetching the
  // next token's layer 0 (with 3 layers, layer 2 holds that slot and the prefetch waits)
  { name: 'hybrid 4 layers', opts: { mode: 'hybrid', ...io }, layers: 4, prefetch: true, readsEveryGeneration: true },
  { name: 'naive', opts: { mode: 'naive', ...io }, prefetch: true, readsEveryGeneration: true },
  { name: 'sparse window 0', opts: { mode: 'sparse', predictor: 'all', window: 0, ...io }, prefetch: false, readsEveryGeneration: true },
  { name: 'sparse window 5', opts: { mode: 'sparse', predictor: 'all', window: 5, ...io }, prefetch: false, readsEveryGeneration: false },
  { name: 'sparse stream window 0', opts: { ...streamed, window: 0 }, prefetch: false, readsEveryGeneration: true, stream: true },
  // with access collapse the overflow ids are sorted by file position and chunked as windows of records
  { name: 'sparse stream window 5 collapse', opts: { ...streamed, window: 5, collapseGap: 4 }, prefetch: false, readsEveryGeneration: false, stream: true },
];

const dir = testDir('faults');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** layers → the flash-layout model's path and RAM mode's tokens (every streamed mode computes them bit for bit) */
const models = new Map<number, { path: string; expected: number[] }>();
before(async () => {
  for (const layers of new Set(MODES.map((mc) => mc.layers ?? o.layers))) {
    const p = await flashLayoutCached({ ...o, layers }, 'q8_0');
    const m = await Model.load(p, { ctx: prompt.length + N, threads: 1, mode: 'ram' });
    try {
      const expected = (await generate(m)).tokens;
      assert.equal(expected.length, N);
      models.set(layers, { path: p, expected });
    } finally {
      await m.close();
    }
  }
});
const modelOf = (mc: ModeCase) => models.get(mc.layers ?? o.layers)!;

function load(p: string, mc: ModeCase, disk: FaultyDisk): Promise<Model> {
  return Model.load(p, { ctx: prompt.length + N, threads: 1, readFn: disk.readFn, ...mc.opts });
}

/** One greedy generation from an empty KV cache (as LanguageModel runs them); `callsAt[i]`: reads
 * issued since disk.arm() when token i came out. */
async function generate(m: Model, disk?: FaultyDisk): Promise<{ tokens: number[]; callsAt: number[] }> {
  m.reset();
  const tokens: number[] = [];
  const callsAt: number[] = [];
  for await (const t of m.generate(prompt, { maxTokens: N, stopOnEos: false })) {
    tokens.push(t.id);
    callsAt.push(disk?.sinceArm.length ?? 0);
  }
  return { tokens, callsAt };
}

/** The error is the typed one for exactly this read of this file. */
function assertReadError(e: unknown, file: string, c: ReadCall & { code: string }): true {
  assert.ok(e instanceof FlashIOError, `expected a FlashIOError, got ${String(e)}`);
  assert.equal(e.name, 'FlashIOError');
  assert.equal(e.file, file);
  assert.equal(e.code, c.code);
  assert.equal(e.offset, c.pos);
  assert.equal(e.length, c.len);
  assert.ok(e.message.includes(file) && e.message.includes(`read of ${c.len} bytes at offset ${c.pos}`), e.message);
  return true;
}

/** What must hold when an error has reached the caller: nothing in flight, nothing held, matrices consistent. */
function assertSettled(m: Model, disk: FaultyDisk, what: string): void {
  assert.equal(disk.outstanding, 0, `${what}: reads still in flight when the error arrived`);
  if (m.ffnSource) assert.equal(m.ffnSource.pendingLayers, 0, `${what}: prefetched layers still held`);
  for (const mat of m.sparse?.src.matrices ?? []) {
    mat.check();
    assert.equal(mat.pending, 0, `${what}: layer ${mat.layer}: rows appended for a failed read`);
  }
}

/** The stream cases really streamed (and dropped nothing); the others never touched the stream buffer. */
function assertStreamed(m: Model, mc: ModeCase): void {
  if (!m.sparse) return;
  const st = m.sparse.src.stats;
  assert.equal(st.overflow, 0, 'predicted neurons dropped');
  if (mc.stream) assert.ok(st.streamed > 0 && m.sparse.src.streamBytes > 0, `${mc.name}: nothing streamed`);
  else assert.equal(st.streamed, 0, `${mc.name}: streamed`);
}

/** Fault indices: every read of the first ~40 (all layers of the first tokens, embedding rows and the
 * output layer in naive mode, the layer-0 prefetch), then seeded picks up to `consumed`, and the last. */
function picks(consumed: number, seed: number): number[] {
  const r = mulberry32(seed);
  const ks = new Set<number>();
  for (let k = 0; k < Math.min(consumed, 40); k++) ks.add(k);
  for (let i = 0; i < 8 && consumed > 40; i++) ks.add(40 + Math.floor(r() * (consumed - 40)));
  ks.add(consumed - 1);
  return [...ks].sort((a, b) => a - b);
}

for (const mc of MODES) {
  test(`${mc.name}: EINTR, EAGAIN and short reads are retried; the tokens are exactly the fault-free ones (O_DIRECT and buffered)`, async () => {
    const { path, expected } = modelOf(mc);
    for (const refused of [false, true]) {
      const disk = new FaultyDisk();
      disk.refuseDirect = refused;
      const m = await load(path, mc, disk);
      try {
        // Each call's fault is drawn from (position, how many times that position was read before),
        // not from the call order, which retries interleave by timing: the same faults every run.
        // DirectReader gives up after 16 faults in a row without progress: at most 3 per position.
        const seed = refused ? 12 : 11;
        const visits = new Map<number, number>();
        const streak = new Map<number, number>();
        disk.arm((_i, c) => {
          const v = visits.get(c.pos) ?? 0;
          visits.set(c.pos, v + 1);
          const r = mulberry32((seed + Math.imul(c.pos, 0x9e3779b1) + Math.imul(v, 0x85ebca6b) + c.len) >>> 0);
          const s = streak.get(c.pos) ?? 0;
          const x = r();
          if (s >= 3 || x >= 0.6) {
            streak.delete(c.pos);
            return undefined;
          }
          streak.set(c.pos, s + 1);
          if (x < 0.15) return { errno: 'EINTR' };
          if (x < 0.3) return { errno: 'EAGAIN' };
          // 1..len-1 bytes (0 would mean end of file); under O_DIRECT often not a whole block
          return { short: 1 + Math.floor(r() * (c.len - 1)) };
        });
        for (let g = 0; g < 2; g++) assert.deepEqual((await generate(m)).tokens, expected, `generation ${g}, O_DIRECT ${refused ? 'refused' : 'on'}`);
        for (const k of ['EINTR', 'EAGAIN', 'short']) assert.ok(disk.count(k) > 0, `no ${k} was injected`);
        assertStreamed(m, mc);
        assert.equal(disk.failed.length, disk.count('EINTR') + disk.count('EAGAIN'));
      } finally {
        await m.close();
      }
    }
  });

  test(`${mc.name}: O_DIRECT refused → one warning, buffered reads, the same tokens`, async () => {
    const { path, expected } = modelOf(mc);
    const disk = new FaultyDisk();
    disk.refuseDirect = true;
    const m = await load(path, mc, disk);
    try {
      assert.deepEqual(m.warnings.filter((w) => /O_DIRECT/.test(w)).length, 1, m.warnings.join('\n'));
      disk.arm(undefined);
      for (let g = 0; g < 2; g++) assert.deepEqual((await generate(m)).tokens, expected, `generation ${g}`);
      assert.ok(disk.sinceArm.length > 0, 'the generations read from flash');
      // only the probe read at open was refused: every read after it went to the buffered descriptor
      assert.equal(disk.count('EINVAL'), 1);
    } finally {
      await m.close();
    }
  });

  test(`${mc.name}: EIO on a chosen read stops the generation with a FlashIOError naming file, offset and length; the same model then generates the same tokens`, async () => {
    const { path, expected } = modelOf(mc);
    // A model in the state every later generation starts from (hybrid/naive: the next token's layer 0
    // may already be being read), and the reads one generation makes from there.
    const fresh = async (disk: FaultyDisk): Promise<Model> => {
      const m = await load(path, mc, disk);
      if (mc.readsEveryGeneration) assert.deepEqual((await generate(m)).tokens, expected);
      return m;
    };
    const disk = new FaultyDisk();
    let m = await fresh(disk);
    try {
      disk.arm(() => undefined);
      const g = await generate(m, disk);
      assert.deepEqual(g.tokens, expected);
      assertStreamed(m, mc);
      await disk.quiet();
      const total = disk.sinceArm.length;
      // every read issued before the last token came out is used by this generation; only the
      // prefetch made during the last pass (hybrid/naive) may be left for the next one
      const leftover = m.ffnSource?.pendingLayers ?? 0;
      assert.equal(leftover > 0, mc.prefetch && (mc.opts.mode === 'naive' || (mc.layers ?? o.layers) % 2 === 0), 'a prefetch left for the next generation');
      const consumed = leftover ? g.callsAt[N - 2]! : total;
      assert.ok(consumed > 0 && consumed <= total, `consumed ${consumed}, total ${total}`);
      for (const k of picks(consumed, 7)) {
        if (!mc.readsEveryGeneration) { // the neurons are resident after one generation: a new model per fault
          await m.close();
          m = await fresh(disk);
        }
        disk.arm((i) => (i === k ? { errno: 'EIO' } : undefined));
        await assert.rejects(generate(m, disk), (e: unknown) => assertReadError(e, path, disk.failed[0]!), `EIO at read ${k}`);
        assert.equal(disk.failed.length, 1);
        assertSettled(m, disk, `EIO at read ${k}`);
        disk.arm(undefined);
        assert.deepEqual((await generate(m)).tokens, expected, `the generation after EIO at read ${k}`);
        for (const mat of m.sparse?.src.matrices ?? []) mat.check();
      }
      if (leftover) {
        // The last read of a generation is the next token's layer 0, which this generation never
        // uses: it completes; the next generation, which needs that read, stops with its error; the
        // one after that is clean again.
        disk.arm((i) => (i === total - 1 ? { errno: 'EIO' } : undefined));
        assert.deepEqual((await generate(m, disk)).tokens, expected);
        await disk.quiet();
        assert.equal(disk.failed.length, 1, 'the last read was failed');
        const c = disk.failed[0]!;
        disk.arm(undefined);
        await assert.rejects(generate(m), (e: unknown) => assertReadError(e, path, c));
        assertSettled(m, disk, 'EIO on the last prefetch');
        assert.deepEqual((await generate(m)).tokens, expected);
      }
    } finally {
      await m.close();
    }
  });

  test(`${mc.name}: file truncated under a loaded model → FlashIOError naming file, offset and length; restored, the same model generates the same tokens`, async () => {
    const { path, expected } = modelOf(mc);
    const p = join(dir, `trunc-${mc.name.replace(/ /g, '-')}.gguf`);
    fs.copyFileSync(path, p);
    const orig = fs.readFileSync(p);
    const disk = new FaultyDisk();
    const m = await load(p, mc, disk);
    try {
      if (mc.readsEveryGeneration) assert.deepEqual((await generate(m)).tokens, expected, 'before the truncation');
      // cut inside the last layer's FFN, not on a block boundary (O_DIRECT then sees a partial block)
      const t = readGGUF(p).tensorByName.get(`blk.${o.layers - 1}.ffn_bundle`)!;
      const cut = t.offset + Math.floor(t.bytes / 2) + 100;
      fs.truncateSync(p, cut);
      await assert.rejects(generate(m, disk), (e: unknown) => {
        assert.ok(e instanceof FlashIOError, String(e));
        assert.equal(e.file, p);
        assert.ok(e.code === 'EOF' || e.code === 'ESHORT', e.message);
        // the failing read reaches past the new end and did not start a block or more before it
        assert.ok(e.offset + e.length > cut && e.offset > cut - 4096, `offset ${e.offset} length ${e.length} vs end ${cut}`);
        assert.ok(e.message.includes(p) && e.message.includes(`read of ${e.length} bytes at offset ${e.offset}`), e.message);
        return true;
      });
      assertSettled(m, disk, 'truncated');
      fs.writeFileSync(p, orig); // same inode: the model's descriptors see the whole file again
      assert.deepEqual((await generate(m)).tokens, expected, 'after the file was restored');
    } finally {
      await m.close();
    }
  });
}

test('EIO on the probe read at load: every streamed mode refuses to load with a FlashIOError at offset 0', async () => {
  for (const mc of MODES) {
    const { path } = modelOf(mc);
    const disk = new FaultyDisk();
    disk.arm((i) => (i === 0 ? { errno: 'EIO' } : undefined));
    await assert.rejects(load(path, mc, disk), (e: unknown) => assertReadError(e, path, disk.failed[0]!), mc.name);
    assert.equal(disk.failed[0]!.pos, 0);
    assert.equal(disk.outstanding, 0);
  }
});

// The stream buffer's first chunk is read alongside the matrix's reads (MatrixNeuronSource.ensure
// starts it before awaiting them). When a matrix read fails, the error must wait for that chunk read:
// otherwise it reaches the caller while a read still writes into the arena's stream buffer, which the
// next generation (or a layer of the same arena) reuses.
test('sparse stream: a matrix read fails while a stream chunk read is in flight → the error waits for it; the model then generates the fault-free tokens', async () => {
  for (const mc of MODES.filter((x) => x.stream)) {
    const { path, expected } = modelOf(mc);
    const disk = new FaultyDisk();
    const m = await load(path, mc, disk);
    try {
      // layer 0 of the first token: ensure() issues the first chunk's read (call 0), then the matrix's (1, ...)
      disk.arm((i) => (i === 0 ? { delayMs: 150 } : i === 1 ? { errno: 'EIO' } : undefined));
      await assert.rejects(generate(m, disk), (e: unknown) => {
        assert.equal(disk.count('delay'), 1, 'the chunk read was delayed');
        // call 0 is the first chunk (16 consecutive records: one read), call 1 a read of the matrix's 24
        const rb = m.sparse!.src.recordBytes;
        assert.deepEqual(disk.sinceArm.slice(0, 2).map((c) => c.len), [16 * rb, 24 * rb]);
        assert.equal(disk.outstanding, 0, 'the error arrived while the stream chunk read was in flight');
        return assertReadError(e, path, disk.failed[0]!);
      }, mc.name);
      assertSettled(m, disk, mc.name);
      disk.arm(undefined);
      assert.deepEqual((await generate(m)).tokens, expected, `${mc.name}: after the error`);
      assertStreamed(m, mc);
    } finally {
      await m.close();
    }
  }
});
