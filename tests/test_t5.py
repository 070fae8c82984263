"""T5 module: numerical parity with transformers, KV-cache decoding, dtypes, dropout, config."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from tests.fixtures import make_tiny_t5_dir
from sciqa_jax.models import T5, T5Config, init_params, load_pretrained
from sciqa_jax.models.convert import param_shapes

VARIANTS = ("v1.0", "v1.1")


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, ids, mask, dec, dec_mask):
  # One compilation per model config: every test uses the same batch shapes.
  return model.apply({"params": params}, ids, mask, dec, dec_mask)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """variant -> (hf torch model, our model, our params), both loaded from the same directory."""
  out = {}
  for variant in VARIANTS:
    path, hf = make_tiny_t5_dir(tmp_path_factory.mktemp(variant.replace(".", "")), variant)
    model, params = load_pretrained(path)
    out[variant] = (hf, model, params)
  return out


def _batch(vocab, seed=0):
  rs = np.random.RandomState(seed)
  ids = rs.randint(3, vocab, (3, 11))
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  mask[2, 2:] = 0
  dec = rs.randint(3, vocab, (3, 9))
  dec[:, 0] = 0
  dec_mask = np.ones_like(dec)
  dec_mask[2, 5:] = 0
  return ids * mask, mask, dec, dec_mask


def test_reference_head_tying_is_real(checkpoints):
  hf10, model10, params10 = checkpoints["v1.0"]
  hf11, model11, params11 = checkpoints["v1.1"]
  assert hf10.lm_head.weight.data_ptr() == hf10.shared.weight.data_ptr()
  assert hf11.lm_head.weight.data_ptr() != hf11.shared.weight.data_ptr()
  assert not torch.equal(hf11.lm_head.weight, hf11.shared.weight)
  assert model10.config.tie_word_embeddings and model10.config.scale_decoder_outputs
  assert "lm_head" not in params10
  assert not model11.config.tie_word_embeddings and not model11.config.scale_decoder_outputs
  np.testing.assert_array_equal(params11["lm_head"]["kernel"], hf11.lm_head.weight.detach().numpy().T)


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_match_transformers(checkpoints, variant):
  hf, model, params = checkpoints[variant]
  ids, mask, dec, dec_mask = _batch(model.config.vocab_size)
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
             decoder_input_ids=torch.tensor(dec),
             decoder_attention_mask=torch.tensor(dec_mask)).logits.numpy()
  ours = _forward(model, params, ids, mask, dec, dec_mask)
  assert ours.dtype == jnp.float32 and ours.shape == ref.shape
  assert np.abs(np.asarray(ours) - ref).max() <= 1e-4


def test_cached_decoding_matches_full_forward(checkpoints):
  _, model, params = checkpoints["v1.1"]
  ids, mask, dec, _ = _batch(model.config.vocab_size, seed=1)
  full = _forward(model, params, ids, mask, dec, np.ones_like(dec))

  @jax.jit
  def stepwise(params):
    encoded = model.apply({"params": params}, ids, mask, method=T5.encode)
    _, v = model.apply({"params": params}, encoded, mask, dec.shape[1], method=T5.init_cache,
                       mutable=["cache"])

    def body(cache, token):
      logits, v = model.apply({"params": params, "cache": cache}, token[:, None], encoded, mask,
                              decode=True, method=T5.decode, mutable=["cache"])
      return v["cache"], logits[:, 0]

    cache, logits = jax.lax.scan(body, v["cache"], dec.T)
    # Cross-attention keys/values are projected once and stored; self-attention cache filled.
    block = cache["decoder"]["block_0"]
    assert block["cross_attention"]["cross_key"].shape == (3, 2, ids.shape[1], 8)
    return jnp.swapaxes(logits, 0, 1), cache["decoder"]["cache_index"]

  logits, index = stepwise(params)
  assert int(index) == dec.shape[1]
  np.testing.assert_allclose(logits, full, atol=1e-4)


def test_bfloat16_compute_keeps_fp32_logits(checkpoints):
  _, model, params = checkpoints["v1.1"]
  ids, mask, dec, dec_mask = _batch(model.config.vocab_size, seed=2)
  bf16 = T5(model.config.replace(dtype="bfloat16"))
  out = _forward(bf16, params, ids, mask, dec, dec_mask)
  ref = _forward(model, params, ids, mask, dec, dec_mask)
  assert out.dtype == jnp.float32
  assert np.abs(np.asarray(out - ref)).max() <= 0.05 * np.abs(np.asarray(ref)).max()
  # The params themselves are untouched (fp32 storage, bf16 compute).
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))


def test_dropout_uses_the_rng_and_deterministic_disables_it(checkpoints):
  _, model, params = checkpoints["v1.1"]
  ids, mask, dec, dec_mask = _batch(model.config.vocab_size, seed=3)
  plain = _forward(model, params, ids, mask, dec, dec_mask)
  model = T5(model.config.replace(dropout_rate=0.3))

  @jax.jit
  def run(key):
    return model.apply({"params": params}, ids, mask, dec, dec_mask, deterministic=False,
                       rngs={"dropout": key})

  # rbg keys: threefry's bit generation at every dropout site triples the CPU compile time.
  key = functools.partial(jax.random.key, impl="rbg")
  a, b, c = run(key(0)), run(key(0)), run(key(1))
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a - c)).max() > 1e-3
  assert np.abs(np.asarray(a - plain)).max() > 1e-3


def test_dropout_drops_at_the_rate_with_independent_16_bit_lanes():
  from sciqa_jax.models.t5 import Dropout
  x = jnp.ones((4, 64, 257))  # an odd last axis: one word's second lane goes unused

  def apply(rate, key, deterministic=False):
    return np.asarray(Dropout(rate).apply({}, x, deterministic=deterministic,
                                          rngs={"dropout": key}))

  key = jax.random.key(0)
  out = apply(0.1, key)
  kept = out != 0
  threshold = round(0.1 * 65536)
  p = threshold / 65536
  np.testing.assert_allclose(out[kept], 65536 / (65536 - threshold), rtol=1e-6)
  within = lambda frac, prob, n: abs(frac - prob) < 4 * np.sqrt(prob * (1 - prob) / n)
  # Neighbours 2j and 2j + 1 of the last axis (the two 16-bit lanes of one word) each drop at the
  # rate, and independently of each other.
  low, high = kept[..., 0:256:2], kept[..., 1:256:2]
  assert within((~low).mean(), p, low.size) and within((~high).mean(), p, high.size)
  assert within((~low & ~high).mean(), p * p, low.size)
  assert abs(out.mean() - 1.0) < 0.01  # inverted dropout keeps the expectation
  assert not np.array_equal(out, apply(0.1, jax.random.key(1)))
  np.testing.assert_array_equal(apply(0.1, key, deterministic=True), x)
  np.testing.assert_array_equal(apply(0.0, key), x)
  np.testing.assert_array_equal(apply(1.0, key), np.zeros(x.shape))
  np.testing.assert_array_equal(apply(1 - 2**-18, key), np.zeros(x.shape))  # rounds to 1
  np.testing.assert_array_equal(apply(2**-18, key), x)  # rounds to 0
  with pytest.raises(ValueError, match="rate=-0.1"):
    apply(-0.1, key)
  half = Dropout(0.5).apply({}, x.astype(jnp.bfloat16), deterministic=False, rngs={"dropout": key})
  assert half.dtype == jnp.bfloat16 and set(np.unique(np.asarray(half, np.float32))) == {0.0, 2.0}


def test_param_counts_match_published_models():
  flan_small = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8,
                        num_heads=6, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
  t5_small = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                      num_heads=8, feed_forward_proj="relu", tie_word_embeddings=True)
  for config, count in ((flan_small, 76_961_152), (t5_small, 60_506_624)):
    assert sum(int(np.prod(s)) for s in param_shapes(config).values()) == count


def test_init_params_shapes_and_determinism():
  config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                    param_dtype="bfloat16")
  a, b = init_params(config, jax.random.key(0)), init_params(config, jax.random.key(0))
  flat = jax.tree_util.tree_leaves_with_path(a)
  assert {jax.tree_util.keystr(k) for k, _ in flat} >= {"['lm_head']['kernel']",
                                                       "['shared']['embedding']"}
  assert all(v.dtype == jnp.bfloat16 for _, v in flat)
  assert {tuple(map(lambda e: e.key, k)): v.shape for k, v in flat} == param_shapes(config)
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_config_from_hf_handles_transformers_v5_tying():
  v5_flan = {"model_type": "t5", "d_model": 32, "feed_forward_proj": "gated-gelu",
             "tie_word_embeddings": True, "scale_decoder_outputs": False, "num_layers": 3,
             "eos_token_id": [1], "dtype": "bfloat16"}
  config = T5Config.from_hf(v5_flan)
  assert config.num_decoder_layers == 3 and config.eos_token_id == 1
  assert not config.scale_decoder_outputs and config.dtype == "float32"
  old_flan = T5Config.from_hf({"model_type": "t5", "tie_word_embeddings": False})
  assert not old_flan.tie_word_embeddings and not old_flan.scale_decoder_outputs
  old_t5 = T5Config.from_hf({"model_type": "t5"})
  assert old_t5.tie_word_embeddings and old_t5.scale_decoder_outputs
  # to_hf round trips through us and is read by transformers with the same scaling choice.
  for config in (old_flan, old_t5, config):
    assert T5Config.from_hf(config.to_hf()) == config
    assert transformers.T5Config(**config.to_hf()).scale_decoder_outputs == \
        config.scale_decoder_outputs


def test_config_rejects_bad_values():
  with pytest.raises(ValueError, match="feed_forward_proj"):
    T5Config(feed_forward_proj="gated-swish-x")
  with pytest.raises(ValueError, match="dtype"):
    T5Config(dtype="float8")
  with pytest.raises(ValueError, match="dropout_rate=1.0"):
    T5Config(dropout_rate=1.0)
  with pytest.raises(ValueError, match="model_type"):
    T5Config.from_hf({"model_type": "bart"})
