"""The conversion tables cover the model exactly and are exact inverses."""
import jax
import numpy as np
import pytest

from actionclip_jax.model import clip
from actionclip_jax.weights import convert, pretrained


@pytest.mark.parametrize('name', ['ViT-B/32', 'ViT-L/14@336', 'tiny'])
@pytest.mark.parametrize('table', ['OPENAI_CLIP', 'HF_CLIP'])
def test_tables_cover_every_parameter_once(name, table):
  convert.check_table(getattr(convert, table), pretrained.target_shapes(clip.get_preset(name)))


def test_table_mismatch_is_reported():
  shapes = pretrained.target_shapes(clip.get_preset('tiny'))
  with pytest.raises(AssertionError, match=r"not produced \['logit_scale'\]"):
    convert.check_table(convert.OPENAI_CLIP[:-1], shapes)
  with pytest.raises(AssertionError, match='produced twice'):
    convert.check_table(convert.OPENAI_CLIP + convert.OPENAI_CLIP[-1:], shapes)


@pytest.mark.parametrize('table', ['OPENAI_CLIP', 'HF_CLIP'])
def test_round_trip_is_bit_exact(table):
  config = clip.get_preset('tiny', vocab_size=64)
  params = jax.tree_util.tree_map(np.asarray, clip.init_params(config, jax.random.key(1)))
  rules = getattr(convert, table)
  state_dict = convert.to_torch(params, rules)
  back = convert.to_flax(state_dict, rules, pretrained.target_shapes(config))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(back)):
    assert a.dtype == b.dtype and a.shape == b.shape, path
    np.testing.assert_array_equal(a, b, err_msg=str(path))


def test_fused_attention_split_matches_torch_layout():
  """in_proj rows are [query; key; value], each [heads * head_dim, embed] with heads outermost."""
  embed, heads = 8, 2
  fused = np.arange(3 * embed * embed, dtype=np.float32).reshape(3 * embed, embed)
  q, k, v = convert.IN_PROJ.to_ours(fused, ((embed, heads, embed // heads),) * 3)
  np.testing.assert_array_equal(k[:, 1, 0], fused[embed + embed // heads])  # head 1, dim 0 of the key
  np.testing.assert_array_equal(np.asarray(convert.IN_PROJ.to_theirs(q, k, v)), fused)
