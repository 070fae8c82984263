"""The task registry: every dataset the toolkit can load, by name, with its answer type and sources.

A `Task` bundles what later stages need to know about a dataset: how to load a split from each
source, which answer type its gold answers have, and how to parse a model's answer text for it.

Sources (`data.source` in the config):
  builtin  generated in code: `science_demo` (sciqa_jax.data.science) and the Fine-tune-CoT
           symbolic tasks (sciqa_jax.data.synthetic). Real datasets have no builtin source.
  hf       the Hugging Face hub via `datasets.load_dataset`; `data.path` may override the hub id,
           as "owner/name" or "owner/name:config".
  tfds     a prepared TFDS dataset (never downloaded here); `data.path` may override the name.
  local    files in the dataset's own release format (see `loaders.resolve_local_files` for how
           `data.path` finds a split's file and `loaders` for the accepted layouts).

Splits are the published ones; a source that lacks a split (StrategyQA's hub copy has no
validation split, CommonsenseQA's test split has no answers) fails with the source's own message.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

from sciqa_jax.data import answers as answers_lib
from sciqa_jax.data import loaders
from sciqa_jax.data import science
from sciqa_jax.data import synthetic
from sciqa_jax.data.example import CHOICE, TEXT, YES_NO, Example

SOURCES = ("builtin", "hf", "tfds", "local")
STANDARD_SPLITS = ("train", "validation", "test")

BuiltinLoader = Callable[..., list[Example]]  # (split, *, seed, num_examples) -> examples


@dataclasses.dataclass(frozen=True)
class Task:
  """A named dataset: its answer type, splits and the sources it can be loaded from.

  Attributes:
    name: registry key (the config's `task`).
    answer_type: one of sciqa_jax.data.example.ANSWER_TYPES.
    splits: the published splits.
    builtin: loader for source "builtin" (generated tasks only).
    parser: record parser for hf / tfds / local rows (real datasets only).
    hub: (hub id, config name or None) for source "hf".
    tfds_name: TFDS dataset name for source "tfds", when TFDS has a builder.
  """

  name: str
  answer_type: str
  splits: tuple[str, ...] = STANDARD_SPLITS
  builtin: BuiltinLoader | None = None
  parser: loaders.RecordParser | None = None
  hub: tuple[str, str | None] | None = None
  tfds_name: str | None = None

  @property
  def sources(self) -> tuple[str, ...]:
    available = {"builtin": self.builtin is not None, "hf": self.hub is not None,
                 "tfds": self.tfds_name is not None, "local": self.parser is not None}
    return tuple(source for source in SOURCES if available[source])

  def load_with_report(self, split: str, *, source: str, path: str = "",
                       skip_bad_records: bool = False, max_examples: int = 0, seed: int = 0
                       ) -> tuple[list[Example], loaders.LoadReport]:
    """Like `load`, also returning what was read and skipped."""
    if source not in self.sources:
      raise ValueError(f"task {self.name!r} cannot be loaded from data.source={source!r}; "
                       f"its sources are {self.sources}")
    if source == "builtin":
      examples = self.builtin(split, seed=seed, num_examples=max_examples or None)
      report = loaders.LoadReport(source=f"builtin {self.name} split {split}",
                                  num_records=len(examples))
    else:
      if source == "hf":
        hub_id, config_name = self.hub
        if path:
          hub_id, _, override = path.partition(":")
          config_name = override or config_name
        rows = loaders.iter_hub_rows(hub_id, config_name, split)
        what = f"hub {hub_id}" + (f"[{config_name}]" if config_name else "")
      elif source == "tfds":
        name = path or self.tfds_name
        rows, what = loaders.iter_tfds_rows(name, split), f"tfds {name}"
      else:
        rows, what = loaders.local_rows(path, split), f"local {path}"
      examples, report = loaders.build_examples(
          rows, self.parser, split, source=f"{self.name} {what} split {split}",
          skip_bad_records=skip_bad_records)
      if report.num_skipped:
        logging.warning("%s", report.describe())
    if max_examples:
      examples = examples[:max_examples]
    return examples, report

  def load(self, split: str, *, source: str, path: str = "", skip_bad_records: bool = False,
           max_examples: int = 0, seed: int = 0) -> list[Example]:
    """The examples of `split` in published order.

    Args:
      split: a published split name ("train", "validation", "test").
      source: one of `self.sources` (module doc).
      path: local files (source local), or an override of the hub id / TFDS name.
      skip_bad_records: drop (and log a count of) unusable records instead of raising.
      max_examples: keep only the first N examples (0 = all).
      seed: generated tasks only: which instance of the task to generate (0 = the standard one).
    """
    return self.load_with_report(split, source=source, path=path,
                                 skip_bad_records=skip_bad_records, max_examples=max_examples,
                                 seed=seed)[0]

  def parse_answer(self, text: str, example: Example) -> str | None:
    """The answer in a model's text (rules: sciqa_jax.data.answers), or None if there is none."""
    return answers_lib.parse_answer(text, example, self.answer_type)

  def is_correct(self, parsed: str | None, example: Example) -> bool:
    """Whether a parsed answer equals the example's gold answer."""
    return answers_lib.answers_match(parsed, example.answer, self.answer_type)


def _mc(name: str, hub: tuple[str, str | None] | None, tfds_name: str | None = None,
        context_field: str = "") -> Task:
  parser = functools.partial(loaders.multiple_choice_record, context_field=context_field,
                             id_prefix=name)
  return Task(name=name, answer_type=CHOICE, parser=parser, hub=hub, tfds_name=tfds_name)


_TASKS: dict[str, Task] = {task.name: task for task in (
    Task(name="science_demo", answer_type=CHOICE, builtin=science.load_split),
    _mc("arc_easy", ("allenai/ai2_arc", "ARC-Easy"), "ai2_arc/ARC-Easy"),
    _mc("arc_challenge", ("allenai/ai2_arc", "ARC-Challenge"), "ai2_arc/ARC-Challenge"),
    # The "additional" configuration carries fact1, the science fact the question tests.
    _mc("openbookqa", ("allenai/openbookqa", "additional"), "openbookqa", context_field="fact1"),
    _mc("qasc", ("allenai/qasc", None), "qasc"),
    _mc("commonsense_qa", ("tau/commonsense_qa", None)),
    Task(name="sciq", answer_type=CHOICE, parser=loaders.sciq_record, hub=("allenai/sciq", None)),
    # The original release has only a (labelled) train file; the hub copy adds a test split.
    Task(name="strategyqa", answer_type=YES_NO, splits=("train", "test"),
         parser=loaders.strategyqa_record, hub=("ChilleD/StrategyQA", None)),
    Task(name="coin_flip", answer_type=YES_NO, builtin=synthetic.coin_flip),
    Task(name="last_letter_concatenation", answer_type=TEXT,
         builtin=synthetic.last_letter_concatenation),
)}


def get_task(name: str) -> Task:
  """The registered task `name`; unknown names fail listing the known ones."""
  if name not in _TASKS:
    raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(list_tasks())}")
  return _TASKS[name]


def list_tasks() -> list[str]:
  return sorted(_TASKS)


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of the configured task: its examples and what loading them read and skipped."""

  task: Task
  name: str
  examples: list[Example]
  report: loaders.LoadReport


def load_examples(config, split: str) -> Split:
  """The examples of `split` of `config.task` from `config.data`: the one way every script and
  the trainer read a dataset.

  A split the task does not have is an error naming the valid ones.
  """
  task = get_task(config.task)
  if split not in task.splits:
    raise ValueError(f"split {split!r} is not a split of task {task.name!r}; valid splits: "
                     f"{', '.join(task.splits)}")
  d = config.data
  examples, report = task.load_with_report(split, source=d.source, path=d.path,
                                           skip_bad_records=d.skip_bad_records,
                                           max_examples=d.max_examples)
  return Split(task, split, examples, report)
