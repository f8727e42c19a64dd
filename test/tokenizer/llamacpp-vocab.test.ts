// llama.cpp's own tokenizer test vectors (tests/test-tokenizer-0.cpp): each .inp holds the inputs
// separated by "\n__ggml_vocab_test__\n", each .out line the expected ids of one input, tokenized with
// add_special = false (no BOS) and parse_special = false.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { readGGUF } from '../../src/formats/gguf.js';
import { tokenizerFromGGUF } from '../../src/tokenizer/index.js';

const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/vocab/', import.meta.url)); // from dist/test/tokenizer

export function readVocabTests(gguf: string): { input: string; ids: number[] }[] {
  const raw = readFileSync(`${gguf}.inp`, 'utf8');
  const sep = '\n__ggml_vocab_test__\n';
  const inputs: string[] = [];
  for (let pos = 0; pos < raw.length; ) {
    const next = raw.indexOf(sep, pos);
    if (next < 0) {
      inputs.push(raw.substring(pos));
      break;
    }
    inputs.push(raw.substring(pos, next));
    pos = next + sep.length;
  }
  const lines = readFileSync(`${gguf}.out`, 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop(); // std::getline: no line after the final newline
  assert.equal(inputs.length, lines.length, 'inputs and outputs differ in count');
  return inputs.map((input, i) => ({
    input,
    ids: lines[i]!.trim() === '' ? [] : lines[i]!.trim().split(' ').map(Number),
  }));
}

for (const name of ['llama-spm', 'gpt-2']) {
  test(`llama.cpp vocab test vectors: ${name}`, () => {
    const path = join(FIXTURES, `ggml-vocab-${name}.gguf`);
    const tok = tokenizerFromGGUF(readGGUF(path).metadata);
    const cases = readVocabTests(path);
    assert.ok(cases.length > 30);
    const failures: string[] = [];
    for (const c of cases) {
      const got = tok.encode(c.input, { addBos: false, parseSpecial: false });
      if (JSON.stringify(got) !== JSON.stringify(c.ids)) {
        failures.push(`${JSON.stringify(c.input)}\n   expected ${c.ids.join(' ')}\n   got      ${got.join(' ')}`);
      }
    }
    assert.equal(failures.length, 0, `${failures.length}/${cases.length} cases differ:\n${failures.join('\n')}`);
  });
}
