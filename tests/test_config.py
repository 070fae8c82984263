"""config.check: every nonsensical setting is a ConfigError naming its key; every shipped config
passes."""

import importlib.util
import pathlib

import pytest

from sciqa_jax import config as config_lib
from sciqa_jax import errors

REPO = pathlib.Path(__file__).resolve().parent.parent
# String settings that take free text (paths, ids, names), checked where they are used.
FREE_TEXT = {"task", "data.path", "data.train_split", "data.eval_split", "cache_dir",
             "teacher.model", "teacher.base_url", "teacher.api_key_env", "teacher.few_shot_path",
             "model.pretrained", "model.tokenizer"}


def leaves(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def shipped_configs():
  for path in sorted((REPO / "configs").glob("*.py")):
    spec = importlib.util.spec_from_file_location(f"shipped_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield path.name, module.get_config()
    if path.stem == "demo":
      yield "demo.py:fast", module.get_config("fast")


def test_base_and_shipped_configs_pass():
  config_lib.check(config_lib.base_config())
  names = []
  for name, config in shipped_configs():
    config_lib.check(config)
    names.append(name)
  assert "demo.py:fast" in names and len(names) >= 7


def test_every_setting_is_checked_or_free_text():
  for key, value in leaves(config_lib.base_config()):
    if isinstance(value, (bool, tuple)):
      continue  # the ConfigDict keeps their type
    if isinstance(value, str):
      assert key in config_lib.CHOICES or key in FREE_TEXT, key
    else:
      assert key in config_lib.RULES, key
  for key in list(config_lib.CHOICES) + list(config_lib.RULES):
    config_lib._get(config_lib.base_config(), key)  # no rule for a setting that does not exist


BAD = [
    ("data.max_examples", -1), ("train.batch_size", 0), ("eval.batch_size", 0),
    ("teacher.batch_size", 0), ("train.steps", 0), ("train.answer_steps", -1),
    ("train.learning_rate", -1e-3), ("train.learning_rate", float("nan")),
    ("teacher.num_samples", 0), ("train.max_input_length", 0), ("train.max_target_length", -4),
    ("train.max_target_length", "longest"), ("eval.max_input_length", 0),
    ("teacher.max_new_tokens", 0), ("teacher.shard_size", 0), ("train.keep_checkpoints", 0),
    ("train.log_every", 0), ("train.checkpoint_every", 0), ("train.eval_every", -1),
    ("teacher.top_p", 1.5), ("eval.top_p", 0.0), ("teacher.error_rate", -0.1),
    ("teacher.error_rate", 1.01), ("model.dropout_rate", 1.0), ("train.label_smoothing", -0.1),
    ("objective.step_by_step_alpha", 2.0), ("teacher.temperature", -1.0),
    ("eval.temperature", -0.5), ("eval.self_consistency", 0), ("eval.num_beams", 0),
    ("train.grad_accum_steps", 0), ("train.warmup_steps", -1), ("model.num_heads", 0),
    ("seed", -1), ("data.source", "s3"), ("objective.name", "distill"),
    ("objective.stage2_rationales", "both"), ("train.optimizer", "sgd"),
    ("train.schedule", "step"), ("train.parallelism", "tp"), ("teacher.backend", "openai"),
    ("teacher.keep", "some"), ("teacher.prompt_style", "cot"), ("eval.decoding", "nucleus"),
    ("model.init", "scratch"), ("model.dtype", "float8"), ("model.feed_forward_proj", "gated"),
]


@pytest.mark.parametrize("key,value", BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_nonsensical_value_names_its_key(key, value):
  config = config_lib.base_config()
  section, _, name = key.rpartition(".")
  setattr(config[section] if section else config, name, value)
  with pytest.raises(errors.ConfigError) as info:
    config_lib.check(config)
  assert str(info.value).startswith(f"{key}=") and "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["auto", 1, 384])
def test_lengths_take_auto_or_a_positive_int(value):
  config = config_lib.base_config()
  config.train.max_input_length = config.train.max_target_length = value
  config_lib.check(config)


@pytest.mark.parametrize("change,key", [
    ({"task": "arc_eazy"}, "task='arc_eazy'"),
    ({"data.source": "builtin", "task": "arc_easy"}, "data.source='builtin'"),
    ({"data.source": "local", "task": "arc_easy"}, "needs data.path"),
    ({"task": "strategyqa", "data.source": "hf", "data.train_split": "dev"},
     "data.train_split='dev'"),
    ({"data.eval_split": "train"}, "data.eval_split='train'"),
    ({"teacher.backend": "hf", "teacher.temperature": 0.0, "teacher.num_samples": 4},
     "teacher.num_samples=4"),
    ({"eval.decoding": "sample", "eval.temperature": 0.0}, "eval.temperature=0"),
    ({"eval.self_consistency": 5, "eval.temperature": 0.0}, "eval.temperature=0"),
    ({"model.init": "pretrained"}, "model.pretrained"),
    ({"train.steps": 10, "train.warmup_steps": 10}, "train.warmup_steps=10"),
])
def test_inconsistent_settings(change, key):
  config = config_lib.base_config()
  for name, value in change.items():
    section, _, leaf = name.rpartition(".")
    setattr(config[section] if section else config, leaf, value)
  with pytest.raises(errors.ConfigError, match=key.replace("(", r"\(")) as info:
    config_lib.check(config)
  assert "\n" not in str(info.value)


def test_choices_agree_with_the_modules():
  from sciqa_jax import decoding, objectives, rationales, sharding, train_step
  from sciqa_jax.data import registry
  from sciqa_jax.models import t5
  from sciqa_jax.teacher import base, prompts

  choices = config_lib.CHOICES
  assert choices["data.source"] == registry.SOURCES
  assert choices["teacher.backend"] == base.BACKENDS
  assert choices["teacher.prompt_style"] == prompts.PROMPT_STYLES
  assert choices["teacher.keep"] == rationales.KEEP_MODES
  assert choices["train.parallelism"] == sharding.PARALLELISMS
  assert choices["teacher.parallelism"] == sharding.INFERENCE_PARALLELISMS  # + tensor
  assert choices["objective.name"] == objectives.OBJECTIVES
  assert choices["objective.stage2_rationales"] == objectives.STAGE2_RATIONALE_SOURCES
  assert choices["train.optimizer"] == train_step.OPTIMIZERS
  assert choices["train.schedule"] == train_step.SCHEDULES
  assert choices["eval.decoding"] == decoding.METHODS
  for proj in choices["model.feed_forward_proj"]:
    t5.T5Config(feed_forward_proj=proj)
  for dtype in choices["model.dtype"]:
    t5.T5Config(dtype=dtype, param_dtype=dtype)
