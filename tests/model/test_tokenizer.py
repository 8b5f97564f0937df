"""`tokenize` equals OpenAI's CLIP tokenizer, offline, on the packaged vocabulary."""
import hashlib
import importlib.resources

import numpy as np
import pytest

import openai_tokenizer
from actionclip_jax.model import tokenizer
from actionclip_jax import tokenize


@pytest.fixture(scope='module')
def reference():
  return openai_tokenizer.SimpleTokenizer()


def test_packaged_vocabulary_is_openais_file():
  assets = importlib.resources.files('actionclip_jax').joinpath('assets')
  data = assets.joinpath(tokenizer.VOCAB_FILE).read_bytes()
  assert hashlib.sha256(data).hexdigest() == '924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a'
  assert 'OpenAI' in assets.joinpath('LICENSE-openai-clip-vocab.txt').read_text()
  vocab, merges = tokenizer.vocab_and_merges()
  assert len(vocab) == 49408 and len(merges) == 48894
  assert vocab[tokenizer.SOT] == 49406 and vocab[tokenizer.EOT] == 49407


def test_known_openai_ids():
  # Ids published with OpenAI's CLIP (its README and notebooks tokenize these prompts).
  np.testing.assert_array_equal(tokenize('a dog')[0, :4], [49406, 320, 1929, 49407])
  np.testing.assert_array_equal(tokenize('a diagram')[0, :4], [49406, 320, 22697, 49407])
  np.testing.assert_array_equal(tokenize('a cat')[0, :4], [49406, 320, 2368, 49407])


CASES = [
    'a photo of action {}',
    'Playing a kind of action, abseiling',
    'Can you recognize the action of playing basketball?',
    "it's we'll I'M they'd you've",
    'Hello,   World!!!  ...  (parentheses) [brackets] {braces} -- dashes; semi: colon',
    '&amp; &lt;b&gt;bold&lt;/b&gt; &amp;amp; &#39;quoted&#39; &quot;double&quot; &nbsp;space',
    'café naïve résumé Ångström Straße ŁÓDŹ',
    '日本語のテキスト 中文 한국어 العربية עברית Ελληνικά русский',
    'emoji 😀🎉 👍🏽 flags 🇫🇷',
    'e\u0301 combining accent, ﬁ ligature, full-width ＡＢＣ',
    'numbers 12345 and 3.14159, 1st 2nd',
    'tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em space',
    'mojibake: cafÃ© doesnâ€™t',
    '<|startoftext|> special <|endoftext|> tokens!<|endoftext|>x',
    'UPPER lower MiXeD',
    '',
    '    ',
    'word ' * 100,
    'x' * 400,
]


@pytest.mark.parametrize('context_length', [77, 16])
def test_matches_openai_reference(reference, context_length):
  got = tokenize(CASES, context_length=context_length)
  assert got.dtype == np.int32 and got.shape == (len(CASES), context_length)
  np.testing.assert_array_equal(got, np.array(reference.tokenize(CASES, context_length)))


def test_random_unicode_matches_reference(reference):
  rng = np.random.default_rng(0)
  # Draw from ASCII, Latin-1, general punctuation, CJK, emoji and whitespace so the regex and cleaning are stressed.
  ranges = [(0x20, 0x7e), (0xa0, 0xff), (0x2000, 0x206f), (0x4e00, 0x4e80), (0x1f600, 0x1f64f), (0x300, 0x36f)]
  texts = []
  for _ in range(300):
    chars = [chr(rng.integers(*ranges[rng.integers(len(ranges))])) for _ in range(rng.integers(0, 40))]
    texts.append(''.join(chars) + rng.choice(['', ' &amp;', '\t', '&#233;']))
  np.testing.assert_array_equal(tokenize(texts), np.array(reference.tokenize(texts)))


def test_truncation_keeps_end_token_last():
  ids = tokenize('one two three four five six seven eight', context_length=5)[0]
  assert ids[0] == 49406 and ids[-1] == 49407
  assert len(ids) == 5 and (ids != 0).all()
  with pytest.raises(ValueError, match='too long'):
    tokenize('one two three four five six', context_length=5, truncate=False)


def test_empty_and_blank_strings():
  ids = tokenize(['', '   ', '\n\t'])
  np.testing.assert_array_equal(ids[:, :3], [[49406, 49407, 0]] * 3)
  assert not ids[:, 2:].any()


def test_end_token_is_the_argmax():
  # The text tower pools at argmax(ids): the end-of-text position, for any text that does not itself spell the
  # special token (OpenAI's tokenizer and pooling behave the same way on such text).
  ids = tokenize([c for c in CASES if '<|endoftext|>' not in c])
  lengths = (ids != 0).sum(1)
  np.testing.assert_array_equal(ids.argmax(1), lengths - 1)
