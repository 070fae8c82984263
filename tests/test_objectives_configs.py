"""configs/fine_tune_cot.py:<task>: one Fine-tune-CoT config per registered task, checked."""

import importlib.util
import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from sciqa_jax import config as config_lib
from sciqa_jax import errors
from sciqa_jax.data import registry

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "fine_tune_cot.py"
# Fine-tune-CoT's 12 dataset keys (the registry's FINE_TUNE_COT_TASKS, in the paper's order).
PAPER_TASKS = ("single_eq", "addsub", "multiarith", "gsm8k", "aqua", "svamp", "date_understanding",
               "tracking_shuffled_objects", "coin_flip", "last_letter_concatenation",
               "commonsense_qa", "strategy_qa")


def _module():
  spec = importlib.util.spec_from_file_location("fine_tune_cot_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_paper_task_is_registered():
  assert tuple(registry.FINE_TUNE_COT_TASKS) == PAPER_TASKS


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_config_of_every_task_passes_check(task):
  c = _module().get_config(task)
  config_lib.check(c)
  assert c.task == task
  assert c.objective.name == "fine_tune_cot"
  assert c.teacher.prompt_style == "zero_shot_cot"
  assert c.teacher.num_samples > 1 and c.teacher.temperature > 0  # diverse reasoning
  assert c.model.init == "pretrained" and c.model.pretrained == "google/flan-t5-small"
  assert c.data.train_split in registry.get_task(task).splits
  assert c.teacher.splits == (c.data.train_split,)  # the cache holds the split training reads
  assert c.data.eval_split == "test" and not c.train.validate  # as in the paper: no selection
  assert c.train.steps >= 1000 and c.train.warmup_steps < c.train.steps
  expected_source = "builtin" if task in ("coin_flip", "last_letter_concatenation") else "local"
  assert c.data.source == expected_source


def test_default_task_and_unknown_task():
  assert _module().get_config().task == "multiarith"
  with pytest.raises(errors.ConfigError, match="multiarithm"):
    _module().get_config("multiarithm")


def test_task_argument_and_larger_student_from_the_command_line():
  argv = ["prog", f"--config={CONFIG}:gsm8k", "--config.model.pretrained=google/flan-t5-xl",
          "--config.data.path=/data/reasoning-teacher", "--config.data.train_subsample=32"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=values, sys_argv=argv)
  values(argv)
  c = values.config
  config_lib.check(c)
  assert c.task == "gsm8k" and c.model.pretrained == "google/flan-t5-xl"
  assert c.model.tokenizer == ""  # the student's own tokenizer follows model.pretrained
  assert c.data.path == "/data/reasoning-teacher" and c.data.train_subsample == 32
