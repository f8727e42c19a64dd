// The merge loop shared by the SPM and BPE tokenizers (llama.cpp llm_tokenizer_spm_session /
// llm_tokenizer_bpe_session, HF tokenizers' Word::merge_all): the text is split into code points,
// kept as a doubly linked list of symbols over the string; every adjacent pair that may merge is put in
// a priority queue (best first, ties: leftmost), and the best pair is merged until none is left. A queue
// entry is stale when one of its symbols was merged away or grew since (checked by the summed length,
// as llama.cpp does). O(n log n) in the number of code points.

/** How pair priorities are found. */
export const PairMode = {
  /** SPM / llama.cpp: a pair merges when the joined text is a vocabulary token; priority = its score */
  SCORE: 0,
  /** HF BPE: pair of token ids in the merges table; priority = -rank */
  ID_RANK: 1,
  /** llama.cpp BPE: pair of texts in the merges table (tokenizer.ggml.merges); priority = -rank */
  TEXT_RANK: 2,
} as const;

export interface PairTables {
  mode: number;
  tokenToId: Map<string, number>;
  scores?: Float32Array; // SCORE
  nVocab: number;
  /** SCORE: every split of every token into two tokens (the fast path; the text lookup remains for
   *  symbols that are not tokens); ID_RANK: the merges */
  pairs?: PairTable;
  textRanks?: Map<string, number>; // TEXT_RANK: key `${a}\u0000${b}`
}

/** Open-addressing hash table (a, b) → (priority, merged id), ids < 2^31. */
export class PairTable {
  private keyA: Int32Array;
  private keyB: Int32Array;
  readonly prio: Float64Array;
  readonly merged: Int32Array;
  private mask: number;
  size = 0;

  constructor(expected: number) {
    let cap = 16;
    while (cap < expected * 2) cap *= 2;
    this.mask = cap - 1;
    this.keyA = new Int32Array(cap).fill(-1);
    this.keyB = new Int32Array(cap);
    this.prio = new Float64Array(cap);
    this.merged = new Int32Array(cap);
  }

  private slot(a: number, b: number): number {
    let h = (Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77)) >>> 0;
    h ^= h >>> 15;
    let i = h & this.mask;
    while (this.keyA[i] !== -1 && (this.keyA[i] !== a || this.keyB[i] !== b)) i = (i + 1) & this.mask;
    return i;
  }

  /** Insert; an existing entry is kept unless `replace`. */
  set(a: number, b: number, prio: number, merged: number, replace: boolean): void {
    if ((this.size + 1) * 2 > this.mask + 1) throw new Error('PairTable: over capacity');
    const i = this.slot(a, b);
    if (this.keyA[i] === -1) {
      this.keyA[i] = a;
      this.keyB[i] = b;
      this.size++;
    } else if (!replace) {
      return;
    }
    this.prio[i] = prio;
    this.merged[i] = merged;
  }

  /** slot index, or -1 */
  find(a: number, b: number): number {
    const i = this.slot(a, b);
    return this.keyA[i] === -1 ? -1 : i;
  }
}

export class Merger {
  // symbols
  private start = new Int32Array(256);
  private len = new Int32Array(256);
  private prev = new Int32Array(256);
  private next = new Int32Array(256);
  private sid = new Int32Array(256);
  // queue: binary max-heap of entries (prio desc, left asc)
  private qPrio = new Float64Array(256);
  private qLeft = new Int32Array(256);
  private qRight = new Int32Array(256);
  private qSize = new Int32Array(256);
  private qn = 0;
  // result of pair()
  private pPrio = 0;
  private pId = -1;
  private text = '';

  constructor(private readonly t: PairTables) {}

  /**
   * Merge the code points of `text`; calls `emit(start, end, id)` for each final symbol in order
   * (id: the token id when known from the merge, else -1: look the text up / byte fallback).
   */
  run(text: string, emit: (start: number, end: number, id: number) => void): void {
    this.text = text;
    const n0 = text.length;
    this.ensureSymbols(n0);
    let n = 0;
    for (let i = 0; i < n0; ) {
      const c = text.charCodeAt(i);
      const w = c >= 0xd800 && c <= 0xdbff && i + 1 < n0 && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00 ? 2 : 1;
      this.start[n] = i;
      this.len[n] = w;
      this.prev[n] = n - 1;
      this.next[n] = i + w >= n0 ? -1 : n + 1;
      this.sid[n] = this.t.mode === PairMode.TEXT_RANK ? -1 : w === 1 ? this.charId(c) : this.tokenId(text.substr(i, 2));
      n++;
      i += w;
    }
    if (n === 0) return;
    this.qn = 0;
    this.ensureQueue(n);
    for (let i = 1; i < n; i++) this.tryAdd(i - 1, i);

    const len = this.len, next = this.next, prev = this.prev;
    while (this.qn > 0) {
      const l = this.qLeft[0]!, r = this.qRight[0]!, size = this.qSize[0]!, id = this.qId;
      this.popTop();
      if (len[l] === 0 || len[r] === 0 || len[l]! + len[r]! !== size) continue;
      len[l] = size;
      len[r] = 0;
      this.sid[l] = id;
      const rn = next[r]!;
      next[l] = rn;
      if (rn >= 0) prev[rn] = l;
      this.tryAdd(prev[l]!, l);
      this.tryAdd(l, rn);
    }
    for (let i = 0; i !== -1; i = next[i]!) emit(this.start[i]!, this.start[i]! + len[i]!, this.sid[i]!);
    this.text = '';
  }

  private qIdArr = new Int32Array(256);
  private get qId(): number { return this.qIdArr[0]!; }

  private charIds = new Int32Array(65536).fill(-2);
  private charId(c: number): number {
    let id = this.charIds[c]!;
    if (id === -2) id = this.charIds[c] = this.tokenId(String.fromCharCode(c));
    return id;
  }
  private tokenId(s: string): number {
    const id = this.t.tokenToId.get(s);
    return id === undefined || id >= this.t.nVocab ? -1 : id;
  }

  private pair(l: number, r: number): boolean {
    const t = this.t;
    switch (t.mode) {
      case PairMode.SCORE: {
        const a = this.sid[l]!, b = this.sid[r]!;
        if (a >= 0 && b >= 0) {
          const k = t.pairs!.find(a, b);
          if (k < 0) return false;
          this.pPrio = t.pairs!.prio[k]!;
          this.pId = t.pairs!.merged[k]!;
          return true;
        }
        const s = this.start[l]!;
        const id = t.tokenToId.get(this.text.substring(s, this.start[r]! + this.len[r]!));
        if (id === undefined || id >= t.nVocab) return false;
        this.pPrio = t.scores![id]!;
        this.pId = id;
        return true;
      }
      case PairMode.ID_RANK: {
        const a = this.sid[l]!, b = this.sid[r]!;
        if (a < 0 || b < 0) return false;
        const k = t.pairs!.find(a, b);
        if (k < 0) return false;
        this.pPrio = t.pairs!.prio[k]!;
        this.pId = t.pairs!.merged[k]!;
        return true;
      }
      default: {
        const sl = this.start[l]!, sr = this.start[r]!;
        const key = this.text.substring(sl, sl + this.len[l]!) + '\u0000' + this.text.substring(sr, sr + this.len[r]!);
        const rank = t.textRanks!.get(key);
        if (rank === undefined) return false;
        this.pPrio = -rank;
        this.pId = -1;
        return true;
      }
    }
  }

  private tryAdd(l: number, r: number): void {
    if (l < 0 || r < 0) return;
    if (!this.pair(l, r)) return;
    this.push(this.pPrio, l, r, this.len[l]! + this.len[r]!, this.pId);
  }

  // ---- heap ----
  private better(i: number, j: number): boolean {
    const a = this.qPrio[i]!, b = this.qPrio[j]!;
    return a > b || (a === b && this.qLeft[i]! < this.qLeft[j]!);
  }

  private swap(i: number, j: number): void {
    const p = this.qPrio[i]!; this.qPrio[i] = this.qPrio[j]!; this.qPrio[j] = p;
    const l = this.qLeft[i]!; this.qLeft[i] = this.qLeft[j]!; this.qLeft[j] = l;
    const r = this.qRight[i]!; this.qRight[i] = this.qRight[j]!; this.qRight[j] = r;
    const s = this.qSize[i]!; this.qSize[i] = this.qSize[j]!; this.qSize[j] = s;
    const d = this.qIdArr[i]!; this.qIdArr[i] = this.qIdArr[j]!; this.qIdArr[j] = d;
  }

  private push(prio: number, l: number, r: number, size: number, id: number): void {
    if (this.qn === this.qPrio.length) this.growQueue(this.qn * 2);
    let i = this.qn++;
    this.qPrio[i] = prio; this.qLeft[i] = l; this.qRight[i] = r; this.qSize[i] = size; this.qIdArr[i] = id;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.better(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  private popTop(): void {
    const last = --this.qn;
    if (last === 0) return;
    this.qPrio[0] = this.qPrio[last]!; this.qLeft[0] = this.qLeft[last]!; this.qRight[0] = this.qRight[last]!;
    this.qSize[0] = this.qSize[last]!; this.qIdArr[0] = this.qIdArr[last]!;
    let i = 0;
    for (;;) {
      const a = 2 * i + 1, b = a + 1;
      let m = i;
      if (a < last && this.better(a, m)) m = a;
      if (b < last && this.better(b, m)) m = b;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
  }

  private ensureSymbols(n: number): void {
    if (this.start.length >= n) return;
    const cap = Math.max(n, this.start.length * 2);
    this.start = new Int32Array(cap); this.len = new Int32Array(cap);
    this.prev = new Int32Array(cap); this.next = new Int32Array(cap); this.sid = new Int32Array(cap);
  }

  private ensureQueue(n: number): void {
    if (this.qPrio.length < n) this.growQueue(n);
  }

  private growQueue(cap: number): void {
    const grow = <T extends Float64Array | Int32Array>(a: T, make: (n: number) => T): T => {
      const b = make(cap);
      b.set(a.subarray(0, this.qn));
      return b;
    };
    this.qPrio = grow(this.qPrio, (k) => new Float64Array(k));
    this.qLeft = grow(this.qLeft, (k) => new Int32Array(k));
    this.qRight = grow(this.qRight, (k) => new Int32Array(k));
    this.qSize = grow(this.qSize, (k) => new Int32Array(k));
    this.qIdArr = grow(this.qIdArr, (k) => new Int32Array(k));
  }
}
