"""The JAX teacher (`teacher.backend="jax"`, old name "jax_t5") with decoder-only LMs and T5:
greedy completions equal transformers' (chat template off and on, tiny Llama 3 and Qwen2), both
zero-shot-CoT steps equal the hf backend's, and on 4 fake CPU devices FSDP and tensor parallelism
hold about a quarter of the weights per device and write the unsharded run's completions."""

from __future__ import annotations

import jax
import pytest
import transformers

from sciqa_jax import errors
from sciqa_jax.config import base_config
from sciqa_jax.data.example import CHOICE, Example
from sciqa_jax.teacher import make_teacher
from sciqa_jax.teacher.explain import explain
from sciqa_jax.teacher.hf import TransformersTeacher
from sciqa_jax.teacher.jax_model import JaxT5Teacher, JaxTeacher
from tests.fixtures import DECODER_EOS, make_tiny_decoder_dir, make_tiny_t5_dir

transformers.logging.set_verbosity_error()

PROMPTS = ["Q: Which state of matter is ice?\nA: Let's think step by step.",
           "Plants make food from sunlight, water and",
           "Sound travels faster through solids than"]
CHAT_END = 5  # <|assistant|>, a special token: a second EOS in generation_config.json (Llama 3's
#               <|eot_id|> beside <|end_of_text|>)


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
  """{"llama3": dir, "qwen2": dir}: tiny random checkpoints with tokenizers and chat templates."""
  return {
      "llama3": make_tiny_decoder_dir(tmp_path_factory.mktemp("llama3"), "llama3",
                                      tokenizer="llama",
                                      generation_eos=[DECODER_EOS, CHAT_END])[0],
      "qwen2": make_tiny_decoder_dir(tmp_path_factory.mktemp("qwen2"), "qwen2",
                                     tokenizer="qwen")[0],
  }


def _per_device_bytes(params) -> dict:
  per_device = {}
  for leaf in jax.tree.leaves(params):
    for shard in leaf.addressable_shards:
      per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
  return per_device


@pytest.mark.parametrize("family", ["llama3", "qwen2"])
@pytest.mark.parametrize("chat", [False, True])
def test_greedy_completions_equal_transformers(lm_dirs, family, chat):
  teacher = JaxTeacher(lm_dirs[family], batch_size=3, max_input_length=64,
                       use_chat_template=chat)
  reference = TransformersTeacher(lm_dirs[family], batch_size=3, use_chat_template=chat)
  assert teacher.use_chat_template == reference.use_chat_template == chat
  assert teacher.format_prompts(PROMPTS) == reference.format_prompts(PROMPTS)
  if family == "llama3":
    assert teacher.runner.eos_token_ids == (DECODER_EOS, CHAT_END)  # generation_config.json's
  ours = teacher.complete(PROMPTS, max_new_tokens=10)
  assert ours == reference.complete(PROMPTS, max_new_tokens=10)
  assert len({samples[0] for samples in ours}) == 3 and all(samples[0] for samples in ours)


@pytest.mark.parametrize("parallelism", ["fsdp", "tensor"])
def test_sharded_weights_write_the_unsharded_completions(lm_dirs, parallelism):
  """A quarter of the weights per device, and the same greedy and sampled completions."""
  unsharded = JaxTeacher(lm_dirs["llama3"], batch_size=4, max_input_length=64)
  sharded = JaxTeacher(lm_dirs["llama3"], batch_size=4, max_input_length=64,
                       parallelism=parallelism)
  total = sum(x.nbytes for x in jax.tree.leaves(sharded.params))
  per_device = _per_device_bytes(sharded.params)
  assert len(per_device) == 4
  assert max(per_device.values()) < 0.3 * total, (per_device, total)
  assert set(_per_device_bytes(unsharded.params).values()) == {total}  # replicated
  mesh = sharded.runner.placement.mesh
  assert dict(mesh.shape) == ({"data": 1, "model": 4} if parallelism == "tensor"
                              else {"data": 4, "model": 1})
  for options in ({"max_new_tokens": 10},
                  {"max_new_tokens": 8, "num_samples": 2, "temperature": 1.0, "seed": 3}):
    expected = unsharded.complete(PROMPTS, **options)
    assert sharded.complete(PROMPTS, **options) == expected, options
  assert expected[0][0] != expected[0][1]  # sampled: two different completions


def test_zero_shot_cot_two_steps_equal_the_hf_backend(lm_dirs):
  """explain(): step 1 (rationale) and step 2 (the answer, asked greedily) through the chat
  template, each equal to transformers'."""
  config = base_config().teacher
  config.update(prompt_style="zero_shot_cot", max_new_tokens=10, answer_max_new_tokens=4,
                batch_size=2)
  examples = [Example(id=f"q{i}", question=question, choices=(("A", "solid"), ("B", "gas")),
                      answer="A")
              for i, question in enumerate(["Which state of matter is ice?",
                                            "Which state of matter is air?",
                                            "What do plants make from sunlight?"])]
  teacher = JaxTeacher(lm_dirs["llama3"], batch_size=2, max_input_length=192)
  reference = TransformersTeacher(lm_dirs["llama3"], batch_size=2)
  assert teacher.use_chat_template  # the config's default, as for the hf backend
  ours = explain(teacher, examples, config, seed=0, answer_type=CHOICE)
  assert ours == explain(reference, examples, config, seed=0, answer_type=CHOICE)
  assert all(rationale and answer for ((rationale, answer),) in ours)  # step 2 was asked


def test_t5_through_the_same_backend_with_tensor_parallelism(tmp_path):
  path, _ = make_tiny_t5_dir(tmp_path / "t5", tokenizer=True, eos_logit_scale=3.0)

  def teacher(**overrides):
    config = base_config().teacher
    config.update(dict(dict(backend="jax_t5", model=path, batch_size=3, max_input_length=40),
                       **overrides))
    return make_teacher(config)

  data, tensor = teacher(), teacher(parallelism="tensor", backend="jax")
  assert isinstance(data, JaxT5Teacher) and data.name == f"jax_t5:{path}"
  assert tensor.name == f"jax:{path}" and not tensor.use_chat_template  # T5: plain prompts
  assert max(_per_device_bytes(tensor.params).values()) < 0.3 * sum(
      x.nbytes for x in jax.tree.leaves(tensor.params))
  texts = ["Water boils at one hundred degrees", "The moon orbits the Earth"]
  expected = data.complete(texts, max_new_tokens=6)
  assert tensor.complete(texts, max_new_tokens=6) == expected
  assert all(samples[0] for samples in expected), expected


def test_factory_and_errors(lm_dirs):
  config = base_config().teacher
  config.update(backend="jax", model=lm_dirs["qwen2"], batch_size=2, max_input_length=8,
                use_chat_template=False)
  teacher = make_teacher(config)
  assert isinstance(teacher, JaxTeacher) and teacher.name == f"jax:{lm_dirs['qwen2']}"
  assert teacher.rows == 4 and not teacher.use_chat_template
  with pytest.raises(errors.ConfigError, match="teacher.max_input_length=8"):
    teacher.complete(["word " * 20])
  with pytest.raises(errors.ConfigError, match="teacher.parallelism='pipeline'"):
    JaxTeacher(lm_dirs["qwen2"], parallelism="pipeline")
  with pytest.raises(errors.ConfigError, match="teacher.num_samples"):
    teacher.complete(PROMPTS, num_samples=2)
