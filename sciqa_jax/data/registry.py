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
           `data.path` finds a split's file and `loaders` for the accepted layouts), or, for the
           Fine-tune-CoT tasks, a Fine-tune-CoT root: a directory holding the task's
           data/dataset/<key>.json and data/split/<key>__default.json (sciqa_jax.data.fine_tune_cot).
           A directory holding either file is read as that layout, and then needs both.

Fine-tune-CoT's 12 tasks (Ho, Schmid, Yun 2023) are registered under its dataset keys
(FINE_TUNE_COT_TASKS); TASK_ALIASES maps other names (today's "strategyqa") to the same Task.
Their splits are train, validation, test and train_full:
  * From a Fine-tune-CoT root, test is the split file's test and train_full its train: the
    paper's splits, whose sizes are checked against FINE_TUNE_COT_SPLIT_SIZES. The paper has no
    validation split, and model selection needs one: validation is a held-out slice of train_full
    (`hold_out_validation`: 10%, at most 500 examples, picked by a hash of the task and question,
    so the same on every machine and for every seed) and train is the rest of train_full.
    train, validation and test are disjoint by construction; train_full overlaps validation (train
    on it with train.validate=False to reproduce the paper's training set).
  * Tasks whose own releases have no validation split (GSM8K, SVAMP, MultiArith, SingleEq, AddSub,
    StrategyQA: `held_out_validation`) split their hub or release train split the same way.
  * Otherwise (AQuA's and CommonsenseQA's hub and release files, the builtin generators)
    validation is the source's own and train_full is train.

Splits are the published ones; a source that lacks a split (CommonsenseQA's test split has no
answers) fails with the source's own message. `load_splits` loads several and checks that they
are disjoint: a question in two splits (a validation file that is the train file again, a test
set that leaked into train) would make the held-out accuracy a training one.

Every problem here is a user error (sciqa_jax.errors): an unknown task, a split the task does not
have, a source it lacks or a negative data.max_examples is a ConfigError naming the setting; a
missing local file a MissingFileError; overlapping splits, local files that do not say their
split or a Fine-tune-CoT split file of the wrong size a DataError.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import logging
import re
from collections.abc import Callable, Iterable

from sciqa_jax import errors
from sciqa_jax.data import answers as answers_lib
from sciqa_jax.data import fine_tune_cot
from sciqa_jax.data import loaders
from sciqa_jax.data import science
from sciqa_jax.data import synthetic
from sciqa_jax.data.example import CHOICE, NUMBER, TEXT, YES_NO, Example

SOURCES = ("builtin", "hf", "tfds", "local")
STANDARD_SPLITS = ("train", "validation", "test")
FINE_TUNE_COT_SPLITS = STANDARD_SPLITS + ("train_full",)

# (train, test) sizes of Fine-tune-CoT's split files, data/split/<key>__default.json, in the
# paper's task order: the loader refuses a split file of other sizes.
FINE_TUNE_COT_SPLIT_SIZES = {
    "single_eq": (356, 152), "addsub": (276, 119), "multiarith": (420, 180),
    "gsm8k": (7473, 1319), "aqua": (10000, 254), "svamp": (700, 300),
    "date_understanding": (258, 111), "tracking_shuffled_objects": (525, 225),
    "coin_flip": (350, 150), "last_letter_concatenation": (350, 150),
    "commonsense_qa": (9741, 1221), "strategy_qa": (1603, 687),
}
FINE_TUNE_COT_TASKS = tuple(FINE_TUNE_COT_SPLIT_SIZES)
TASK_ALIASES = {"strategyqa": "strategy_qa", "singleeq": "single_eq", "aqua_rat": "aqua"}
# The validation slice held out of a train split without a published validation split.
VALIDATION_FRACTION = 0.1
VALIDATION_MAX = 500

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
    file_names: the dataset's name as its release's file names carry it ("ARC-Easy" in
      "ARC-Easy-Train.jsonl"); () when they carry none. Source local reads a directory's files of
      the task by it (sciqa_jax.data.loaders).
    fine_tune_cot_sizes: (train, test) sizes of Fine-tune-CoT's split file for this task, whose
      dataset key is `name`; set for its 12 tasks, it lets source local read a Fine-tune-CoT root.
    held_out_validation: the release has no validation split: hub and release-file sources hold
      validation out of train (module doc); a Fine-tune-CoT root always does.
  """

  name: str
  answer_type: str
  splits: tuple[str, ...] = STANDARD_SPLITS
  builtin: BuiltinLoader | None = None
  parser: loaders.RecordParser | None = None
  hub: tuple[str, str | None] | None = None
  tfds_name: str | None = None
  file_names: tuple[str, ...] = ()
  fine_tune_cot_sizes: tuple[int, int] | None = None
  held_out_validation: bool = False

  @property
  def sources(self) -> tuple[str, ...]:
    local = self.parser is not None or self.fine_tune_cot_sizes is not None
    available = {"builtin": self.builtin is not None, "hf": self.hub is not None,
                 "tfds": self.tfds_name is not None, "local": local}
    return tuple(source for source in SOURCES if available[source])

  def _reads_fine_tune_cot(self, source: str, path: str) -> bool:
    return (source == "local" and self.fine_tune_cot_sizes is not None
            and (self.parser is None or fine_tune_cot.is_layout(path, self.name)))

  def _holds_out_validation(self, source: str, path: str) -> bool:
    if "train_full" not in self.splits or source == "builtin":
      return False
    return self.held_out_validation or self._reads_fine_tune_cot(source, path)

  def load_with_report(self, split: str, *, source: str, path: str = "",
                       skip_bad_records: bool = False, max_examples: int = 0, seed: int = 0
                       ) -> tuple[list[Example], loaders.LoadReport]:
    """Like `load`, also returning what was read and skipped."""
    self._check_request(split, source, max_examples)
    held_out = self._holds_out_validation(source, path)
    from_train = split == "train_full" or (held_out and split == "validation")
    source_split = "train" if from_train else split
    if source == "builtin":
      examples = self.builtin(source_split, seed=seed, num_examples=max_examples or None)
      report = loaders.LoadReport(source=f"builtin {self.name} split {split}",
                                  num_records=len(examples))
    else:
      examples, report = self._load_records(source_split, source, path, skip_bad_records)
    if held_out and split in ("train", "validation"):
      train, validation = hold_out_validation(self.name, examples)
      examples = train if split == "train" else validation
    if max_examples:
      examples = examples[:max_examples]
    return examples, report

  def _rows(self, split: str, source: str, path: str
            ) -> tuple[loaders.RecordParser, Iterable[tuple[str, loaders.Row]], str]:
    """(parser, rows, description) of `split` from a hub, TFDS or local source."""
    if source == "hf":
      hub_id, config_name = self.hub
      if path:
        hub_id, _, override = path.partition(":")
        config_name = override or config_name
      what = f"hub {hub_id}" + (f"[{config_name}]" if config_name else "")
      return self.parser, loaders.iter_hub_rows(hub_id, config_name, split), what
    if source == "tfds":
      name = path or self.tfds_name
      return self.parser, loaders.iter_tfds_rows(name, split), f"tfds {name}"
    if self._reads_fine_tune_cot(source, path):
      if not fine_tune_cot.is_layout(path, self.name):
        raise errors.MissingFileError(
            f"data.path={path!r} is not a Fine-tune-CoT root for task {self.name!r}: expected "
            f"{fine_tune_cot.layout_hint(path, self.name)}")
      parser = functools.partial(loaders.fine_tune_cot_record, key=self.name,
                                 answer_type=self.answer_type)
      rows = fine_tune_cot.split_rows(path, self.name, split, self.fine_tune_cot_sizes)
      return parser, rows, f"Fine-tune-CoT {path}"
    source_splits = tuple(s for s in self.splits if s != "train_full"
                          and not (s == "validation" and self.held_out_validation))
    rows = loaders.local_rows(path, split, names=self.file_names,
                              other_names=_other_file_names(self), splits=source_splits)
    return self.parser, rows, f"local {path}"

  def _load_records(self, split: str, source: str, path: str, skip_bad_records: bool
                    ) -> tuple[list[Example], loaders.LoadReport]:
    parser, rows, what = self._rows(split, source, path)
    examples, report = loaders.build_examples(
        rows, parser, split, source=f"{self.name} {what} split {split}",
        skip_bad_records=skip_bad_records)
    if report.num_skipped:
      logging.warning("%s", report.describe())
    return examples, report

  def _check_request(self, split: str, source: str, max_examples: int) -> None:
    if split not in self.splits:
      raise errors.ConfigError(
          f"split {split!r} is not a split of task {self.name!r}; valid splits: "
          f"{', '.join(self.splits)} (set data.train_split, data.eval_split, teacher.splits or "
          "--split to one of them)")
    if source not in self.sources:
      raise errors.ConfigError(
          f"task {self.name!r} cannot be loaded from data.source={source!r}; its sources are "
          f"{', '.join(self.sources)}: set data.source to one of them")
    if max_examples < 0:
      raise errors.ConfigError(f"data.max_examples={max_examples} must be >= 0 (0 = every "
                               "example, N > 0 = the first N of each split)")

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


def validation_size(num_train: int) -> int:
  """How many of `num_train` examples `hold_out_validation` holds out: 10%, at most 500."""
  if num_train < 2:
    return 0
  return max(1, min(VALIDATION_MAX, round(num_train * VALIDATION_FRACTION)))


def hold_out_validation(task_name: str, examples: list[Example]
                        ) -> tuple[list[Example], list[Example]]:
  """(train, validation): `validation_size` examples chosen by a hash of the task name and each
  example's question (`question_key`), the rest train; both keep the source's order.

  A pure function of the questions, so the same on every machine and for every seed. Examples
  with the same question (releases repeat some) fall on the same side, so train and validation
  share no question either and `load_splits` accepts them; validation then holds one example
  more per repeat.
  """
  def rank(example: Example) -> tuple[bytes, str]:
    key = question_key(example)
    return hashlib.sha256(f"{task_name}/validation/{key}".encode()).digest(), example.id
  ranked = sorted(examples, key=rank)[:validation_size(len(examples))]
  chosen = {question_key(example) for example in ranked}
  return ([example for example in examples if question_key(example) not in chosen],
          [example for example in examples if question_key(example) in chosen])


def _mc(name: str, hub: tuple[str, str | None] | None, tfds_name: str | None = None,
        context_field: str = "", file_names: tuple[str, ...] = (), **fields) -> Task:
  parser = functools.partial(loaders.multiple_choice_record, context_field=context_field,
                             id_prefix=name)
  return Task(name=name, answer_type=CHOICE, parser=parser, hub=hub, tfds_name=tfds_name,
              file_names=file_names, **fields)


def _fine_tune_cot(name: str, answer_type: str, **fields) -> Task:
  """One of Fine-tune-CoT's tasks: splits FINE_TUNE_COT_SPLITS, its split file's sizes."""
  return Task(name=name, answer_type=answer_type, splits=FINE_TUNE_COT_SPLITS,
              fine_tune_cot_sizes=FINE_TUNE_COT_SPLIT_SIZES[name], **fields)


_TASKS: dict[str, Task] = {task.name: task for task in (
    Task(name="science_demo", answer_type=CHOICE, builtin=science.load_split),
    # Release files: ARC-Easy-Train.jsonl, ARC-Easy-Dev.jsonl, ARC-Easy-Test.jsonl (and Challenge).
    _mc("arc_easy", ("allenai/ai2_arc", "ARC-Easy"), "ai2_arc/ARC-Easy", file_names=("ARC-Easy",)),
    _mc("arc_challenge", ("allenai/ai2_arc", "ARC-Challenge"), "ai2_arc/ARC-Challenge",
        file_names=("ARC-Challenge",)),
    # The "additional" configuration carries fact1, the science fact the question tests. Release
    # files: Main/train.jsonl, Additional/train_complete.jsonl (no dataset name).
    _mc("openbookqa", ("allenai/openbookqa", "additional"), "openbookqa", context_field="fact1"),
    _mc("qasc", ("allenai/qasc", None), "qasc"),  # QASC_Dataset/train.jsonl, dev.jsonl, test.jsonl
    # train.json, valid.json, test.json.
    Task(name="sciq", answer_type=CHOICE, parser=loaders.sciq_record, hub=("allenai/sciq", None)),
    # ---- Fine-tune-CoT's 12 tasks (any of them: source local = a Fine-tune-CoT root) ----
    # Arithmetic. SingleEq and AddSub have no hub copy with a known schema: Fine-tune-CoT's files.
    _fine_tune_cot("single_eq", NUMBER, held_out_validation=True),
    _fine_tune_cot("addsub", NUMBER, held_out_validation=True),
    _fine_tune_cot("multiarith", NUMBER, parser=loaders.multiarith_record,
                   hub=("ChilleD/MultiArith", None), held_out_validation=True),
    # Also GSM8K's release: grade_school_math/data/train.jsonl, test.jsonl (no dataset name).
    _fine_tune_cot("gsm8k", NUMBER, parser=loaders.gsm8k_record, hub=("openai/gsm8k", "main"),
                   held_out_validation=True),
    # The hub copy has its own validation split (254); Fine-tune-CoT's test is AQuA's test.
    _fine_tune_cot("aqua", CHOICE, parser=loaders.aqua_record, hub=("deepmind/aqua_rat", "raw")),
    _fine_tune_cot("svamp", NUMBER, parser=loaders.svamp_record, hub=("ChilleD/SVAMP", None),
                   held_out_validation=True),
    # BIG-bench tasks with the choices inside the question; the hub's BIG-Bench-Hard copies are
    # other subsets (250 questions), so only Fine-tune-CoT's files.
    _fine_tune_cot("date_understanding", CHOICE),
    _fine_tune_cot("tracking_shuffled_objects", CHOICE),
    # Symbolic: generated offline (builtin, the default) or Fine-tune-CoT's files.
    _fine_tune_cot("coin_flip", YES_NO, builtin=synthetic.coin_flip),
    _fine_tune_cot("last_letter_concatenation", TEXT, builtin=synthetic.last_letter_concatenation),
    # Commonsense. CSQA release files: train_rand_split.jsonl, dev_rand_split.jsonl,
    # test_rand_split_no_answers.jsonl; Fine-tune-CoT's test is the official dev set.
    _mc("commonsense_qa", ("tau/commonsense_qa", None),
        file_names=("rand_split", "commonsense_qa", "commonsenseqa"), splits=FINE_TUNE_COT_SPLITS,
        fine_tune_cot_sizes=FINE_TUNE_COT_SPLIT_SIZES["commonsense_qa"]),
    # The original release has only a (labelled) train file, strategyqa_train.json; the hub copy
    # adds a test split.
    _fine_tune_cot("strategy_qa", YES_NO, parser=loaders.strategyqa_record,
                   hub=("ChilleD/StrategyQA", None), file_names=("strategyqa",),
                   held_out_validation=True),
)}


def canonical_task_name(name: str) -> str:
  """The registry key of `name`, an alias or a key ("strategyqa" -> "strategy_qa"); compare
  tasks by it, never by the configured string."""
  return get_task(name).name


def get_task(name: str) -> Task:
  """The registered task `name` (a key or one of TASK_ALIASES: the same Task, whose `.name` is
  the key); unknown names fail listing the known ones."""
  name = TASK_ALIASES.get(name, name)
  if name not in _TASKS:
    close = difflib.get_close_matches(str(name), list_tasks() + list(TASK_ALIASES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise errors.ConfigError(f"unknown task={name!r}{hint}; registered tasks: "
                             f"{', '.join(list_tasks())}")
  return _TASKS[name]


def _other_file_names(task: Task) -> tuple[str, ...]:
  return tuple(name for other in _TASKS.values() if other.name != task.name
               for name in other.file_names)


def list_tasks() -> list[str]:
  """The registered task keys (aliases not included), sorted."""
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
  d = config.data
  examples, report = task.load_with_report(split, source=d.source, path=d.path,
                                           skip_bad_records=d.skip_bad_records,
                                           max_examples=d.max_examples)
  return Split(task, split, examples, report)


def load_splits(config, split_names: Iterable[str]) -> dict[str, Split]:
  """`load_examples` of each split named (each once), checked to be disjoint.

  Two splits that share an example id or a question are a DataError naming both splits, how many
  examples they share and the first one: a held-out score is only held out when no question of it
  was trained on (a data.path that serves one file for two splits, a leaked test set).
  """
  splits = {name: load_examples(config, name) for name in dict.fromkeys(split_names)}
  names = list(splits)
  for i, first in enumerate(names):
    for second in names[i + 1:]:
      check_disjoint(config, splits[first], splits[second])
  return splits


def question_key(example: Example) -> str:
  """What makes two examples the same question: the question text and the choice texts (in any
  order), whitespace and case normalised. Choices count because releases reuse a generic stem
  ("Which of these is a chemical change?") with other options, a different question."""
  def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()
  return "\x00".join([norm(example.question)] + sorted(norm(text) for _, text in example.choices))


def check_disjoint(config, a: Split, b: Split) -> None:
  """Raises DataError when `a` and `b` share an example id or a question (`question_key`)."""
  ids = {example.id for example in a.examples}
  questions = {question_key(example) for example in a.examples}
  shared = [example for example in b.examples
            if example.id in ids or question_key(example) in questions]
  if not shared:
    return
  first = shared[0]
  text = first.question if len(first.question) <= 80 else first.question[:77] + "..."
  raise errors.DataError(
      f"splits {a.name!r} and {b.name!r} of task {a.task.name!r} share {len(shared)} example(s) "
      f"(same id or question), e.g. id {first.id!r}: {text!r}; held-out splits must be disjoint "
      f"from training: check data.path={config.data.path!r} (data.source={config.data.source!r})")
