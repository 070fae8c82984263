"""HF <-> Flax conversion: export round trip, sharded / bf16 / .bin inputs, actionable errors."""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util

from tests.fixtures import make_tiny_t5_dir, make_tiny_tokenizer
from sciqa_jax.models import T5, T5Config, check_params, load_pretrained, save_pretrained
from sciqa_jax.models.convert import param_shapes, read_safetensors, write_safetensors

transformers.logging.set_verbosity_error()


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, ids, mask, dec):
  return model.apply({"params": params}, ids, mask, dec)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path, model = make_tiny_t5_dir(tmp_path_factory.mktemp("hf"), "v1.1")
  return path, model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  return make_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _copy(src, dst):
  shutil.copytree(src, dst)
  return str(dst)


def _assert_same_params(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_export_round_trip_loads_in_transformers(tmp_path, tokenizer, variant):
  config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                    num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0,
                    feed_forward_proj="relu" if variant == "v1.0" else "gated-gelu",
                    tie_word_embeddings=variant == "v1.0")
  # numpy-random params of the right shapes (norm scales included): no init compilation needed.
  rs = np.random.RandomState(1)
  params = traverse_util.unflatten_dict(
      {k: jnp.asarray(rs.normal(0, 0.5, s), jnp.float32) for k, s in param_shapes(config).items()})
  out = save_pretrained(T5(config), params, str(tmp_path / "export"), tokenizer=tokenizer)

  hf = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
  assert (hf.lm_head.weight.data_ptr() == hf.shared.weight.data_ptr()) == (variant == "v1.0")
  assert hf.config.scale_decoder_outputs == (variant == "v1.0")
  text = ["Water boils at one hundred degrees.", "A magnet attracts iron."]
  enc = transformers.AutoTokenizer.from_pretrained(out)(text, padding=True, return_tensors="np")
  dec = np.array([[0, 5, 9, 4], [0, 7, 3, 1]])
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(enc.input_ids), attention_mask=torch.tensor(enc.attention_mask),
             decoder_input_ids=torch.tensor(dec)).logits.numpy()
  ours = _forward(T5(config), params, enc.input_ids, enc.attention_mask, dec)
  assert np.abs(np.asarray(ours) - ref).max() <= 1e-4
  # And back: our loader reads our export to the same params.
  model, reloaded = load_pretrained(out)
  assert model.config == config
  _assert_same_params(params, reloaded)


def test_sharded_safetensors_and_bin_load_like_single_file(hf_dir, tmp_path):
  path, hf = hf_dir
  _, single = load_pretrained(path)
  sharded = str(tmp_path / "sharded")
  hf.save_pretrained(sharded, max_shard_size="40KB")
  assert os.path.isfile(os.path.join(sharded, "model.safetensors.index.json"))
  assert len([f for f in os.listdir(sharded) if f.endswith(".safetensors")]) > 1
  _assert_same_params(single, load_pretrained(sharded)[1])

  bin_dir = str(tmp_path / "bin")
  os.makedirs(bin_dir)
  shutil.copy(os.path.join(path, "config.json"), bin_dir)
  torch.save({k: v.clone() for k, v in hf.state_dict().items()},
             os.path.join(bin_dir, "pytorch_model.bin"))
  _assert_same_params(single, load_pretrained(bin_dir)[1])


def test_bfloat16_safetensors_load(hf_dir, tmp_path):
  path, hf = hf_dir
  bf16_dir = str(tmp_path / "bf16")
  hf.to(torch.bfloat16).save_pretrained(bf16_dir)
  hf.to(torch.float32)
  with open(os.path.join(bf16_dir, "model.safetensors"), "rb") as f:
    f.seek(8)
    assert b'"BF16"' in f.read(4096)
  model, params = load_pretrained(bf16_dir)
  expected = hf.shared.weight.detach().numpy().astype(ml_dtypes.bfloat16).astype(np.float32)
  np.testing.assert_array_equal(params["shared"]["embedding"], expected)
  assert params["shared"]["embedding"].dtype == np.float32
  _, kept = load_pretrained(bf16_dir, param_dtype="bfloat16", dtype="bfloat16")
  assert kept["shared"]["embedding"].dtype == ml_dtypes.bfloat16
  assert not model.config.tie_word_embeddings


def test_safetensors_writer_reader_round_trip(tmp_path):
  tensors = {"b": np.arange(6, dtype=np.float32).reshape(2, 3),
             "a": np.array([1.5, -2], dtype=ml_dtypes.bfloat16)}
  write_safetensors(str(tmp_path / "t.safetensors"), tensors)
  back = dict(read_safetensors(str(tmp_path / "t.safetensors")))
  assert set(back) == {"a", "b"}
  for k, v in tensors.items():
    assert back[k].dtype == v.dtype
    np.testing.assert_array_equal(back[k], v)


def test_errors_name_the_problem(hf_dir, tmp_path):
  path, _ = hf_dir
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_pretrained(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="hub id"):
    load_pretrained("no-such-org/no-such-model")

  no_config = _copy(path, tmp_path / "no_config")
  os.remove(os.path.join(no_config, "config.json"))
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_pretrained(no_config)

  no_weights = _copy(path, tmp_path / "no_weights")
  os.remove(os.path.join(no_weights, "model.safetensors"))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    load_pretrained(no_weights)

  bert = _copy(path, tmp_path / "bert")
  with open(os.path.join(bert, "config.json")) as f:
    cfg = json.load(f)
  with open(os.path.join(bert, "config.json"), "w") as f:
    json.dump(dict(cfg, model_type="bert"), f)
  with pytest.raises(ValueError, match="model_type='bert'"):
    load_pretrained(bert)

  wrong_shape = _copy(path, tmp_path / "wrong_shape")
  with open(os.path.join(wrong_shape, "config.json"), "w") as f:
    json.dump(dict(cfg, d_ff=48), f)
  with pytest.raises(ValueError, match=r"DenseReluDense\.wi_0\.weight has shape \(64, 32\).*"
                     r"\(48, 32\)"):
    load_pretrained(wrong_shape)

  missing = _copy(path, tmp_path / "missing")
  weights = os.path.join(missing, "model.safetensors")
  tensors = dict(read_safetensors(weights))
  tensors = {k: np.array(v) for k, v in tensors.items() if k != "encoder.final_layer_norm.weight"}
  write_safetensors(weights, tensors)
  with pytest.raises(ValueError, match="encoder.final_layer_norm.weight"):
    load_pretrained(missing)


def test_check_params_names_mismatches(hf_dir):
  model, params = load_pretrained(hf_dir[0])
  check_params(params, model.config)
  bad = jax.tree_util.tree_map(lambda x: x, params)
  bad["encoder"]["block_0"]["mlp"]["wo"]["kernel"] = np.zeros((3, 3), np.float32)
  del bad["lm_head"]
  with pytest.raises(ValueError) as err:
    check_params(bad, model.config)
  assert "missing lm_head/kernel" in str(err.value)
  assert "encoder/block_0/mlp/wo/kernel has shape (3, 3), config implies (64, 32)" in str(err.value)
