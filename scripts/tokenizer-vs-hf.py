#!/usr/bin/env python3
"""Reference token ids from Hugging Face's `tokenizers` (the Rust library behind transformers'
fast tokenizers) for whole files, as JSON on stdout. bench/tokenizer-vs-hf.ts runs this as a child
process and compares flashlm's ids with these.

Usage: python tokenizer-vs-hf.py TOKENIZER_JSON FILE...

Each file is read as bytes and decoded as strict UTF-8 (no newline translation, BOM kept), so both
sides see exactly the same text. For each file two encodings are given:
  with_special:    tok.encode(text)                            (HF default: the post-processor adds
                                                                BOS for Llama)
  without_special: tok.encode(text, add_special_tokens=False)  (no BOS / EOS)
Added tokens written literally in the text (`<s>`, `</s>`, ...) are split out by HF in both modes;
the output says which files contain any, since flashlm only does that with parseSpecial.
"""
import json
import sys

import tokenizers
from tokenizers import Tokenizer


def main() -> None:
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    tok = Tokenizer.from_file(sys.argv[1])
    added = [t.content for t in tok.get_added_tokens_decoder().values()]
    files = []
    for path in sys.argv[2:]:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8')  # strict: a non-UTF-8 file is an error, not a guess
        files.append({
            'path': path,
            'chars': len(text),
            'contains_added_token_text': sorted(a for a in added if a in text),
            'with_special': tok.encode(text).ids,
            'without_special': tok.encode(text, add_special_tokens=False).ids,
        })
    json.dump({
        'tokenizers_version': tokenizers.__version__,
        'vocab_size': tok.get_vocab_size(with_added_tokens=True),
        'added_tokens': added,
        'files': files,
    }, sys.stdout)


if __name__ == '__main__':
    main()
