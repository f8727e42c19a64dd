// The paged KV pool of a llama model (see KVPool): page regions beside each layer's weights, page
// tables per arena, and one sequence's view (KVCache) that forward() reads and writes.
import { TensorType } from '../formats/ggml-types.js';
import type { Arena } from '../kernels/index.js';
import { KV_PAGE_SIZE } from './llama-load.js';
import type { LlamaConfig, LlamaWeights } from './llama.js';

const ALIGN = 64; // bytes

/**
 * The paged KV pool: per layer, a K region and a V region of `pages` pages, each page
 * [pageSize × nKvHeads·headDim] elements (f16 or f32) in the layer's arena; page id p of every layer
 * holds the same positions of one sequence (one page table serves all layers, as vLLM's block
 * tables). Per arena, `slots` page tables of `tablePages` i32 entries: the attention kernel reads
 * the running sequence's table from its arena. Which pages are free is the engine's business
 * (memory/pages.ts); a sequence allocated pages 0, 1, 2, ... in order has the contiguous layout.
 */
export interface KVPool {
  kvType: number;
  elBytes: number; // bytes per cached element: 4 (f32) or 2 (f16)
  pageSize: number; // positions per page
  pages: number;
  pageBytes: number; // one layer's K (or V) page: pageSize·nKvHeads·headDim·elBytes
  ctx: number; // positions one sequence may hold: tablePages·pageSize ≥ the requested ctx
  tablePages: number; // entries of one page table
  slots: number; // page tables per arena
  k: number[]; // per layer: arena offset of the K page region [pages × pageBytes]
  v: number[];
  tableBase: Map<Arena, number>; // per arena: offset of its [slots × tablePages] i32 tables
  bytes: number; // K+V bytes of every page of every layer
}

/** One sequence's view of the pool: what forward() reads and writes (its page table in every arena). */
export interface KVCache {
  ctx: number; // positions this sequence may hold
  kvType: number;
  elBytes: number;
  pageSize: number;
  pageBytes: number;
  k: number[]; // per layer: page region bases (KVPool.k)
  v: number[];
  table: number[]; // per layer: arena offset of this sequence's page table
  tables: Int32Array[]; // per layer: view of it (layers sharing an arena share the view); −1 = no page
  bytes: number; // the whole pool's K+V bytes
}

/** Bytes of the page tables one arena holds (see KVPool), 64-aligned. */
export function pageTableBytes(ctx: number, pageSize: number, slots: number): number {
  return Math.ceil((slots * Math.ceil(ctx / pageSize) * 4) / ALIGN) * ALIGN;
}

export function makeCache(cfg: LlamaConfig, w: LlamaWeights, ctx: number, kvType: number,
  o: { positions?: number; pageSize?: number; slots?: number } = {}): KVPool {
  const elBytes = kvType === TensorType.F32 ? 4 : 2;
  const pageSize = o.pageSize ?? KV_PAGE_SIZE;
  const pages = Math.ceil((o.positions ?? ctx) / pageSize);
  const slots = o.slots ?? 1;
  const tablePages = Math.ceil(ctx / pageSize);
  const pageBytes = pageSize * cfg.nKvHeads * cfg.headDim * elBytes;
  const k: number[] = [];
  const v: number[] = [];
  const tableBase = new Map<Arena, number>();
  for (const l of w.layers) {
    k.push(l.arena.alloc(pages * pageBytes, ALIGN));
    v.push(l.arena.alloc(pages * pageBytes, ALIGN));
    if (!tableBase.has(l.arena)) tableBase.set(l.arena, l.arena.alloc(pageTableBytes(ctx, pageSize, slots), ALIGN));
  }
  return { kvType, elBytes, pageSize, pages, pageBytes, ctx: tablePages * pageSize, tablePages, slots, k, v, tableBase, bytes: 2 * pages * pageBytes * cfg.nLayers };
}

/** The view of page-table slot `slot` (0 ≤ slot < pool.slots), every entry reset to −1. */
export function kvView(w: LlamaWeights, pool: KVPool, slot: number): KVCache {
  if (!(Number.isInteger(slot) && slot >= 0 && slot < pool.slots)) throw new RangeError(`page table slot ${slot} not in [0, ${pool.slots})`);
  const views = new Map<Arena, { off: number; view: Int32Array }>();
  for (const [a, base] of pool.tableBase) {
    const off = base + slot * pool.tablePages * 4;
    const view = new Int32Array(a.memory.buffer, off, pool.tablePages);
    view.fill(-1);
    views.set(a, { off, view });
  }
  const per = w.layers.map((L) => views.get(L.arena)!);
  return {
    ctx: pool.ctx, kvType: pool.kvType, elBytes: pool.elBytes, pageSize: pool.pageSize, pageBytes: pool.pageBytes,
    k: pool.k, v: pool.v, table: per.map((t) => t.off), tables: per.map((t) => t.view), bytes: pool.bytes,
  };
}

/** Sets entry i of the sequence's page table (in every arena) to page `id` (−1: none). */
export function setPage(cache: KVCache, i: number, id: number): void {
  let last: Int32Array | undefined;
  for (const t of cache.tables) {
    if (t === last) continue; // consecutive layers in one arena share the view
    t[i] = id;
    last = t;
  }
}
