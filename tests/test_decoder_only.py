"""Decoder-only LMs (Llama 3, Qwen2, Mistral, Gemma): logits and greedy generation equal
transformers' PyTorch models; bf16 / sharded checkpoints; sampling; config.json round trips."""

import functools
import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers

from sciqa_jax.decoding import generate_lm, left_pad, make_lm_generate_fn
from sciqa_jax.models import CausalLM, DecoderConfig, load_pretrained
from sciqa_jax.models.convert import read_safetensors, write_safetensors
# The tiny checkpoints live in tests/fixtures.py (the teacher and inference tests use them too).
from tests.fixtures import DECODER_FAMILIES as FAMILIES, make_tiny_decoder_dir

transformers.logging.set_verbosity_error()

VOCAB, EOS, PAD, MAX_NEW = 96, 1, 0, 10


def _prompts(batch: int = 2, length: int = 9, seed: int = 0):
  """Left-padded prompts of different lengths (row 1 has 4 pads; with 4 rows, row 3 has 6)."""
  rs = np.random.RandomState(seed)
  ids = rs.randint(3, VOCAB, (batch, length))
  mask = np.ones_like(ids)
  mask[1, :4] = 0
  if batch > 3:
    mask[3, :6] = 0
  return ids * mask, mask


def _hf_logits(hf, ids, mask):
  # HF's plain forward numbers positions 0..T-1 whatever the mask; generate() derives them from
  # it, as our model always does. Pass generate()'s positions for a like-for-like comparison.
  positions = np.maximum(mask.cumsum(-1) - 1, 0)
  with torch.no_grad():
    return hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
              position_ids=torch.tensor(positions)).logits.numpy()


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, ids, mask):
  return model.apply({"params": params}, input_ids=ids, attention_mask=mask)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
  cache = {}

  def get(family):
    if family not in cache:
      cache[family] = make_tiny_decoder_dir(tmp_path_factory.mktemp(family), family)
    return cache[family]
  return get


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_equal_transformers(family_dirs, family):
  path, hf = family_dirs(family)
  model, params = load_pretrained(path)
  assert isinstance(model, CausalLM) and model.config.model_type == hf.config.model_type
  assert model.config.tie_word_embeddings == hf.config.tie_word_embeddings
  ids, mask = _prompts()
  ref = _hf_logits(hf, ids, mask)
  ours = np.asarray(_forward(model, params, ids, mask))
  assert ours.shape == (2, 9, VOCAB) and ours.dtype == np.float32
  real = mask > 0
  assert np.abs(ref[real]).max() > 1.0  # logits of a visible scale: the comparison means something
  np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


def test_left_padding_gives_each_row_its_unpadded_logits(family_dirs):
  path, _ = family_dirs("llama3")
  model, params = load_pretrained(path)
  ids, mask = _prompts()
  batched = np.asarray(_forward(model, params, ids, mask))
  alone = np.asarray(_forward(model, params, ids[1:, 4:], mask[1:, 4:]))
  np.testing.assert_allclose(batched[1, 4:], alone[0], atol=1e-5, rtol=0)


def test_llama3_rope_scaling_matters(family_dirs):
  """Without the llama3 scaling our logits differ: the parity test really checks it."""
  path, hf = family_dirs("llama3")
  model, params = load_pretrained(path)
  unscaled = CausalLM(model.config.replace(rope_scaling=None))
  ids, mask = _prompts()
  diff = np.abs(np.asarray(_forward(unscaled, params, ids, mask)) - _hf_logits(hf, ids, mask))
  assert diff[mask > 0].max() > 1e-2


def test_bf16_and_sharded_checkpoints(tmp_path, family_dirs):
  path, _ = family_dirs("llama3")
  _, params = load_pretrained(path)
  ids, mask = _prompts()

  sharded, _ = make_tiny_decoder_dir(tmp_path / "sharded", "llama3", max_shard_size="20KB")
  with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
    assert len(set(json.load(f)["weight_map"].values())) > 1
  assert not os.path.exists(os.path.join(sharded, "model.safetensors"))
  _, sharded_params = load_pretrained(sharded)
  jax.tree.map(np.testing.assert_array_equal, sharded_params, params)

  bf16, hf_bf16 = make_tiny_decoder_dir(tmp_path / "bf16", "llama3", dtype=torch.bfloat16)
  dtypes = {info["dtype"] for name, info in _header(os.path.join(bf16, "model.safetensors"))}
  assert dtypes == {"BF16"}
  model, bf16_params = load_pretrained(bf16)  # float32 params from bf16 storage
  assert jax.tree.leaves(bf16_params)[0].dtype == np.float32
  np.testing.assert_allclose(np.asarray(_forward(model, bf16_params, ids, mask))[mask > 0],
                             _hf_logits(hf_bf16, ids, mask)[mask > 0], atol=1e-4, rtol=0)
  model16, params16 = load_pretrained(bf16, dtype="bfloat16", param_dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(params16)} == {np.dtype(jax.numpy.bfloat16)}
  logits16 = np.asarray(_forward(model16, params16, ids, mask))
  assert logits16.dtype == np.float32
  ref = _hf_logits(hf_bf16, ids, mask)[mask > 0]
  assert np.abs(logits16[mask > 0] - ref).max() < 0.1 * np.abs(ref).max()


def _header(path):
  with open(path, "rb") as f:
    size = int.from_bytes(f.read(8), "little")
    return [(k, v) for k, v in json.loads(f.read(size)).items() if k != "__metadata__"]


def _hf_generate(hf, ids, mask):
  with torch.no_grad():
    out = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                      max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=PAD, eos_token_id=EOS,
                      output_logits=True, return_dict_in_generate=True)
  return out.sequences.numpy()[:, ids.shape[1]:], torch.stack(out.logits, 1).numpy()


@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral", "gemma"])
def test_greedy_generation_equals_transformers(family_dirs, family):
  path, hf = family_dirs(family)
  model, params = load_pretrained(path)
  ids, mask = _prompts(batch=4)
  ref, ref_logits = _hf_generate(hf, ids, mask)
  # 9-token prompts are padded up the ladder to 12: more left pads than HF's, same tokens.
  out = generate_lm(model, params, ids, mask, max_new_tokens=MAX_NEW)
  tokens = np.asarray(out.tokens)
  assert tokens.shape == (4, 1, MAX_NEW)
  np.testing.assert_array_equal(tokens[:, 0, :ref.shape[1]], ref)
  assert (tokens[:, 0, ref.shape[1]:] == PAD).all()
  ended = (ref == EOS).any(-1)
  expected_len = np.where(ended, (ref == EOS).argmax(-1) + 1, MAX_NEW)
  np.testing.assert_array_equal(out.lengths[:, 0], expected_len)
  # Log-probabilities are the model's own: log-softmax of transformers' raw logits.
  lp = np.asarray(out.log_probs[:, 0])
  ref_lp = torch.log_softmax(torch.tensor(ref_logits), -1).numpy()
  steps = np.arange(ref.shape[1])
  for row in range(4):
    n = expected_len[row]
    np.testing.assert_allclose(lp[row, :n], ref_lp[row, steps[:n], ref[row, :n]], atol=1e-4)
    assert (lp[row, n:] == 0).all()
  if family in ("mistral", "gemma"):  # these seeds end some rows early, not all
    assert 0 < ended.sum() < len(ended)
  if family == "llama3":  # right-padded input is left-aligned first: same result
    right_ids, right_mask = np.zeros_like(ids), np.zeros_like(mask)
    for row in range(4):
      n = mask[row].sum()
      right_ids[row, :n], right_mask[row, :n] = ids[row, -n:], 1
    again = generate_lm(model, params, right_ids, right_mask, max_new_tokens=MAX_NEW)
    np.testing.assert_array_equal(again.tokens, out.tokens)


def test_sampling_is_reproducible_and_top_k_1_is_greedy(family_dirs):
  path, _ = family_dirs("llama3")
  model, params = load_pretrained(path)
  prompt_ids, prompt_mask = _prompts(batch=4)
  ids, mask = left_pad(prompt_ids, prompt_mask, 12, PAD)  # what generate_lm does for 9 tokens
  fn = jax.jit(make_lm_generate_fn(model, max_new_tokens=MAX_NEW, method="sample",
                                   temperature=1.5, top_k=20, top_p=0.95, num_samples=3))
  first = fn(params, ids, mask, jax.random.key(1))
  again = fn(params, ids, mask, jax.random.key(1))
  other = fn(params, ids, mask, jax.random.key(2))
  assert first.tokens.shape == (4, 3, MAX_NEW) and first.lengths.shape == (4, 3)
  jax.tree.map(np.testing.assert_array_equal, first, again)
  assert (np.asarray(first.tokens) != np.asarray(other.tokens)).any()
  # The samples of one prompt differ from each other (a fresh cache copy per sample).
  assert (np.asarray(first.tokens)[:, 0] != np.asarray(first.tokens)[:, 1]).any()

  # The greedy program of test_greedy_generation_equals_transformers, from generate_lm's cache.
  greedy = generate_lm(model, params, prompt_ids, prompt_mask, max_new_tokens=MAX_NEW)
  top1 = jax.jit(make_lm_generate_fn(model, max_new_tokens=MAX_NEW, method="sample",
                                     temperature=0.7, top_k=1, num_samples=2))(
                                         params, ids, mask, jax.random.key(3))
  for s in range(2):
    np.testing.assert_array_equal(top1.tokens[:, s], greedy.tokens[:, 0])
    np.testing.assert_array_equal(top1.lengths[:, s], greedy.lengths[:, 0])


def test_generate_options_are_checked(family_dirs):
  path, _ = family_dirs("llama3")
  model, params = load_pretrained(path)
  with pytest.raises(ValueError, match="beam"):
    make_lm_generate_fn(model, max_new_tokens=4, method="beam")
  with pytest.raises(ValueError, match="num_samples"):
    make_lm_generate_fn(model, max_new_tokens=4, num_samples=2)
  with pytest.raises(ValueError, match="rng"):
    generate_lm(model, params, np.ones((1, 3)), np.ones((1, 3)), max_new_tokens=4,
                method="sample")
  with pytest.raises(ValueError, match="max_prompt_length"):
    generate_lm(model, params, np.ones((1, 9)), np.ones((1, 9)), max_new_tokens=4,
                max_prompt_length=8)


def test_config_from_hf_reads_v4_and_v5_layouts():
  rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
  base = dict(model_type="llama", hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
              eos_token_id=[128001, 128009], torch_dtype="bfloat16")
  v4 = DecoderConfig.from_hf(dict(base, rope_theta=500000.0, rope_scaling=rope))
  v5 = DecoderConfig.from_hf(dict(base, rope_parameters=dict(rope, rope_theta=500000.0)))
  assert v4 == v5 and v4.rope_theta == 500000.0 and v4.rope_type == "llama3"
  assert v4.eos_token_ids == (128001, 128009) and v4.head_dim == 16
  assert v4.num_key_value_heads == 4 and not v4.tie_word_embeddings
  assert hash(v4) == hash(v5)  # hashable: jit caches key on it
  # to_hf() is a config.json transformers accepts, and reads back to the same config.
  for config in (v4, DecoderConfig(model_type="gemma", hidden_size=32, num_attention_heads=2,
                                   head_dim=8, tie_word_embeddings=True,
                                   hidden_act="gelu_pytorch_tanh"),
                 DecoderConfig(model_type="qwen2", num_hidden_layers=2, sliding_window=64,
                               layer_types=("full_attention", "sliding_attention")),
                 DecoderConfig(model_type="mistral", sliding_window=None)):
    hf = transformers.AutoConfig.for_model(**config.to_hf())
    assert DecoderConfig.from_hf(hf.to_dict()) == config
    assert DecoderConfig.from_hf(config.to_hf()) == config
  # Family rules.
  assert DecoderConfig.from_hf({"model_type": "gemma", "hidden_act": "gelu"}).hidden_act == (
      "gelu_pytorch_tanh")
  assert DecoderConfig.from_hf({"model_type": "gemma"}).tie_word_embeddings
  qwen = DecoderConfig.from_hf({"model_type": "qwen2", "sliding_window": 4096,
                                "use_sliding_window": False})
  assert qwen.sliding_window is None and qwen.qkv_bias and not qwen.o_bias
  assert DecoderConfig.from_hf({"model_type": "mistral"}).sliding_window == 4096
  assert DecoderConfig.from_hf({"model_type": "mistral", "sliding_window": None}).sliding_window \
      is None
  with pytest.raises(ValueError, match="yarn"):
    DecoderConfig.from_hf(dict(base, rope_scaling={"rope_type": "yarn", "factor": 4.0}))
  with pytest.raises(ValueError, match="model_type='phi'"):
    DecoderConfig.from_hf({"model_type": "phi"})


def test_load_pretrained_errors_and_host_arrays(family_dirs, tmp_path):
  path, _ = family_dirs("qwen2")
  _, params = load_pretrained(path, to_device=False)
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(params))
  tensors = {k: np.array(v) for k, v in read_safetensors(os.path.join(path, "model.safetensors"))}
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)

  def write(name, tensors, **changes):
    out = tmp_path / name
    out.mkdir()
    write_safetensors(str(out / "model.safetensors"), tensors)
    with open(out / "config.json", "w") as f:
      json.dump(dict(config, **changes), f)
    return str(out)

  missing = {k: v for k, v in tensors.items() if k != "model.layers.1.self_attn.k_proj.bias"}
  with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.k_proj\.bias"):
    load_pretrained(write("missing", missing))
  with pytest.raises(ValueError, match=r"k_proj\.bias has shape \(16,\).*implies \(8,\)"):
    load_pretrained(write("wrong_shape", tensors, num_key_value_heads=1))
  with pytest.raises(ValueError, match="model_type='bert'"):
    load_pretrained(write("bert", tensors, model_type="bert"))


def test_a_decoder_only_model_is_refused_as_a_student(tmp_path):
  from sciqa_jax import errors
  from sciqa_jax.config import base_config
  from sciqa_jax.models import init_students
  path, _ = make_tiny_decoder_dir(tmp_path / "llama", "llama3")
  c = base_config()
  c.model.init, c.model.pretrained = "pretrained", str(path)

  class Tokenizer:
    def __len__(self):
      return 8

  with pytest.raises(errors.ConfigError, match=r"CausalLM \(llama\).*students are T5"):
    init_students(c, Tokenizer(), ("student",))
