"""Decoding: greedy and beam search equal transformers' generate; sampling; pmap; likelihoods."""

import jax
import numpy as np
import pytest
import torch
import transformers

from tests.fixtures import make_tiny_t5_dir
from sciqa_jax.decoding import generate, make_generate_fn, padded_length
from sciqa_jax.inference import candidate_log_likelihoods
from sciqa_jax.models import load_pretrained

transformers.logging.set_verbosity_error()
MAX_NEW = 12


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
  """variant -> (hf model, our model, params, ids, mask). v1.1's EOS row is boosted so rows end
  early at different steps; v1.0 random models never emit EOS, so they run to the limit."""
  out = {}
  for variant, scale in (("v1.0", 1.0), ("v1.1", 3.0)):
    path, hf = make_tiny_t5_dir(tmp_path_factory.mktemp(variant.replace(".", "")), variant,
                                eos_logit_scale=scale)
    model, params = load_pretrained(path)
    rs = np.random.RandomState(0)
    ids = rs.randint(3, model.config.vocab_size, (6, 12))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[3, 3:] = 0
    out[variant] = (hf, model, params, ids * mask, mask)
  return out


def _hf_generate(hf, ids, mask, **kw):
  with torch.no_grad():
    return hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                       max_new_tokens=MAX_NEW, do_sample=False, output_scores=True,
                       return_dict_in_generate=True, **kw)


def _assert_tokens_equal_hf(tokens, ref):
  """`ref` is HF sequences without the start token, cropped to the longest row."""
  tokens = np.asarray(tokens)
  np.testing.assert_array_equal(tokens[:, :ref.shape[1]], ref)
  assert (tokens[:, ref.shape[1]:] == 0).all()


@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_greedy_equals_transformers(setups, variant):
  hf, model, params, ids, mask = setups[variant]
  out = generate(model, params, ids, mask, max_new_tokens=MAX_NEW)
  ref = _hf_generate(hf, ids, mask, num_beams=1).sequences.numpy()[:, 1:]
  assert out.tokens.shape == (6, 1, MAX_NEW)
  _assert_tokens_equal_hf(out.tokens[:, 0], ref)
  ended = (ref == 1).any(-1)
  if variant == "v1.1":  # the test must exercise early EOS and padding after it
    assert 0 < ended.sum() < len(ended)
  expected_len = np.where(ended, (ref == 1).argmax(-1) + 1, MAX_NEW)
  np.testing.assert_array_equal(out.lengths[:, 0], expected_len)
  lp = np.asarray(out.log_probs[:, 0])
  assert (lp[np.arange(MAX_NEW)[None] >= expected_len[:, None]] == 0).all()
  assert (lp[np.arange(MAX_NEW)[None] < expected_len[:, None]] < 0).all()


@pytest.mark.parametrize("variant,length_penalty,early_stopping",
                         [("v1.1", 1.0, False), ("v1.0", 0.6, True)])
def test_beam_search_equals_transformers(setups, variant, length_penalty, early_stopping):
  hf, model, params, ids, mask = setups[variant]
  out = generate(model, params, ids, mask, max_new_tokens=MAX_NEW, method="beam", num_beams=4,
                 length_penalty=length_penalty, early_stopping=early_stopping)
  ref = _hf_generate(hf, ids, mask, num_beams=4, length_penalty=length_penalty,
                     early_stopping=early_stopping)
  seqs = ref.sequences.numpy()[:, 1:]
  # HF fills finished beams with `pad_token_id or eos` (= EOS, as pad is 0); we pad with 0.
  ends = np.where((seqs == 1).any(-1), (seqs == 1).argmax(-1) + 1, seqs.shape[1])
  np.testing.assert_array_equal(out.lengths[:, 0], ends)
  seqs = np.where(np.arange(seqs.shape[1])[None] < ends[:, None], seqs, 0)
  _assert_tokens_equal_hf(out.tokens[:, 0], seqs)
  # HF's sequence score is the length-penalised sum of the per-token log-probs we return.
  ours = np.asarray(out.log_probs[:, 0]).sum(-1) / np.asarray(out.lengths[:, 0])**length_penalty
  np.testing.assert_allclose(ours, ref.sequences_scores.numpy(), atol=1e-4)
  if variant == "v1.1":
    assert (np.asarray(out.lengths[:, 0]) < MAX_NEW).any()


def test_sampling_is_keyed_and_top_k_one_is_greedy(setups):
  _, model, params, ids, mask = setups["v1.1"]
  greedy = generate(model, params, ids, mask, max_new_tokens=MAX_NEW)
  top1 = generate(model, params, ids, mask, max_new_tokens=MAX_NEW, method="sample",
                  rng=jax.random.key(3), top_k=1, num_samples=2, temperature=0.7)
  assert top1.tokens.shape == (6, 2, MAX_NEW)
  for s in range(2):
    np.testing.assert_array_equal(top1.tokens[:, s], greedy.tokens[:, 0])
    np.testing.assert_allclose(top1.log_probs[:, s], greedy.log_probs[:, 0], atol=1e-5)

  kw = dict(max_new_tokens=MAX_NEW, method="sample", top_p=0.9, num_samples=3)
  a = generate(model, params, ids, mask, rng=jax.random.key(0), **kw)
  b = generate(model, params, ids, mask, rng=jax.random.key(0), **kw)
  c = generate(model, params, ids, mask, rng=jax.random.key(1), **kw)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert (np.asarray(a.tokens) != np.asarray(c.tokens)).any()
  assert (np.asarray(a.tokens[:, 0]) != np.asarray(a.tokens[:, 1])).any()  # samples differ
  valid = np.arange(MAX_NEW)[None, None] < np.asarray(a.lengths)[..., None]
  assert (np.asarray(a.tokens)[~valid] == 0).all()
  with pytest.raises(ValueError, match="rng"):
    generate(model, params, ids, mask, max_new_tokens=4, method="sample")


def test_make_generate_fn_under_pmap(setups):
  _, model, params, ids, mask = setups["v1.1"]
  fn = jax.pmap(make_generate_fn(model, max_new_tokens=MAX_NEW), in_axes=(None, 0, 0, None),
                devices=jax.devices()[:2])
  out = fn(params, ids.reshape(2, 3, -1), mask.reshape(2, 3, -1), jax.random.key(0))
  ref = generate(model, params, ids, mask, max_new_tokens=MAX_NEW)
  np.testing.assert_array_equal(np.asarray(out.tokens).reshape(6, 1, -1), ref.tokens)
  np.testing.assert_array_equal(np.asarray(out.lengths).reshape(6, 1), ref.lengths)


def test_candidate_log_likelihoods_match_transformers_loss(setups):
  hf, model, params, ids, mask = setups["v1.1"]
  rs = np.random.RandomState(5)
  lengths = np.array([7, 3, 5, 1, 7, 2])
  label_mask = (np.arange(7)[None] < lengths[:, None]).astype(np.int32)
  labels = rs.randint(3, model.config.vocab_size, (6, 7)) * label_mask
  total, count = jax.jit(candidate_log_likelihoods, static_argnums=0)(
      model, params, ids, mask, labels[:, None], label_mask[:, None])
  total, count = np.asarray(total)[:, 0], np.asarray(count)[:, 0]
  np.testing.assert_array_equal(count, lengths)
  for row in range(6):
    n = int(label_mask[row].sum())
    with torch.no_grad():
      loss = hf(input_ids=torch.tensor(ids[row:row + 1]),
                attention_mask=torch.tensor(mask[row:row + 1]),
                labels=torch.tensor(labels[row:row + 1, :n])).loss.item()
    np.testing.assert_allclose(total[row], -loss * n, rtol=1e-4, atol=1e-4)


def test_padded_lengths_fit_waste_at_most_a_third_and_respect_the_cap():
  buckets = sorted({padded_length(n, 512) for n in range(1, 600)})
  assert buckets == [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
  for n in range(1, 513):
    bucket = padded_length(n, 512)
    assert n <= bucket and (bucket <= 8 or bucket - n < bucket / 3), (n, bucket)
  assert padded_length(170, 100) == 100  # longer rows are truncated to the cap
  assert padded_length(3, 4) == 4
