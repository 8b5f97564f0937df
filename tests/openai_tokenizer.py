"""A pure-Python reference of OpenAI's CLIP `SimpleTokenizer` (clip/simple_tokenizer.py), for the tests only.

It runs OpenAI's algorithm (clean, regex split, byte encoding, greedy lowest-rank BPE with a `</w>` end-of-word
marker) on the same vocabulary file, so `actionclip_jax.tokenize` can be compared with it on any text.
"""
import html

import ftfy
import regex

from actionclip_jax.model import tokenizer as ours


class SimpleTokenizer:

  def __init__(self):
    self.encoder, merges = ours.vocab_and_merges()
    self.byte_encoder = ours._bytes_to_unicode()
    self.bpe_ranks = {m: i for i, m in enumerate(merges)}
    self.cache = {ours.SOT: ours.SOT, ours.EOT: ours.EOT}
    self.pat = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE)

  def bpe(self, token):
    if token in self.cache:
      return self.cache[token]
    word = tuple(token[:-1]) + (token[-1] + '</w>',)
    while len(word) > 1:
      pairs = {(a, b) for a, b in zip(word, word[1:])}
      best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float('inf')))
      if best not in self.bpe_ranks:
        break
      merged, i = [], 0
      while i < len(word):
        if i < len(word) - 1 and (word[i], word[i + 1]) == best:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = tuple(merged)
    self.cache[token] = ' '.join(word)
    return self.cache[token]

  def encode(self, text):
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    text = regex.sub(r'\s+', ' ', text).strip().lower()
    ids = []
    for token in regex.findall(self.pat, text):
      token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
      ids.extend(self.encoder[t] for t in self.bpe(token).split(' '))
    return ids

  def tokenize(self, texts, context_length=77):
    sot, eot = self.encoder[ours.SOT], self.encoder[ours.EOT]
    rows = []
    for text in texts:
      ids = [sot] + self.encode(text) + [eot]
      if len(ids) > context_length:
        ids = ids[:context_length]
        ids[-1] = eot
      rows.append(ids + [0] * (context_length - len(ids)))
    return rows
