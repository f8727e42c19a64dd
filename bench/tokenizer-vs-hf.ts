// flashlm's tokenizer vs Hugging Face's reference (the Rust `tokenizers` library, through
// scripts/tokenizer-vs-hf.py) on whole real files: the ids must be identical, token for token.
//
//   node dist/bench/tokenizer-vs-hf.js [--hf-dir DIR] [--gguf MODEL.gguf] [--python PY] [--out r.json] [FILE...]
//
// flashlm's tokenizer is loaded twice: (a) from DIR/tokenizer.json (+ tokenizer_config.json,
// config.json) with tokenizerFromHFDir, i.e. HF BPE semantics (merge ranks, byte_fallback), and
// (b) from the vocabulary embedded in MODEL.gguf (tokenizer.ggml.*: llama.cpp SPM semantics, scores),
// which `flashlm convert` wrote from the same directory (only the GGUF header is read, never tensor
// data), and (c) the vocabulary as `flashlm convert` writes it now (ggufVocabMetadataFromHFDir on DIR,
// written to a vocabulary-only GGUF in the temp dir and read back), so a fix in the conversion is
// measured without re-converting 13 GB. (b) and (c) differ only if MODEL.gguf predates such a fix.
// PY must have `tokenizers` installed (python -m venv V && V/bin/pip install --no-index
// --find-links DIR_OF_WHEELS tokenizers). Both sides get the same text: the file's bytes decoded as
// strict UTF-8, BOM kept, no newline translation. Each file is compared twice:
//   with BOS:    HF tok.encode(text)                          vs flashlm encode(text)
//                (HF's TemplateProcessing adds <s>; flashlm's default is add_bos_token = true)
//   without BOS: HF encode(text, add_special_tokens=False)    vs flashlm encode(text, {addBos: false})
// Leading space: both put '▁' in front of the text (HF normalizer Prepend('▁'), llama.cpp
// add_space_prefix). Files with literal added-token text (`<s>`, ...) are flagged: HF splits those
// out by default, flashlm only with parseSpecial, which is then turned on for that file.
// Prints JSON on stdout (and to --out); exits 1 if any ids differ.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { GGUFValueType as VT, GGUFWriter, readGGUF } from '../src/formats/gguf.js';
import { ggufVocabMetadataFromHFDir, tokenizerFromGGUF, tokenizerFromHFDir, type TokenizerInfo } from '../src/tokenizer/index.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // from dist/bench
const SCRIPT = join(ROOT, 'scripts', 'tokenizer-vs-hf.py');

// Real, varied files: Python (some with non-ASCII letters in comments / strings), a C header, a
// bundled JS library, Markdown with CJK / emoji / symbols (byte fallback for the characters that
// are not in the 32k vocabulary), a list of IDNs in many scripts, and the perplexity held-out set.
const DEFAULT_FILES = [
  '/usr/lib/python3.11/statistics.py',
  '/usr/lib/python3.11/re/_casefix.py',
  '/usr/lib/python3.11/encodings/koi8_t.py',
  '/usr/lib/python3.11/email/message.py',
  '/usr/include/stdio.h',
  join(ROOT, 'node_modules/@huggingface/jinja/dist/index.js'),
  join(ROOT, 'node_modules/fast-check/README.md'),
  '/usr/share/doc/nodejs/api/punycode.md',
  '/usr/share/doc/nodejs/api/url.md',
  '/usr/share/doc/publicsuffix/examples/test_psl.txt',
  '/usr/share/doc/gcc-12-base/copyright', // license texts; one U+FEFF in the middle (a token of its own)
  join(ROOT, 'bench/heldout/algorithms.py.txt'),
  join(ROOT, 'bench/heldout/api_jws.py.txt'),
  join(ROOT, 'bench/heldout/emitter.py.txt'),
  join(ROOT, 'bench/heldout/underscore.js.txt'),
];

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'hf-dir': { type: 'string', default: '/root/.cache/models/codellama-13b-src/work/small' },
    gguf: { type: 'string', default: '/root/.cache/models/gguf/codellama-13b-q8_0.gguf' },
    python: { type: 'string', default: process.env.PYTHON ?? 'python3' },
    out: { type: 'string' },
  },
});
const files = positionals.length ? positionals : DEFAULT_FILES;

interface HFFile { path: string; chars: number; contains_added_token_text: string[]; with_special: number[]; without_special: number[] }
interface HFOut { tokenizers_version: string; vocab_size: number; added_tokens: string[]; files: HFFile[] }

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The vocabulary as `flashlm convert DIR` writes it today, through a GGUF file and back. */
function reconvertedVocab(dir: string): TokenizerInfo {
  const tmp = mkdtempSync(join(tmpdir(), 'flashlm-tokvshf-'));
  try {
    const path = join(tmp, 'vocab.gguf');
    const w = new GGUFWriter(path);
    w.addKV('general.architecture', VT.STRING, 'llama');
    for (const kv of ggufVocabMetadataFromHFDir(dir)) w.addKV(kv.key, kv.type, kv.value, kv.arrayType);
    w.beginData();
    w.finish();
    return tokenizerFromGGUF(readGGUF(path).metadata);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Where two id lists first differ, with the tokens around it on both sides (pieces as stored). */
function compare(tok: TokenizerInfo, want: number[], got: number[]) {
  const n = Math.min(want.length, got.length);
  let i = 0;
  while (i < n && want[i] === got[i]) i++;
  if (i === n && want.length === got.length) return { identical: true as const };
  const around = (ids: number[]) => ids.slice(Math.max(0, i - 6), i + 6).map((id) => `${id}:${JSON.stringify(tok.piece(id))}`);
  return {
    identical: false as const,
    hf_tokens: want.length, flashlm_tokens: got.length,
    first_mismatch: i,
    // the text that both sides agree on up to the mismatch, last 80 characters
    text_before: tok.decode(want.slice(0, i)).slice(-80),
    hf_context: around(want), flashlm_context: around(got),
  };
}

function main(): void {
  const hfDir = values['hf-dir']!;
  const tjPath = join(hfDir, 'tokenizer.json');
  const tj = JSON.parse(readFileSync(tjPath, 'utf8')) as { model: { type: string; byte_fallback?: boolean; vocab: Record<string, number> } };
  const texts = files.map((f) => strictUtf8.decode(readFileSync(f)));

  const hfTok = tokenizerFromHFDir(hfDir);
  const gguf = readGGUF(values.gguf!); // header only (metadata + tensor infos)
  const ggufTok = tokenizerFromGGUF(gguf.metadata);
  const convTok = reconvertedVocab(hfDir);
  // Same vocabulary as tokenizer.json? (piece by piece: the GGUF was converted from this directory)
  const pieceDiffs = (tok: TokenizerInfo) => {
    const d: string[] = [];
    if (tok.vocabSize !== hfTok.vocabSize) d.push(`vocab size ${tok.vocabSize} vs ${hfTok.vocabSize}`);
    for (let id = 0; id < Math.min(tok.vocabSize, hfTok.vocabSize); id++) {
      if (tok.piece(id) !== hfTok.piece(id)) d.push(`id ${id}: ${JSON.stringify(tok.piece(id))} vs ${JSON.stringify(hfTok.piece(id))}`);
    }
    return d;
  };

  const t0 = performance.now();
  const raw = execFileSync(values.python!, [SCRIPT, tjPath, ...files], { maxBuffer: 1 << 28, encoding: 'utf8' });
  const pyMs = performance.now() - t0;
  const hf = JSON.parse(raw) as HFOut;

  const results = [];
  let allIdentical = true, totalTokens = 0, totalFallback = 0;
  const filesIdentical: Record<string, number> = { tokenizer_json: 0, gguf_vocab: 0, gguf_vocab_reconverted: 0 };
  for (let k = 0; k < files.length; k++) {
    const text = texts[k]!, ref = hf.files[k]!;
    if (ref.chars !== [...text].length) throw new Error(`${files[k]}: python saw ${ref.chars} characters, node ${[...text].length}`);
    const parseSpecial = ref.contains_added_token_text.length > 0;
    // byte tokens: Llama has no piece for '\n' or '\t', so those are always <0x0A> / <0x09>; the
    // bytes >= 0x80 are the real fallback, for characters missing from the 32k vocabulary
    let byteAscii = 0, byteFallback = 0;
    for (const id of ref.without_special) {
      const m = /^<0x([0-9A-F]{2})>$/.exec(hfTok.piece(id));
      if (m) parseInt(m[1]!, 16) < 0x80 ? byteAscii++ : byteFallback++;
    }
    const sides: Record<string, unknown> = {};
    for (const [name, tok] of [['tokenizer_json', hfTok], ['gguf_vocab', ggufTok], ['gguf_vocab_reconverted', convTok]] as const) {
      const s = performance.now();
      const withBos = tok.encode(text, { parseSpecial });
      const ms = performance.now() - s;
      const withoutBos = tok.encode(text, { addBos: false, parseSpecial });
      const a = compare(hfTok, ref.with_special, withBos), b = compare(hfTok, ref.without_special, withoutBos);
      if (!a.identical || !b.identical) allIdentical = false;
      else filesIdentical[name]!++;
      sides[name] = {
        identical_with_bos: a.identical, identical_without_bos: b.identical,
        ...(a.identical ? {} : { with_bos: a }), ...(b.identical ? {} : { without_bos: b }),
        decode_roundtrip: tok.decode(withBos) === text,
        encode_ms: Math.round(ms * 10) / 10,
      };
    }
    totalTokens += ref.with_special.length;
    totalFallback += byteFallback;
    results.push({
      path: files[k]!.startsWith(ROOT) ? files[k]!.slice(ROOT.length) : files[k], bytes: statSync(files[k]!).size, chars: ref.chars,
      non_ascii_chars: [...text].filter((c) => c.codePointAt(0)! > 0x7f).length,
      tokens_with_bos: ref.with_special.length, byte_tokens_ascii: byteAscii, byte_fallback_tokens_non_ascii: byteFallback,
      first_token_is_bos: ref.with_special[0] === hfTok.bos,
      literal_added_tokens: ref.contains_added_token_text, parse_special: parseSpecial,
      ...sides,
    });
  }

  const out = {
    bench: 'tokenizer-vs-hf',
    reference: `HF tokenizers ${hf.tokenizers_version} (python), ${SCRIPT.slice(ROOT.length)}`,
    tokenizer_json: tjPath,
    tokenizer_json_model: { type: tj.model.type, byte_fallback: tj.model.byte_fallback === true, vocab_entries: Object.keys(tj.model.vocab).length, hf_vocab_size: hf.vocab_size },
    gguf: values.gguf, gguf_tokenizer_model: gguf.metadata.get('tokenizer.ggml.model')?.value,
    gguf_vocab_pieces_differing_from_tokenizer_json: pieceDiffs(ggufTok),
    gguf_vocab_reconverted_pieces_differing_from_tokenizer_json: pieceDiffs(convTok),
    convention: {
      bos: `with BOS: HF encode(text) (post-processor adds <s>=${hfTok.bos}) vs flashlm encode(text) (add_bos_token=${hfTok.addBos} / GGUF add_bos_token=${ggufTok.addBos}); without BOS: add_special_tokens=False vs {addBos:false}`,
      leading_space: "both prepend '▁' to the text (HF normalizer Prepend, llama.cpp add_space_prefix)",
      text: 'file bytes as strict UTF-8, BOM kept, no newline translation',
    },
    python_ms: Math.round(pyMs),
    files: results,
    summary: { files: files.length, tokens_with_bos: totalTokens, byte_fallback_tokens_non_ascii: totalFallback,
      files_identical: filesIdentical, all_identical: allIdentical },
  };
  const json = JSON.stringify(out, null, 1);
  console.log(json);
  if (values.out) writeFileSync(values.out, json + '\n');
  if (!allIdentical) process.exitCode = 1;
}

main();
