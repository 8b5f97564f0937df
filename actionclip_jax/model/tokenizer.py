"""OpenAI's CLIP tokenizer, id for id, on Hugging Face `tokenizers`' BPE and the shipped BPE vocabulary.

OpenAI's `SimpleTokenizer` cleans text (ftfy, `html.unescape` twice, whitespace folding, lowercasing), splits it with
one regex, byte-encodes each piece and runs BPE on it. transformers' `CLIPTokenizer` does the BPE the same way but
normalizes differently (NFC instead of ftfy, its own whitespace rule). So the cleaning and the split are done here
exactly as OpenAI does them, and the Rust BPE model that `CLIPTokenizer` wraps (same options: no subword prefix,
`</w>` word suffix, the two special tokens) is built directly from `tokenizers` for what it shares with OpenAI:
byte-level BPE over already split words. Building it without transformers saves ~1.5 s in every process.
"""
from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
from typing import Sequence

import ftfy
import numpy as np
import regex
import tokenizers

SOT, EOT = '<|startoftext|>', '<|endoftext|>'
VOCAB_FILE = 'bpe_simple_vocab_16e6.txt.gz'
# OpenAI's split; re.IGNORECASE is moot after lowercasing but kept for an exact match.
_SPLIT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible map of the 256 byte values onto printable characters.

  The order matters: the vocabulary lists these characters printable bytes first, then the others, as OpenAI does.
  """
  printable = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(
      range(ord('®'), ord('ÿ') + 1))
  others = [b for b in range(256) if b not in printable]
  return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
  """The 49,408-token vocabulary and 48,894 merges, built from the packaged file as OpenAI builds them."""
  data = importlib.resources.files('actionclip_jax').joinpath('assets', VOCAB_FILE).read_bytes()
  lines = gzip.decompress(data).decode('utf-8').split('\n')
  merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
  byte_chars = list(_bytes_to_unicode().values())
  tokens = byte_chars + [c + '</w>' for c in byte_chars] + [''.join(m) for m in merges] + [SOT, EOT]
  return {t: i for i, t in enumerate(tokens)}, merges


@functools.cache
def _bpe():
  """Byte-level BPE as transformers' `CLIPTokenizer` configures it, without its normalizer and regex split."""
  vocab, merges = vocab_and_merges()
  backend = tokenizers.Tokenizer(tokenizers.models.BPE(
      vocab=vocab, merges=merges, continuing_subword_prefix='', end_of_word_suffix='</w>', unk_token=EOT))
  backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  # As OpenAI's BPE cache: a piece that is exactly a special token maps to its id, not to its bytes' merges.
  backend.add_special_tokens([tokenizers.AddedToken(t, normalized=False, special=True) for t in (SOT, EOT)])
  return backend, vocab[SOT], vocab[EOT]


def clean(text: str) -> str:
  """OpenAI's basic_clean + whitespace_clean + lower."""
  text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
  return regex.sub(r'\s+', ' ', text).strip().lower()


def encode(texts: Sequence[str]) -> list[list[int]]:
  """BPE ids of each text, without start/end tokens."""
  backend, _, _ = _bpe()
  words = [_SPLIT.findall(clean(t)) for t in texts]
  nonempty = [i for i, w in enumerate(words) if w]  # the backend rejects an empty word list
  encoded = backend.encode_batch([words[i] for i in nonempty], is_pretokenized=True, add_special_tokens=False)
  ids: list[list[int]] = [[] for _ in texts]
  for i, enc in zip(nonempty, encoded):
    ids[i] = enc.ids
  return ids


def tokenize(texts: str | Sequence[str], context_length: int = 77, truncate: bool = True) -> np.ndarray:
  """Token ids [N, context_length] int32, as OpenAI's `clip.tokenize(texts, context_length, truncate)`.

  Each row is <|startoftext|> ids <|endoftext|> then zeros. A text longer than the context is cut so that
  <|endoftext|> stays the last token (truncate=True) or raises (truncate=False).
  """
  if isinstance(texts, str):
    texts = [texts]
  _, sot, eot = _bpe()
  out = np.zeros((len(texts), context_length), np.int32)
  for row, ids in enumerate(encode(texts)):
    ids = [sot, *ids, eot]
    if len(ids) > context_length:
      if not truncate:
        raise ValueError(f'Input {texts[row]!r} is too long for context length {context_length}')
      ids = ids[:context_length]
      ids[-1] = eot
    out[row, :len(ids)] = ids
  return out
