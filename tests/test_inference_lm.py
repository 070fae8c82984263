"""The inference layer with a decoder-only LM: candidate log-likelihoods and greedy generation equal
transformers' on tiny random Llama 3 / Qwen2 checkpoints (pmap and mesh placements, chat template
off and on); the sharding rules of tensor and FSDP parallelism; EOS and pad ids."""

from __future__ import annotations

import types

import jax
import numpy as np
import pytest
import torch
import transformers
from jax.sharding import PartitionSpec as P

from sciqa_jax import errors, inference, sharding
from sciqa_jax.models import CausalLM, DecoderConfig, T5Config, load_pretrained
from sciqa_jax.models import decoder_only, t5
from tests.fixtures import DECODER_EOS, DECODER_PAD, make_tiny_decoder_dir

transformers.logging.set_verbosity_error()

CONTEXTS = ["Q: Which state of matter is ice?", "Plants make food from sunlight.",
            "Sound travels faster through solids"]
CANDIDATES = [["solid", "liquid gas", "plasma"], ["water", "air"], ["than air.", "slowly", "A"]]
M = sharding.MODEL_AXIS


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
  cache = {}

  def get(family):
    if family not in cache:
      style = "qwen" if family.startswith("qwen") else "llama"
      cache[family] = make_tiny_decoder_dir(tmp_path_factory.mktemp(family), family,
                                            tokenizer=style)
    return cache[family]
  return get


def _runner(path, placement, *, chat_template=False, batch_size=2, params=None):
  model, loaded = load_pretrained(path, to_device=False)
  tokenizer = transformers.AutoTokenizer.from_pretrained(path)
  return inference.Runner(model, {"lm": loaded if params is None else params}, tokenizer,
                          placement=placement, batch_size=batch_size, max_input_length=48,
                          max_target_length=8, chat_template=chat_template)


def _hf_log_likelihood(hf, context_ids, candidate_ids):
  ids = torch.tensor([context_ids + candidate_ids])
  with torch.no_grad():
    log_probs = torch.log_softmax(hf(input_ids=ids).logits[0].double(), -1).numpy()
  n = len(context_ids)
  return sum(log_probs[n - 1 + j, token] for j, token in enumerate(candidate_ids))


@pytest.mark.parametrize("family,chat,parallelism", [("llama3", False, None),
                                                    ("qwen2", True, "tensor")])
def test_score_equals_transformers_log_likelihoods(lm_dirs, family, chat, parallelism):
  """pmap (llama3, BOS from the tokenizer) and a tensor-parallel mesh (qwen2, chat template)."""
  path, hf = lm_dirs(family)
  if parallelism is None:
    runner = _runner(path, inference.Replicated(), chat_template=chat)
  else:
    mesh = sharding.make_inference_mesh(parallelism)
    model, host = load_pretrained(path, to_device=False)
    placed = sharding.place_params(host, mesh, sharding.param_specs(host, mesh, parallelism))
    runner = _runner(path, inference.OnMesh(mesh), chat_template=chat, params=placed)
  sums, counts = runner.score("lm", CONTEXTS, CANDIDATES, max_choices=3)
  tok = runner.tokenizer
  for context, group, total, count in zip(CONTEXTS, CANDIDATES, sums, counts):
    if chat:
      text = tok.apply_chat_template([{"role": "user", "content": context}], tokenize=False,
                                     add_generation_prompt=True)
      context_ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
      context_ids = tok(context)["input_ids"]
      assert context_ids[0] == tok.bos_token_id  # the tokenizer's own BOS
    assert len(total) == len(group)
    for candidate, ours, n in zip(group, total, count):
      candidate_ids = tok(candidate, add_special_tokens=False)["input_ids"]
      assert n == len(candidate_ids) > 0
      np.testing.assert_allclose(ours, _hf_log_likelihood(hf, context_ids, candidate_ids),
                                 atol=1e-4, rtol=0)


def test_generate_on_pmap_equals_transformers(lm_dirs):
  path, hf = lm_dirs("llama3")
  runner = _runner(path, inference.Replicated(), batch_size=3)
  assert runner.batch_rows == 4 and runner.eos_token_ids == (DECODER_EOS,)
  assert runner.tokenizer.pad_token_id is None and runner.pad_token_id == DECODER_PAD  # config's
  out = runner.generate("lm", CONTEXTS, jax.random.key(0), max_new_tokens=8)
  tok = runner.tokenizer
  for context, (generation,) in zip(CONTEXTS, out):
    ids = torch.tensor([tok(context)["input_ids"]])
    with torch.no_grad():
      ref = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                        do_sample=False, pad_token_id=DECODER_EOS)[0, ids.shape[1]:].tolist()
    length = ref.index(DECODER_EOS) + 1 if DECODER_EOS in ref else len(ref)
    assert generation.num_tokens == length
    assert generation.text == tok.decode(ref[:length], skip_special_tokens=True).strip()
  assert any(g.num_tokens < 8 for (g,) in out)  # EOS met on some row, not all
  with pytest.raises(ValueError, match="decoder-only LM generates with"):
    runner.generate("lm", CONTEXTS, jax.random.key(0), max_new_tokens=4, method="beam")


def test_runner_refuses_what_a_decoder_only_lm_cannot_do(lm_dirs):
  path, _ = lm_dirs("llama3")
  model, params = load_pretrained(path, to_device=False)
  tokenizer = transformers.AutoTokenizer.from_pretrained(path)
  with pytest.raises(ValueError, match="special tokens"):
    inference.Runner(model, {"lm": params}, tokenizer, batch_size=1, max_input_length=8,
                     special_tokens="eos")
  tokenizer.chat_template = None
  with pytest.raises(errors.ConfigError, match="use_chat_template"):
    inference.Runner(model, {"lm": params}, tokenizer, batch_size=1, max_input_length=8,
                     chat_template=True)
  runner = inference.Runner(model, {"lm": params}, tokenizer, batch_size=1, max_input_length=8,
                            overflow="error")
  with pytest.raises(inference.InputTooLongError, match="more than the limit of 8"):
    runner.encode(["word " * 20])


def test_lm_special_ids(tmp_path):
  model = CausalLM(DecoderConfig(eos_token_id=7, pad_token_id=None, vocab_size=16))
  tokenizer = types.SimpleNamespace(eos_token_id=9, pad_token_id=None)
  assert inference.lm_special_ids(model, tokenizer) == ((7, 9), 7)
  (tmp_path / "generation_config.json").write_text('{"eos_token_id": [5, 7], "pad_token_id": 3}')
  generation = inference.read_generation_config(str(tmp_path))
  assert inference.lm_special_ids(model, tokenizer, generation) == ((5, 7, 9), 3)
  tokenizer.pad_token_id = 0
  assert inference.lm_special_ids(model, tokenizer, generation) == ((5, 7, 9), 0)
  assert inference.read_generation_config(str(tmp_path / "none")) == {}
  (tmp_path / "generation_config.json").write_text("{")
  with pytest.raises(errors.CorruptFileError, match="generation_config.json"):
    inference.read_generation_config(str(tmp_path))


def _specs(tree, mesh, parallelism):
  specs = sharding.param_specs(tree, mesh, parallelism)
  return {"/".join(k): v for k, v in _flatten(specs).items()}


def _flatten(tree, prefix=()):
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flatten(sub, prefix + (key,)).items()}
  return {prefix: tree}


def _abstract(init, config):
  return jax.eval_shape(lambda key: init(config, key), jax.random.key(0))


def test_tensor_and_fsdp_rules():
  """Megatron's layout for decoder-only and T5 names; fallbacks when a dimension does not divide."""
  tensor = sharding.make_inference_mesh("tensor")
  fsdp = sharding.make_inference_mesh("fsdp")
  assert dict(tensor.shape) == {"data": 1, "model": 4}
  assert dict(fsdp.shape) == {"data": 4, "model": 1}
  with pytest.raises(ValueError, match="teacher.parallelism='pipeline'"):
    sharding.make_inference_mesh("pipeline")

  config = DecoderConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                         mlp_bias=True)
  abstract = _abstract(decoder_only.init_params, config)
  specs = _specs(abstract, tensor, "tensor")
  layer = "model/layers_0/"
  for name in ("self_attn/q_proj", "self_attn/k_proj", "self_attn/v_proj", "mlp/gate_proj",
               "mlp/up_proj"):
    assert specs[layer + name + "/weight"] == P(M, None), name  # column-parallel: [out, in]
    assert specs[layer + name + "/bias"] == P(M), name
  for name in ("self_attn/o_proj", "mlp/down_proj"):
    assert specs[layer + name + "/weight"] == P(None, M), name  # row-parallel
    assert specs[layer + name + "/bias"] == P(), name
  assert specs["model/embed_tokens/embedding"] == P(M, None)  # vocabulary
  assert specs["lm_head/weight"] == P(M, None)  # [V, d]: vocabulary
  assert specs["model/norm/scale"] == P() and specs[layer + "input_layernorm/scale"] == P()
  odd = _specs(_abstract(decoder_only.init_params, config.replace(vocab_size=97)), tensor,
               "tensor")
  assert odd["model/embed_tokens/embedding"] == P(None, M)  # 97 rows: split d_model instead
  assert odd["lm_head/weight"] == P(None, M)
  fsdp_specs = _specs(abstract, fsdp, "fsdp")
  assert fsdp_specs["lm_head/weight"] == sharding.fsdp_spec((96, 32), 4) == P("data")
  assert set(_specs(abstract, fsdp, "data").values()) == {P()}

  t5_config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4,
                       feed_forward_proj="gated-gelu", tie_word_embeddings=False)
  t5_specs = _specs(_abstract(t5.init_params, t5_config), tensor, "tensor")
  assert t5_specs["decoder/block_0/cross_attention/q/kernel"] == P(None, M)
  assert t5_specs["encoder/block_0/self_attention/o/kernel"] == P(M, None)
  assert t5_specs["encoder/block_0/mlp/wi_1/kernel"] == P(None, M)
  assert t5_specs["decoder/block_0/mlp/wo/kernel"] == P(M, None)
  assert t5_specs["shared/embedding"] == P(M, None)
  assert t5_specs["encoder/relative_attention_bias"] == P(None, M)  # per head


def test_place_params_puts_each_block_on_its_device():
  mesh = sharding.make_inference_mesh("tensor")
  host = {"w": np.arange(32, dtype=np.float32).reshape(4, 8), "b": np.ones(3, np.float32)}
  placed = sharding.place_params(host, mesh, {"w": P(None, M), "b": P()})
  assert [s.data.shape for s in placed["w"].addressable_shards] == [(4, 2)] * 4
  np.testing.assert_array_equal(np.asarray(placed["w"]), host["w"])
  assert placed["b"].sharding.is_fully_replicated
